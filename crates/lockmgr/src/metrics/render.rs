//! One scrape: the counted values ([`super::Metrics`]) and the state read now from the
//! registry, in one prometheus-client registry encoded as the Prometheus text format.

use super::labels::{ModeLabel, NodeModeLabels, VerdictLabel, VERDICTS};
use crate::registry::Registry;
use corosync::Verdict;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Unit;
use proto::mode::Mode;
use proto::status::Status;
use proto::LockInfo;
use std::sync::Arc;

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What a scrape reads: the registry (its state, and through its events the counted
/// values), and the membership verdict when the daemon follows one.
#[derive(Clone)]
pub struct Source {
    pub registry: Arc<Registry>,
    pub verdict: Option<tokio::sync::watch::Receiver<Verdict>>,
}

impl Source {
    /// The exposition now. Blocks briefly (the registry's table lock): call it from a
    /// blocking thread.
    pub fn render(&self) -> String {
        let verdict = self.verdict.as_ref().map(|v| *v.borrow());
        render(&self.registry, verdict)
    }
}

/// Lock-loss outcomes after which the VM may still run (and write).
const LEFT_RUNNING: [&str; 3] = ["ignored", "survived", "unreachable"];

/// VMs named in the recent lock-loss events that were left running (`ignore`d, survived
/// SIGKILL, could not be signalled), still run, and hold no lock here now: VMs running
/// without their locks.
pub fn unstopped_vms(status: &Status, local: &[LockInfo], runs: impl Fn(u32) -> bool) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    for ev in &status.lock_loss.recent {
        for vm in &ev.vms {
            if LEFT_RUNNING.contains(&vm.outcome.as_str())
                && vm.pid != 0
                && !local.iter().any(|l| l.pid == vm.pid)
                && runs(vm.pid)
            {
                seen.insert(vm.vm_uuid.clone());
            }
        }
    }
    seen.len()
}

fn pid_runs(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn gauge(v: i64) -> ConstGauge {
    ConstGauge::new(v)
}

fn flag(b: bool) -> ConstGauge {
    ConstGauge::new(i64::from(b))
}

fn counts<L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static>(
    labels: impl IntoIterator<Item = L>,
) -> Family<L, Gauge> {
    let f = Family::<L, Gauge>::default();
    for l in labels {
        f.get_or_create(&l).inc();
    }
    f
}

/// The exposition of `reg` now, with `verdict` (the membership driver's, if it runs).
pub fn render(reg: &Registry, verdict: Option<Verdict>) -> String {
    let m = reg.events().metrics();
    let status = reg.status();
    let local = reg.local_locks();
    let mut r = prometheus_client::registry::Registry::with_prefix("virtdlm");

    r.register(
        "build_info",
        "virtdlmd's version, backend and node name (always 1)",
        counts([BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
            backend: status.backend.clone(),
            node: status.node_name.clone(),
        }]),
    );

    // Locks held: this node's by mode (every mode shown, 0 included), the inventory's by node.
    let held = counts(local.iter().map(|l| ModeLabel::of(l.mode)));
    for mode in Mode::ALL {
        let _ = held.get_or_create(&ModeLabel::of(mode));
    }
    r.register("locks", "Locks held by VMs on this node, by mode", held);
    r.register("owners", "VMs (QEMU processes) registered on this node", gauge(status.owners as i64));
    if let Some(c) = &status.cluster {
        let remote = reg.locks();
        r.register(
            "inventory_locks",
            "Locks held in the cluster as this node's inventory knows them, by node and mode",
            counts(
                remote.iter().map(|l| NodeModeLabels { node: l.node_name.clone(), mode: ModeLabel::of(l.mode).mode }),
            ),
        );
        r.register(
            "cluster_members",
            "virtdlmd daemons in the cluster inventory's group",
            gauge(c.members.len() as i64),
        );
        if let Some(q) = c.quorate {
            r.register("quorate", "Whether corosync says this node's partition is quorate", flag(q));
        }
    }

    // Requests and lock changes, counted as they happen.
    r.register("acquires", "Locks granted to VMs on this node, by mode", m.acquires.clone());
    r.register(
        "releases",
        "Locks of this node's VMs released (by the VM, its exit, an administrator or lock loss), by mode",
        m.releases.clone(),
    );
    r.register("acquire_refusals", "Acquire requests refused, by reason", m.refusals.clone());
    r.register_with_unit(
        "acquire_duration",
        "Time to answer an acquire request, by result (granted or refused)",
        Unit::Seconds,
        m.acquire_seconds.clone(),
    );
    if let Some(t) = m.last_change() {
        r.register_with_unit(
            "last_lock_change_timestamp",
            "When a lock of this node was last granted or released (absent: none since the daemon started)",
            Unit::Seconds,
            ConstGauge::new(t),
        );
    }
    r.register(
        "releases_pending",
        "Releases the lock backend refused, being retried (the DLM may still hold these locks)",
        gauge(status.releases_pending.len() as i64),
    );

    // Membership and fencing.
    if let Some(v) = verdict {
        let now = v.kind();
        let f = Family::<VerdictLabel, Gauge>::default();
        for verdict in VERDICTS {
            f.get_or_create(&VerdictLabel { verdict }).set(i64::from(verdict == now));
        }
        r.register("membership_verdict", "This node's membership verdict: 1 for the current one", f);
        r.register(
            "membership_safe",
            "Whether the membership verdict lets this node hold locks",
            flag(v == Verdict::Safe),
        );
    }
    let fencing = &status.fencing;
    r.register(
        "fencing_shape_known",
        "Whether virtdlmd has read how the cluster is fenced",
        flag(fencing.shape.is_some()),
    );
    r.register(
        "quarantine_needed",
        "Whether this cluster's fencing needs grants to wait for a lost node (the quarantine)",
        flag(fencing.needs_quarantine),
    );
    r.register(
        "quarantine_active",
        "Whether grants are refused now because a lost node may still write",
        flag(fencing.active),
    );
    r.register(
        "quarantine_unaccounted_nodes",
        "Lost nodes nobody has accounted for yet (virtdlm confirm-down)",
        gauge(fencing.unaccounted.len() as i64),
    );
    r.register(
        "quarantine_confirmed_down_nodes",
        "Nodes an operator confirmed down (virtdlm confirm-down)",
        gauge(fencing.confirmed_down.len() as i64),
    );

    // Lock loss.
    r.register(
        "locks_lost",
        "Whether this node's locks are lost now (no grant until the membership is safe)",
        flag(status.lock_loss.lost),
    );
    r.register("lock_loss_events", "Lock-loss events handled, by reason", m.lock_loss_events.clone());
    r.register("lock_loss_vms", "VMs handled on lock loss, by outcome", m.lock_loss_vms.clone());
    r.register(
        "lock_loss_watchdog_fired",
        "Lock-loss events on which the watchdog was fired",
        m.watchdog_fired.clone(),
    );
    if let Some(last) = &status.lock_loss.last {
        r.register_with_unit(
            "last_lock_loss_timestamp",
            "When the last lock-loss event began (absent: none since the daemon started)",
            Unit::Seconds,
            ConstGauge::new(last.at),
        );
    }
    r.register(
        "lock_loss_unstopped_vms",
        "VMs left running by a recent lock-loss event (ignored, survived SIGKILL, unreachable) that still run and hold no lock here: VMs running without their locks",
        gauge(unstopped_vms(&status, &local, pid_runs) as i64),
    );

    // The journal.
    r.register_with_unit("journal_size", "Size of the journal file", Unit::Bytes, gauge(status.journal_bytes as i64));
    r.register(
        "journal_compactions",
        "Journal compactions since the daemon started",
        ConstCounter::new(status.journal_compactions),
    );

    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &r).expect("writing to a String");
    out
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    backend: String,
    node: String,
}
