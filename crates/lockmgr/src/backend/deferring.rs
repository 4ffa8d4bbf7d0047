//! The `dlm` backend as lock loss needs it: while this node's locks are lost, releases are
//! recorded instead of sent.
//!
//! After this node dropped out of the quorate membership its lockspace is stopped, and every
//! DLM call on it blocks in the kernel until a recovery that, for a node the others removed,
//! never comes (dlm_controld removes such a node from corosync when the partition heals).
//! A release sent then would not return, and the registry would wait with it. The locks are
//! gone anyway (the survivors recovered the lockspace without us), so releases are kept and
//! sent only if the membership becomes safe again with this lockspace still running; when
//! the abandoned lockspace is released instead (`retire`), they are dropped with it.

use super::dlm::DlmBackend;
use super::{Backend, BackendError, Grant, ResName};
use parking_lot::Mutex;
use proto::mode::Mode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct Deferring {
    inner: DlmBackend,
    deferring: AtomicBool,
    deferred: Mutex<Vec<Grant>>,
}

impl Deferring {
    pub fn new(inner: DlmBackend) -> Self {
        Deferring { inner, deferring: AtomicBool::new(false), deferred: Mutex::new(Vec::new()) }
    }

    /// Locks are lost: from now on releases are only recorded.
    pub fn defer_releases(&self) {
        self.deferring.store(true, Ordering::SeqCst);
    }

    /// The lockspace was abandoned (this node removed from the cluster): release it, and with
    /// it every lock and every recorded release (see [`DlmBackend::retire`]).
    pub fn retire(&self) -> Result<(), BackendError> {
        let r = self.inner.retire();
        // Whatever came of it, a recorded release of a retired lock is dropped (its grant id
        // is of the old generation and can no longer name a lock, see `DlmBackend::retire`).
        self.deferred.lock().retain(|g| self.inner.is_current(g));
        r
    }

    /// Joins the lockspace again after [`Deferring::retire`] (blocks until joined).
    pub fn reopen(&self) -> Result<(), BackendError> {
        self.inner.reopen()
    }

    pub fn is_retired(&self) -> bool {
        self.inner.is_retired()
    }

    /// Whether a retire is under way (see [`DlmBackend::is_retiring`]).
    pub fn is_retiring(&self) -> bool {
        self.inner.is_retiring()
    }

    pub fn lockspace_name(&self) -> &str {
        self.inner.lockspace_name()
    }

    /// The membership is safe again: releases go to the DLM again; returns those recorded
    /// meanwhile, to be released once the lockspace is known to run. Those of a lockspace
    /// retired since are dropped: their locks went with it (and their ids are another
    /// lockspace's; [`DlmBackend::is_current`]).
    pub fn resume_releases(&self) -> Vec<Grant> {
        self.deferring.store(false, Ordering::SeqCst);
        let mut pending = std::mem::take(&mut *self.deferred.lock());
        pending.retain(|g| {
            let current = self.inner.is_current(g);
            if !current {
                tracing::info!(resource = %g.name.0, mode = %g.mode, "deferred release dropped: its lock went with the retired lockspace");
            }
            current
        });
        pending
    }
}

impl Backend for Deferring {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn node(&self) -> (u32, String) {
        self.inner.node()
    }

    fn acquire(&self, name: &ResName, mode: Mode, wait: Option<Duration>) -> Result<Grant, BackendError> {
        self.inner.acquire(name, mode, wait)
    }

    fn release(&self, grant: &Grant) -> Result<(), BackendError> {
        if self.deferring.load(Ordering::SeqCst) {
            self.deferred.lock().push(grant.clone());
            return Ok(());
        }
        self.inner.release(grant)
    }

    fn adopt(&self, name: &ResName, mode: Mode) -> Result<Grant, BackendError> {
        self.inner.adopt(name, mode)
    }

    fn purge_orphans(&self) -> Result<usize, BackendError> {
        self.inner.purge_orphans()
    }
}
