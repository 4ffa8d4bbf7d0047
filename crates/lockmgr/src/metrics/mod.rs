//! virtdlmd's Prometheus metrics: what an operator pages on (lock loss, a VM left running
//! without its locks, the membership verdict, fencing) and plans with (locks by mode and node,
//! acquires, refusals, acquire latency, the journal).
//!
//! Two kinds of values:
//! - counted as things happen, in [`Metrics`] (one per daemon, owned by the registry's lock
//!   change events, [`crate::events::Events::metrics`]): acquires and releases (from the lock
//!   change events), acquire requests and their refusals (`crate::server`), lock-loss events
//!   (`crate::lockloss`);
//! - read at each scrape from the registry's state (`render`): locks held, the membership
//!   verdict, fencing, the journal.
//!
//! The exposition is prometheus-client's Prometheus text format (version 0.0.4), served over
//! HTTP (`serve`) and/or written to a file for node_exporter's textfile collector
//! (`textfile`).

mod labels;
mod render;
pub mod serve;
pub mod textfile;

pub use labels::refusal_reason;
pub use render::{render, Source, CONTENT_TYPE};

use crate::lockloss::LossEvent;
use crate::registry::RegistryError;
use labels::{LossLabels, ModeLabel, OutcomeLabel, ReasonLabel, ResultLabel};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use proto::mode::Mode;
use proto::watch::EventKind;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Acquire latency buckets: 0.5 ms .. 16 s (a bounded wait may take seconds).
fn acquire_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The values counted as they happen. Cloning a metric shares it (prometheus-client metrics
/// are handles), so [`render`] registers clones at each scrape.
#[derive(Debug)]
pub struct Metrics {
    acquires: Family<ModeLabel, Counter>,
    releases: Family<ModeLabel, Counter>,
    refusals: Family<ReasonLabel, Counter>,
    acquire_seconds: Family<ResultLabel, Histogram, fn() -> Histogram>,
    /// Wall-clock time of this node's last lock change, seconds since the epoch (0: none yet).
    last_change: Gauge<f64, AtomicU64>,
    lock_loss_events: Family<LossLabels, Counter>,
    lock_loss_vms: Family<OutcomeLabel, Counter>,
    watchdog_fired: Counter,
    /// Woken on every change a textfile should show soon.
    changed: tokio::sync::Notify,
}

impl Default for Metrics {
    /// Every series whose labels are known in advance starts at 0, so that `increase()` and
    /// `rate()` see the first event (a series that appears at 1 has no increase).
    fn default() -> Self {
        let m = Metrics {
            acquires: Family::default(),
            releases: Family::default(),
            refusals: Family::default(),
            acquire_seconds: Family::new_with_constructor(acquire_histogram),
            last_change: Gauge::default(),
            lock_loss_events: Family::default(),
            lock_loss_vms: Family::default(),
            watchdog_fired: Counter::default(),
            changed: tokio::sync::Notify::new(),
        };
        for mode in Mode::ALL {
            let _ = m.acquires.get_or_create(&ModeLabel::of(mode));
            let _ = m.releases.get_or_create(&ModeLabel::of(mode));
        }
        for reason in labels::REFUSAL_REASONS {
            let _ = m.refusals.get_or_create(&ReasonLabel { reason });
        }
        for result in ["granted", "refused"] {
            let _ = m.acquire_seconds.get_or_create(&ResultLabel { result });
        }
        for outcome in labels::OUTCOMES {
            let _ = m.lock_loss_vms.get_or_create(&OutcomeLabel { outcome: outcome.into() });
        }
        for reason in labels::LOSS_REASONS {
            let _ = m.lock_loss_events.get_or_create(&LossLabels { reason: reason.into() });
        }
        m
    }
}

impl Metrics {
    /// One lock of this node changed (the registry's lock change events).
    pub fn lock_changed(&self, kind: EventKind, mode: Mode) {
        let family = match kind {
            EventKind::Granted => &self.acquires,
            EventKind::Released => &self.releases,
            EventKind::Left | EventKind::Missed => return,
        };
        family.get_or_create(&ModeLabel::of(mode)).inc();
        self.last_change.set(crate::lockloss::wall_now());
        self.changed.notify_one();
    }

    /// An acquire request was answered after `took`: granted, or refused with `err`.
    pub fn acquire_answered(&self, took: Duration, err: Option<&RegistryError>) {
        let result = if err.is_some() { "refused" } else { "granted" };
        self.acquire_seconds.get_or_create(&ResultLabel { result }).observe(took.as_secs_f64());
        if let Some(e) = err {
            self.refusals.get_or_create(&ReasonLabel { reason: refusal_reason(e) }).inc();
            self.changed.notify_one();
        }
    }

    /// A lock-loss event was handled: its reason, and what became of each VM.
    pub fn lock_loss(&self, ev: &LossEvent) {
        self.lock_loss_events.get_or_create(&LossLabels { reason: ev.reason.wire().kind }).inc();
        for vm in &ev.vms {
            self.lock_loss_vms.get_or_create(&OutcomeLabel { outcome: vm.outcome.clone() }).inc();
        }
        if ev.watchdog_fired {
            self.watchdog_fired.inc();
        }
        self.changed.notify_one();
    }

    /// Something changed since the last call (or since the start): for the textfile writer.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Time of the last lock change, seconds since the epoch (`None`: none since the start).
    pub fn last_change(&self) -> Option<f64> {
        Some(self.last_change.get()).filter(|t| *t > 0.0)
    }
}

#[cfg(test)]
mod tests;
