//! The `status` answer: what a daemon says of itself, typed for the daemon that builds it and
//! the CLI that renders it. These are wire types: the daemon's own state (its lock-loss
//! events, fencing shape, pending releases) is converted into them when `status` is asked.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node_name: String,
    pub node_id: u32,
    /// `local` or `dlm`.
    pub backend: String,
    /// Setups that run but do not protect (e.g. `local` with the cluster inventory on).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// VMs registered here.
    pub owners: usize,
    /// Locks held here.
    pub locks: usize,
    pub journal: String,
    pub journal_bytes: u64,
    /// Journal compactions since the daemon started.
    #[serde(default)]
    pub journal_compactions: u64,
    pub lock_readonly: bool,
    pub pid: u32,
    pub protocol: u32,
    /// `None`: the cluster inventory is off.
    pub cluster: Option<ClusterStatus>,
    pub last_lock_loss: Option<LossEvent>,
    pub lock_loss: LockLossStatus,
    /// Releases the backend refused, being retried: the DLM may still hold these.
    #[serde(default)]
    pub releases_pending: Vec<PendingRelease>,
    /// How the cluster is fenced and whether grants wait for a lost node.
    pub fencing: FencingStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The inventory's CPG group.
    pub group: String,
    pub lockspace: String,
    pub node_id: u32,
    pub members: Vec<Member>,
    /// The latest quorum notification, if any.
    pub quorate: Option<bool>,
    /// The membership verdict (`safe`, `settling`, `inquorate`, `lost`, ...).
    pub verdict: String,
    pub safe: bool,
    /// Locks the inventory knows of, on every node.
    pub inventory_locks: usize,
}

/// A daemon in the inventory group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: u32,
    pub name: String,
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockLossStatus {
    /// This node's locks are lost now: nothing is granted until the membership is safe.
    pub lost: bool,
    pub last: Option<LossEvent>,
    /// The last few events, oldest first.
    #[serde(default)]
    pub recent: Vec<LossEvent>,
}

/// One lock-loss event: why, and what became of each VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossEvent {
    pub reason: LossReasonInfo,
    pub message: String,
    /// Wall-clock time of the trigger, seconds since the epoch.
    pub at: f64,
    pub vms: Vec<VmOutcome>,
    /// From the trigger to the last VM handled (monotonic clock).
    pub elapsed_ms: u64,
    pub watchdog_fired: bool,
    /// When grants resumed (the membership was safe again), seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_at: Option<f64>,
}

/// Why the locks were lost: a kind (`quorum_lost`, `left_membership`, `corosync_lost`,
/// `lockspace_failed`, `unconfirmed`, `controld_lost`) and its detail, if it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossReasonInfo {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What became of one VM in a lock-loss event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmOutcome {
    pub vm_name: String,
    pub vm_uuid: String,
    pub pid: u32,
    pub action: String,
    /// ignored, paused, terminated, killed, survived, or gone (exited before it was signalled).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A release the backend refused, retried with a growing delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRelease {
    pub resource: String,
    pub disk: String,
    pub mode: String,
    pub vm: String,
    pub attempts: u32,
    pub error: String,
}

/// [`FencingStatus::summary`] of a daemon that has not read how its cluster is fenced.
pub const FENCING_NOT_READ: &str = "not read (no cluster backend)";

/// How this cluster makes sure a lost node is dead before its locks are handed over, and
/// whether grants wait for a node nobody can account for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FencingStatus {
    /// `None` until read (no cluster backend).
    pub shape: Option<FencingShape>,
    /// The shape in one sentence.
    pub summary: String,
    pub needs_quarantine: bool,
    /// True while grants are refused.
    pub active: bool,
    #[serde(default)]
    pub unaccounted: Vec<NodeRef>,
    #[serde(default)]
    pub confirmed_down: Vec<Confirmation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencingShape {
    /// dlm_controld's running `enable_fencing`; `None` when it could not be read.
    pub dlm_fencing: Option<bool>,
    /// corosync `quorum.two_node`.
    pub two_node: bool,
    /// corosync `quorum.wait_for_all`.
    pub wait_for_all: bool,
    /// `None`: Pacemaker does not run here.
    pub pacemaker: Option<PacemakerFencing>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacemakerFencing {
    /// `stonith-enabled` (Pacemaker's default: true).
    pub stonith_enabled: bool,
    /// Stonith resources in the CIB.
    pub stonith_devices: usize,
    /// The stonith resources among them that only cut a node off its storage or its network
    /// (fence_scsi, fence_mpath, fabric switches): `id (type)`. A node fenced by one keeps
    /// running, and so do its VMs.
    #[serde(default)]
    pub storage_only: Vec<String>,
    /// Pacemaker's `stonith-watchdog-timeout` when set and not 0 (watchdog fencing: sbd
    /// without a disk resets a node that lost quorum; the others count it fenced after this).
    #[serde(default)]
    pub watchdog_timeout: Option<String>,
    /// Pacemaker's `have-watchdog`: sbd runs on the nodes.
    #[serde(default)]
    pub have_watchdog: bool,
}

/// A configured node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    pub node_id: u32,
    pub node_name: String,
}

/// An operator's word that a node is down (`virtdlm confirm-down`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    pub node_id: u32,
    pub node_name: String,
    pub by_uid: u32,
    pub by_user: String,
    /// Seconds since the epoch.
    pub at: f64,
}
