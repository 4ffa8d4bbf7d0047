//! Lock loss: when this node can no longer vouch for the locks it holds, every VM holding
//! one is stopped as its `<on_lockfailure>` action says (crates/fencing), and no new lock is
//! granted until the membership is safe again.
//!
//! The trigger is the membership verdict (the rule dlm_controld's `wait_conditions_done`
//! follows): a partition without quorum, or this node out of the membership (its own leave,
//! or corosync gone), means the quorate side will recover the lockspace without us and hand
//! our locks to others. A transient `Settling` (CPG and quorum ring ids differ while a change
//! is delivered) is not a loss: dlm_controld waits there too. Other triggers come from the
//! daemon itself: the DLM lockspace disappeared, or a lock could not be confirmed.
//!
//! Both sides of a partition notice it at the same token + consensus timeout (≈7–8 s on the
//! test cluster, token 3000 ms), and without DLM fencing the survivors' DLM hands our locks
//! over a fraction of a second later. So every daemon also holds its grants back for
//! `grant_hold` after each membership change, longer than the escalation bound
//! `pause_timeout + grace + kill_wait` (docs/LOCK-LOSS.md).
//!
//! The whole policy lives in this module tree:
//! - here: the decision table ([`decide`]), the grant hold ([`LossGate`]), stopping the VMs
//!   ([`LockLoss`]) and the watches that trigger it ([`start`]);
//! - [`controld`]: dlm_controld dying or hanging on a node whose corosync stays up;
//! - [`quarantine`]: clusters that can neither fence nor let quorum pick a survivor.
//!
//! The verdict comes from crate::membership (the one driver); releases refused meanwhile are
//! kept by crate::backend::deferring and crate::unreleased.

pub mod controld;
pub mod quarantine;

use crate::backend::deferring::Deferring;
use crate::backend::Backend;
use crate::journal::OwnerKey;
use crate::registry::Registry;
use corosync::Verdict;
use fencing::{Action, Fencer, Outcome, PidProcess, Target};
use parking_lot::Mutex;
use proto::{FailureAction, OwnerSpec};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Why this node's locks are lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossReason {
    /// Our partition has no quorum: the quorate side recovers the lockspace without us.
    QuorumLost,
    /// This node left the CPG/quorum membership (its own leave or removal was delivered).
    LeftMembership,
    /// The connection to corosync is gone.
    CorosyncLost,
    /// The DLM lockspace stopped or disappeared.
    LockspaceFailed(String),
    /// The daemon cannot confirm a lock it recorded (e.g. adopting it after a restart failed).
    Unconfirmed(String),
    /// dlm_controld on this node died or hangs while corosync runs on (see [`controld`]).
    ControldLost(String),
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossReason::QuorumLost => f.write_str("quorum lost"),
            LossReason::LeftMembership => f.write_str("this node left the cluster membership"),
            LossReason::CorosyncLost => f.write_str("the connection to corosync was lost"),
            LossReason::LockspaceFailed(d) => write!(f, "the DLM lockspace failed: {d}"),
            LossReason::Unconfirmed(d) => write!(f, "a lock could not be confirmed: {d}"),
            LossReason::ControldLost(d) => write!(f, "dlm_controld on this node {d}"),
        }
    }
}

/// What a membership verdict means for the locks of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changes.
    Keep,
    /// The locks are lost: stop their VMs, refuse grants.
    Lose(LossReason),
    /// The membership is safe again after a loss: grants may resume.
    Recover,
}

/// The decision for `verdict`, given whether locks are currently considered lost.
/// Acts only on the states dlm_controld acts on: `Inquorate` and `Lost`. `Settling` is a
/// membership change being delivered; `NotJoined`/`NoQuorumYet` happen only before the
/// first join, when no cluster lock can have been granted through this membership.
pub fn decide(lost: bool, verdict: &Verdict) -> Decision {
    match verdict {
        Verdict::Safe if lost => Decision::Recover,
        Verdict::Inquorate if !lost => Decision::Lose(LossReason::QuorumLost),
        Verdict::Lost if !lost => Decision::Lose(LossReason::LeftMembership),
        _ => Decision::Keep,
    }
}

/// The fencing action for libvirt's `<on_lockfailure>` value.
pub fn action_of(a: FailureAction) -> Action {
    match a {
        FailureAction::Default | FailureAction::Poweroff | FailureAction::Restart => Action::Poweroff,
        FailureAction::Pause => Action::Pause,
        FailureAction::Ignore => Action::Ignore,
    }
}

pub use proto::status::VmOutcome;

/// The last lock-loss event, as `Status` shows it.
#[derive(Debug, Clone)]
pub struct LossEvent {
    pub reason: LossReason,
    pub message: String,
    /// Wall-clock time of the trigger, seconds since the epoch.
    pub at: f64,
    pub vms: Vec<VmOutcome>,
    /// From the trigger to the last VM handled (monotonic clock).
    pub elapsed_ms: u64,
    pub watchdog_fired: bool,
    /// When grants resumed (the membership was safe again), seconds since the epoch.
    pub recovered_at: Option<f64>,
}

impl LossReason {
    /// As `status` shows it: the kind, and its detail if it has one.
    pub fn wire(&self) -> proto::status::LossReasonInfo {
        let (kind, detail) = match self {
            LossReason::QuorumLost => ("quorum_lost", None),
            LossReason::LeftMembership => ("left_membership", None),
            LossReason::CorosyncLost => ("corosync_lost", None),
            LossReason::LockspaceFailed(d) => ("lockspace_failed", Some(d.clone())),
            LossReason::Unconfirmed(d) => ("unconfirmed", Some(d.clone())),
            LossReason::ControldLost(d) => ("controld_lost", Some(d.clone())),
        };
        proto::status::LossReasonInfo { kind: kind.into(), detail }
    }
}

impl LossEvent {
    /// As `status` shows it.
    pub fn wire(&self) -> proto::status::LossEvent {
        proto::status::LossEvent {
            reason: self.reason.wire(),
            message: self.message.clone(),
            at: self.at,
            vms: self.vms.clone(),
            elapsed_ms: self.elapsed_ms,
            watchdog_fired: self.watchdog_fired,
            recovered_at: self.recovered_at,
        }
    }
}

/// How long releases deferred during a loss wait after the membership is safe again.
const DEFERRED_RELEASE_DELAY: Duration = Duration::from_secs(15);

/// How long a retire may take before it is reported stuck (with this node alone, the
/// kernel's recovery takes moments).
const RETIRE_STUCK_AFTER: Duration = Duration::from_secs(30);

/// How many lock-loss events `Status` keeps.
pub const RECENT: usize = 8;

/// The lock-loss state the registry consults: grants are refused while it says lost.
#[derive(Debug, Default)]
pub struct LossGate {
    lost: AtomicBool,
    /// The most recent events, oldest first (at most [`RECENT`]).
    recent: Mutex<std::collections::VecDeque<LossEvent>>,
    /// No grant is answered before this: a node that dropped out may still be stopping its
    /// VMs (see [`LockLoss::on_verdict`]).
    hold_until: Mutex<Option<Instant>>,
    /// The hold applied by [`LossGate::membership_changed`].
    hold: Mutex<Duration>,
    /// The lockspace's members as dlm_controld last set them in configfs (see
    /// [`LossGate::check_lockspace_members`]).
    ls_members: Mutex<Option<controld::Members>>,
}

impl LossGate {
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Blocks until the grant hold (if any) has passed. Called before a grant is answered.
    pub fn wait_hold(&self) {
        let left = self.hold_left();
        if !left.is_zero() {
            tracing::info!(wait_ms = left.as_millis() as u64, "grant held back: a node may still be stopping its VMs");
            std::thread::sleep(left);
        }
    }

    /// How long grants are still held back.
    fn hold_left(&self) -> Duration {
        // Read now, not only on the next tick: the grant being answered may be the one the
        // DLM made right after it recovered without a node.
        self.check_lockspace_members();
        let until = *self.hold_until.lock();
        until.map_or(Duration::ZERO, |u| u.saturating_duration_since(Instant::now()))
    }

    /// The cluster membership changed (a new totem ring): hold grants back. Called by the
    /// membership driver for every change, since a `watch` channel may coalesce them.
    pub fn membership_changed(&self) {
        let d = *self.hold.lock();
        self.hold_for(d);
    }

    /// Watches the members of lockspace `ls` from now on (called once it is joined).
    pub fn watch_lockspace_members(&self, ls: &str) {
        *self.ls_members.lock() = Some(controld::Members::new(ls));
    }

    /// A node left the lockspace while corosync kept it (its dlm_controld died: no totem
    /// change, so [`LossGate::membership_changed`] is not called): hold grants back as for a
    /// membership change. dlm_controld sets the kernel's members in configfs before it lets
    /// the lockspace recover, so a grant the recovery made is answered after this saw it.
    pub fn check_lockspace_members(&self) {
        // While lost, grants are refused anyway, and the lockspace may be being released
        // (`rejoin_lockspace` rewrites its configfs tree): nothing to read.
        if self.is_lost() {
            return;
        }
        // The members are read and the hold set under one lock. Another thread answering a
        // grant meanwhile reads no departure itself (this read consumed it), so it must wait
        // here until the hold is set, or it would answer a grant the recovery made at once.
        let mut members = self.ls_members.lock();
        let Some(m) = members.as_mut() else { return };
        let left = m.refresh();
        if left.is_empty() {
            return;
        }
        #[cfg(test)]
        tests::AFTER_DEPARTURE_READ.with(|h| h.borrow().as_ref().map(|f| f()));
        let d = *self.hold.lock();
        self.hold_for(d);
        drop(members);
        tracing::warn!(nodes = ?left, hold_ms = d.as_millis() as u64,
            "lockspace membership changed: node(s) left the lockspace; holding grants back while they may still stop their VMs");
    }

    fn hold_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut h = self.hold_until.lock();
        if h.is_none_or(|t| t < until) {
            *h = Some(until);
        }
    }

    /// For `Status`: whether locks are lost now, the last event (`null` if none) and the
    /// recent ones.
    pub fn status(&self) -> proto::status::LockLossStatus {
        let recent = self.recent.lock();
        proto::status::LockLossStatus {
            lost: self.is_lost(),
            last: recent.back().map(LossEvent::wire),
            recent: recent.iter().map(LossEvent::wire).collect(),
        }
    }

    pub fn last(&self) -> Option<LossEvent> {
        self.recent.lock().back().cloned()
    }

    fn record(&self, ev: LossEvent) {
        let mut r = self.recent.lock();
        if r.len() == RECENT {
            r.pop_front();
        }
        r.push_back(ev);
    }
}

/// Lock loss and the quarantine as the registry consults them before every grant.
#[derive(Debug, Default, Clone)]
pub struct Gate {
    pub loss: Arc<LossGate>,
    pub quarantine: Arc<quarantine::Quarantine>,
}

impl crate::registry::GrantGate for Gate {
    fn is_lost(&self) -> bool {
        self.loss.is_lost()
    }
    fn wait_hold(&self) {
        self.loss.wait_hold()
    }
    fn refusal(&self, vm: &str, disk: &str) -> Option<String> {
        self.quarantine.refusal(vm, disk)
    }
    fn confirm_down(
        &self,
        node: &str,
        uid: u32,
    ) -> Result<proto::status::Confirmation, crate::registry::RegistryError> {
        use crate::registry::RegistryError;
        self.quarantine.confirm_down(node, uid).map_err(|e| match e {
            quarantine::ConfirmError::UnknownNode(_) => RegistryError::BadRequest(e.to_string()),
            quarantine::ConfirmError::IsMember { .. } => RegistryError::Busy(e.to_string()),
        })
    }
    fn lock_loss_status(&self) -> proto::status::LockLossStatus {
        self.loss.status()
    }
    fn fencing_status(&self) -> proto::status::FencingStatus {
        self.quarantine.status()
    }
}

impl Gate {
    /// A gate attached to `registry`: every grant there consults it from now on.
    pub fn attach(registry: &Registry) -> Gate {
        let g = Gate::default();
        registry.attach_gate(Arc::new(g.clone()));
        g
    }
}

pub fn wall_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The lock-loss handler of one daemon.
pub struct LockLoss {
    registry: Arc<Registry>,
    fencer: Arc<Fencer>,
    gate: Arc<LossGate>,
    /// How long grants are held back after the membership stops being safe.
    hold: Duration,
    lockspace: Option<Arc<Deferring>>,
    was_safe: AtomicBool,
    /// The loss came from dlm_controld (see [`controld`]): the lockspace here can no
    /// longer be trusted, so a `safe` verdict does not end it; only releasing the lockspace
    /// and joining it again does (`rejoin_lockspace`).
    controld_lost: AtomicBool,
}

impl LockLoss {
    /// `hold`: after every membership change, grants wait this long (see [`LockLoss::on_verdict`]).
    pub fn new(
        registry: Arc<Registry>,
        gate: Arc<LossGate>,
        fencer: Fencer,
        hold: Duration,
        lockspace: Option<Arc<Deferring>>,
    ) -> Self {
        *gate.hold.lock() = hold;
        LockLoss {
            registry,
            fencer: Arc::new(fencer),
            gate,
            hold,
            lockspace,
            was_safe: AtomicBool::new(false),
            controld_lost: AtomicBool::new(false),
        }
    }

    pub fn gate(&self) -> &Arc<LossGate> {
        &self.gate
    }

    /// Applies a membership verdict (see [`decide`]).
    ///
    /// Whenever the membership stops being safe, grants are also held back for `hold`: a node
    /// that dropped out notices it at the same token timeout as we do and is still stopping
    /// its VMs, while our DLM may already hand us its locks after a short recovery (at once
    /// with `enable_fencing=0`). `hold` covers its escalation bound.
    pub async fn on_verdict(&self, verdict: &Verdict) {
        let safe = *verdict == Verdict::Safe;
        if self.was_safe.swap(safe, Ordering::SeqCst) && !safe {
            self.gate.hold_for(self.hold);
        }
        match decide(self.gate.is_lost(), verdict) {
            Decision::Keep => {}
            Decision::Lose(reason) => self.trigger(reason).await,
            // A retired lockspace is joined again first (`rejoin_lockspace`), then this recovers;
            // one being retired is not running: nothing could be granted through it.
            Decision::Recover if self.lockspace.as_ref().is_some_and(|l| l.is_retired() || l.is_retiring()) => {}
            Decision::Recover if self.controld_lost.load(Ordering::SeqCst) => {}
            Decision::Recover => self.recover(),
        }
    }

    /// Grants resume: the membership is safe again.
    pub fn recover(&self) {
        if let Some(ls) = self.lockspace.clone() {
            let pending = ls.resume_releases();
            if !pending.is_empty() {
                tokio::spawn(async move {
                    // Right after a partition heals, dlm_controld may still remove this node
                    // (stateful merge) and the lockspace never runs again: wait that out. If
                    // the locks are lost again meanwhile, these releases are deferred again.
                    tokio::time::sleep(DEFERRED_RELEASE_DELAY).await;
                    let _ = tokio::task::spawn_blocking(move || {
                        for g in pending {
                            if let Err(e) = ls.release(&g) {
                                tracing::error!(resource = %g.name.0, mode = %g.mode, "deferred release failed: {e}");
                            }
                        }
                    })
                    .await;
                });
            }
        }
        if self.gate.lost.swap(false, Ordering::SeqCst) {
            if let Some(ev) = self.gate.recent.lock().back_mut() {
                ev.recovered_at = Some(wall_now());
            }
            tracing::warn!("membership is safe again: new locks may be granted");
        }
    }

    /// Locks are lost: refuse grants from now on, and stop every VM holding a lock.
    pub async fn trigger(&self, reason: LossReason) {
        let at = wall_now();
        let t0 = std::time::Instant::now();
        self.gate.lost.store(true, Ordering::SeqCst);
        if let Some(ls) = &self.lockspace {
            ls.defer_releases();
        }
        let holders = self.registry.lock_holders();
        tracing::error!(
            reason = %reason,
            vms = holders.len(),
            "LOCK LOSS: {reason}; stopping every VM that holds a lock, no new locks until the membership is safe"
        );
        self.stop(reason, holders, at, t0).await;
    }

    /// Some VMs' locks could not be confirmed (e.g. not taken back after a daemon restart):
    /// those VMs, and only those, get their failure action. Grants go on for everyone else.
    pub async fn fence_owners(&self, reason: LossReason, keys: &[OwnerKey]) {
        let (at, t0) = (wall_now(), std::time::Instant::now());
        let owners = self.registry.owners_of(keys);
        tracing::error!(reason = %reason, vms = owners.len(), "LOCK LOSS: {reason}; stopping the VMs concerned");
        self.stop(reason, owners, at, t0).await;
    }

    async fn stop(&self, reason: LossReason, holders: Vec<(OwnerKey, OwnerSpec)>, at: f64, t0: Instant) {
        let pids: std::collections::HashMap<String, u32> =
            holders.iter().map(|(k, s)| (s.uuid.clone(), k.pid)).collect();
        let (targets, mut vms) = targets(holders);
        let fencer = self.fencer.clone();
        let report = tokio::task::spawn_blocking(move || fencer.carry_out(targets)).await;
        let (watchdog_fired, elapsed) = match report {
            Ok(r) => {
                for (name, uuid, action, outcome, note) in r.vms {
                    let pid = pids.get(&uuid).copied().unwrap_or(0);
                    vms.push(VmOutcome {
                        vm_name: name,
                        vm_uuid: uuid,
                        pid,
                        action: action.to_string(),
                        outcome: outcome_name(&outcome).into(),
                        note,
                    });
                }
                (r.watchdog_fired, t0.elapsed())
            }
            Err(e) => {
                tracing::error!("the fencing run panicked: {e}");
                self.fencer.watchdog.fire("the fencing run failed");
                (true, Duration::ZERO)
            }
        };
        for v in &vms {
            tracing::warn!(vm = %v.vm_name, uuid = %v.vm_uuid, pid = v.pid, action = %v.action, outcome = %v.outcome,
                "lock loss: VM handled");
        }
        tracing::error!(elapsed_ms = elapsed.as_millis() as u64, watchdog_fired, "lock loss handled: {reason}");
        let ev = LossEvent {
            message: reason.to_string(),
            reason,
            at,
            vms,
            elapsed_ms: elapsed.as_millis() as u64,
            watchdog_fired,
            recovered_at: None,
        };
        self.registry.events().metrics().lock_loss(&ev);
        self.gate.record(ev);
    }
}

/// Starts lock-loss handling on the current runtime: verdicts from `verdicts` (the
/// membership driver), the DLM lockspace `lockspace` (the backend and its name) watched
/// through sysfs, and the watchdog petted while it has not fired.
pub fn start(
    fencing: fencing::FencerConfig,
    watchdog: fencing::Watchdog,
    registry: Arc<Registry>,
    gate: Arc<LossGate>,
    mut verdicts: tokio::sync::watch::Receiver<Verdict>,
    lockspace: Option<(Arc<Deferring>, &str)>,
    hold: Option<Duration>,
) -> Arc<LockLoss> {
    let (lockspace, lockspace_name) = match lockspace {
        Some((ls, name)) => (Some(ls), name),
        None => (None, ""),
    };
    let hold = hold.unwrap_or_else(|| fencing.bound() + Duration::from_secs(1));
    tracing::info!(
        bound_ms = fencing.bound().as_millis() as u64,
        grace_ms = fencing.grace.as_millis() as u64,
        kill_wait_ms = fencing.kill_wait.as_millis() as u64,
        pause_timeout_ms = fencing.pause_timeout.as_millis() as u64,
        grant_hold_ms = hold.as_millis() as u64,
        watchdog_timeout_ms = watchdog.timeout().map(|t| t.as_millis() as u64),
        watchdog = %watchdog.device().map(|d| d.display().to_string()).unwrap_or_else(|| "none".into()),
        "lock-loss handling on"
    );
    let ls_name = lockspace.as_ref().map(|_| lockspace_name.to_owned());
    let loss = Arc::new(LockLoss::new(registry, gate, Fencer::new(fencing, watchdog), hold, lockspace.clone()));
    if let Some(ls) = lockspace {
        tokio::spawn(rejoin_lockspace(ls, loss.clone(), verdicts.clone()));
    }
    let l = loss.clone();
    tokio::spawn(async move {
        loop {
            let v = *verdicts.borrow_and_update();
            l.on_verdict(&v).await;
            if verdicts.changed().await.is_err() {
                // The membership driver ended: nothing can vouch for the locks any more.
                l.trigger(LossReason::CorosyncLost).await;
                return;
            }
        }
    });
    if let Some(ls) = ls_name {
        loss.gate.watch_lockspace_members(&ls);
        let l = loss.clone();
        tokio::spawn(async move { watch_lockspace(&ls, l).await });
        let l = loss.clone();
        tokio::spawn(async move { watch_controld(l).await });
    }
    let l = loss.clone();
    tokio::spawn(async move {
        // Pet well within any watchdog timeout; once fired, `pet` does nothing.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if let Err(e) = l.fencer.watchdog.pet() {
                tracing::error!("petting the watchdog failed: {e}");
            }
        }
    });
    loss
}

/// The kernel lists a joined lockspace under /sys/kernel/dlm/<name>; if it disappears
/// (dlm_controld or an administrator removed it), the locks in it are gone. A lockspace
/// merely stopped for recovery stays listed: that case is covered by the membership verdict.
async fn watch_lockspace(ls: &str, loss: Arc<LockLoss>) {
    let path = std::path::PathBuf::from("/sys/kernel/dlm").join(ls);
    let mut present = path.exists();
    if !present {
        tracing::warn!(lockspace = ls, "{} is not there: lockspace health is not watched", path.display());
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        loss.gate.check_lockspace_members();
        let now = path.exists();
        // Already lost: the lockspace goes when it is retired (`rejoin_lockspace`).
        if present && !now && !loss.gate.is_lost() {
            loss.trigger(LossReason::LockspaceFailed(format!("{} disappeared", path.display()))).await;
        }
        present = now;
    }
}

/// dlm_controld died or hangs here while corosync runs on: the other nodes' dlm_controld
/// recovers the lockspace without this node (at once for a death; with `enable_fencing=0`
/// nothing fences it) while the kernel here still lets our VMs believe they hold their locks.
/// Checked every [`controld::CHECK_EVERY`]; the VMs are stopped as for any loss.
async fn watch_controld(loss: Arc<LockLoss>) {
    let mut watch = match controld::Watch::start() {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("dlm_controld is not watched: {e}");
            return;
        }
    };
    let mut tick = tokio::time::interval(controld::CHECK_EVERY);
    loop {
        tick.tick().await;
        // Already lost (e.g. the node was removed from the cluster, which ends dlm_controld):
        // recovery goes through `rejoin_lockspace`, nothing to add.
        if loss.gate.is_lost() {
            continue;
        }
        let problem = match tokio::task::spawn_blocking(move || {
            let p = watch.check();
            (watch, p)
        })
        .await
        {
            Ok((w, p)) => {
                watch = w;
                p
            }
            Err(e) => {
                tracing::error!("the dlm_controld check panicked: {e}");
                return;
            }
        };
        // The check may have run while another trigger declared the loss (the others remove
        // a node whose dlm_controld died from corosync within a second): one event is enough.
        if let Some(why) = problem.filter(|_| !loss.gate.is_lost()) {
            loss.controld_lost.store(true, Ordering::SeqCst);
            loss.trigger(LossReason::ControldLost(why)).await;
        }
    }
}

/// After this node was removed from the cluster (the others' dlm_controld kills its corosync
/// when a partition heals), dlm_controld here exits and leaves the lockspace stopped for good.
/// While locks are lost, this releases such an abandoned lockspace (recovered with this node
/// alone, see [`dlm::abandoned`]) and drops the locks still listed, so the node holds no
/// DLM state and a new dlm_controld may start. Once corosync and dlm_controld are back and the
/// membership is safe, the lockspace is joined again and grants resume: no daemon restart.
async fn rejoin_lockspace(ls: Arc<Deferring>, loss: Arc<LockLoss>, verdicts: tokio::sync::watch::Receiver<Verdict>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if !loss.gate.is_lost() {
            continue;
        }
        if !ls.is_retired() {
            if !dlm::abandoned::is_abandoned(ls.lockspace_name()) {
                continue;
            }
            tracing::warn!(
                lockspace = ls.lockspace_name(),
                "dlm_controld is gone and left the lockspace stopped (this node was removed from the cluster): \
                 recovering it alone to release it"
            );
            let l = ls.clone();
            let mut retire = tokio::task::spawn_blocking(move || l.retire());
            let done = tokio::select! {
                r = &mut retire => Some(r),
                _ = tokio::time::sleep(RETIRE_STUCK_AFTER) => None,
            };
            let done = match done {
                Some(r) => r,
                None => {
                    let status = dlm::abandoned::recover_status(ls.lockspace_name());
                    tracing::error!(
                        lockspace = ls.lockspace_name(),
                        recover_status = %status,
                        "the abandoned lockspace's recovery has not completed after {} s: this daemon's thread closing it waits in the kernel (dlm_clear_proc_locks) and may never return; the lockspace stays, and a new dlm_controld will have this node removed from the cluster again: reboot the node",
                        RETIRE_STUCK_AFTER.as_secs()
                    );
                    retire.await
                }
            };
            match done {
                Ok(Ok(())) => {
                    let registry = loss.registry.clone();
                    let dropped = tokio::task::spawn_blocking(move || registry.forget_lost_locks())
                        .await
                        .map(|d| d.len())
                        .unwrap_or(0);
                    tracing::warn!(
                        lockspace = ls.lockspace_name(),
                        dropped,
                        "lockspace released; this node holds no DLM state. Waiting for corosync and dlm_controld to run again"
                    );
                }
                Ok(Err(e)) => {
                    tracing::error!("releasing the abandoned lockspace failed (retrying): {e}");
                    // A safe verdict that came meanwhile was held back for the retire (see
                    // `LockLoss::on_verdict`): apply it now, as it would have been.
                    if *verdicts.borrow() == Verdict::Safe {
                        loss.recover();
                    }
                }
                Err(e) => tracing::error!("releasing the abandoned lockspace panicked: {e}"),
            }
        } else if *verdicts.borrow() == Verdict::Safe {
            tracing::info!(lockspace = ls.lockspace_name(), "membership safe again: joining the lockspace again");
            let l = ls.clone();
            match tokio::task::spawn_blocking(move || l.reopen()).await {
                Ok(Ok(())) => {
                    tracing::info!(lockspace = ls.lockspace_name(), "lockspace joined again");
                    loss.controld_lost.store(false, Ordering::SeqCst);
                    loss.recover();
                }
                Ok(Err(e)) => tracing::error!("joining the lockspace again failed (retrying): {e}"),
                Err(e) => tracing::error!("joining the lockspace again panicked: {e}"),
            }
        }
    }
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Ignored => "ignored",
        Outcome::Paused => "paused",
        Outcome::Terminated => "terminated",
        Outcome::Killed => "killed",
        Outcome::Survived => "survived",
    }
}

/// Fencing targets for the lock holders; holders already gone are reported as such.
fn targets(holders: Vec<(OwnerKey, OwnerSpec)>) -> (Vec<Target>, Vec<VmOutcome>) {
    let mut out = Vec::new();
    let mut gone = Vec::new();
    for (key, spec) in holders {
        match PidProcess::open(key.pid, Some(key.start)) {
            Ok(Some(p)) => out.push(Target {
                name: spec.name,
                uuid: spec.uuid,
                uri: spec.uri,
                action: action_of(spec.action),
                process: Box::new(p),
            }),
            Ok(None) => gone.push(VmOutcome {
                vm_name: spec.name,
                vm_uuid: spec.uuid,
                pid: key.pid,
                action: action_of(spec.action).to_string(),
                outcome: "gone".into(),
                note: None,
            }),
            Err(e) => {
                tracing::error!(vm = %spec.name, pid = key.pid, "cannot open the VM's process: {e}");
                gone.push(VmOutcome {
                    vm_name: spec.name,
                    vm_uuid: spec.uuid,
                    pid: key.pid,
                    action: action_of(spec.action).to_string(),
                    outcome: "unreachable".into(),
                    note: Some(e.to_string()),
                })
            }
        }
    }
    (out, gone)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use corosync::RingId;
    use std::cell::RefCell;

    thread_local! {
        /// Runs in `check_lockspace_members` between reading a departure and setting the hold.
        pub(super) static AFTER_DEPARTURE_READ: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
    }

    /// A grant answered while another thread reports a node leaving the lockspace must see
    /// the hold. Fails on the build before this test (or with `drop(members)` moved up to
    /// right after `refresh()`), where the departure was read under one lock and the hold set
    /// after it was released: the grant in between read no departure and no hold, and was
    /// answered while the node that left still ran its VM (seen on the cluster:
    /// `a_killed_dlm_controld_...` granted node 3's disk 12 ms before its VM stopped).
    #[test]
    fn a_grant_answered_while_a_departure_is_being_reported_waits_for_its_hold() {
        let dir = std::env::temp_dir().join(format!("virtdlm-hold-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for n in ["1", "3"] {
            std::fs::create_dir_all(dir.join(n)).unwrap();
        }
        let gate = Arc::new(LossGate::default());
        *gate.hold.lock() = Duration::from_secs(60);
        *gate.ls_members.lock() = Some(controld::Members::at(dir.clone()));
        gate.check_lockspace_members();
        assert!(gate.hold_left().is_zero(), "the first read is the baseline");
        std::fs::remove_dir(dir.join("3")).unwrap();

        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Duration>();
        let g = gate.clone();
        let granting = std::thread::spawn(move || {
            go_rx.recv().unwrap();
            // The hook has stopped listening once it timed out.
            let _ = done_tx.send(g.hold_left());
        });
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        AFTER_DEPARTURE_READ.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                go_tx.send(()).unwrap();
                // With the hold set under the members' lock, the grant blocks and this times
                // out; without, it answers in the window.
                *s.lock() = done_rx.recv_timeout(Duration::from_secs(2)).ok();
            }))
        });
        gate.check_lockspace_members();
        AFTER_DEPARTURE_READ.with(|h| h.borrow_mut().take());
        granting.join().unwrap();
        assert_eq!(*seen.lock(), None, "the grant was answered between the departure's read and its hold");
        assert!(!gate.hold_left().is_zero(), "the departure holds grants back");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reason_shows_in_status_as_its_kind_and_detail() {
        let json = |r: LossReason| serde_json::to_value(r.wire()).unwrap();
        assert_eq!(json(LossReason::QuorumLost), serde_json::json!({ "kind": "quorum_lost" }));
        assert_eq!(
            json(LossReason::LockspaceFailed("gone".into())),
            serde_json::json!({ "kind": "lockspace_failed", "detail": "gone" })
        );
    }

    #[test]
    fn only_inquorate_and_lost_are_losses() {
        let r = RingId { nodeid: 1, seq: 4 };
        assert_eq!(decide(false, &Verdict::Safe), Decision::Keep);
        assert_eq!(decide(false, &Verdict::Settling { cpg: Some(r), quorum: r }), Decision::Keep);
        assert_eq!(decide(false, &Verdict::Settling { cpg: None, quorum: r }), Decision::Keep);
        assert_eq!(decide(false, &Verdict::NotJoined), Decision::Keep);
        assert_eq!(decide(false, &Verdict::NoQuorumYet), Decision::Keep);
        assert_eq!(decide(false, &Verdict::Inquorate), Decision::Lose(LossReason::QuorumLost));
        assert_eq!(decide(false, &Verdict::Lost), Decision::Lose(LossReason::LeftMembership));
    }

    #[test]
    fn a_loss_lasts_until_the_membership_is_safe() {
        let r = RingId { nodeid: 1, seq: 4 };
        assert_eq!(decide(true, &Verdict::Inquorate), Decision::Keep, "one loss, one run");
        assert_eq!(decide(true, &Verdict::Lost), Decision::Keep);
        assert_eq!(decide(true, &Verdict::Settling { cpg: None, quorum: r }), Decision::Keep);
        assert_eq!(decide(true, &Verdict::NotJoined), Decision::Keep);
        assert_eq!(decide(true, &Verdict::Safe), Decision::Recover);
    }

    #[test]
    fn libvirt_actions_map_to_fencing_actions() {
        assert_eq!(action_of(FailureAction::Default), Action::Poweroff);
        assert_eq!(action_of(FailureAction::Restart), Action::Poweroff);
        assert_eq!(action_of(FailureAction::Pause), Action::Pause);
        assert_eq!(action_of(FailureAction::Ignore), Action::Ignore);
    }

    fn lease(key: &str) -> proto::Resource {
        proto::Resource::Lease { lockspace: None, key: key.into(), path: None, offset: None }
    }

    /// The owner spec of test VM `n` (uuid and name derived from `n`); the registry's tests use it too.
    pub(crate) fn spec(pid: u32, n: u8) -> OwnerSpec {
        OwnerSpec {
            uuid: format!("00000000-0000-0000-0000-0000000000{n:02x}"),
            name: format!("vm{n}"),
            pid,
            id: n.into(),
            uri: None,
            action: FailureAction::Default,
        }
    }

    /// A registry on the local backend, journal in `dir`. The owner-watch receiver is
    /// returned so that it lives as long as the test.
    fn local_registry(
        dir: &std::path::Path,
    ) -> (Arc<Registry>, tokio::sync::mpsc::UnboundedReceiver<crate::journal::OwnerKey>) {
        let (journal, _) = crate::journal::Journal::open(&dir.join("journal"), 1 << 20, false).unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let backend = Arc::new(crate::backend::local::LocalBackend::new("n1"));
        (Arc::new(Registry::new(backend, crate::naming::Naming::default(), journal, tx)), rx)
    }

    #[tokio::test]
    async fn a_loss_stops_every_holder_and_refuses_grants_until_recovery() {
        let dir = std::env::temp_dir().join(format!("lockloss-test-{}", std::process::id()));
        let (registry, _rx) = local_registry(&dir);
        let mut holder = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let mut idle = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let ok = |r: Result<(), crate::registry::RegistryError>| assert!(r.is_ok(), "{r:?}");
        ok(registry.acquire(None, &spec(holder.id(), 1), &[lease("a")], 0));
        ok(registry.register(&spec(idle.id(), 2), &[lease("b")]));

        let cfg = fencing::FencerConfig {
            grace: Duration::from_millis(500),
            kill_wait: Duration::from_millis(500),
            ..Default::default()
        };
        let loss = LockLoss::new(
            registry.clone(),
            Gate::attach(&registry).loss,
            Fencer::new(cfg, fencing::Watchdog::none()),
            Duration::from_millis(300),
            None,
        );
        loss.on_verdict(&Verdict::Inquorate).await;
        assert_eq!(holder.wait().unwrap().code(), None, "killed by a signal");
        assert!(idle.try_wait().unwrap().is_none(), "an owner holding nothing is left alone");
        let ev = loss.gate().last().expect("event recorded");
        assert_eq!(ev.reason, LossReason::QuorumLost);
        assert_eq!(ev.vms.len(), 1);
        assert_eq!((ev.vms[0].vm_name.as_str(), ev.vms[0].outcome.as_str()), ("vm1", "terminated"));
        assert!(registry.status().lock_loss.lost);
        assert_eq!(registry.status().lock_loss.last.expect("an event").vms[0].outcome, "terminated");

        let refused = registry.acquire(None, &spec(idle.id(), 2), &[lease("b")], 0);
        assert!(matches!(&refused, Err(crate::registry::RegistryError::Backend(_))), "{refused:?}");
        loss.on_verdict(&Verdict::Settling { cpg: None, quorum: corosync::RingId { nodeid: 1, seq: 9 } }).await;
        assert!(loss.gate().is_lost(), "settling is not safe");
        loss.on_verdict(&Verdict::Safe).await;
        assert!(!loss.gate().is_lost());
        assert!(loss.gate().last().unwrap().recovered_at.is_some());
        ok(registry.acquire(None, &spec(idle.id(), 2), &[lease("b")], 0));
        idle.kill().unwrap();
        idle.wait().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_unconfirmed_lock_stops_only_its_vm() {
        let dir = std::env::temp_dir().join(format!("lockloss-unconfirmed-{}", std::process::id()));
        let (registry, _rx) = local_registry(&dir);
        let mut a = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let mut b = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        assert!(registry.acquire(None, &spec(a.id(), 1), &[lease("a")], 0).is_ok());
        assert!(registry.acquire(None, &spec(b.id(), 2), &[lease("b")], 0).is_ok());
        let loss = LockLoss::new(
            registry.clone(),
            Gate::attach(&registry).loss,
            Fencer::new(Default::default(), fencing::Watchdog::none()),
            Duration::ZERO,
            None,
        );
        let key = crate::owner::key_of(a.id()).unwrap();
        loss.fence_owners(LossReason::Unconfirmed("test".into()), &[key]).await;
        assert_eq!(a.wait().unwrap().code(), None, "stopped by a signal");
        assert!(b.try_wait().unwrap().is_none(), "the other VM runs on");
        assert!(!loss.gate().is_lost(), "grants go on");
        assert_eq!(loss.gate().last().unwrap().vms[0].vm_name, "vm1");
        b.kill().unwrap();
        b.wait().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn locks_lost_with_the_lockspace_leave_the_table_and_the_journal() {
        let dir = std::env::temp_dir().join(format!("lockloss-forget-{}", std::process::id()));
        let (registry, _rx) = local_registry(&dir);
        let mut paused = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let a = spec(paused.id(), 1);
        assert!(registry.acquire(None, &a, &[lease("a"), lease("b")], 0).is_ok());
        assert_eq!(registry.local_locks().len(), 2);
        let dropped = registry.forget_lost_locks();
        assert_eq!(dropped.iter().map(|l| l.vm_name.as_str()).collect::<Vec<_>>(), ["vm1", "vm1"]);
        assert!(registry.local_locks().is_empty(), "nothing is reported held that the DLM does not hold");
        assert!(registry.forget_lost_locks().is_empty());
        drop(registry);
        // The journal agrees: a restart takes nothing back.
        let (journal, _) = crate::journal::Journal::open(&dir.join("journal"), 1 << 20, false).unwrap();
        let (tx, _rx2) = tokio::sync::mpsc::unbounded_channel();
        let backend = Arc::new(crate::backend::local::LocalBackend::new("n1"));
        let again = Registry::new(backend, crate::naming::Naming::default(), journal, tx);
        let restored = again.restore().unwrap();
        assert_eq!((restored.locks_adopted, restored.locks_lost), (0, 0));
        assert!(again.local_locks().is_empty());
        paused.kill().unwrap();
        paused.wait().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn grants_are_held_back_after_the_membership_stops_being_safe() {
        let dir = std::env::temp_dir().join(format!("lockloss-hold-{}", std::process::id()));
        let (registry, _rx) = local_registry(&dir);
        let hold = Duration::from_millis(400);
        let gate = Gate::attach(&registry).loss;
        let loss =
            LockLoss::new(registry, gate, Fencer::new(Default::default(), fencing::Watchdog::none()), hold, None);
        // No hold before any change (read, not timed: a loaded machine may stall any call).
        assert!(loss.gate().hold_until.lock().is_none(), "no hold before any change");
        loss.on_verdict(&Verdict::Safe).await;
        loss.on_verdict(&Verdict::Settling { cpg: None, quorum: corosync::RingId { nodeid: 1, seq: 2 } }).await;
        loss.on_verdict(&Verdict::Safe).await;
        assert!(!loss.gate().is_lost(), "a settling membership is no loss");
        let t = Instant::now();
        loss.gate().wait_hold();
        assert!(t.elapsed() >= hold - Duration::from_millis(50), "held for {:?}", t.elapsed());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_dead_holder_is_reported_gone_not_signalled() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let spec = OwnerSpec {
            uuid: "00000000-0000-0000-0000-000000000001".into(),
            name: "vm1".into(),
            pid,
            id: 1,
            uri: None,
            action: FailureAction::Default,
        };
        let (t, gone) = targets(vec![(OwnerKey { pid, start: 1 }, spec)]);
        assert!(t.is_empty());
        assert_eq!(gone[0].outcome, "gone");
    }
}
