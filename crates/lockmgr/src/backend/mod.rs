//! Lock backends: where a granted lock physically lives.
//!
//! - `local`: one host, no cluster; the daemon's own table (plus the journal) is the lock.
//! - `dlm`: the kernel DLM through libdlm; locks are PERSISTENT so they outlive the daemon.
//! - `deferring`: the `dlm` backend holding releases back while this node's locks are lost.
//!
//! The daemon decides *who* may hold what (owners, journal, all-or-nothing); a backend only
//! takes and drops named locks. Calls may block (a DLM write blocks while the lockspace is
//! stopped for recovery), so the daemon calls backends from blocking threads, never from an
//! async executor thread.

pub mod deferring;
pub mod dlm;
pub mod local;

use proto::mode::Mode;
use std::time::Duration;

pub use crate::naming::ResName;

/// A granted lock, as the backend knows it. Opaque to the daemon except for journaling:
/// `id` is what the backend needs to find the lock again after a daemon restart
/// (the DLM lkid; a counter for `local`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub name: ResName,
    pub mode: Mode,
    pub id: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Another holder (on this node or another) has the resource in an incompatible mode.
    #[error("resource {} is held in an incompatible mode", .0.0)]
    WouldBlock(ResName),
    /// A bounded wait ran out (the request was cancelled).
    #[error("timed out waiting for resource {}", .0.0)]
    TimedOut(ResName),
    /// Adoption found no orphan of that name (it was released or purged meanwhile).
    #[error("no orphan lock {} to adopt", .0.0)]
    NoOrphan(ResName),
    /// Adoption found an orphan of that name but in another mode.
    #[error("orphan lock {} exists in another mode than {wanted}", .name.0)]
    OrphanModeMismatch { name: ResName, wanted: Mode },
    /// The DLM lockspace cannot serve requests now (released after lock loss, closed).
    #[error("lock backend unavailable: DLM lockspace {lockspace}: {source}")]
    Unavailable {
        lockspace: String,
        #[source]
        source: ::dlm::DlmError,
    },
    /// This node is not (yet) a DLM node: no node id in configfs.
    #[error("lock backend unavailable: {0}")]
    NotReady(#[source] ::dlm::DlmError),
    /// A DLM call failed.
    #[error("lock backend failed: {0}")]
    Dlm(#[source] ::dlm::DlmError),
    /// The `local` backend's journal holds grants of one resource that cannot coexist.
    #[error("lock backend failed: journal holds incompatible grants of {}", .0.0)]
    IncompatibleJournal(ResName),
}

impl BackendError {
    /// The backend cannot serve now (as opposed to refusing this one request).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, BackendError::Unavailable { .. } | BackendError::NotReady(_))
    }
}

/// What the daemon needs from a lock store.
pub trait Backend: Send + Sync {
    /// "local" or "dlm".
    fn kind(&self) -> &'static str;
    /// This node's id (corosync node id; 0 for `local`) and name.
    fn node(&self) -> (u32, String);
    /// Takes `name` in `mode`. `wait == None` fails at once with `WouldBlock` on conflict
    /// (NOQUEUE); `Some(d)` waits up to `d`, then cancels and fails with `TimedOut`.
    fn acquire(&self, name: &ResName, mode: Mode, wait: Option<Duration>) -> Result<Grant, BackendError>;
    /// Drops a grant (DLM: convert to NL, then unlock). Dropping an already-gone grant is Ok.
    fn release(&self, grant: &Grant) -> Result<(), BackendError>;
    /// After a daemon restart: takes back a lock the previous daemon held, in the same mode.
    fn adopt(&self, name: &ResName, mode: Mode) -> Result<Grant, BackendError>;
    /// After adoption: frees every lock the previous daemon left that nobody claimed.
    fn purge_orphans(&self) -> Result<usize, BackendError>;
}
