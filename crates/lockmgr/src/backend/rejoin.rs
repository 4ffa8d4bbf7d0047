//! The `dlm` backend as lock loss needs it: able to leave its lockspace and join it again
//! without a daemon restart.
//!
//! After this node dropped out of the cluster, the survivors have recovered the lockspace
//! without it and freed its locks; dlm_controld then removes the node from corosync when it
//! comes back (a "stateful merge"). Our kernel lockspace is dead weight from then on, and a
//! restarted dlm_controld refuses to run beside a lockspace it does not control. So the daemon
//! leaves it (forced release) once corosync is gone, and joins afresh when the membership is
//! safe again. Between the two, acquisitions are refused and releases succeed (the locks went
//! with the lockspace).

use super::dlm::DlmBackend;
use super::{Backend, BackendError, Grant, ResName};
use crate::mode::Mode;
use parking_lot::RwLock;
use std::sync::Arc;
use std::time::Duration;

pub struct Rejoinable {
    lockspace: String,
    node: (u32, String),
    inner: RwLock<Option<Arc<DlmBackend>>>,
}

impl Rejoinable {
    /// Joins `lockspace` (blocks until joined, as [`DlmBackend::new`]).
    pub fn new(lockspace: &str, node_name: impl Into<String>) -> Result<Self, BackendError> {
        let b = DlmBackend::new(lockspace, node_name)?;
        Ok(Rejoinable { lockspace: lockspace.into(), node: b.node(), inner: RwLock::new(Some(Arc::new(b))) })
    }

    pub fn lockspace(&self) -> &str {
        &self.lockspace
    }

    /// Whether the lockspace is joined.
    pub fn is_joined(&self) -> bool {
        self.inner.read().is_some()
    }

    /// Leaves the lockspace, dropping whatever it still holds (forced release). Blocks while
    /// the kernel asks dlm_controld, if one runs.
    pub fn leave(&self) -> Result<(), BackendError> {
        let Some(b) = self.inner.write().take() else { return Ok(()) };
        tracing::warn!(lockspace = %self.lockspace, "leaving the DLM lockspace (its locks are lost)");
        b.lockspace()
            .release(true)
            .map(|_| ())
            .map_err(|e| BackendError::Failed(format!("leaving lockspace {}: {e}", self.lockspace)))
    }

    /// Joins the lockspace again (blocks until joined); nothing if it is joined.
    pub fn rejoin(&self) -> Result<(), BackendError> {
        if self.is_joined() {
            return Ok(());
        }
        let b = DlmBackend::new(&self.lockspace, self.node.1.clone())?;
        tracing::info!(lockspace = %self.lockspace, "joined the DLM lockspace again");
        *self.inner.write() = Some(Arc::new(b));
        Ok(())
    }

    fn current(&self) -> Result<Arc<DlmBackend>, BackendError> {
        self.inner.read().clone().ok_or_else(|| {
            BackendError::Unavailable(format!(
                "DLM lockspace {} was left after a lock loss; it is joined again once the cluster membership is safe",
                self.lockspace
            ))
        })
    }
}

impl Backend for Rejoinable {
    fn kind(&self) -> &'static str {
        "dlm"
    }

    fn node(&self) -> (u32, String) {
        self.node.clone()
    }

    fn acquire(&self, name: &ResName, mode: Mode, wait: Option<Duration>) -> Result<Grant, BackendError> {
        self.current()?.acquire(name, mode, wait)
    }

    /// A grant from before a leave went with the lockspace: releasing it succeeds.
    fn release(&self, grant: &Grant) -> Result<(), BackendError> {
        match self.inner.read().clone() {
            Some(b) => b.release(grant),
            None => Ok(()),
        }
    }

    fn adopt(&self, name: &ResName, mode: Mode) -> Result<Grant, BackendError> {
        self.current()?.adopt(name, mode)
    }

    fn purge_orphans(&self) -> Result<usize, BackendError> {
        self.current()?.purge_orphans()
    }
}
