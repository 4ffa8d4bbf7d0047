//! Totem ring ids: which membership a CPG or quorum notification belongs to.

use cpg_sys as sys;
use std::fmt;

/// A totem ring id: the node that formed the ring and the ring's sequence number.
/// CPG (totem confchg) and quorum report the same id for the same membership, which is how
/// the two views are matched up (`membership`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RingId {
    pub nodeid: u32,
    pub seq: u64,
}

impl From<sys::cpg_ring_id> for RingId {
    fn from(r: sys::cpg_ring_id) -> Self {
        RingId { nodeid: r.nodeid, seq: r.seq }
    }
}

impl From<sys::quorum_ring_id> for RingId {
    fn from(r: sys::quorum_ring_id) -> Self {
        RingId { nodeid: r.nodeid, seq: r.seq }
    }
}

/// `nodeid.seq` in hex, as `corosync-quorumtool` prints it ("Ring ID: 1.d").
impl fmt::Display for RingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}.{:x}", self.nodeid, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_c_ring_ids_map_to_the_same_value() {
        let c = RingId::from(sys::cpg_ring_id { nodeid: 1, seq: 13 });
        let q = RingId::from(sys::quorum_ring_id { nodeid: 1, seq: 13 });
        assert_eq!(c, q);
        assert_eq!(c.to_string(), "1.d");
        assert_ne!(c, RingId::from(sys::quorum_ring_id { nodeid: 2, seq: 13 }));
    }
}
