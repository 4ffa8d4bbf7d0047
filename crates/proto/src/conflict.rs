//! The sentence a user reads when a lock is refused: which disk, who holds it, how, since
//! when, and what to do about it.

use crate::mode::Mode;
use crate::Conflict;
#[cfg(test)]
use crate::LockInfo;

/// "disk /a.img" or "lease space/key".
pub fn subject(readable: &str) -> String {
    if readable.starts_with("lease ") {
        readable.to_owned()
    } else {
        format!("disk {readable}")
    }
}

/// `HH:MM:SS UTC` of a Unix time.
pub fn clock(secs: u64) -> String {
    let s = secs % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, (s / 60) % 60, s % 60)
}

/// The human message for a refused lock.
pub fn message(c: &Conflict) -> String {
    let what = subject(&c.identity);
    let fix = if c.identity.starts_with("lease ") { "detach the lease" } else { "detach the disk" };
    match c.holders.first() {
        Some(h) => {
            let others = match c.holders.len() {
                1 => String::new(),
                n => format!(" (and {} other holder{})", n - 1, if n == 2 { "" } else { "s" }),
            };
            // A holder whose node left the inventory group: its lock stays until DLM recovery
            // frees it (node fenced or gone) or that node's daemon releases it.
            let left = if h.state == "left" { " (that node has left the cluster)" } else { "" };
            format!(
                "{what} is held {} by VM {} (uuid {}) on node {}{left} since {}{others}; it cannot also be opened {}; stop that VM or {fix} first",
                h.mode.describe(),
                h.vm_name,
                h.vm_uuid,
                h.node_name,
                clock(h.since),
                wanted(c.wanted),
            )
        }
        // The DLM refused, but this node's table names no holder: the lock is held on
        // another node, and only that node's virtdlmd knows the VM.
        None => {
            let find = match c.identity.strip_prefix("lease ") {
                Some(_) => "`virtdlm locks`".to_owned(),
                None => format!("`virtdlm inspect {}`", c.identity),
            };
            format!(
                "{what} is held by a VM on another node of the cluster, so it cannot be opened {} here (DLM resource {}); \
                 run {find} on the other nodes to find that VM, then stop it or {fix} first",
                wanted(c.wanted),
                c.resource
            )
        }
    }
}

fn wanted(m: Mode) -> &'static str {
    match m {
        Mode::Ex => "for exclusive writing",
        Mode::Cw => "for shared writing",
        Mode::Pr => "read-only",
        Mode::Cr => "read-only (shared)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_disk_holder_node_mode_and_remedy() {
        let c = Conflict {
            identity: "/var/lib/libvirt/images/a.img".into(),
            resource: "d1:ab".into(),
            wanted: Mode::Ex,
            holders: vec![LockInfo {
                resource: "d1:ab".into(),
                identity: "/var/lib/libvirt/images/a.img".into(),
                mode: Mode::Ex,
                vm_name: "web-3".into(),
                vm_uuid: "u-1".into(),
                pid: 9,
                node_name: "hv2".into(),
                node_id: 2,
                since: 12 * 3600 + 3 * 60 + 4,
                state: "held".into(),
            }],
        };
        let m = message(&c);
        assert_eq!(
            m,
            "disk /var/lib/libvirt/images/a.img is held exclusively by VM web-3 (uuid u-1) on node hv2 since 12:03:04 UTC; \
             it cannot also be opened for exclusive writing; stop that VM or detach the disk first"
        );
        let mut gone = c.clone();
        gone.holders[0].state = "left".into();
        assert!(
            message(&gone).contains("on node hv2 (that node has left the cluster) since 12:03:04 UTC"),
            "{}",
            message(&gone)
        );
        let remote = Conflict { holders: vec![], ..c.clone() };
        assert_eq!(
            message(&remote),
            "disk /var/lib/libvirt/images/a.img is held by a VM on another node of the cluster, so it cannot be opened \
             for exclusive writing here (DLM resource d1:ab); run `virtdlm inspect /var/lib/libvirt/images/a.img` on the \
             other nodes to find that VM, then stop it or detach the disk first"
        );
        let lease = Conflict { holders: vec![], identity: "lease s/k".into(), ..c };
        let m = message(&lease);
        assert!(m.starts_with("lease s/k is held by a VM on another node"), "{m}");
        assert!(m.contains("run `virtdlm locks` on the other nodes"), "{m}");
    }
}
