//! `release --vm` for a VM whose locks are on another node: this node's daemon asks the owning
//! node's daemon over CPG and waits for its answer.
//!
//! - The asker multicasts `release_vm` addressed to the owning node id, with a request id of
//!   its own ([`Pending::ask`]), and waits up to [`REPLY_TIMEOUT`] for the matching
//!   `release_vm_reply` ([`Pending::reply`]: same request id, sent by the node asked). If that
//!   node leaves the group meanwhile, the wait ends at once ([`Pending::node_left`]).
//! - The owning node applies exactly its local rules ([`answer`] calls
//!   [`Registry::release_vm`]): refused while the VM's QEMU runs there unless `force`.
//!
//! Trust: a request is acted on only as CPG delivers it, that is from a member of the group,
//! and only by the node it is addressed to. Joining the group takes corosync's IPC, which is
//! root's on each node (uidgid); so whoever is root on a cluster node may release any VM's
//! locks on every node, as they could already with the DLM itself.

use super::wire::{Body, ReleaseOutcome};
use super::Link;
use crate::registry::{Registry, RegistryError};
use corosync::Address;
use proto::LockInfo;
use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

/// How long the asker waits for the owning node's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What ends a wait, besides the timeout.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Reply(ReleaseOutcome),
    /// The node asked left the group before answering.
    Left,
}

#[derive(Debug)]
struct Waiting {
    node: u32,
    tx: mpsc::Sender<Answer>,
}

/// Requests this node sent and not yet answered.
#[derive(Debug)]
pub struct Pending {
    next: u64,
    waiting: HashMap<u64, Waiting>,
}

impl Default for Pending {
    fn default() -> Self {
        // Request ids of a restarted daemon do not start where its predecessor's did, so a
        // late answer to the old daemon cannot complete a new request.
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        Pending { next: seed, waiting: HashMap::new() }
    }
}

impl Pending {
    /// A new request to `node`: its id and where its answer arrives.
    pub fn ask(&mut self, node: u32) -> (u64, mpsc::Receiver<Answer>) {
        self.next = self.next.wrapping_add(1);
        let (tx, rx) = mpsc::channel();
        self.waiting.insert(self.next, Waiting { node, tx });
        (self.next, rx)
    }

    /// A delivered reply; it completes request `req` only if the node asked sent it.
    /// Returns whether it did.
    pub fn reply(&mut self, sender: Address, req: u64, outcome: ReleaseOutcome) -> bool {
        match self.waiting.get(&req) {
            Some(w) if w.node == sender.nodeid => {
                let w = self.waiting.remove(&req).expect("found above");
                let _ = w.tx.send(Answer::Reply(outcome));
                true
            }
            _ => false,
        }
    }

    /// No daemon of `node` is in the group any more: its requests end now.
    pub fn node_left(&mut self, node: u32) {
        self.waiting.retain(|_, w| {
            if w.node == node {
                let _ = w.tx.send(Answer::Left);
            }
            w.node != node
        });
    }

    /// The asker gave up on `req` (timeout).
    pub fn forget(&mut self, req: u64) {
        self.waiting.remove(&req);
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

fn unreachable(message: String) -> Result<Vec<LockInfo>, RegistryError> {
    Err(RegistryError::NodeUnreachable(message))
}

/// Asks node `node` to release VM `uuid` and waits for its answer (blocking, up to
/// [`REPLY_TIMEOUT`]). The answer is the owning node's, in the words of this node's protocol.
pub fn forward(link: &Link, node: u32, uuid: &str, force: bool) -> Result<Vec<LockInfo>, RegistryError> {
    forward_within(link, node, uuid, force, REPLY_TIMEOUT)
}

fn forward_within(
    link: &Link,
    node: u32,
    uuid: &str,
    force: bool,
    wait: Duration,
) -> Result<Vec<LockInfo>, RegistryError> {
    let (req, rx, name) = {
        let mut s = link.state.lock();
        let name = s.node_name(node);
        if !s.members.iter().any(|m| m.nodeid == node) {
            return unreachable(format!(
                "node {name} (id {node}) is not in the cluster group (down, cut off, or its virtdlmd stopped): \
                 its locks cannot be released from here; they go when DLM recovery fences it or its daemon comes back"
            ));
        }
        let (req, rx) = s.release.ask(node);
        (req, rx, name)
    };
    tracing::info!(node = %name, vm = uuid, force, req, "asking node {name} to release the VM's locks");
    if link.outgoing.send(Body::ReleaseVm { to: node, req, uuid: uuid.to_owned(), force }).is_err() {
        link.state.lock().release.forget(req);
        return unreachable("this daemon lost its corosync connection; nothing was sent".into());
    }
    match rx.recv_timeout(wait) {
        Ok(Answer::Reply(outcome)) => outcome_result(outcome, &name, uuid),
        Ok(Answer::Left) => unreachable(format!(
            "node {name} left the cluster group before answering: it may or may not have released VM {uuid}'s locks; \
             check `virtdlm locks --vm {uuid}`"
        )),
        Err(_) => {
            link.state.lock().release.forget(req);
            unreachable(format!(
                "node {name} did not answer within {} ms (its virtdlmd may be an older version, hung, or the node cut off): \
                 VM {uuid}'s locks may or may not be released; check `virtdlm locks --vm {uuid}`",
                wait.as_millis()
            ))
        }
    }
}

/// The owning node's outcome as this daemon's answer to the CLI.
fn outcome_result(outcome: ReleaseOutcome, node: &str, uuid: &str) -> Result<Vec<LockInfo>, RegistryError> {
    match outcome {
        ReleaseOutcome::Released { locks, .. } => Ok(locks.into_iter().map(LockInfo::from).collect()),
        ReleaseOutcome::Running { vm, pid } => {
            let pid = pid.map(|p| format!(" as pid {p}")).unwrap_or_default();
            Err(RegistryError::Busy(format!(
                "VM {vm} ({uuid}) still runs on node {node}{pid}; stop it there first, or force the release if you know its disks are closed"
            )))
        }
        ReleaseOutcome::UnknownVm => Err(RegistryError::UnknownOwner(format!(
            "node {node} has no VM with uuid {uuid} holding or registering locks (any more)"
        ))),
        ReleaseOutcome::Failed { message } => {
            Err(RegistryError::Backend(format!("node {node} could not release VM {uuid}: {message}")))
        }
    }
}

/// On the owning node: applies the local rules to a forwarded request (blocking).
pub fn answer(registry: &Registry, from: &str, uuid: &str, force: bool) -> ReleaseOutcome {
    tracing::warn!(asker = from, vm = uuid, force, "release of a VM's locks requested by node {from}");
    // Who runs, for the refusal's words (release_vm decides; this only names).
    let named = registry.local_locks().into_iter().find(|l| l.vm_uuid == uuid);
    match registry.release_vm(uuid, force) {
        Ok(locks) => {
            ReleaseOutcome::Released { count: locks.len() as u32, locks: locks.iter().map(Into::into).collect() }
        }
        Err(RegistryError::Busy(_)) => ReleaseOutcome::Running {
            vm: named.as_ref().map_or_else(|| uuid.to_owned(), |l| l.vm_name.clone()),
            pid: named.map(|l| l.pid),
        },
        Err(RegistryError::UnknownOwner(_)) => ReleaseOutcome::UnknownVm,
        Err(e) => ReleaseOutcome::Failed { message: e.to_string() },
    }
    .fitted()
}

#[cfg(test)]
mod tests {
    use super::*;

    const N2: Address = Address { nodeid: 2, pid: 200 };
    const N3: Address = Address { nodeid: 3, pid: 300 };

    #[test]
    fn a_reply_completes_only_its_own_request_from_the_node_asked() {
        let mut p = Pending::default();
        let (r1, rx1) = p.ask(2);
        let (r2, rx2) = p.ask(3);
        assert_ne!(r1, r2);
        // Another node answering request 1, and an unknown request id: ignored.
        assert!(!p.reply(N3, r1, ReleaseOutcome::UnknownVm));
        assert!(!p.reply(N2, r1.wrapping_add(1000), ReleaseOutcome::UnknownVm));
        assert!(rx1.try_recv().is_err());
        assert!(p.reply(N2, r1, ReleaseOutcome::Running { vm: "web-2".into(), pid: Some(9) }));
        assert_eq!(rx1.try_recv(), Ok(Answer::Reply(ReleaseOutcome::Running { vm: "web-2".into(), pid: Some(9) })));
        // A duplicate answer finds nothing left to complete.
        assert!(!p.reply(N2, r1, ReleaseOutcome::UnknownVm));
        assert!(rx2.try_recv().is_err());
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn a_node_leaving_ends_only_its_requests() {
        let mut p = Pending::default();
        let (_, rx2) = p.ask(2);
        let (r3, rx3) = p.ask(3);
        p.node_left(2);
        assert_eq!(rx2.try_recv(), Ok(Answer::Left));
        assert!(rx3.try_recv().is_err());
        assert!(p.reply(N3, r3, ReleaseOutcome::Released { count: 0, locks: vec![] }));
        assert!(p.is_empty());
    }

    #[test]
    fn a_forgotten_request_ignores_a_late_answer() {
        let mut p = Pending::default();
        let (r, rx) = p.ask(2);
        p.forget(r);
        assert!(!p.reply(N2, r, ReleaseOutcome::UnknownVm));
        assert!(rx.try_recv().is_err());
    }

    /// A link as the cluster task would hand out, with node 1 and node 2 in the group.
    fn link() -> (Link, tokio::sync::mpsc::UnboundedReceiver<Body>) {
        use corosync::Verdict;
        let me = Address { nodeid: 1, pid: 100 };
        let state = super::super::ClusterState {
            group: "g".into(),
            lockspace: "l".into(),
            me,
            node_names: [(2, "hv2".to_owned())].into(),
            members: vec![me, N2],
            quorate: Some(true),
            verdict: Verdict::Safe,
            inventory: super::super::inventory::Inventory::new(),
            release: Pending::default(),
        };
        let changes = Default::default();
        let (outgoing, rx) = tokio::sync::mpsc::unbounded_channel();
        (Link { node_id: 1, changes, state: std::sync::Arc::new(parking_lot::Mutex::new(state)), outgoing }, rx)
    }

    const U: &str = "0c0ffee0-0000-4000-8000-000000000002";

    #[test]
    fn forward_sends_the_request_and_returns_the_matching_answer() {
        let (link, mut sent) = link();
        let answering = link.clone();
        let answerer = std::thread::spawn(move || loop {
            // The request as multicast; then node 2's answer as CPG would deliver it.
            if let Ok(Body::ReleaseVm { to, req, uuid, force }) = sent.try_recv() {
                assert_eq!((to, uuid.as_str(), force), (2, U, true));
                let mut s = answering.state.lock();
                assert!(!s.release.reply(N3, req, ReleaseOutcome::UnknownVm), "only node 2 may answer");
                assert!(s.release.reply(N2, req, ReleaseOutcome::Released { count: 0, locks: vec![] }));
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        });
        assert_eq!(forward_within(&link, 2, U, true, Duration::from_secs(30)), Ok(vec![]));
        answerer.join().unwrap();
        assert!(link.state.lock().release.is_empty());
    }

    #[test]
    fn forward_fails_as_unreachable_for_a_non_member_or_no_answer() {
        let (link, mut sent) = link();
        let unreachable = |r: Result<Vec<LockInfo>, RegistryError>| match r {
            Err(RegistryError::NodeUnreachable(m)) => m,
            other => panic!("not unreachable: {other:?}"),
        };
        let m = unreachable(forward_within(&link, 3, U, false, Duration::from_secs(30)));
        assert!(m.contains("not in the cluster group"), "{m}");
        assert!(sent.try_recv().is_err(), "nothing is sent to a non-member");
        let m = unreachable(forward_within(&link, 2, U, false, Duration::from_millis(50)));
        assert!(m.contains("did not answer"), "{m}");
        assert!(link.state.lock().release.is_empty(), "a timed-out request is forgotten");
    }

    #[test]
    fn outcomes_become_the_local_registry_s_answers() {
        let named = |r: Result<Vec<LockInfo>, RegistryError>| {
            let e = r.expect_err("an error");
            assert!(e.to_string().contains("hv2"), "names the node: {e}");
            e
        };
        let u = "0c0ffee0-0000-4000-8000-000000000002";
        assert!(matches!(
            named(outcome_result(ReleaseOutcome::Running { vm: "web-2".into(), pid: Some(4) }, "hv2", u)),
            RegistryError::Busy(_)
        ));
        assert!(matches!(named(outcome_result(ReleaseOutcome::UnknownVm, "hv2", u)), RegistryError::UnknownOwner(_)));
        assert!(matches!(
            named(outcome_result(ReleaseOutcome::Failed { message: "x".into() }, "hv2", u)),
            RegistryError::Backend(_)
        ));
        let locks = vec![super::super::wire::lock("d1:a", 4, "web-2")];
        assert_eq!(
            outcome_result(ReleaseOutcome::Released { count: 1, locks: locks.clone() }, "hv2", u),
            Ok(locks.into_iter().map(LockInfo::from).collect())
        );
    }
}
