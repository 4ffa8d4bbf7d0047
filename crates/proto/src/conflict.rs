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

const BACKING_OF: &str = " (backing of ";

/// How a backing image locked with a disk is shown (in `virtdlm locks`, the journal, the
/// cluster inventory): `/images/base.qcow2 (backing of /images/vm1.qcow2)`.
pub fn backing_note(base: &str, overlay: &str) -> String {
    format!("{base}{BACKING_OF}{overlay})")
}

/// The overlay named by a lock shown with [`backing_note`].
pub fn overlay_of(identity: &str) -> Option<&str> {
    identity.strip_suffix(')')?.split_once(BACKING_OF).map(|(_, overlay)| overlay)
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
    if let Some(m) = backing_message(c) {
        return m;
    }
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

/// The refusal of an image that VMs read as the backing file of their disks (the first holder
/// in the way holds it so): it names each overlay and its VM.
fn backing_message(c: &Conflict) -> Option<String> {
    overlay_of(&c.holders.first()?.identity)?;
    let users: Vec<String> = c
        .holders
        .iter()
        .filter_map(|h| {
            let overlay = overlay_of(&h.identity)?;
            Some(format!(
                "{overlay}, used by VM {} (uuid {}) on node {} since {}",
                h.vm_name,
                h.vm_uuid,
                h.node_name,
                clock(h.since)
            ))
        })
        .collect();
    let base = c.identity.as_str();
    Some(format!(
        "disk {base} is the backing file of {}; it cannot be opened {} while an overlay depends on it (writing it would \
         corrupt the overlay{}). Stop {}, or make the overlay{} independent of it first (virsh blockpull), or start this \
         VM on an overlay of its own (qemu-img create -f qcow2 -b {base} -F <format> <new overlay>)",
        users.join("; and of "),
        wanted(c.wanted),
        if users.len() == 1 { "" } else { "s" },
        if users.len() == 1 { "that VM" } else { "those VMs" },
        if users.len() == 1 { "" } else { "s" },
    ))
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
        let lease = Conflict { holders: vec![], identity: "lease s/k".into(), ..c.clone() };
        let m = message(&lease);
        assert!(m.starts_with("lease s/k is held by a VM on another node"), "{m}");
        assert!(m.contains("run `virtdlm locks` on the other nodes"), "{m}");

        // A base image VMs read through their overlays: each overlay and VM is named.
        // Fails if `backing_message` is not consulted (the generic sentence names no overlay).
        let reader = |vm: &str, overlay: &str| LockInfo {
            identity: backing_note("/img/base.qcow2", overlay),
            mode: Mode::Pr,
            vm_name: vm.into(),
            ..c.holders[0].clone()
        };
        let base = Conflict {
            identity: "/img/base.qcow2".into(),
            holders: vec![reader("web-1", "/img/web-1.qcow2"), reader("web-2", "/img/web-2.qcow2")],
            ..c
        };
        assert_eq!(
            message(&base),
            "disk /img/base.qcow2 is the backing file of /img/web-1.qcow2, used by VM web-1 (uuid u-1) on node hv2 since \
             12:03:04 UTC; and of /img/web-2.qcow2, used by VM web-2 (uuid u-1) on node hv2 since 12:03:04 UTC; it cannot \
             be opened for exclusive writing while an overlay depends on it (writing it would corrupt the overlays). Stop \
             those VMs, or make the overlays independent of it first (virsh blockpull), or start this VM on an overlay of \
             its own (qemu-img create -f qcow2 -b /img/base.qcow2 -F <format> <new overlay>)"
        );
        assert_eq!(overlay_of(&backing_note("/a (x)", "/b")), Some("/b"));
        assert_eq!(overlay_of("/a (wwid:1)"), None);
    }
}
