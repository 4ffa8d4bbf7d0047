//! What the registry asks of the layers above it, as small traits: the registry knows neither
//! the cluster inventory nor lock-loss handling. They plug in here ([`super::Registry::attach_gate`],
//! [`super::Registry::attach_cluster`]) and depend on the registry, never the other way round.

use super::RegistryError;
use proto::status::{ClusterStatus, Confirmation, FencingStatus, LockLossStatus};
use proto::LockInfo;

/// A lock change, as the registry makes it (in table order): what the cluster inventory
/// multicasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockChange {
    Granted(LockInfo),
    /// The lock as it was held (the inventory multicasts only its resource and pid).
    Released(LockInfo),
}

/// Whether a grant may be answered now: lock loss, the hold after a membership change, and
/// the quarantine of clusters that cannot fence (crate::lockloss).
pub trait GrantGate: Send + Sync {
    /// This node's locks are lost: nothing is granted until the membership is safe again.
    fn is_lost(&self) -> bool;
    /// Blocks until a grant may be answered (a node that dropped out may still be stopping
    /// its VMs).
    fn wait_hold(&self);
    /// The refusal of a grant of `disk` to `vm` while a lost node is unaccounted for.
    fn refusal(&self, vm: &str, disk: &str) -> Option<String>;
    /// An operator's word that a node is down.
    fn confirm_down(&self, node: &str, uid: u32) -> Result<Confirmation, RegistryError>;
    fn lock_loss_status(&self) -> LockLossStatus;
    fn fencing_status(&self) -> FencingStatus;
}

/// The gate of a registry nothing else is attached to: always open.
pub struct Open;

impl GrantGate for Open {
    fn is_lost(&self) -> bool {
        false
    }
    fn wait_hold(&self) {}
    fn refusal(&self, _vm: &str, _disk: &str) -> Option<String> {
        None
    }
    fn confirm_down(&self, node: &str, _uid: u32) -> Result<Confirmation, RegistryError> {
        Err(RegistryError::BadRequest(format!("this virtdlmd runs without a cluster: there is no node {node:?}")))
    }
    fn lock_loss_status(&self) -> LockLossStatus {
        LockLossStatus { lost: false, last: None, recent: Vec::new() }
    }
    fn fencing_status(&self) -> FencingStatus {
        FencingStatus {
            shape: None,
            summary: proto::status::FENCING_NOT_READ.into(),
            needs_quarantine: false,
            active: false,
            unaccounted: Vec::new(),
            confirmed_down: Vec::new(),
        }
    }
}

/// The cluster inventory as the registry uses it: where its changes go, what other nodes hold.
pub trait ClusterLink: Send + Sync {
    /// Our corosync node id.
    fn node_id(&self) -> u32;
    /// Publishes a change; called with the table lock held, so in table order.
    fn publish(&self, change: LockChange);
    /// Inventory entries of other nodes.
    fn remote_locks(&self) -> Vec<LockInfo>;
    /// The `cluster` object of `status`.
    fn status(&self) -> ClusterStatus;
    /// Asks node `node` to release VM `uuid` under its own rules (blocking).
    fn forward_release(&self, node: u32, uuid: &str, force: bool) -> Result<Vec<LockInfo>, RegistryError>;
}
