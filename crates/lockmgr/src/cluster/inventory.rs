//! The cluster-wide lock table, built only from what CPG delivers (so every member that saw
//! the same deliveries holds the same table).
//!
//! Rules:
//! - `grant`/`release` from a member add/remove one entry of the sender's node.
//! - A `state` re-send (sent by every member after every membership change) replaces
//!   **all** entries of the sender's node id once its last part arrives — including entries
//!   of an earlier daemon on that node that are marked `left`. So a node that joins late has
//!   the full picture after the first membership change it sees (its own join).
//! - A member that leaves (daemon stopped or crashed, node down or cut off) keeps its entries,
//!   marked `left`: its locks may still be held (persistent DLM locks of a crashed daemon) or
//!   may be freed by DLM recovery on the quorate side; nothing here can tell which. They are
//!   cleared when a daemon on that node id joins again and re-sends its state.
//! - Entries carry the node id the sender has in the group, not the one it wrote.

use super::wire::Body;
use corosync::Address;
use proto::watch::EventKind;
use proto::LockInfo;
use std::collections::{BTreeMap, HashMap, HashSet};

/// `state` of an entry whose member left the group.
pub const LEFT: &str = "left";

type Key = (u32, String, u32); // node id, resource, pid

/// One change of the table, as `watch` shows it.
pub type Change = (EventKind, LockInfo);

#[derive(Debug, Clone)]
struct Entry {
    from: Address,
    info: LockInfo,
}

#[derive(Debug, Default)]
pub struct Inventory {
    entries: BTreeMap<Key, Entry>,
    /// State re-sends in progress, per sender: (epoch, parts so far).
    pending: HashMap<Address, (u64, Vec<super::wire::InventoryLock>)>,
    /// Members whose last `state` said they read `changes` messages.
    reads_changes: HashSet<Address>,
}

impl Inventory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one delivered message; returns what changed in the table (for `watch`).
    pub fn deliver(&mut self, sender: Address, body: Body) -> Vec<Change> {
        match body {
            Body::Grant { lock } => {
                let mut lock = LockInfo::from(lock);
                lock.node_id = sender.nodeid;
                lock.state = "held".into();
                let key = (sender.nodeid, lock.resource.clone(), lock.pid);
                self.entries.insert(key, Entry { from: sender, info: lock.clone() });
                vec![(EventKind::Granted, lock)]
            }
            Body::Release { resource, pid } => self
                .entries
                .remove(&(sender.nodeid, resource, pid))
                .map(|e| (EventKind::Released, e.info))
                .into_iter()
                .collect(),
            Body::Changes { items } => items.into_iter().flat_map(|i| self.deliver(sender, i.into())).collect(),
            Body::State { epoch, part, last, locks, reads_changes } => {
                if reads_changes {
                    self.reads_changes.insert(sender);
                } else {
                    self.reads_changes.remove(&sender);
                }
                let acc = self.pending.entry(sender).or_insert_with(|| (epoch, Vec::new()));
                if part == 0 || acc.0 != epoch {
                    *acc = (epoch, Vec::new());
                }
                acc.1.extend(locks);
                if !last {
                    return Vec::new();
                }
                let (_, locks) = self.pending.remove(&sender).expect("inserted above");
                let mut before: BTreeMap<Key, Entry> = BTreeMap::new();
                self.entries.retain(|k, e| {
                    if k.0 == sender.nodeid {
                        before.insert(k.clone(), e.clone());
                    }
                    k.0 != sender.nodeid
                });
                let mut changes = Vec::new();
                for lock in locks {
                    let mut lock = LockInfo::from(lock);
                    lock.node_id = sender.nodeid;
                    lock.state = "held".into();
                    let key = (sender.nodeid, lock.resource.clone(), lock.pid);
                    // Unchanged entries are no event; one back from `left` is granted again.
                    if before.remove(&key).is_none_or(|old| old.info != lock) {
                        changes.push((EventKind::Granted, lock.clone()));
                    }
                    self.entries.insert(key, Entry { from: sender, info: lock });
                }
                changes.extend(before.into_values().map(|e| (EventKind::Released, e.info)));
                changes
            }
            // Forwarded releases are not the table's (the task routes them to `release`).
            Body::ReleaseVm { .. } | Body::ReleaseVmReply { .. } => Vec::new(),
        }
    }

    /// A member left the group: its entries stay, marked `left`; a half-received re-send of
    /// it is dropped. Returns the entries marked.
    pub fn member_left(&mut self, who: Address) -> Vec<Change> {
        self.pending.remove(&who);
        self.reads_changes.remove(&who);
        let mut changes = Vec::new();
        for e in self.entries.values_mut().filter(|e| e.from == who && e.info.state != LEFT) {
            e.info.state = LEFT.into();
            changes.push((EventKind::Left, e.info.clone()));
        }
        changes
    }

    /// Every entry, sorted by identity then node.
    /// Whether every one of `members` reads `changes` messages (said so in its last `state`;
    /// a member not heard from yet, just joined, does not count as reading them).
    pub fn all_read_changes(&self, members: &[Address]) -> bool {
        members.iter().all(|m| self.reads_changes.contains(m))
    }

    pub fn locks(&self) -> Vec<LockInfo> {
        let mut v: Vec<LockInfo> = self.entries.values().map(|e| e.info.clone()).collect();
        v.sort_by(|a, b| (&a.identity, a.node_id, &a.vm_name).cmp(&(&b.identity, b.node_id, &b.vm_name)));
        v
    }

    /// Entries of nodes other than `node_id`.
    pub fn others(&self, node_id: u32) -> Vec<LockInfo> {
        self.locks().into_iter().filter(|l| l.node_id != node_id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::{decode, lock, state_parts, InventoryLock};
    use super::*;

    const A: Address = Address { nodeid: 1, pid: 100 };
    const B: Address = Address { nodeid: 2, pid: 200 };

    fn state(epoch: u64, locks: Vec<InventoryLock>) -> Body {
        Body::State { epoch, part: 0, last: true, locks, reads_changes: true }
    }
    fn summary(inv: &Inventory) -> Vec<(u32, String, u32, String)> {
        inv.locks().into_iter().map(|l| (l.node_id, l.resource, l.pid, l.state)).collect()
    }

    #[test]
    fn grant_and_release_of_a_member() {
        let mut inv = Inventory::new();
        inv.deliver(B, Body::Grant { lock: lock("d1:a", 7, "web-3") });
        assert_eq!(summary(&inv), [(2, "d1:a".into(), 7, "held".into())]);
        // A release from another node does not touch B's entry.
        inv.deliver(A, Body::Release { resource: "d1:a".into(), pid: 7 });
        assert_eq!(inv.locks().len(), 1);
        inv.deliver(B, Body::Release { resource: "d1:a".into(), pid: 7 });
        assert!(inv.locks().is_empty());
    }

    #[test]
    fn each_delivery_says_what_changed_for_watch() {
        let kinds = |c: Vec<Change>| c.into_iter().map(|(k, l)| (k, l.resource, l.node_id)).collect::<Vec<_>>();
        let mut inv = Inventory::new();
        assert_eq!(
            kinds(inv.deliver(B, Body::Grant { lock: lock("d1:a", 7, "web-3") })),
            [(EventKind::Granted, "d1:a".into(), 2)]
        );
        // A release of something not in the table changes nothing.
        assert!(inv.deliver(B, Body::Release { resource: "d1:zz".into(), pid: 7 }).is_empty());
        assert_eq!(kinds(inv.member_left(B)), [(EventKind::Left, "d1:a".into(), 2)]);
        assert!(inv.member_left(B).is_empty(), "marked once");
        // The node's re-send after a heal: d1:a back (granted again, no longer left), d1:b new;
        // a second identical re-send changes nothing; one without d1:a releases it.
        let re = state(2, vec![lock("d1:a", 7, "web-3"), lock("d1:b", 8, "db")]);
        assert_eq!(
            kinds(inv.deliver(B, re.clone())),
            [(EventKind::Granted, "d1:a".into(), 2), (EventKind::Granted, "d1:b".into(), 2)]
        );
        assert!(inv.deliver(B, state(3, vec![lock("d1:a", 7, "web-3"), lock("d1:b", 8, "db")])).is_empty());
        assert_eq!(
            kinds(inv.deliver(B, state(4, vec![lock("d1:b", 8, "db")]))),
            [(EventKind::Released, "d1:a".into(), 2)]
        );
        assert_eq!(
            kinds(inv.deliver(B, Body::Release { resource: "d1:b".into(), pid: 8 })),
            [(EventKind::Released, "d1:b".into(), 2)]
        );
    }

    #[test]
    fn the_sender_decides_the_node_id() {
        let mut inv = Inventory::new();
        let mut l = lock("d1:a", 7, "web-3");
        l.node_id = 99;
        inv.deliver(A, Body::Grant { lock: l });
        assert_eq!(inv.locks()[0].node_id, 1);
    }

    #[test]
    fn a_late_joiner_gets_the_full_picture_from_re_sends() {
        let mut late = Inventory::new();
        late.deliver(B, state(1, vec![lock("d1:a", 7, "web-3"), lock("d1:b", 8, "db-1")]));
        late.deliver(A, state(1, vec![]));
        assert_eq!(summary(&late).len(), 2);
        // A re-send replaces what that node said before (d1:a was released meanwhile).
        late.deliver(B, state(2, vec![lock("d1:b", 8, "db-1")]));
        assert_eq!(summary(&late), [(2, "d1:b".into(), 8, "held".into())]);
    }

    #[test]
    fn a_multi_part_re_send_applies_at_its_last_part() {
        let locks: Vec<LockInfo> = (0..1500).map(|i| lock(&format!("d1:{i:060}"), i, "vm").into()).collect();
        let parts = state_parts(3, &locks);
        assert!(parts.len() > 1);
        let mut inv = Inventory::new();
        inv.deliver(B, Body::Grant { lock: lock("d1:old", 1, "gone") });
        inv.deliver(B, decode(&parts[0]).unwrap());
        assert_eq!(summary(&inv).len(), 1, "nothing replaced before the last part");
        for p in &parts[1..] {
            inv.deliver(B, decode(p).unwrap());
        }
        assert_eq!(inv.locks().len(), 1500);
        assert!(inv.locks().iter().all(|l| l.resource != "d1:old"));
    }

    #[test]
    fn leave_marks_left_and_a_rejoin_re_send_clears() {
        let mut inv = Inventory::new();
        inv.deliver(A, Body::Grant { lock: lock("d1:a", 7, "web-1") });
        inv.deliver(B, Body::Grant { lock: lock("d1:b", 8, "web-2") });
        inv.member_left(B);
        assert_eq!(summary(&inv), [(1, "d1:a".into(), 7, "held".into()), (2, "d1:b".into(), 8, LEFT.into())]);
        // Re-sends of the remaining members do not clear the departed node's entries.
        inv.deliver(A, state(5, vec![lock("d1:a", 7, "web-1")]));
        assert_eq!(summary(&inv)[1].3, LEFT);
        // A new daemon on node 2 (another pid) joins and re-sends: its word replaces the old.
        let b2 = Address { nodeid: 2, pid: 201 };
        inv.deliver(b2, state(1, vec![lock("d1:c", 9, "web-9")]));
        assert_eq!(summary(&inv), [(1, "d1:a".into(), 7, "held".into()), (2, "d1:c".into(), 9, "held".into())]);
    }

    #[test]
    fn a_heal_re_send_restores_held() {
        let mut inv = Inventory::new();
        inv.deliver(B, Body::Grant { lock: lock("d1:b", 8, "web-2") });
        inv.member_left(B);
        inv.deliver(B, state(2, vec![lock("d1:b", 8, "web-2")]));
        assert_eq!(summary(&inv), [(2, "d1:b".into(), 8, "held".into())]);
    }

    #[test]
    fn a_re_send_cut_short_by_a_leave_is_dropped() {
        let mut inv = Inventory::new();
        inv.deliver(B, Body::Grant { lock: lock("d1:b", 8, "web-2") });
        inv.deliver(B, Body::State { epoch: 4, part: 0, last: false, locks: vec![], reads_changes: true });
        inv.member_left(B);
        assert_eq!(summary(&inv), [(2, "d1:b".into(), 8, LEFT.into())]);
        // Its next re-send starts over (new epoch), not where the cut one stopped.
        inv.deliver(
            B,
            Body::State { epoch: 5, part: 0, last: false, locks: vec![lock("d1:x", 1, "x")], reads_changes: true },
        );
        inv.deliver(A, state(1, vec![]));
        inv.deliver(
            B,
            Body::State { epoch: 5, part: 1, last: true, locks: vec![lock("d1:y", 2, "y")], reads_changes: true },
        );
        let names: Vec<String> = inv.locks().into_iter().map(|l| l.resource).collect();
        assert_eq!(names, ["d1:x", "d1:y"]);
    }

    #[test]
    fn a_changes_message_applies_its_items_in_order() {
        use super::super::wire::Item;
        let mut inv = Inventory::new();
        let items = vec![
            Item::Grant { lock: lock("d1:a", 7, "web-3") },
            Item::Release { resource: "d1:a".into(), pid: 7 },
            Item::Grant { lock: lock("d1:b", 7, "web-3") },
        ];
        let events = inv.deliver(B, Body::Changes { items });
        assert_eq!(events.len(), 3);
        assert_eq!(summary(&inv), [(2, "d1:b".into(), 7, "held".into())]);
    }

    /// Batched changes only once every member said it reads them: a member just joined (no
    /// state yet), one of the release before, or one that left and came back does not.
    #[test]
    fn batches_only_when_every_member_reads_them() {
        let mut inv = Inventory::new();
        assert!(!inv.all_read_changes(&[A, B]), "nobody heard from yet");
        inv.deliver(A, state(1, vec![]));
        assert!(inv.all_read_changes(&[A]));
        assert!(!inv.all_read_changes(&[A, B]), "B joined, no state from it yet");
        inv.deliver(B, Body::State { epoch: 1, part: 0, last: true, locks: vec![], reads_changes: false });
        assert!(!inv.all_read_changes(&[A, B]), "B is of the release before");
        inv.deliver(B, state(2, vec![]));
        assert!(inv.all_read_changes(&[A, B]));
        inv.member_left(B);
        assert!(!inv.all_read_changes(&[A, B]), "B back: not until its next state");
    }
}
