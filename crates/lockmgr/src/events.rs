//! The lock changes behind `virtdlm watch` ([`proto::watch`]): the registry emits this node's
//! changes as it makes them, the cluster task every other node's as the inventory delivers
//! them, and each watching connection reads them from its own subscription.
//!
//! This node's changes are also counted for the metrics ([`Events::local`], crate::metrics).
//!
//! Nothing waits on a watcher: a watcher that falls more than [`BACKLOG`] events behind loses
//! the oldest and is told how many ([`proto::watch::EventKind::Missed`]).

use crate::metrics::Metrics;
use proto::watch::{EventKind, LockEvent};
use proto::LockInfo;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events kept for the slowest watcher.
pub const BACKLOG: usize = 4096;

pub struct Events {
    tx: broadcast::Sender<LockEvent>,
    metrics: Arc<Metrics>,
}

impl Default for Events {
    fn default() -> Self {
        Events { tx: broadcast::channel(BACKLOG).0, metrics: Arc::default() }
    }
}

impl Events {
    /// One change of this node's own locks: counted, then sent to every watcher.
    pub fn local(&self, kind: EventKind, lock: &LockInfo, why: Option<&str>) {
        self.metrics.lock_changed(kind, lock.mode);
        self.emit(kind, || lock.clone(), why);
    }

    /// The daemon's metrics: this node's lock changes are counted here.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Sends one change to every watcher (none: nothing is built).
    pub fn emit(&self, kind: EventKind, lock: impl FnOnce() -> LockInfo, why: Option<&str>) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(LockEvent::new(kind, lock(), why.map(str::to_owned)));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LockEvent> {
        self.tx.subscribe()
    }
}

/// The next event of a subscription; a watcher that fell behind gets [`EventKind::Missed`].
/// `None`: the daemon is shutting down.
pub async fn next(rx: &mut broadcast::Receiver<LockEvent>) -> Option<LockEvent> {
    match rx.recv().await {
        Ok(e) => Some(e),
        Err(broadcast::error::RecvError::Lagged(n)) => Some(LockEvent::missed(n)),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}
