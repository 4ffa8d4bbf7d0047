//! The cluster event loop: CPG and quorum events in, the verdict and the inventory out,
//! the registry's lock changes multicast, forwarded releases answered.

use super::release;
use super::wire::{self, Body, LockChange, ReleaseOutcome};
use super::ClusterState;
use crate::registry::Registry;
use corosync::{Cpg, CpgEvent, MembershipView, Quorum, QuorumEvent, Verdict};
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

pub(super) struct Task {
    pub cpg: AsyncFd<Cpg>,
    pub quorum: AsyncFd<Quorum>,
    pub changes: mpsc::UnboundedReceiver<LockChange>,
    pub outgoing: (mpsc::UnboundedSender<Body>, mpsc::UnboundedReceiver<Body>),
    pub state: Arc<Mutex<ClusterState>>,
    pub verdict: watch::Sender<Verdict>,
    pub registry: Arc<Registry>,
}

/// What the handlers need besides the corosync fds.
struct Ctx {
    state: Arc<Mutex<ClusterState>>,
    verdict: watch::Sender<Verdict>,
    registry: Arc<Registry>,
    outgoing: mpsc::UnboundedSender<Body>,
}

pub(super) async fn run(t: Task) {
    let Task { mut cpg, mut quorum, mut changes, outgoing: (outgoing, mut outgoing_rx), state, verdict, registry } = t;
    let t = Ctx { state, verdict, registry, outgoing };
    loop {
        serve(&t, &mut cpg, &mut quorum, &mut changes, &mut outgoing_rx).await;
        // corosync went away (stopped, or killed: a node removed from the cluster). The
        // verdict stays `lost` until it is back and the membership is safe again.
        (cpg, quorum) = reconnect(&t, &mut changes, &mut outgoing_rx).await;
    }
}

/// Until the connection to corosync is lost.
async fn serve(
    t: &Ctx,
    cpg: &mut AsyncFd<Cpg>,
    quorum: &mut AsyncFd<Quorum>,
    changes: &mut mpsc::UnboundedReceiver<LockChange>,
    outgoing_rx: &mut mpsc::UnboundedReceiver<Body>,
) {
    let registry = &t.registry;
    let me = cpg.get_ref().me();
    let mut view = MembershipView::new(me);
    let mut epoch = 0u64;
    // Lock loss: every totem change after the first holds grants back (a `watch` of the
    // verdict may coalesce a short `settling`).
    let loss_gate = registry.loss_gate().clone();
    let mut seen_ring = false;
    loop {
        let mut resend = false;
        let gone = tokio::select! {
            r = cpg.readable_mut() => match r {
                Ok(mut guard) => loop {
                    match guard.get_inner_mut().dispatch() {
                        Ok(evs) if evs.is_empty() => {
                            guard.clear_ready();
                            break None;
                        }
                        Ok(evs) => {
                            for ev in evs {
                                resend |= matches!(ev, CpgEvent::ConfChg { .. });
                                if matches!(ev, CpgEvent::TotemConfChg { .. }) {
                                    if seen_ring {
                                        loss_gate.membership_changed();
                                        registry.quarantine().membership_changed();
                                    }
                                    seen_ring = true;
                                }
                                on_cpg(t, &mut view, ev);
                            }
                        }
                        Err(e) => break Some(e.to_string()),
                    }
                },
                Err(e) => Some(e.to_string()),
            },
            r = quorum.readable_mut() => match r {
                Ok(mut guard) => loop {
                    match guard.get_inner_mut().dispatch() {
                        Ok(evs) if evs.is_empty() => {
                            guard.clear_ready();
                            break None;
                        }
                        Ok(evs) => {
                            for ev in evs {
                                if let QuorumEvent::Quorum { quorate, members, .. } = &ev {
                                    t.state.lock().quorate = Some(*quorate);
                                    registry.quarantine().set_members(members);
                                }
                                if let Some(v) = view.on_quorum(&ev) {
                                    publish(t, v);
                                }
                            }
                        }
                        Err(e) => break Some(e.to_string()),
                    }
                },
                Err(e) => Some(e.to_string()),
            },
            Some(change) = changes.recv() => {
                send(cpg.get_ref(), &Body::from(change));
                None
            }
            Some(body) = outgoing_rx.recv() => {
                // A release's lock changes were published before its answer was queued: they
                // go first, so the asker's table has them by the time it reads the answer.
                while let Ok(change) = changes.try_recv() {
                    send(cpg.get_ref(), &Body::from(change));
                }
                send(cpg.get_ref(), &body);
                None
            }
        };
        if let Some(why) = gone {
            tracing::error!("lost corosync ({why}): the lock inventory stops; membership verdict is lost");
            if let Some(v) = view.on_corosync_lost() {
                publish(t, v);
            }
            return;
        }
        if resend {
            epoch += 1;
            // Our own table as the registry holds it now; changes still queued in the channel
            // follow it on the wire and are idempotent against it.
            let registry = registry.clone();
            let locks = tokio::task::spawn_blocking(move || registry.local_locks()).await.unwrap_or_default();
            for part in wire::state_parts(epoch, &locks) {
                mcast(cpg.get_ref(), &part);
            }
        }
    }
}

/// Connects to corosync again, once a second until it answers; the inventory starts afresh
/// (the members re-send their tables when we join).
async fn reconnect(
    t: &Ctx,
    changes: &mut mpsc::UnboundedReceiver<LockChange>,
    outgoing_rx: &mut mpsc::UnboundedReceiver<Body>,
) -> (AsyncFd<Cpg>, AsyncFd<Quorum>) {
    let group = t.state.lock().group.clone();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut attempt = 0u64;
    loop {
        tick.tick().await;
        // Our table goes out whole when we join: what was queued meanwhile is not needed.
        while changes.try_recv().is_ok() {}
        while outgoing_rx.try_recv().is_ok() {}
        match connect(&group) {
            Ok((cpg, quorum)) => {
                let mut s = t.state.lock();
                s.me = cpg.get_ref().me();
                s.members.clear();
                s.quorate = None;
                s.inventory = super::inventory::Inventory::new();
                tracing::warn!(group, node_id = s.me.nodeid, "corosync is back: joined the inventory group again");
                return (cpg, quorum);
            }
            Err(e) if attempt.is_multiple_of(60) => {
                tracing::warn!("corosync does not answer ({e}); trying again every second")
            }
            Err(_) => {}
        }
        attempt += 1;
    }
}

fn connect(group: &str) -> Result<(AsyncFd<Cpg>, AsyncFd<Quorum>), String> {
    let mut cpg = Cpg::new(group).map_err(|e| e.to_string())?;
    cpg.join().map_err(|e| e.to_string())?;
    let quorum = Quorum::new().map_err(|e| e.to_string())?;
    let cpg = corosync::reactor::register(cpg).map_err(|e| e.to_string())?;
    let quorum = corosync::reactor::register(quorum).map_err(|e| e.to_string())?;
    Ok((cpg, quorum))
}

fn on_cpg(t: &Ctx, view: &mut MembershipView, ev: CpgEvent) {
    if let Some(v) = view.on_cpg(&ev) {
        publish(t, v);
    }
    let mut s = t.state.lock();
    match ev {
        CpgEvent::Deliver { sender, msg, .. } => match wire::decode(&msg) {
            // Addressed to another node: not ours to act on or to match.
            Ok(Body::ReleaseVm { to, .. } | Body::ReleaseVmReply { to, .. }) if to != s.me.nodeid => {}
            Ok(Body::ReleaseVm { req, uuid, force, .. }) => {
                let (registry, outgoing, from) = (t.registry.clone(), t.outgoing.clone(), s.node_name(sender.nodeid));
                tokio::spawn(async move {
                    let outcome = tokio::task::spawn_blocking(move || release::answer(&registry, &from, &uuid, force))
                        .await
                        .unwrap_or_else(|e| ReleaseOutcome::Failed { message: format!("release handler failed: {e}") });
                    let _ = outgoing.send(Body::ReleaseVmReply { to: sender.nodeid, req, outcome });
                });
            }
            Ok(Body::ReleaseVmReply { req, outcome, .. }) => {
                if !s.release.reply(sender, req, outcome) {
                    tracing::info!(%sender, req, "an answer to a release this daemon no longer waits for (timed out, or of an earlier daemon)");
                }
            }
            Ok(body) => s.inventory.deliver(sender, body),
            Err(e) => tracing::warn!(%sender, "ignored an inventory message: {e}"),
        },
        CpgEvent::ConfChg { members, left, joined } => {
            for c in &left {
                s.inventory.member_left(c.addr);
                tracing::info!(node = %s.node_name(c.addr.nodeid), member = %c, "inventory: member left; its locks are shown as left");
            }
            for c in &joined {
                tracing::info!(node = %s.node_name(c.addr.nodeid), member = %c, "inventory: member joined");
            }
            s.members = members;
            for c in &left {
                if !s.members.iter().any(|m| m.nodeid == c.addr.nodeid) {
                    s.release.node_left(c.addr.nodeid);
                }
            }
        }
        CpgEvent::TotemConfChg { .. } => {}
    }
}

fn publish(t: &Ctx, v: Verdict) {
    tracing::info!(verdict = %v, "cluster membership verdict");
    t.state.lock().verdict = v;
    t.verdict.send_replace(v);
}

fn send(cpg: &Cpg, body: &Body) {
    match wire::encode(body) {
        Ok(bytes) => mcast(cpg, &bytes),
        Err(e) => tracing::error!("inventory message not sent: {e}"),
    }
}

/// `cpg_mcast_joined` may sleep under flow control: let tokio move other tasks away.
fn mcast(cpg: &Cpg, bytes: &[u8]) {
    let r = tokio::task::block_in_place(|| cpg.mcast(bytes));
    if let Err(e) = r {
        tracing::warn!("inventory message not sent: {e}; the next membership change re-sends the table");
    }
}
