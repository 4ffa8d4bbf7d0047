//! The membership driver, the daemon's only one: joins a CPG group of its own and tracks
//! quorum, and publishes this node's [`Verdict`] (the rule of [`corosync::membership`]) on a
//! `watch` channel whenever it changes. Lock-loss handling, the grant hold, the quarantine and
//! `virtdlm status` all take the membership from here; the lock inventory (crate::cluster)
//! keeps a CPG group of its own for its messages and computes no verdict.
//!
//! When corosync goes away the verdict becomes `Lost` (if we had joined) and the driver
//! reconnects every second, so a corosync that comes back is joined again without a daemon
//! restart.

use corosync::{reactor, Cpg, CpgEvent, Error, MembershipView, Quorum, Verdict};
use std::time::Duration;
use tokio::sync::watch;

/// The CPG group the driver joins (one member per virtdlmd).
pub const GROUP: &str = "virtdlm-membership";

/// Told each quorum notification: quorate or not, and the quorum membership (node ids).
pub type OnQuorum = Box<dyn Fn(bool, &[u32]) + Send + Sync>;

/// What the rest of the daemon is told besides the verdict, as it happens (uncoalesced).
pub struct Hooks {
    /// Every totem membership change after the first one seen (the grant hold starts here).
    pub on_ring_change: Box<dyn Fn() + Send + Sync>,
    /// Each quorum notification.
    pub on_quorum: OnQuorum,
}

/// Starts the driver on the current tokio runtime; the receiver sees the latest verdict (a
/// `watch` keeps only the latest, so a short `Settling` can be missed: the hooks see every
/// change, uncoalesced).
pub fn spawn(group: &str, hooks: Hooks) -> watch::Receiver<Verdict> {
    let (tx, rx) = watch::channel(Verdict::NotJoined);
    let group = group.to_owned();
    tokio::spawn(async move {
        // Carried across reconnections: a corosync that went away leaves us `Lost` until we
        // are joined (and quorate) again.
        let mut was_joined = false;
        // Failed attempts since the verdict last changed: logged once a minute, not every second.
        let mut misses = 0u64;
        loop {
            match drive(&group, &tx, &mut was_joined, &hooks).await {
                Ok(()) => return, // every receiver is gone
                Err(e) => {
                    if was_joined && *tx.borrow() != Verdict::Lost {
                        tracing::error!("membership: {e}");
                        let _ = tx.send(Verdict::Lost);
                        misses = 1;
                    } else {
                        if misses.is_multiple_of(60) {
                            tracing::warn!("membership: {e}; trying again every second");
                        }
                        misses += 1;
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    rx
}

/// One connection's life: returns `Ok` when nobody listens any more, `Err` when corosync
/// is unreachable or went away.
async fn drive(group: &str, tx: &watch::Sender<Verdict>, was_joined: &mut bool, hooks: &Hooks) -> Result<(), Error> {
    let mut cpg = Cpg::new(group)?;
    let quorum = Quorum::new()?;
    if !quorum.has_provider() {
        tracing::error!(
            "membership: corosync runs without a quorum provider; this node never considers itself quorate"
        );
    }
    cpg.join()?;
    let mut view = MembershipView::new(cpg.me());
    let cpg = reactor::register(cpg).map_err(|_| Error::NotRunning { call: "epoll registration" })?;
    let mut quorum = reactor::register(quorum).map_err(|_| Error::NotRunning { call: "epoll registration" })?;
    let mut cpg = cpg;
    // The first ring is the one we joined into, not a change.
    let mut seen_ring = false;
    loop {
        tokio::select! {
            guard = cpg.readable_mut() => {
                let mut guard = guard.map_err(|_| Error::NotRunning { call: "cpg fd" })?;
                // Edge-triggered: dispatch until nothing is left, then clear.
                loop {
                    let events = guard.get_inner_mut().dispatch()?;
                    if events.is_empty() {
                        break;
                    }
                    for ev in &events {
                        if matches!(ev, CpgEvent::TotemConfChg { .. }) {
                            if seen_ring {
                                (hooks.on_ring_change)();
                            }
                            seen_ring = true;
                        }
                        view.on_cpg(ev);
                    }
                }
                guard.clear_ready();
            }
            guard = quorum.readable_mut() => {
                let mut guard = guard.map_err(|_| Error::NotRunning { call: "quorum fd" })?;
                // Edge-triggered: dispatch until nothing is left, then clear.
                loop {
                    let events = guard.get_inner_mut().dispatch()?;
                    if events.is_empty() {
                        break;
                    }
                    for ev in &events {
                        if let corosync::QuorumEvent::Quorum { quorate, members, .. } = ev {
                            (hooks.on_quorum)(*quorate, members);
                        }
                        view.on_quorum(ev);
                    }
                }
                guard.clear_ready();
            }
            _ = tx.closed() => return Ok(()),
        }
        let v = view.verdict();
        if !matches!(v, Verdict::NotJoined) {
            *was_joined = true;
        }
        tx.send_if_modified(|cur| {
            if *cur != v {
                tracing::info!(from = %cur, to = %v, "cluster membership verdict");
                *cur = v;
                true
            } else {
                false
            }
        });
    }
}
