//! The daemon's sockets: accepting clients, checking who they are (SO_PEERCRED), reading
//! frames (see `proto`), and answering each request with exactly one typed response.
//!
//! - control socket: every request, from allowed uids/gids only (root by default);
//! - admin socket: world-connectable, read-only requests only.
//!
//! A frame that cannot be a request (oversized, unreadable, wrong version, or not finished
//! within the read timeout) is answered with its error and the connection is closed, since
//! the stream can no longer be trusted to be in step. Each connection has its own task, so a
//! slow client delays nobody else.

use crate::proto::{self, ErrorCode, FrameError, Op, Request, Response};
use crate::registry::Registry;
use rustix::net::sockopt::socket_peercred;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

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

/// Most connections the world-connectable admin socket keeps open at once, so that nobody
/// can use up the daemon's file descriptors (the control socket is root's and has no cap).
const ADMIN_CONNECTIONS: usize = 64;
/// An admin connection idle this long is closed.
const ADMIN_IDLE: Duration = Duration::from_secs(60);

/// Accepts clients for ever.
pub async fn serve(listener: UnixListener, kind: SocketKind, registry: Arc<Registry>, access: Arc<Access>, read_timeout: Duration) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let permit = match kind {
                    SocketKind::Control => None,
                    SocketKind::Admin => match slots.clone().try_acquire_owned() {
                        Ok(p) => Some(p),
                        Err(_) => {
                            tracing::warn!("admin socket: {ADMIN_CONNECTIONS} connections open already; refusing one");
                            continue;
                        }
                    },
                };
                let (registry, access) = (registry.clone(), access.clone());
                tokio::spawn(async move {
                    connection(stream, kind, registry, access, read_timeout).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!("accept on the {kind:?} socket failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
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

async fn read_request(stream: &mut UnixStream, kind: SocketKind, read_timeout: Duration) -> Incoming {
    let mut header = [0u8; 4];
    // A control client may stay idle between requests as long as it likes (admin clients
    // for ADMIN_IDLE); once a frame starts, it must finish within the timeout.
    let first = stream.read_exact(&mut header[..1]);
    let first = match kind {
        SocketKind::Control => first.await,
        SocketKind::Admin => match tokio::time::timeout(ADMIN_IDLE, first).await {
            Ok(r) => r,
            Err(_) => return Incoming::Closed,
        },
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
    .await;
    let body = match body {
        Err(_) => {
            return Incoming::Bad(Response::error(
                ErrorCode::BadRequest,
                format!("incomplete frame: the rest did not arrive within {} ms", read_timeout.as_millis()),
            ))
        }
        Ok(Err(FrameError::TooLarge(n))) => {
            return Incoming::Bad(Response::error(
                ErrorCode::FrameTooLarge,
                format!("frame of {n} bytes is over the {}-byte limit", proto::MAX_FRAME),
            ))
        }
        Ok(Err(_)) => return Incoming::Closed,
        Ok(Ok(b)) => b,
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

async fn send(stream: &mut UnixStream, resp: &Response) -> bool {
    let frame = match proto::encode(resp) {
        Ok(f) => f,
        Err(e) => match proto::encode(&Response::error(ErrorCode::Internal, format!("answer could not be sent: {e}"))) {
            Ok(f) => f,
            Err(_) => return false,
        },
    };
    stream.write_all(&frame).await.is_ok()
}

async fn connection(mut stream: UnixStream, kind: SocketKind, registry: Arc<Registry>, access: Arc<Access>, read_timeout: Duration) {
    let cred = match socket_peercred(&stream) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("SO_PEERCRED failed, dropping the connection: {e}");
            return;
        }
    };
    let (uid, gid, pid) = (cred.uid.as_raw(), cred.gid.as_raw(), cred.pid.as_raw_nonzero().get() as u32);
    loop {
        let req = match read_request(&mut stream, kind, read_timeout).await {
            Incoming::Closed => return,
            Incoming::Bad(resp) => {
                tracing::warn!(peer_pid = pid, peer_uid = uid, "bad frame: {resp:?}");
                let _ = send(&mut stream, &resp).await;
                return;
            }
            Incoming::Request(r) => r,
        };
        if kind == SocketKind::Control && !access.allows(uid, gid) {
            let resp = Response::error(
                ErrorCode::Unauthorized,
                format!("uid {uid} may not use the control socket (allowed: uids {:?}, gid {:?}); use the admin socket for read-only requests", access.allowed_uids, access.allowed_gid),
            );
            let _ = send(&mut stream, &resp).await;
            return;
        }
        let resp = if kind == SocketKind::Admin && !req.op.is_read_only() {
            Response::error(ErrorCode::Unauthorized, "the admin socket is read-only; this request needs the control socket (root)")
        } else {
            let registry = registry.clone();
            tokio::task::spawn_blocking(move || dispatch(&registry, Some(pid), req.op))
                .await
                .unwrap_or_else(|e| Response::error(ErrorCode::Internal, format!("request handler failed: {e}")))
        };
        if !send(&mut stream, &resp).await {
            return;
        }
    }
}

/// Runs one request against the registry (blocking).
pub fn dispatch(reg: &Registry, peer_pid: Option<u32>, op: Op) -> Response {
    match op {
        Op::Register { owner, resources } => reg.register(&owner, &resources),
        Op::Acquire { owner, resources, state: _, wait_ms } => reg.acquire(peer_pid, &owner, &resources, wait_ms),
        Op::Release { owner, resources } => reg.release(peer_pid, &owner, &resources),
        Op::Inquire { owner } => reg.inquire(&owner),
        Op::Status => Response::Status { status: reg.status() },
        Op::Locks => Response::Locks { locks: reg.locks() },
        Op::Inspect { resource } => reg.inspect(&resource),
        Op::ResourceName { resource } => reg.resource_name(&resource),
        Op::ReleaseVm { uuid, force } => reg.release_vm(&uuid, force),
        Op::ReleaseVmOn { node, uuid, force } => match reg.cluster_link() {
            Some(link) if link.node_id == node => reg.release_vm(&uuid, force),
            Some(link) => crate::cluster::release::forward(link, node, &uuid, force),
            None => Response::error(
                ErrorCode::NodeUnreachable,
                format!("this virtdlmd runs without the cluster inventory (cluster = false): it cannot ask node id {node}"),
            ),
        },
        Op::Cleanup { dry_run } => reg.cleanup(dry_run),
    }
}
