//! The daemon's sockets: accepting clients, checking who they are (SO_PEERCRED), reading
//! frames (see `proto`), and answering each request with exactly one typed response.
//!
//! - control socket: every request, from allowed uids/gids only (root by default);
//! - admin socket: world-connectable, read-only requests only.
//!
//! Connections from peers that may change nothing (every admin-socket peer, and a control
//! peer whose uid is not allowed) are untrusted: at most [`UNTRUSTED_PER_UID`] per uid and
//! [`UNTRUSTED_CONNECTIONS`] in all are kept open, and one idle for [`UNTRUSTED_IDLE`] is
//! closed, so no local user can use up the daemon's file descriptors or crowd out another
//! user. Allowed control peers (libvirtd, root) have no cap: they could stop the daemon anyway.
//!
//! A frame that cannot be a request (oversized, unreadable, wrong version, or not finished
//! within the read timeout) is answered with its error and the connection is closed, since
//! the stream can no longer be trusted to be in step. A trusted control peer's connection has
//! a thread of its own ([`blocking`]), every other one a task, so a slow client delays nobody
//! else.

use crate::registry::{Registry, RegistryError};
use proto::{self, ErrorCode, FrameError, Op, Request, Response};
use rustix::net::sockopt::socket_peercred;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

mod blocking;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    Control,
    Admin,
}

/// Who may use the control socket.
#[derive(Debug, Clone)]
pub struct Access {
    pub allowed_uids: Vec<u32>,
    pub allowed_gid: Option<u32>,
}

impl Access {
    fn allows(&self, uid: u32, gid: u32) -> bool {
        self.allowed_uids.contains(&uid) || self.allowed_gid == Some(gid)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another virtdlmd already serves {0}")]
    InUse(String),
    #[error("cannot create socket {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Binds a socket at `path` with `mode` permissions, replacing a stale socket file but never
/// one a live daemon still answers on.
pub fn bind(path: &Path, mode: u32, gid: Option<u32>) -> Result<UnixListener, BindError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| BindError::Io { path: path.display().to_string(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let l = UnixListener::bind(path).map_err(io)?;
    if let Some(g) = gid {
        std::os::unix::fs::chown(path, None, Some(g)).map_err(io)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok(l)
}

/// Most untrusted connections kept open at once (per socket).
pub const UNTRUSTED_CONNECTIONS: usize = 64;
/// Most untrusted connections of one uid kept open at once (per socket).
pub const UNTRUSTED_PER_UID: usize = 16;
/// An untrusted connection idle this long is closed.
pub const UNTRUSTED_IDLE: Duration = Duration::from_secs(60);

/// Open untrusted connections, by uid.
#[derive(Default)]
struct Slots {
    by_uid: parking_lot::Mutex<std::collections::HashMap<u32, usize>>,
    /// Connections closed for want of a slot since the last warning, and when that was: a
    /// flood is logged every few seconds, not once per connection.
    refused: parking_lot::Mutex<(u64, Option<std::time::Instant>)>,
}

/// One untrusted connection's place; given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    uid: u32,
}

impl Slots {
    fn take(self: &Arc<Self>, uid: u32) -> Result<Slot, &'static str> {
        let mut m = self.by_uid.lock();
        if m.values().sum::<usize>() >= UNTRUSTED_CONNECTIONS {
            return Err("too many untrusted connections open");
        }
        let n = m.entry(uid).or_default();
        if *n >= UNTRUSTED_PER_UID {
            return Err("too many connections open for this uid");
        }
        *n += 1;
        Ok(Slot { slots: self.clone(), uid })
    }

    /// Counts a connection closed for want of a slot; the count to log when it is time to.
    fn refused(&self) -> Option<u64> {
        let mut r = self.refused.lock();
        r.0 += 1;
        let now = std::time::Instant::now();
        if r.1.is_some_and(|t| now.duration_since(t) < Duration::from_secs(10)) {
            return None;
        }
        let n = std::mem::take(&mut r.0);
        r.1 = Some(now);
        Some(n)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.slots.by_uid.lock();
        if let Some(n) = m.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.uid);
            }
        }
    }
}

/// Accepts clients for ever.
///
/// The control socket's trusted peers are served by [`blocking`]'s acceptor threads, each
/// connection on the thread that accepted it; every other connection is a runtime task.
pub async fn serve(
    listener: UnixListener,
    kind: SocketKind,
    registry: Arc<Registry>,
    access: Arc<Access>,
    read_timeout: Duration,
) {
    let socket = Arc::new(Socket { kind, registry, access, read_timeout, slots: Arc::new(Slots::default()) });
    if kind == SocketKind::Control {
        if let Err(e) = blocking::start(listener, socket) {
            tracing::error!("cannot serve the {kind:?} socket: {e}");
        }
        return;
    }
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if let Some(peer) = peer_of(&stream) {
                    socket.untrusted(stream, peer);
                }
            }
            Err(e) => {
                tracing::warn!("accept on the {kind:?} socket failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One socket being served: what its connections need.
struct Socket {
    kind: SocketKind,
    registry: Arc<Registry>,
    access: Arc<Access>,
    read_timeout: Duration,
    slots: Arc<Slots>,
}

impl Socket {
    fn trusts(&self, peer: Peer) -> bool {
        self.kind == SocketKind::Control && self.access.allows(peer.uid, peer.gid)
    }

    /// Serves a connection that may change nothing as a runtime task, if a slot is free.
    fn untrusted(&self, stream: UnixStream, peer: Peer) {
        let slot = match self.slots.take(peer.uid) {
            Ok(s) => s,
            Err(why) => {
                if let Some(n) = self.slots.refused() {
                    tracing::warn!(
                        peer_pid = peer.pid,
                        peer_uid = peer.uid,
                        "{:?} socket: {why}; closed {n} new connection(s) since the last warning",
                        self.kind
                    );
                }
                return;
            }
        };
        let (kind, registry, read_timeout) = (self.kind, self.registry.clone(), self.read_timeout);
        tokio::spawn(async move {
            connection(stream, kind, peer, registry, read_timeout).await;
            drop(slot);
        });
    }
}

/// The peer's credentials (SO_PEERCRED); none if they cannot be read (the connection is dropped).
fn peer_of(stream: &impl std::os::fd::AsFd) -> Option<Peer> {
    match socket_peercred(stream) {
        Ok(c) => Some(Peer { uid: c.uid.as_raw(), gid: c.gid.as_raw(), pid: c.pid.as_raw_nonzero().get() as u32 }),
        Err(e) => {
            tracing::warn!("SO_PEERCRED failed, dropping the connection: {e}");
            None
        }
    }
}

/// What reading one request produced.
enum Incoming {
    Request(Request),
    Closed,
    /// Answer this, then close.
    Bad(Response),
}

/// Who is at the other end (SO_PEERCRED, taken at accept).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

async fn read_request(stream: &mut UnixStream, read_timeout: Duration) -> Incoming {
    let mut header = [0u8; 4];
    // An untrusted client may stay idle between requests for UNTRUSTED_IDLE (trusted control
    // peers are served by `blocking`, which lets them idle as long as they like); once a frame
    // starts, it must finish within the timeout.
    let first = match tokio::time::timeout(UNTRUSTED_IDLE, stream.read_exact(&mut header[..1])).await {
        Ok(r) => r,
        Err(_) => return Incoming::Closed,
    };
    if first.is_err() {
        return Incoming::Closed;
    }
    let body = tokio::time::timeout(read_timeout, async {
        stream.read_exact(&mut header[1..]).await?;
        let len = proto::body_len(header)?;
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        Ok::<_, FrameError>(body)
    })
    .await
    .unwrap_or_else(|_| Err(FrameError::Io(std::io::ErrorKind::TimedOut.into())));
    judge(body, read_timeout)
}

/// What a frame read to its end (or not) is: a request, or the error to answer before
/// closing. An I/O error of kind `TimedOut` or `WouldBlock` means the rest of the frame did
/// not arrive within `read_timeout`.
fn judge(body: Result<Vec<u8>, FrameError>, read_timeout: Duration) -> Incoming {
    let body = match body {
        Err(FrameError::Io(e)) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
            return Incoming::Bad(Response::error(
                ErrorCode::BadRequest,
                format!("incomplete frame: the rest did not arrive within {} ms", read_timeout.as_millis()),
            ))
        }
        Err(FrameError::TooLarge(n)) => {
            return Incoming::Bad(Response::error(
                ErrorCode::FrameTooLarge,
                format!("frame of {n} bytes is over the {}-byte limit", proto::MAX_FRAME),
            ))
        }
        Err(_) => return Incoming::Closed,
        Ok(b) => b,
    };
    match proto::decode_request(&body) {
        Ok(r) => Incoming::Request(r),
        Err(FrameError::Version { got }) => Incoming::Bad(Response::error(
            ErrorCode::Version,
            format!("protocol version {got} is not supported (virtdlmd speaks {})", proto::PROTOCOL_VERSION),
        )),
        Err(e) => Incoming::Bad(Response::error(ErrorCode::BadRequest, e.to_string())),
    }
}

/// `resp` as one frame; an answer that cannot be encoded becomes an `Internal` error.
fn frame(resp: &Response) -> Option<Vec<u8>> {
    proto::encode(resp)
        .or_else(|e| proto::encode(&Response::error(ErrorCode::Internal, format!("answer could not be sent: {e}"))))
        .ok()
}

async fn send(stream: &mut (impl tokio::io::AsyncWrite + Unpin), resp: &Response) -> bool {
    match frame(resp) {
        Some(f) => stream.write_all(&f).await.is_ok(),
        None => false,
    }
}

async fn connection(
    mut stream: UnixStream,
    kind: SocketKind,
    peer: Peer,
    registry: Arc<Registry>,
    read_timeout: Duration,
) {
    let Peer { uid, pid, .. } = peer;
    loop {
        let req = match read_request(&mut stream, read_timeout).await {
            Incoming::Closed => return,
            Incoming::Bad(resp) => {
                tracing::warn!(peer_pid = pid, peer_uid = uid, "bad frame: {resp:?}");
                let _ = send(&mut stream, &resp).await;
                return;
            }
            Incoming::Request(r) => r,
        };
        if kind == SocketKind::Control {
            let resp = Response::error(
                ErrorCode::Unauthorized,
                format!("uid {uid} may not use the control socket (only root and the configured allowed_uids / allowed_gid may); use the admin socket for read-only requests"),
            );
            let _ = send(&mut stream, &resp).await;
            return;
        }
        if req.op == Op::Watch {
            tracing::info!(peer_pid = pid, peer_uid = uid, "watch: streaming lock changes");
            watch(&mut stream, &registry).await;
            return;
        }
        let resp = if kind == SocketKind::Admin && !req.op.is_read_only() {
            Response::error(
                ErrorCode::Unauthorized,
                "the admin socket is read-only; this request needs the control socket (root)",
            )
        } else {
            run_blocking(&registry, peer, req.op).await
        };
        if !send(&mut stream, &resp).await {
            return;
        }
    }
}

/// `watch` (proto::watch): the table, then every change, until the client closes or sends
/// anything (the connection carries nothing else from here on).
async fn watch(stream: &mut UnixStream, registry: &Arc<Registry>) {
    // Subscribed before the table is read: a change in between shows in both, never in neither.
    let mut rx = registry.events().subscribe();
    let reg = registry.clone();
    let locks = tokio::task::spawn_blocking(move || reg.locks()).await.unwrap_or_default();
    if !send(stream, &Response::Locks { locks }).await {
        return;
    }
    let (mut rd, mut wr) = stream.split();
    let mut byte = [0u8; 1];
    loop {
        tokio::select! {
            ev = crate::events::next(&mut rx) => match ev {
                Some(event) => {
                    if !send(&mut wr, &Response::Event { event }).await {
                        return;
                    }
                }
                None => return,
            },
            _ = rd.read(&mut byte) => return,
        }
    }
}

/// Runs `dispatch` off the async code: a panic in it becomes an `Internal` answer.
///
/// On the daemon's multi-thread runtime it runs in place ([`tokio::task::block_in_place`]):
/// handing a request to the blocking pool and its answer back costs two thread wake-ups,
/// which were most of a short request's time. The worker's other tasks move to another
/// thread meanwhile, so a request that blocks (journal sync, a bounded DLM wait) still
/// stops nobody else. A current-thread runtime cannot do that: there it goes to the pool.
async fn run_blocking(registry: &Arc<Registry>, peer: Peer, op: Op) -> Response {
    let internal = |e: String| Response::error(ErrorCode::Internal, format!("request handler failed: {e}"));
    if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        let run = std::panic::AssertUnwindSafe(|| dispatch(registry, Some(peer), op));
        tokio::task::block_in_place(|| std::panic::catch_unwind(run)).unwrap_or_else(|p| internal(panic_text(&p)))
    } else {
        let registry = registry.clone();
        tokio::task::spawn_blocking(move || dispatch(&registry, Some(peer), op))
            .await
            .unwrap_or_else(|e| internal(e.to_string()))
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Runs one request against the registry (blocking). `peer`: who asks (SO_PEERCRED).
pub fn dispatch(reg: &Registry, peer: Option<Peer>, op: Op) -> Response {
    let peer_pid = peer.map(|p| p.pid);
    let done = || Response::Ok { locks: vec![] };
    match op {
        Op::Register { owner, resources } => reply(reg.register(&owner, &resources).map(|()| done())),
        Op::Acquire { owner, resources, state: _, wait_ms } => {
            let t0 = std::time::Instant::now();
            let r = reg.acquire(peer_pid, &owner, &resources, wait_ms);
            reg.events().metrics().acquire_answered(t0.elapsed(), r.as_ref().err());
            reply(r.map(|()| done()))
        }
        Op::Release { owner, resources } => {
            reply(reg.release(peer_pid, &owner, &resources).map(|state| Response::State { state }))
        }
        Op::Inquire { owner } => Response::State { state: reg.inquire(&owner) },
        Op::Status => Response::Status { status: Box::new(reg.status()) },
        Op::Locks => Response::Locks { locks: reg.locks() },
        Op::Inspect { resource } => reply(reg.inspect(&resource).map(|i| Response::Inspect {
            identity: i.identity,
            resource: i.resource,
            holders: i.holders,
        })),
        Op::ResourceName { resource } => reply(
            reg.resource_name(&resource).map(|(identity, resource)| Response::ResourceName { identity, resource }),
        ),
        Op::ReleaseVm { uuid, force } => reply(reg.release_vm(&uuid, force).map(|locks| Response::Ok { locks })),
        Op::ReleaseVmOn { node, uuid, force } => match reg.cluster_link() {
            Some(link) if link.node_id() == node => {
                reply(reg.release_vm(&uuid, force).map(|locks| Response::Ok { locks }))
            }
            Some(link) => reply(link.forward_release(node, &uuid, force).map(|locks| Response::Ok { locks })),
            None => Response::error(
                ErrorCode::NodeUnreachable,
                format!(
                    "this virtdlmd runs without the cluster inventory (cluster = false): it cannot ask node id {node}"
                ),
            ),
        },
        Op::Cleanup { dry_run } => Response::Ok { locks: reg.cleanup(dry_run) },
        // Served by the connection itself (`watch`), which never hands it here.
        Op::Watch => Response::error(ErrorCode::BadRequest, "watch needs a connection of its own"),
        Op::ConfirmDown { node } => match peer {
            Some(p) => {
                reply(reg.confirm_down(&node, p.uid).map(|confirmation| Response::ConfirmedDown { confirmation }))
            }
            None => Response::error(ErrorCode::Unauthorized, "confirm-down needs a peer whose uid is known"),
        },
    }
}

/// The registry's answer on the wire: the one place a [`RegistryError`] becomes an error code.
pub fn reply(r: Result<Response, RegistryError>) -> Response {
    let e = match r {
        Ok(resp) => return resp,
        Err(e) => e,
    };
    let code = match &e {
        RegistryError::Conflict { .. } => ErrorCode::Conflict,
        RegistryError::BadRequest(_) => ErrorCode::BadRequest,
        RegistryError::UnknownOwner(_) => ErrorCode::UnknownOwner,
        RegistryError::OwnerGone(_) => ErrorCode::OwnerGone,
        RegistryError::OutOfOrder(_) => ErrorCode::OutOfOrder,
        RegistryError::Journal(_) => ErrorCode::Journal,
        RegistryError::Backend(_) => ErrorCode::Backend,
        RegistryError::Busy(_) => ErrorCode::Busy,
        RegistryError::Quarantined(_) => ErrorCode::Quarantined,
        RegistryError::NodeUnreachable(_) => ErrorCode::NodeUnreachable,
    };
    match e {
        RegistryError::Conflict { message, conflict } => {
            Response::Error(proto::ErrorReply { code, message, conflict: Some(conflict) })
        }
        other => Response::error(code, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_slots_are_capped_per_uid_and_in_all_and_given_back() {
        let slots = Arc::new(Slots::default());
        let mine: Vec<Slot> = (0..UNTRUSTED_PER_UID).map(|_| slots.take(1000).unwrap()).collect();
        assert!(slots.take(1000).is_err(), "one uid got more than its share");
        // Others still get in, until the total is reached.
        let others: Vec<Slot> =
            (0..UNTRUSTED_CONNECTIONS - UNTRUSTED_PER_UID).map(|i| slots.take(2000 + i as u32 / 8).unwrap()).collect();
        assert!(slots.take(9999).is_err(), "more than the total");
        drop(mine);
        assert!(slots.take(1000).is_ok(), "slots not given back");
        drop(others);
        assert!(slots.by_uid.lock().values().all(|n| *n <= 1));
    }

    #[test]
    fn registry_errors_become_their_wire_codes_with_the_user_s_sentence() {
        let conflict = proto::Conflict {
            identity: "/img/a.img".into(),
            resource: "d1:a".into(),
            wanted: proto::mode::Mode::Ex,
            holders: vec![],
        };
        match reply(Err(RegistryError::Conflict { message: "held by vm b".into(), conflict: conflict.clone() })) {
            Response::Error(e) => {
                assert_eq!((e.code, e.message.as_str()), (ErrorCode::Conflict, "held by vm b"));
                assert_eq!(e.conflict, Some(conflict), "the holders go to the client");
            }
            other => panic!("{other:?}"),
        }
        for (err, code) in [
            (RegistryError::BadRequest("m".into()), ErrorCode::BadRequest),
            (RegistryError::UnknownOwner("m".into()), ErrorCode::UnknownOwner),
            (RegistryError::OwnerGone("m".into()), ErrorCode::OwnerGone),
            (RegistryError::OutOfOrder("m".into()), ErrorCode::OutOfOrder),
            (RegistryError::Journal("m".into()), ErrorCode::Journal),
            (RegistryError::Backend("m".into()), ErrorCode::Backend),
            (RegistryError::Busy("m".into()), ErrorCode::Busy),
            (RegistryError::Quarantined("m".into()), ErrorCode::Quarantined),
            (RegistryError::NodeUnreachable("m".into()), ErrorCode::NodeUnreachable),
        ] {
            match reply(Err(err)) {
                Response::Error(e) => assert_eq!((e.code, e.message.as_str(), e.conflict), (code, "m", None)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(reply(Ok(Response::Ok { locks: vec![] })), Response::Ok { locks: vec![] });
    }

    #[test]
    fn a_flood_of_refusals_is_logged_now_and_then() {
        let slots = Slots::default();
        assert_eq!(slots.refused(), Some(1));
        assert!((0..1000).all(|_| slots.refused().is_none()));
    }
}
