//! Tables for people (comfy-table); scripts use `--json`.

use comfy_table::{presets, Table};
use proto::conflict::clock;
use proto::LockInfo;
use serde_json::Value;

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t
}

/// The lock table: one row per lock, cluster-wide.
pub fn locks(locks: &[LockInfo]) -> String {
    if locks.is_empty() {
        return "no locks".into();
    }
    let mut t = table();
    t.set_header(["DISK/LEASE", "MODE", "VM", "UUID", "PID", "NODE", "SINCE", "STATE"]);
    for l in locks {
        t.add_row([
            l.identity.clone(),
            l.mode.to_string(),
            l.vm_name.clone(),
            l.vm_uuid.clone(),
            l.pid.to_string(),
            format!("{} ({})", l.node_name, l.node_id),
            clock(l.since),
            l.state.clone(),
        ]);
    }
    t.to_string()
}

/// The daemon's warnings about its setup (`status` JSON `warnings`), e.g. local + cluster.
pub fn warnings(status: &Value) -> Vec<String> {
    status["warnings"].as_array().map(|w| w.iter().map(text).collect()).unwrap_or_default()
}

pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `virtdlm status` as name/value rows.
pub fn status(s: &Value) -> String {
    let mut t = table();
    let c = &s["cluster"];
    let node = format!("{} (id {})", text(&s["node_name"]), text(&s["node_id"]));
    let mut rows: Vec<(&str, String)> = vec![("node", node), ("backend", text(&s["backend"]))];
    for w in warnings(s) {
        rows.push(("WARNING", w));
    }
    if c.is_null() {
        rows.push(("cluster", "off (this node's locks only)".into()));
    } else {
        let members: Vec<String> = c["members"]
            .as_array()
            .map(|m| m.iter().map(|m| format!("{} ({})", text(&m["name"]), text(&m["node_id"]))).collect())
            .unwrap_or_default();
        rows.push(("membership", text(&c["verdict"])));
        rows.push(("quorate", text(&c["quorate"])));
        rows.push(("members", if members.is_empty() { "-".into() } else { members.join(", ") }));
        rows.push(("lockspace", text(&c["lockspace"])));
        rows.push(("cpg group", text(&c["group"])));
        rows.push(("cluster locks", text(&c["inventory_locks"])));
    }
    rows.push(("VMs (owners)", text(&s["owners"])));
    rows.push(("locks here", text(&s["locks"])));
    rows.push(("journal", format!("{} ({} bytes)", text(&s["journal"]), text(&s["journal_bytes"]))));
    if !s["fencing"].is_null() {
        rows.push(("fencing", fencing(&s["fencing"])));
    }
    rows.push(("last lock loss", lock_loss(&s["last_lock_loss"])));
    // Releases the DLM refused: those disks may still be locked, so they show here.
    if let Some(p) = s["releases_pending"].as_array().filter(|p| !p.is_empty()) {
        let lines: Vec<String> = p
            .iter()
            .map(|r| {
                format!(
                    "{} {} of VM {}: {} attempts, last: {}",
                    text(&r["disk"]),
                    text(&r["mode"]),
                    text(&r["vm"]),
                    text(&r["attempts"]),
                    text(&r["error"])
                )
            })
            .collect();
        rows.push(("releases retrying", lines.join("\n")));
    }
    for (k, v) in rows {
        t.add_row([k.to_string(), v]);
    }
    t.to_string()
}

/// The fencing shape and, when grants wait for a lost node, which ones and who confirmed what.
fn fencing(f: &Value) -> String {
    let mut lines = vec![text(&f["summary"])];
    let nodes = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|n| format!("{} (id {})", text(&n["node_name"]), text(&n["node_id"]))).collect())
            .unwrap_or_default()
    };
    let missing = nodes(&f["unaccounted"]);
    if !missing.is_empty() {
        lines.push(format!(
            "QUARANTINE: no lock is granted; unaccounted for: {} (`virtdlm confirm-down NODE` once it is down)",
            missing.join(", ")
        ));
    }
    for c in f["confirmed_down"].as_array().into_iter().flatten() {
        let at = c["at"].as_f64().map(|t| clock(t as u64)).unwrap_or_else(|| "-".into());
        lines.push(format!(
            "{} (id {}) confirmed down by {} (uid {}) at {at}",
            text(&c["node_name"]),
            text(&c["node_id"]),
            text(&c["by_user"]),
            text(&c["by_uid"])
        ));
    }
    lines.join("\n")
}

/// The last lock-loss event in a few lines: when and why, what became of each VM, whether
/// grants resumed. The whole record is in `virtdlm status --json`.
fn lock_loss(e: &Value) -> String {
    if e.is_null() {
        return "none".into();
    }
    let at = e["at"].as_f64().map(|t| clock(t as u64)).unwrap_or_else(|| "-".into());
    let mut lines = vec![format!("{at}: {}", text(&e["message"]))];
    let vms = e["vms"].as_array().map(Vec::as_slice).unwrap_or_default();
    if vms.is_empty() {
        lines.push("no VM held locks here".into());
    }
    for vm in vms {
        let note = if vm["note"].is_null() { String::new() } else { format!(" ({})", text(&vm["note"])) };
        lines.push(format!(
            "VM {} pid {}: {} -> {}{note}",
            text(&vm["vm_name"]),
            text(&vm["pid"]),
            text(&vm["action"]),
            text(&vm["outcome"])
        ));
    }
    lines.push(format!("handled in {} ms", text(&e["elapsed_ms"])));
    if e["watchdog_fired"].as_bool() == Some(true) {
        lines.push("watchdog fired: this host is being reset".into());
    }
    lines.push(match e["recovered_at"].as_f64().map(|t| t as u64) {
        Some(t) => format!("grants resumed {}", clock(t)),
        None => "grants still refused: membership not safe yet".into(),
    });
    lines.join("\n")
}

/// `virtdlm inspect`: the resource, then its holders or "free".
pub fn inspect(identity: &str, resource: &str, holders: &[LockInfo]) -> String {
    let name = if resource.is_empty() { "(none: not locked)" } else { resource };
    let mut out = format!("{identity}\nDLM resource: {name}\n");
    if holders.is_empty() {
        out.push_str("free");
    } else {
        out.push_str(&locks(holders));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_lock_loss_reads_as_lines_not_json() {
        let e = json!({
            "reason": "quorum_lost", "message": "quorum lost", "at": 3600.0,
            "vms": [{"vm_name": "web", "vm_uuid": "u", "pid": 42, "action": "poweroff", "outcome": "terminated"}],
            "elapsed_ms": 12, "watchdog_fired": false
        });
        let s = lock_loss(&e);
        assert_eq!(
            s,
            "01:00:00 UTC: quorum lost\nVM web pid 42: poweroff -> terminated\nhandled in 12 ms\n\
             grants still refused: membership not safe yet"
        );
        assert!(!s.contains('{'));
        assert_eq!(lock_loss(&Value::Null), "none");
    }
}
