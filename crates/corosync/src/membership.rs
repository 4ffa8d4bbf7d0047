//! When this node may act on cluster state: the rule dlm_controld follows.
//!
//! CPG alone has no notion of quorum (after a partition each side carries on with its own
//! group), and quorum alone says nothing about which CPG configuration we are in. A node may
//! act only when its partition is quorate **and** the CPG totem ring it has seen is the ring
//! quorum was computed for: then the CPG members we know are exactly the quorate membership.
//! Pure logic over [`CpgEvent`]s and [`QuorumEvent`]s; no corosync needed.

use super::cpg::{Address, CpgEvent};
use super::quorum::QuorumEvent;
use super::ring::RingId;
use std::fmt;

/// Whether this node may act, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Quorate, and the CPG ring is the quorum ring.
    Safe,
    /// Our own join has not been delivered yet.
    NotJoined,
    /// No quorum notification yet.
    NoQuorumYet,
    /// Our partition has no quorum.
    Inquorate,
    /// Quorate, but CPG has not (yet) seen the ring quorum speaks of: a membership change
    /// is being delivered. Wait for the next event.
    Settling { cpg: Option<RingId>, quorum: RingId },
    /// We were a member and are no longer: our own leave/removal was delivered, or corosync
    /// went away. Everything held through the cluster must be considered lost.
    Lost,
}

impl Verdict {
    /// The verdict's name without its ring ids (`settling` for every `Settling`).
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Safe => "safe",
            Verdict::NotJoined => "not-joined",
            Verdict::NoQuorumYet => "no-quorum-yet",
            Verdict::Inquorate => "inquorate",
            Verdict::Settling { .. } => "settling",
            Verdict::Lost => "lost",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Settling { cpg: Some(c), quorum } => write!(f, "settling(cpg {c}, quorum {quorum})"),
            Verdict::Settling { cpg: None, quorum } => {
                write!(f, "settling(cpg none, quorum {quorum})")
            }
            v => f.write_str(v.kind()),
        }
    }
}

/// This node's view combined from CPG and quorum events.
#[derive(Debug, Clone)]
pub struct MembershipView {
    me: Address,
    in_group: bool,
    lost: bool,
    cpg_ring: Option<RingId>,
    quorum: Option<(bool, RingId)>,
}

impl MembershipView {
    /// `me` is [`super::Cpg::me`].
    pub fn new(me: Address) -> Self {
        MembershipView { me, in_group: false, lost: false, cpg_ring: None, quorum: None }
    }

    /// Feeds a CPG event; returns the new verdict if it changed.
    pub fn on_cpg(&mut self, ev: &CpgEvent) -> Option<Verdict> {
        let before = self.verdict();
        match ev {
            CpgEvent::ConfChg { left, joined, .. } => {
                if joined.iter().any(|c| c.addr == self.me) {
                    self.in_group = true;
                    self.lost = false;
                }
                if left.iter().any(|c| c.addr == self.me) {
                    self.in_group = false;
                    self.lost = true;
                }
            }
            CpgEvent::TotemConfChg { ring_id, .. } => self.cpg_ring = Some(*ring_id),
            CpgEvent::Deliver { .. } => {}
        }
        self.changed(before)
    }

    /// Feeds a quorum event; returns the new verdict if it changed.
    pub fn on_quorum(&mut self, ev: &QuorumEvent) -> Option<Verdict> {
        let before = self.verdict();
        if let QuorumEvent::Quorum { quorate, ring_id, .. } = ev {
            self.quorum = Some((*quorate, *ring_id));
        }
        self.changed(before)
    }

    /// corosync went away (a dispatch returned `Error::NotRunning`); returns the new verdict
    /// if it changed.
    pub fn on_corosync_lost(&mut self) -> Option<Verdict> {
        let before = self.verdict();
        if self.in_group {
            self.lost = true;
        }
        self.in_group = false;
        self.changed(before)
    }

    fn changed(&self, before: Verdict) -> Option<Verdict> {
        let now = self.verdict();
        (now != before).then_some(now)
    }

    pub fn verdict(&self) -> Verdict {
        if self.lost {
            return Verdict::Lost;
        }
        if !self.in_group {
            return Verdict::NotJoined;
        }
        let Some((quorate, quorum)) = self.quorum else {
            return Verdict::NoQuorumYet;
        };
        if !quorate {
            return Verdict::Inquorate;
        }
        if self.cpg_ring != Some(quorum) {
            return Verdict::Settling { cpg: self.cpg_ring, quorum };
        }
        Verdict::Safe
    }

    /// `verdict() == Verdict::Safe`.
    pub fn safe_to_act(&self) -> bool {
        self.verdict() == Verdict::Safe
    }

    /// True once we were removed from the group or corosync went away.
    pub fn is_lost(&self) -> bool {
        self.lost
    }
}

#[cfg(test)]
mod tests {
    use super::super::cpg::{Change, Reason};
    use super::*;

    const ME: Address = Address { nodeid: 1, pid: 100 };
    const OTHER: Address = Address { nodeid: 2, pid: 200 };

    fn ring(seq: u64) -> RingId {
        RingId { nodeid: 1, seq }
    }
    fn confchg(members: &[Address], left: &[(Address, Reason)], joined: &[(Address, Reason)]) -> CpgEvent {
        let ch = |l: &[(Address, Reason)]| l.iter().map(|&(addr, reason)| Change { addr, reason }).collect();
        CpgEvent::ConfChg { members: members.to_vec(), left: ch(left), joined: ch(joined) }
    }
    fn totem(seq: u64) -> CpgEvent {
        CpgEvent::TotemConfChg { ring_id: ring(seq), members: vec![1, 2] }
    }
    fn quorum(quorate: bool, seq: u64) -> QuorumEvent {
        QuorumEvent::Quorum { quorate, ring_id: ring(seq), members: vec![1, 2] }
    }
    fn joined_view() -> MembershipView {
        let mut v = MembershipView::new(ME);
        v.on_cpg(&confchg(&[ME], &[], &[(ME, Reason::Join)]));
        v
    }

    #[test]
    fn safe_needs_join_quorum_and_equal_rings() {
        let mut v = MembershipView::new(ME);
        assert_eq!(v.verdict(), Verdict::NotJoined);
        assert_eq!(v.on_quorum(&quorum(true, 5)), None); // still not joined
        assert_eq!(
            v.on_cpg(&confchg(&[ME], &[], &[(ME, Reason::Join)])),
            Some(Verdict::Settling { cpg: None, quorum: ring(5) })
        );
        assert_eq!(v.on_cpg(&totem(5)), Some(Verdict::Safe));
        assert!(v.safe_to_act());
    }

    #[test]
    fn waits_for_quorum() {
        let mut v = joined_view();
        v.on_cpg(&totem(5));
        assert_eq!(v.verdict(), Verdict::NoQuorumYet);
        assert_eq!(v.on_quorum(&quorum(true, 5)), Some(Verdict::Safe));
    }

    #[test]
    fn ring_mismatch_is_not_safe_until_cpg_catches_up() {
        let mut v = joined_view();
        v.on_cpg(&totem(5));
        v.on_quorum(&quorum(true, 5));
        assert!(v.safe_to_act());
        // Quorum learns of ring 6 before CPG delivers it.
        assert_eq!(v.on_quorum(&quorum(true, 6)), Some(Verdict::Settling { cpg: Some(ring(5)), quorum: ring(6) }));
        assert!(!v.safe_to_act());
        assert_eq!(v.on_cpg(&totem(6)), Some(Verdict::Safe));
        // And the other way round: CPG first.
        assert_eq!(v.on_cpg(&totem(7)), Some(Verdict::Settling { cpg: Some(ring(7)), quorum: ring(6) }));
        assert_eq!(v.on_quorum(&quorum(true, 7)), Some(Verdict::Safe));
        // Same seq, different ring leader: a different ring.
        assert!(v.on_cpg(&CpgEvent::TotemConfChg { ring_id: RingId { nodeid: 2, seq: 7 }, members: vec![] }).is_some());
        assert!(!v.safe_to_act());
    }

    #[test]
    fn losing_quorum_is_unsafe_even_with_equal_rings() {
        let mut v = joined_view();
        v.on_cpg(&totem(5));
        v.on_quorum(&quorum(true, 5));
        v.on_cpg(&totem(6));
        assert_eq!(v.on_quorum(&quorum(false, 6)), Some(Verdict::Inquorate));
        assert_eq!(v.on_quorum(&quorum(true, 8)), Some(Verdict::Settling { cpg: Some(ring(6)), quorum: ring(8) }));
        assert_eq!(v.on_cpg(&totem(8)), Some(Verdict::Safe));
    }

    #[test]
    fn others_leaving_does_not_make_us_lost() {
        let mut v = joined_view();
        v.on_cpg(&totem(5));
        v.on_quorum(&quorum(true, 5));
        assert_eq!(v.on_cpg(&confchg(&[ME], &[(OTHER, Reason::ProcDown)], &[])), None);
        assert_eq!(v.on_cpg(&confchg(&[ME], &[(OTHER, Reason::NodeDown)], &[])), None);
        assert!(v.safe_to_act());
    }

    #[test]
    fn our_own_leave_is_lost_until_we_join_again() {
        let mut v = joined_view();
        v.on_cpg(&totem(5));
        v.on_quorum(&quorum(true, 5));
        assert_eq!(v.on_cpg(&confchg(&[OTHER], &[(ME, Reason::Leave)], &[])), Some(Verdict::Lost));
        assert!(v.is_lost());
        assert_eq!(v.on_quorum(&quorum(true, 6)), None, "lost stays lost");
        assert_eq!(
            v.on_cpg(&confchg(&[ME, OTHER], &[], &[(ME, Reason::Join)])),
            Some(Verdict::Settling { cpg: Some(ring(5)), quorum: ring(6) })
        );
    }

    #[test]
    fn corosync_going_away_is_lost() {
        let mut v = joined_view();
        v.on_cpg(&totem(5));
        v.on_quorum(&quorum(true, 5));
        assert_eq!(v.on_corosync_lost(), Some(Verdict::Lost));
        // Never joined: nothing was lost.
        let mut fresh = MembershipView::new(ME);
        assert_eq!(fresh.on_corosync_lost(), None);
        assert_eq!(fresh.verdict(), Verdict::NotJoined);
    }

    #[test]
    fn another_process_on_our_node_is_not_us() {
        let mut v = MembershipView::new(ME);
        let sibling = Address { nodeid: ME.nodeid, pid: 999 };
        v.on_cpg(&confchg(&[sibling], &[], &[(sibling, Reason::Join)]));
        assert_eq!(v.verdict(), Verdict::NotJoined);
    }
}
