//! Tables for people (comfy-table); scripts use `--json`.

use comfy_table::{presets, Table};
use lockmgr::conflict::clock;
use lockmgr::proto::LockInfo;
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

fn text(v: &Value) -> String {
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
    rows.push(("last lock loss", if s["last_lock_loss"].is_null() { "none".into() } else { text(&s["last_lock_loss"]) }));
    for (k, v) in rows {
        t.add_row([k.to_string(), v]);
    }
    t.to_string()
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
