//! The inventory's messages over CPG: JSON with a version, each at most [`MAX_MESSAGE`] bytes.
//!
//! A daemon multicasts `grant` and `release` as its registry changes, and its whole table
//! (`state`) after every membership change, cut into parts that each fit the size limit.
//! Everything a node says about its locks is in this one place.

use crate::proto::LockInfo;
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change; messages of another version are ignored (and logged).
pub const WIRE_VERSION: u32 = 1;
/// Largest message we send or accept (corosync takes far larger ones; this keeps one
/// message's delivery short and a malicious or broken peer's cost bounded).
pub const MAX_MESSAGE: usize = 48 * 1024;

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
    Grant { lock: LockInfo },
    /// The sender's node released `resource` held by process `pid`.
    Release { resource: String, pid: u32 },
    /// Part `part` of the sender's full table; `last` closes it. Parts of one re-send carry
    /// the same `epoch` and arrive contiguously (one sender sends them back to back).
    State { epoch: u64, part: u32, last: bool, locks: Vec<LockInfo> },
}

/// What a lock change in the registry becomes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockChange {
    Granted(LockInfo),
    Released { resource: String, pid: u32 },
}

impl From<LockChange> for Body {
    fn from(c: LockChange) -> Body {
        match c {
            LockChange::Granted(lock) => Body::Grant { lock },
            LockChange::Released { resource, pid } => Body::Release { resource, pid },
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
    let mut parts: Vec<Vec<LockInfo>> = vec![Vec::new()];
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
        parts.last_mut().expect("never empty").push(l.clone());
    }
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .filter_map(|(i, locks)| {
            encode(&Body::State { epoch, part: i as u32, last: i + 1 == count, locks })
                .map_err(|e| tracing::error!("state part {i} not sent: {e}"))
                .ok()
        })
        .collect()
}

#[cfg(test)]
pub(crate) fn lock(resource: &str, pid: u32, vm: &str) -> LockInfo {
    LockInfo {
        resource: resource.into(),
        identity: format!("/images/{resource}.img"),
        mode: crate::mode::Mode::Ex,
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
    fn a_large_table_is_cut_into_parts_under_the_limit() {
        let locks: Vec<LockInfo> = (0..2000).map(|i| lock(&format!("d1:{i:060}"), i, "vm")).collect();
        let parts = state_parts(9, &locks);
        assert!(parts.len() > 1, "2000 locks need several parts");
        let mut seen = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            assert!(p.len() <= MAX_MESSAGE);
            match decode(p).unwrap() {
                Body::State { epoch, part, last, locks } => {
                    assert_eq!((epoch, part as usize, last), (9, i, i + 1 == parts.len()));
                    seen.extend(locks);
                }
                other => panic!("not a state part: {other:?}"),
            }
        }
        assert_eq!(seen, locks);
        let empty = state_parts(1, &[]);
        assert_eq!(decode(&empty[0]).unwrap(), Body::State { epoch: 1, part: 0, last: true, locks: vec![] });
    }
}
