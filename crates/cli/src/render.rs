//! Tables for people (comfy-table); scripts use `--json`.

use comfy_table::{presets, Table};
use proto::conflict::clock;
use proto::status::{FencingStatus, LossEvent, Status};
use proto::watch::{EventKind, LockEvent};
use proto::LockInfo;

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

/// The column heads of `watch`'s event lines.
pub fn event_header() -> String {
    format!("{:<16} {:<9} {:<4} {:<20} {:<16} DISK/LEASE", "TIME", "EVENT", "MODE", "VM", "NODE")
}

/// One `watch` event as a line under [`event_header`] (a stream cannot be a table whose
/// widths are known in advance).
pub fn event(e: &LockEvent) -> String {
    let time = format!("{}.{:03}", clock(e.at_ms / 1000).trim_end_matches(" UTC"), e.at_ms % 1000);
    let kind = match e.kind {
        EventKind::Granted => "granted",
        EventKind::Released => "released",
        EventKind::Left => "left",
        EventKind::Missed => "MISSED",
    };
    let Some(l) = &e.lock else {
        return format!(
            "{time:<16} {kind:<9} {} change(s) dropped: this watch fell behind; `virtdlm locks` shows the table",
            e.missed.unwrap_or(0)
        );
    };
    let why = e.why.as_deref().map(|w| format!(" ({w})")).unwrap_or_default();
    format!(
        "{time:<16} {kind:<9} {:<4} {:<20} {:<16} {}{why}",
        l.mode.to_string(),
        l.vm_name,
        format!("{} ({})", l.node_name, l.node_id),
        l.identity
    )
}

/// A value for people: `-` when there is none.
fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// `virtdlm status` as name/value rows.
pub fn status(s: &Status) -> String {
    let mut t = table();
    let node = format!("{} (id {})", s.node_name, s.node_id);
    let mut rows: Vec<(&str, String)> = vec![("node", node), ("backend", s.backend.clone())];
    for w in &s.warnings {
        rows.push(("WARNING", w.clone()));
    }
    match &s.cluster {
        None => rows.push(("cluster", "off (this node's locks only)".into())),
        Some(c) => {
            let members: Vec<String> = c.members.iter().map(|m| format!("{} ({})", m.name, m.node_id)).collect();
            rows.push(("membership", c.verdict.clone()));
            rows.push(("quorate", or_dash(c.quorate)));
            rows.push(("members", if members.is_empty() { "-".into() } else { members.join(", ") }));
            rows.push(("lockspace", c.lockspace.clone()));
            rows.push(("cpg group", c.group.clone()));
            rows.push(("cluster locks", c.inventory_locks.to_string()));
        }
    }
    rows.push(("VMs (owners)", s.owners.to_string()));
    rows.push(("locks here", s.locks.to_string()));
    rows.push(("journal", format!("{} ({} bytes)", s.journal, s.journal_bytes)));
    rows.push(("fencing", fencing(&s.fencing)));
    rows.push(("last lock loss", lock_loss(s.last_lock_loss.as_ref())));
    // Releases the DLM refused: those disks may still be locked, so they show here.
    if !s.releases_pending.is_empty() {
        let lines: Vec<String> = s
            .releases_pending
            .iter()
            .map(|r| format!("{} {} of VM {}: {} attempts, last: {}", r.disk, r.mode, r.vm, r.attempts, r.error))
            .collect();
        rows.push(("releases retrying", lines.join("\n")));
    }
    for (k, v) in rows {
        t.add_row([k.to_string(), v]);
    }
    t.to_string()
}

/// The fencing shape and, when grants wait for a lost node, which ones and who confirmed what.
fn fencing(f: &FencingStatus) -> String {
    let mut lines = vec![f.summary.clone()];
    let missing: Vec<String> = f.unaccounted.iter().map(|n| format!("{} (id {})", n.node_name, n.node_id)).collect();
    if !missing.is_empty() {
        lines.push(format!(
            "QUARANTINE: no lock is granted; unaccounted for: {} (`virtdlm confirm-down NODE` once it is down)",
            missing.join(", ")
        ));
    }
    for c in &f.confirmed_down {
        lines.push(format!(
            "{} (id {}) confirmed down by {} (uid {}) at {}",
            c.node_name,
            c.node_id,
            c.by_user,
            c.by_uid,
            clock(c.at as u64)
        ));
    }
    lines.join("\n")
}

/// The last lock-loss event in a few lines: when and why, what became of each VM, whether
/// grants resumed. The whole record is in `virtdlm status --json`.
fn lock_loss(e: Option<&LossEvent>) -> String {
    let Some(e) = e else { return "none".into() };
    let mut lines = vec![format!("{}: {}", clock(e.at as u64), e.message)];
    if e.vms.is_empty() {
        lines.push("no VM held locks here".into());
    }
    for vm in &e.vms {
        let note = vm.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
        lines.push(format!("VM {} pid {}: {} -> {}{note}", vm.vm_name, vm.pid, vm.action, vm.outcome));
    }
    lines.push(format!("handled in {} ms", e.elapsed_ms));
    if e.watchdog_fired {
        lines.push("watchdog fired: this host is being reset".into());
    }
    lines.push(match e.recovered_at {
        Some(t) => format!("grants resumed {}", clock(t as u64)),
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

    #[test]
    fn a_lock_loss_reads_as_lines_not_json() {
        let e = LossEvent {
            reason: proto::status::LossReasonInfo { kind: "quorum_lost".into(), detail: None },
            message: "quorum lost".into(),
            at: 3600.0,
            vms: vec![proto::status::VmOutcome {
                vm_name: "web".into(),
                vm_uuid: "u".into(),
                pid: 42,
                action: "poweroff".into(),
                outcome: "terminated".into(),
                note: None,
            }],
            elapsed_ms: 12,
            watchdog_fired: false,
            recovered_at: None,
        };
        let s = lock_loss(Some(&e));
        assert_eq!(
            s,
            "01:00:00 UTC: quorum lost\nVM web pid 42: poweroff -> terminated\nhandled in 12 ms\n\
             grants still refused: membership not safe yet"
        );
        assert!(!s.contains('{'));
        assert_eq!(lock_loss(None), "none");
    }
}
