//! Why the registry refused a request. Each message is the sentence the user reads (it names
//! the VM, the disk and what to do); only the server turns an error into a wire reply
//! (`crate::server::reply`).

use proto::Conflict;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// Another holder has the disk in a mode in the way; `conflict` names them.
    #[error("{message}")]
    Conflict { message: String, conflict: Conflict },
    /// A request libvirt would never send (bad uuid, name, pid, resource).
    #[error("{0}")]
    BadRequest(String),
    /// No such VM here, or the pid belongs to another VM.
    #[error("{0}")]
    UnknownOwner(String),
    /// The VM's QEMU process is gone.
    #[error("{0}")]
    OwnerGone(String),
    /// Not valid in the owner's state (a restricted QEMU, a second mode for one disk).
    #[error("{0}")]
    OutOfOrder(String),
    /// The journal cannot be written: nothing changed.
    #[error("{0}")]
    Journal(String),
    /// The lock backend failed, or this node's locks are lost.
    #[error("{0}")]
    Backend(String),
    /// The VM still runs (an administrator's release without force), or a confirmation that
    /// cannot be recorded now.
    #[error("{0}")]
    Busy(String),
    /// A lost node may still write: grants wait for it (`virtdlm confirm-down`).
    #[error("{0}")]
    Quarantined(String),
    /// A forwarded request's node is not in the group, left, or did not answer.
    #[error("{0}")]
    NodeUnreachable(String),
}
