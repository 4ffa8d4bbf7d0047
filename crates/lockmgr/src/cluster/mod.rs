//! virtdlmd's place in the cluster: one CPG handle joined to the inventory group (`virtdlm` by
//! default), driven by tokio. It gives the rest of the daemon
//!
//! - our node id and the cluster's node names; the membership verdict it shows in `status`
//!   comes from crate::membership, the one driver ([`ClusterHandle::follow_membership`]);
//! - the cluster-wide lock inventory ([`inventory`]): every daemon multicasts its lock
//!   changes ([`wire`]) in agreed order and re-sends its whole table after each membership
//!   change, so each member knows who holds what on every node.
//!
//! The registry publishes each lock change into [`Link::changes`] while it holds its table
//! lock, so the queue's order is the table's order; this task multicasts them ([`changes`]:
//! after the answer of the request that made them). A change is
//! visible to the other nodes from its delivery on (our own delivery is its commit point).
//!
//! - `release --vm` for a VM on another node ([`release`]): asked of that node's daemon over
//!   the group, answered under its local rules.
//!
//! - `wire`: the messages; `inventory`: the table built from them; `release`: forwarded
//!   releases; `task`: the event loop.

pub mod changes;
pub mod inventory;
pub mod release;
mod task;
pub mod wire;

use crate::registry::Registry;
use corosync::{self, Address, Verdict};
use inventory::Inventory;
use parking_lot::Mutex;
use proto::LockInfo;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
pub use wire::LockChange;

/// What the daemon knows of the cluster right now.
#[derive(Debug)]
pub struct ClusterState {
    pub group: String,
    pub lockspace: String,
    /// This daemon as a group member.
    pub me: Address,
    /// Configured node names by node id (from cmap's nodelist).
    pub node_names: BTreeMap<u32, String>,
    /// Current group members (one daemon per node, normally).
    pub members: Vec<Address>,
    /// Latest quorum notification, if any (set by the membership driver's hook).
    pub quorate: Option<bool>,
    pub verdict: Verdict,
    pub inventory: Inventory,
    /// Forwarded `release --vm` requests awaiting the owning node's answer.
    pub release: release::Pending,
}

impl ClusterState {
    pub fn node_name(&self, id: u32) -> String {
        self.node_names.get(&id).cloned().unwrap_or_else(|| format!("node{id}"))
    }

    /// The `cluster` object of `virtdlm status`.
    pub fn status(&self) -> proto::status::ClusterStatus {
        proto::status::ClusterStatus {
            group: self.group.clone(),
            lockspace: self.lockspace.clone(),
            node_id: self.me.nodeid,
            members: self
                .members
                .iter()
                .map(|m| proto::status::Member { node_id: m.nodeid, name: self.node_name(m.nodeid), pid: m.pid })
                .collect(),
            quorate: self.quorate,
            verdict: self.verdict.to_string(),
            safe: self.verdict == Verdict::Safe,
            inventory_locks: self.inventory.locks().len(),
        }
    }
}

/// What the registry holds of the cluster: where to publish its changes, and the shared
/// state (inventory) for its answers.
#[derive(Clone)]
pub struct Link {
    /// Our corosync node id (the local backend has none of its own).
    pub node_id: u32,
    pub changes: Arc<changes::Changes>,
    pub state: Arc<Mutex<ClusterState>>,
    /// Other messages to multicast (forwarded releases and their answers).
    pub outgoing: mpsc::UnboundedSender<wire::Body>,
}

impl crate::registry::ClusterLink for Link {
    fn node_id(&self) -> u32 {
        self.node_id
    }

    fn publish(&self, change: LockChange) {
        self.changes.push(change);
    }

    fn remote_locks(&self) -> Vec<LockInfo> {
        let s = self.state.lock();
        s.inventory.others(s.me.nodeid)
    }

    fn status(&self) -> proto::status::ClusterStatus {
        self.state.lock().status()
    }

    fn forward_release(
        &self,
        node: u32,
        uuid: &str,
        force: bool,
    ) -> Result<Vec<LockInfo>, crate::registry::RegistryError> {
        release::forward(self, node, uuid, force)
    }
}

/// The daemon's handle on the cluster.
#[derive(Clone)]
pub struct ClusterHandle {
    pub node_id: u32,
    pub state: Arc<Mutex<ClusterState>>,
}

impl ClusterHandle {
    /// Shows the membership driver's verdict in `status` from now on.
    pub fn follow_membership(&self, mut verdicts: watch::Receiver<Verdict>) {
        let state = self.state.clone();
        tokio::spawn(async move {
            loop {
                let v = *verdicts.borrow_and_update();
                state.lock().verdict = v;
                if verdicts.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Records a quorum notification for `status`.
    pub fn set_quorate(&self, quorate: bool) {
        self.state.lock().quorate = Some(quorate);
    }

    /// Configured node names by node id.
    pub fn node_names(&self) -> BTreeMap<u32, String> {
        self.state.lock().node_names.clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot join the CPG group {group}: {source}")]
    Cpg { group: String, source: corosync::Error },
    #[error("cannot watch corosync's fds: {0}")]
    Reactor(std::io::Error),
}

/// Joins `group`, starts the event loop on the current tokio runtime and attaches the
/// registry (its changes are multicast from now on; its table is re-sent on our join).
pub fn start(group: &str, lockspace: &str, registry: Arc<Registry>) -> Result<ClusterHandle, ClusterError> {
    let cpg_err = |source| ClusterError::Cpg { group: group.to_owned(), source };
    let mut cpg = corosync::Cpg::new(group).map_err(cpg_err)?;
    cpg.join().map_err(cpg_err)?;
    let node_names = match corosync::Cmap::new().and_then(|c| c.node_names()) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("cannot read node names from cmap ({e}); nodes are shown by id");
            BTreeMap::new()
        }
    };
    let me = cpg.me();
    let verdict = Verdict::NotJoined;
    let state = Arc::new(Mutex::new(ClusterState {
        group: group.to_owned(),
        lockspace: lockspace.to_owned(),
        me,
        node_names,
        members: Vec::new(),
        quorate: None,
        verdict,
        inventory: Inventory::new(),
        release: release::Pending::default(),
    }));
    let changes = Arc::new(changes::Changes::default());
    let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
    let cpg = corosync::reactor::register(cpg).map_err(ClusterError::Reactor)?;
    registry.attach_cluster(Arc::new(Link {
        node_id: me.nodeid,
        changes: changes.clone(),
        state: state.clone(),
        outgoing: outgoing.clone(),
    }));
    tracing::info!(group, node_id = me.nodeid, "joined the inventory group");
    tokio::spawn(task::run(task::Task {
        cpg,
        changes,
        outgoing: (outgoing, outgoing_rx),
        state: state.clone(),
        registry,
    }));
    Ok(ClusterHandle { node_id: me.nodeid, state })
}
