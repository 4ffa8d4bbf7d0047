//! The inventory's messages over CPG: JSON with a version, each at most [`MAX_MESSAGE`] bytes.
//!
//! A daemon multicasts its registry's lock changes as they happen, and its whole table
//! (`state`) after every membership change, cut into parts that each fit the size limit.
//! The changes go out as `changes` messages, several in each (a request's disks, and whatever
//! else was queued meanwhile), once every member has said in its `state` that it reads them
//! (`reads_changes`); until then, and always towards a daemon of the release before, which
//! reads only those, as one `grant` or `release` message per change. Each message costs
//! corosync a round of its protocol on every node: per change, that was most of the CPU of a
//! node starting many VMs at once (docs/PERFORMANCE.md, the evacuation case).
//! An administrator's `release --vm` for a VM whose locks are on another node travels as a
//! `release_vm` addressed to that node, answered by a `release_vm_reply` to the asker.
//! Everything a node says about its locks is in this one place.

use proto::mode::Mode;
use proto::LockInfo;
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change; messages of another version are ignored (and logged).
pub const WIRE_VERSION: u32 = 1;
/// Largest message we send or accept (corosync takes far larger ones; this keeps one
/// message's delivery short and a malicious or broken peer's cost bounded).
pub const MAX_MESSAGE: usize = 48 * 1024;

/// One lock as the inventory's messages carry it: this protocol's own type (versioned by
/// [`WIRE_VERSION`]), apart from the client protocol's `LockInfo` so that either can change
/// alone. The receiver sets `node_id` from the CPG sender, not from here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryLock {
    pub resource: String,
    pub identity: String,
    pub mode: Mode,
    pub vm_name: String,
    pub vm_uuid: String,
    pub pid: u32,
    pub node_name: String,
    pub node_id: u32,
    pub since: u64,
    #[serde(default = "InventoryLock::held")]
    pub state: String,
}

impl InventoryLock {
    fn held() -> String {
        "held".into()
    }
}

impl From<&LockInfo> for InventoryLock {
    fn from(l: &LockInfo) -> Self {
        InventoryLock {
            resource: l.resource.clone(),
            identity: l.identity.clone(),
            mode: l.mode,
            vm_name: l.vm_name.clone(),
            vm_uuid: l.vm_uuid.clone(),
            pid: l.pid,
            node_name: l.node_name.clone(),
            node_id: l.node_id,
            since: l.since,
            state: l.state.clone(),
        }
    }
}

impl From<InventoryLock> for LockInfo {
    fn from(l: InventoryLock) -> Self {
        LockInfo {
            resource: l.resource,
            identity: l.identity,
            mode: l.mode,
            vm_name: l.vm_name,
            vm_uuid: l.vm_uuid,
            pid: l.pid,
            node_name: l.node_name,
            node_id: l.node_id,
            since: l.since,
            state: l.state,
        }
    }
}

/// One message on the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub v: u32,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// The sender's node granted this lock.
    Grant { lock: InventoryLock },
    /// The sender's node released `resource` held by process `pid`.
    Release { resource: String, pid: u32 },
    /// Lock changes of the sender's node, in the order it made them.
    Changes { items: Vec<Item> },
    /// Part `part` of the sender's full table; `last` closes it. Parts of one re-send carry
    /// the same `epoch` and arrive contiguously (one sender sends them back to back).
    /// `reads_changes`: the sender reads `changes` messages (absent from a daemon of the
    /// release before: false).
    State {
        epoch: u64,
        part: u32,
        last: bool,
        locks: Vec<InventoryLock>,
        #[serde(default)]
        reads_changes: bool,
    },
    /// Node `to` is asked to release every lock of VM `uuid` under its own rules (refused
    /// while the VM's QEMU runs there unless `force`). `req` is the asker's request id.
    ReleaseVm { to: u32, req: u64, uuid: String, force: bool },
    /// The answer of the node asked, to node `to` (the asker) about its request `req`.
    ReleaseVmReply { to: u32, req: u64, outcome: ReleaseOutcome },
}

/// One lock change in a `changes` message: what a `grant` or `release` message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Item {
    Grant { lock: InventoryLock },
    Release { resource: String, pid: u32 },
}

impl From<Item> for Body {
    fn from(i: Item) -> Body {
        match i {
            Item::Grant { lock } => Body::Grant { lock },
            Item::Release { resource, pid } => Body::Release { resource, pid },
        }
    }
}

impl From<LockChange> for Item {
    fn from(c: LockChange) -> Item {
        match c {
            LockChange::Granted(lock) => Item::Grant { lock: (&lock).into() },
            LockChange::Released(lock) => Item::Release { resource: lock.resource, pid: lock.pid },
        }
    }
}

/// What the node asked did with a forwarded `release_vm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReleaseOutcome {
    /// It released these locks (`count` of them; the list may be cut short to fit a message).
    Released { count: u32, locks: Vec<InventoryLock> },
    /// Refused: VM `vm` still runs there (as `pid`, when it holds a lock to name it by).
    Running {
        vm: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
    /// No VM with that uuid holds or registered locks there.
    UnknownVm,
    /// It could not release (journal, backend): its own sentence.
    Failed { message: String },
}

impl ReleaseOutcome {
    /// Below a message's size limit whatever it holds: a long lock list is cut, the count stays.
    pub fn fitted(self) -> ReleaseOutcome {
        match self {
            ReleaseOutcome::Released { count, mut locks } => {
                let room =
                    |l: &[InventoryLock]| serde_json::to_vec(l).map(|b| b.len() + 512 <= MAX_MESSAGE).unwrap_or(false);
                while !locks.is_empty() && !room(&locks) {
                    locks.truncate(locks.len() / 2);
                }
                ReleaseOutcome::Released { count, locks }
            }
            ReleaseOutcome::Failed { mut message } => {
                if message.len() > 4096 {
                    let mut cut = 4096;
                    while !message.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    message.truncate(cut);
                }
                ReleaseOutcome::Failed { message }
            }
            other => other,
        }
    }
}

pub use crate::registry::LockChange;

impl From<LockChange> for Body {
    fn from(c: LockChange) -> Body {
        match c {
            LockChange::Granted(lock) => Body::Grant { lock: (&lock).into() },
            LockChange::Released(lock) => Body::Release { resource: lock.resource, pid: lock.pid },
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message of {0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("message version {0} is not {WIRE_VERSION}")]
    Version(u32),
    #[error("malformed message: {0}")]
    Malformed(String),
}

pub fn encode(body: &Body) -> Result<Vec<u8>, WireError> {
    let msg = Message { v: WIRE_VERSION, body: body.clone() };
    let bytes = serde_json::to_vec(&msg).map_err(|e| WireError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

pub fn decode(bytes: &[u8]) -> Result<Body, WireError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge(bytes.len()));
    }
    #[derive(Deserialize)]
    struct VersionOnly {
        v: u32,
    }
    let v: VersionOnly = serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if v.v != WIRE_VERSION {
        return Err(WireError::Version(v.v));
    }
    let m: Message = serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    Ok(m.body)
}

/// The full table as `state` messages, each under the size limit (one empty part when the
/// table is empty, so that "holds nothing" is said too). A single lock too large for a
/// message cannot happen (names and paths are bounded far below it) and is left out, logged.
pub fn state_parts(epoch: u64, locks: &[LockInfo]) -> Vec<Vec<u8>> {
    let mut parts: Vec<Vec<InventoryLock>> = vec![Vec::new()];
    let mut size = 0usize;
    // Room for the envelope; each lock's JSON is measured on its own.
    const ENVELOPE: usize = 128;
    for l in locks {
        let n = serde_json::to_vec(l).map(|b| b.len() + 1).unwrap_or(usize::MAX);
        if n + ENVELOPE > MAX_MESSAGE {
            tracing::error!(disk = %l.identity, "lock entry of {n} bytes cannot be announced to the cluster");
            continue;
        }
        if size + n + ENVELOPE > MAX_MESSAGE {
            parts.push(Vec::new());
            size = 0;
        }
        size += n;
        parts.last_mut().expect("never empty").push(l.into());
    }
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .filter_map(|(i, locks)| {
            encode(&Body::State { epoch, part: i as u32, last: i + 1 == count, locks, reads_changes: true })
                .map_err(|e| tracing::error!("state part {i} not sent: {e}"))
                .ok()
        })
        .collect()
}

/// This node's lock changes as messages, in order: `changes` messages each under the size
/// limit when `batched` (every member reads them), else one `grant` or `release` each.
pub fn change_messages(changes: Vec<LockChange>, batched: bool) -> Vec<Vec<u8>> {
    let not_sent = |e: WireError| tracing::error!("inventory message not sent: {e}");
    if !batched {
        return changes.into_iter().filter_map(|c| encode(&Body::from(c)).map_err(not_sent).ok()).collect();
    }
    const ENVELOPE: usize = 64;
    let mut messages: Vec<Vec<Item>> = vec![Vec::new()];
    let mut size = 0usize;
    for c in changes {
        let item = Item::from(c);
        let n = serde_json::to_vec(&item).map(|b| b.len() + 1).unwrap_or(usize::MAX);
        if size + n + ENVELOPE > MAX_MESSAGE && size > 0 {
            messages.push(Vec::new());
            size = 0;
        }
        size += n;
        messages.last_mut().expect("never empty").push(item);
    }
    messages
        .into_iter()
        .filter(|items| !items.is_empty())
        .filter_map(|items| encode(&Body::Changes { items }).map_err(not_sent).ok())
        .collect()
}

#[cfg(test)]
pub(crate) fn lock(resource: &str, pid: u32, vm: &str) -> InventoryLock {
    InventoryLock {
        resource: resource.into(),
        identity: format!("/images/{resource}.img"),
        mode: proto::mode::Mode::Ex,
        vm_name: vm.into(),
        vm_uuid: "11111111-2222-3333-4444-555555555555".into(),
        pid,
        node_name: "hv2".into(),
        node_id: 2,
        since: 1_700_000_000,
        state: "held".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_stable_form() {
        let b = Body::Release { resource: "d1:ab".into(), pid: 7 };
        let bytes = encode(&b).unwrap();
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), r#"{"v":1,"kind":"release","resource":"d1:ab","pid":7}"#);
        assert_eq!(decode(&bytes).unwrap(), b);
        let g = Body::Grant { lock: lock("d1:ab", 7, "web-3") };
        assert_eq!(decode(&encode(&g).unwrap()).unwrap(), g);
    }

    #[test]
    fn refuses_other_versions_garbage_and_oversize() {
        assert_eq!(decode(br#"{"v":2,"kind":"release","resource":"x","pid":1}"#), Err(WireError::Version(2)));
        assert!(matches!(decode(b"\xff\x00"), Err(WireError::Malformed(_))));
        assert!(matches!(decode(br#"{"v":1,"kind":"frobnicate"}"#), Err(WireError::Malformed(_))));
        let big = vec![b' '; MAX_MESSAGE + 1];
        assert_eq!(decode(&big), Err(WireError::TooLarge(MAX_MESSAGE + 1)));
    }

    #[test]
    fn release_vm_messages_round_trip_in_a_stable_form() {
        let q = Body::ReleaseVm { to: 2, req: 77, uuid: "0c0ffee0-0000-4000-8000-000000000002".into(), force: true };
        let bytes = encode(&q).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"v":1,"kind":"release_vm","to":2,"req":77,"uuid":"0c0ffee0-0000-4000-8000-000000000002","force":true}"#
        );
        assert_eq!(decode(&bytes).unwrap(), q);
        let running = Body::ReleaseVmReply {
            to: 1,
            req: 77,
            outcome: ReleaseOutcome::Running { vm: "web-2".into(), pid: Some(42) },
        };
        let bytes = encode(&running).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"v":1,"kind":"release_vm_reply","to":1,"req":77,"outcome":{"outcome":"running","vm":"web-2","pid":42}}"#
        );
        for outcome in [
            ReleaseOutcome::Released { count: 1, locks: vec![lock("d1:a", 42, "web-2")] },
            ReleaseOutcome::UnknownVm,
            ReleaseOutcome::Failed { message: "journal full".into() },
        ] {
            let r = Body::ReleaseVmReply { to: 1, req: 3, outcome };
            assert_eq!(decode(&encode(&r).unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn an_inventory_lock_reads_as_peers_running_the_client_protocol_s_type_sent_it() {
        // Daemons of the previous release multicast the client protocol's `LockInfo` itself.
        let info: LockInfo = lock("d1:ab", 7, "web-3").into();
        let old = serde_json::to_value(&info).unwrap();
        assert_eq!(serde_json::to_value(InventoryLock::from(&info)).unwrap(), old);
        assert_eq!(LockInfo::from(serde_json::from_value::<InventoryLock>(old).unwrap()), info);
    }

    #[test]
    fn a_huge_release_reply_is_fitted_under_the_limit() {
        let locks: Vec<InventoryLock> = (0..2000).map(|i| lock(&format!("d1:{i:060}"), 9, "vm")).collect();
        let outcome = ReleaseOutcome::Released { count: 2000, locks }.fitted();
        let bytes = encode(&Body::ReleaseVmReply { to: 1, req: 1, outcome }).expect("fits after fitting");
        match decode(&bytes).unwrap() {
            Body::ReleaseVmReply { outcome: ReleaseOutcome::Released { count, locks }, .. } => {
                assert_eq!(count, 2000);
                assert!(!locks.is_empty() && locks.len() < 2000);
            }
            other => panic!("not a released reply: {other:?}"),
        }
        let long = ReleaseOutcome::Failed { message: "é".repeat(MAX_MESSAGE) }.fitted();
        assert!(encode(&Body::ReleaseVmReply { to: 1, req: 1, outcome: long }).is_ok());
    }

    #[test]
    fn a_large_table_is_cut_into_parts_under_the_limit() {
        let locks: Vec<LockInfo> = (0..2000).map(|i| lock(&format!("d1:{i:060}"), i, "vm").into()).collect();
        let parts = state_parts(9, &locks);
        assert!(parts.len() > 1, "2000 locks need several parts");
        let mut seen = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            assert!(p.len() <= MAX_MESSAGE);
            match decode(p).unwrap() {
                Body::State { epoch, part, last, locks, reads_changes } => {
                    assert_eq!((epoch, part as usize, last, reads_changes), (9, i, i + 1 == parts.len(), true));
                    seen.extend(locks.into_iter().map(LockInfo::from));
                }
                other => panic!("not a state part: {other:?}"),
            }
        }
        assert_eq!(seen, locks);
        let empty = state_parts(1, &[]);
        assert_eq!(
            decode(&empty[0]).unwrap(),
            Body::State { epoch: 1, part: 0, last: true, locks: vec![], reads_changes: true }
        );
    }

    /// A daemon of the release before sends `state` without `reads_changes`, and reads only
    /// `grant` and `release`; fields it does not know are ignored on either side.
    #[test]
    fn state_of_the_release_before_reads_as_not_reading_changes() {
        let old = br#"{"v":1,"kind":"state","epoch":3,"part":0,"last":true,"locks":[]}"#;
        assert_eq!(
            decode(old).unwrap(),
            Body::State { epoch: 3, part: 0, last: true, locks: vec![], reads_changes: false }
        );
        let newer = br#"{"v":1,"kind":"release","resource":"d1:a","pid":4,"later_field":1}"#;
        assert_eq!(decode(newer).unwrap(), Body::Release { resource: "d1:a".into(), pid: 4 });
    }

    fn granted(resource: &str, pid: u32) -> LockChange {
        LockChange::Granted(lock(resource, pid, "vm").into())
    }
    fn released(resource: &str, pid: u32) -> LockChange {
        LockChange::Released(lock(resource, pid, "vm").into())
    }

    #[test]
    fn changes_go_one_per_message_unless_every_member_reads_batches() {
        let cs = vec![granted("d1:a", 1), released("d1:a", 1), granted("d1:a", 2)];
        let singles = change_messages(cs.clone(), false);
        let want: Vec<Body> = cs.iter().cloned().map(Body::from).collect();
        assert_eq!(singles.iter().map(|m| decode(m).unwrap()).collect::<Vec<_>>(), want);
        let batched = change_messages(cs.clone(), true);
        assert_eq!(batched.len(), 1);
        assert_eq!(
            std::str::from_utf8(&batched[0]).unwrap().get(..40),
            Some(r#"{"v":1,"kind":"changes","items":[{"kind""#)
        );
        match decode(&batched[0]).unwrap() {
            Body::Changes { items } => assert_eq!(items.into_iter().map(Body::from).collect::<Vec<_>>(), want),
            other => panic!("not a changes message: {other:?}"),
        }
        assert!(change_messages(Vec::new(), true).is_empty());
    }

    #[test]
    fn many_changes_are_cut_into_messages_under_the_limit_in_order() {
        let cs: Vec<LockChange> = (0..2000).map(|i| granted(&format!("d1:{i:060}"), i)).collect();
        let msgs = change_messages(cs.clone(), true);
        assert!(msgs.len() > 1);
        let mut seen = Vec::new();
        for m in &msgs {
            assert!(m.len() <= MAX_MESSAGE);
            match decode(m).unwrap() {
                Body::Changes { items } => seen.extend(items.into_iter().map(Body::from)),
                other => panic!("not a changes message: {other:?}"),
            }
        }
        assert_eq!(seen, cs.into_iter().map(Body::from).collect::<Vec<_>>());
    }
}
