//! `watch`: the live stream of lock changes. The one request not answered by a single frame:
//! the daemon answers [`crate::Op::Watch`] with the lock table as it stands
//! ([`crate::Response::Locks`]), then one [`crate::Response::Event`] per change, in the order the
//! daemon saw them, until the client closes the connection.
//!
//! A daemon in a cluster streams its own node's changes as it makes them and every other
//! node's as the cluster inventory delivers them, so one `watch` on any node follows the
//! whole cluster.

use crate::LockInfo;
use serde::{Deserialize, Serialize};

/// What happened to a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A VM was granted a disk or lease.
    Granted,
    /// A VM gave it back (pause, detach, its QEMU exited, an admin release, or its node's
    /// re-sent table no longer lists it).
    Released,
    /// The lock's node left the cluster: the lock may still be held until DLM recovery frees
    /// it or the node comes back.
    Left,
    /// The watcher fell behind and this many events were dropped: the table it built may be
    /// wrong; `virtdlm locks` shows the truth.
    Missed,
}

/// One change, as `virtdlm watch --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEvent {
    /// Milliseconds since the Unix epoch when the daemon saw the change.
    pub at_ms: u64,
    pub kind: EventKind,
    /// The lock (absent for [`EventKind::Missed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockInfo>,
    /// Why, when the daemon knows more than the kind says (e.g. "its QEMU process exited").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// For [`EventKind::Missed`]: how many events were dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
}

impl LockEvent {
    pub fn new(kind: EventKind, lock: LockInfo, why: Option<String>) -> Self {
        LockEvent { at_ms: now_ms(), kind, lock: Some(lock), why, missed: None }
    }

    pub fn missed(count: u64) -> Self {
        LockEvent { at_ms: now_ms(), kind: EventKind::Missed, lock: None, why: None, missed: Some(count) }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::Mode;

    #[test]
    fn an_event_s_json_is_what_scripts_read() {
        let lock = LockInfo {
            resource: "d1:abc".into(),
            identity: "/var/lib/libvirt/images/web.qcow2".into(),
            mode: Mode::Ex,
            vm_name: "web".into(),
            vm_uuid: "u".into(),
            pid: 7,
            node_name: "node2".into(),
            node_id: 2,
            since: 1,
            state: "held".into(),
        };
        let e = LockEvent { at_ms: 5, kind: EventKind::Granted, lock: Some(lock), why: None, missed: None };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "granted");
        assert_eq!(v["lock"]["node_name"], "node2");
        assert!(v.get("why").is_none() && v.get("missed").is_none());
        let back: LockEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!(serde_json::to_value(LockEvent::missed(3)).unwrap()["missed"], 3);
    }
}
