//! The inventory's event loop: CPG events of the inventory group in, the inventory out, the
//! registry's lock changes multicast, forwarded releases answered. The membership verdict is
//! not computed here (crate::membership is the one driver).

use super::changes::Changes;
use super::release;
use super::wire::{self, Body, ReleaseOutcome};
use super::ClusterState;
use crate::registry::Registry;
use corosync::{Cpg, CpgEvent};
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

pub(super) struct Task {
    pub cpg: AsyncFd<Cpg>,
    pub changes: Arc<Changes>,
    pub outgoing: (mpsc::UnboundedSender<Body>, mpsc::UnboundedReceiver<Body>),
    pub state: Arc<Mutex<ClusterState>>,
    pub registry: Arc<Registry>,
}

/// What the handlers need besides the corosync fd.
struct Ctx {
    state: Arc<Mutex<ClusterState>>,
    registry: Arc<Registry>,
    outgoing: mpsc::UnboundedSender<Body>,
}

pub(super) async fn run(t: Task) {
    let Task { mut cpg, changes, outgoing: (outgoing, mut outgoing_rx), state, registry } = t;
    let t = Ctx { state, registry, outgoing };
    loop {
        serve(&t, &mut cpg, &changes, &mut outgoing_rx).await;
        // corosync went away (stopped, or killed: a node removed from the cluster); the
        // membership driver has seen it too and says `lost` until it is back.
        cpg = reconnect(&t, &changes, &mut outgoing_rx).await;
    }
}

/// Until the connection to corosync is lost.
async fn serve(t: &Ctx, cpg: &mut AsyncFd<Cpg>, changes: &Changes, outgoing_rx: &mut mpsc::UnboundedReceiver<Body>) {
    let registry = &t.registry;
    let mut epoch = 0u64;
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
                                on_cpg(t, ev);
                            }
                        }
                        Err(e) => break Some(e.to_string()),
                    }
                },
                Err(e) => Some(e.to_string()),
            },
            () = changes.ready() => {
                // One request publishes one change per disk: those queued meanwhile go out
                // together (in as few messages as every member reads), with one hand-over of
                // this thread (block_in_place) instead of one each.
                let taken = changes.take_all();
                if !taken.is_empty() {
                    send(cpg.get_ref(), wire::change_messages(taken, batched(t)));
                }
                None
            }
            Some(body) = outgoing_rx.recv() => {
                // A release's lock changes were published before its answer was queued: they
                // go first, so the asker's table has them by the time it reads the answer.
                let mut messages = wire::change_messages(changes.take_all(), batched(t));
                match wire::encode(&body) {
                    Ok(m) => messages.push(m),
                    Err(e) => tracing::error!("inventory message not sent: {e}"),
                }
                send(cpg.get_ref(), messages);
                None
            }
        };
        if let Some(why) = gone {
            tracing::error!("lost corosync ({why}): the lock inventory stops");
            return;
        }
        if resend {
            epoch += 1;
            // Our own table as the registry holds it now; changes still queued
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
async fn reconnect(t: &Ctx, changes: &Changes, outgoing_rx: &mut mpsc::UnboundedReceiver<Body>) -> AsyncFd<Cpg> {
    let group = t.state.lock().group.clone();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut attempt = 0u64;
    loop {
        tick.tick().await;
        // Our table goes out whole when we join: what was queued meanwhile is not needed.
        changes.take_all();
        while outgoing_rx.try_recv().is_ok() {}
        match connect(&group) {
            Ok(cpg) => {
                let mut s = t.state.lock();
                s.me = cpg.get_ref().me();
                s.members.clear();
                s.inventory = super::inventory::Inventory::new();
                tracing::warn!(group, node_id = s.me.nodeid, "corosync is back: joined the inventory group again");
                return cpg;
            }
            Err(e) if attempt.is_multiple_of(60) => {
                tracing::warn!("corosync does not answer ({e}); trying again every second")
            }
            Err(_) => {}
        }
        attempt += 1;
    }
}

fn connect(group: &str) -> Result<AsyncFd<Cpg>, String> {
    let mut cpg = Cpg::new(group).map_err(|e| e.to_string())?;
    cpg.join().map_err(|e| e.to_string())?;
    corosync::reactor::register(cpg).map_err(|e| e.to_string())
}

/// Other nodes' changes go to `watch` from here; this node's the registry emits as it makes them.
fn watchers(t: &Ctx, s: &super::ClusterState, node: u32, changes: Vec<super::inventory::Change>, why: Option<&str>) {
    if node != s.me.nodeid {
        for (kind, lock) in changes {
            t.registry.events().emit(kind, || lock, why);
        }
    }
}

fn on_cpg(t: &Ctx, ev: CpgEvent) {
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
            Ok(body) => {
                let changes = s.inventory.deliver(sender, body);
                watchers(t, &s, sender.nodeid, changes, None);
            }
            Err(e) => tracing::warn!(%sender, "ignored an inventory message: {e}"),
        },
        CpgEvent::ConfChg { members, left, joined } => {
            for c in &left {
                let changes = s.inventory.member_left(c.addr);
                watchers(t, &s, c.addr.nodeid, changes, Some("its node left the cluster group"));
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

/// Multicasts `bodies` in order, one message each (the wire format every node reads).
fn send(cpg: &Cpg, messages: Vec<Vec<u8>>) {
    tokio::task::block_in_place(|| {
        for bytes in &messages {
            mcast_now(cpg, bytes);
        }
    });
}

/// Whether this node's changes may go out several to a message: every member reads them.
fn batched(t: &Ctx) -> bool {
    let s = t.state.lock();
    s.inventory.all_read_changes(&s.members)
}

/// `cpg_mcast_joined` may sleep under flow control: let tokio move other tasks away.
fn mcast(cpg: &Cpg, bytes: &[u8]) {
    tokio::task::block_in_place(|| mcast_now(cpg, bytes));
}

fn mcast_now(cpg: &Cpg, bytes: &[u8]) {
    if let Err(e) = cpg.mcast(bytes) {
        tracing::warn!("inventory message not sent: {e}; the next membership change re-sends the table");
    }
}
