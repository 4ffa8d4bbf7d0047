//! The wire protocol between clients (dlm.so, virtdlm) and virtdlmd.
//!
//! Transport: a Unix stream socket. Framing: a 4-byte big-endian length, then that many bytes of
//! UTF-8 JSON. A frame longer than [`MAX_FRAME`] is refused before it is read. Every request is
//! a [`Request`] envelope carrying [`PROTOCOL_VERSION`]; every request gets exactly one
//! [`Response`] frame, in order, except [`Op::Watch`], which turns the connection into a stream
//! of events ([`watch`]). A connection may carry any number of requests.
//!
//! Sockets (paths are configurable):
//! - the control socket (`/run/virt-dlm/virtdlmd.sock`, root only, checked with SO_PEERCRED)
//!   accepts every request;
//! - the admin socket (`/run/virt-dlm/virtdlmd-admin.sock`, world-connectable) accepts only the
//!   read-only ones ([`Op::is_read_only`]).
//!
//! This crate is what dlm.so, the `virtdlm` CLI and virtdlmd share, and it knows nothing of the
//! daemon: the plugin links it and nothing heavier. Beside the messages (this file):
//! - [`mode`]: the lock-mode table (libvirt disk flags -> DLM mode, which modes coexist);
//! - [`conflict`]: the sentence a refused user reads, and the clock format of lock times;
//! - [`status`]: the `status` answer, typed;
//! - [`watch`]: the events of `watch`.

#![forbid(unsafe_code)]

pub mod conflict;
pub mod mode;
pub mod status;
pub mod watch;

use mode::Mode;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// Bumped on any incompatible change to the types below.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame either side sends or accepts (bytes of JSON, without the length prefix).
pub const MAX_FRAME: usize = 256 * 1024;
/// Default control socket.
pub const DEFAULT_SOCKET: &str = "/run/virt-dlm/virtdlmd.sock";
/// Default read-only admin socket.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/virt-dlm/virtdlmd-admin.sock";

/// libvirt's `<on_lockfailure>` action for a VM, passed on every acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    #[default]
    Default,
    Poweroff,
    Restart,
    Pause,
    Ignore,
}

impl FailureAction {
    /// From libvirt's `virDomainLockFailureAction` value; unknown values are `None`.
    pub fn from_libvirt(v: i32) -> Option<Self> {
        Some(match v {
            0 => Self::Default,
            1 => Self::Poweroff,
            2 => Self::Restart,
            3 => Self::Pause,
            4 => Self::Ignore,
            _ => return None,
        })
    }
}

/// The VM a lock is held for. `uuid` + `pid` identify it; the daemon adds the pid's start time
/// itself (from /proc) so that a reused pid is never mistaken for the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerSpec {
    /// Domain UUID, canonical lower-case hyphenated text.
    pub uuid: String,
    pub name: String,
    /// The QEMU process.
    pub pid: u32,
    /// libvirt domain id (changes on every start).
    #[serde(default)]
    pub id: u32,
    /// libvirt connection URI (for the `pause` failure action); libvirt passes none on pause.
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub action: FailureAction,
}

/// One thing to lock, as libvirt names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Resource {
    /// A file, block device or directory disk, by the path this host uses.
    Disk {
        path: String,
        #[serde(default)]
        readonly: bool,
        #[serde(default)]
        shared: bool,
    },
    /// A `<lease>` element: `<lockspace>` (optional) and `<key>`; libvirt also passes the target
    /// path and offset, which identify the lease for sanlock and are informational here.
    Lease {
        #[serde(default)]
        lockspace: Option<String>,
        key: String,
        #[serde(default)]
        path: Option<String>,
        #[serde(default)]
        offset: Option<u64>,
    },
}

/// A request envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Must equal [`PROTOCOL_VERSION`].
    pub v: u32,
    #[serde(flatten)]
    pub op: Op,
}

impl Request {
    pub fn new(op: Op) -> Self {
        Request { v: PROTOCOL_VERSION, op }
    }
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The forked child before exec (libvirt's REGISTER_ONLY|RESTRICT): record the owner and its
    /// resources, take no lock. Idempotent for the same uuid + pid.
    Register { owner: OwnerSpec, resources: Vec<Resource> },
    /// Take every listed resource for the owner, all or nothing (boot, resume, migration finish,
    /// hotplug of one disk or lease). Resources the owner already holds are kept as they are.
    /// An owner that never registered is registered on the way if its pid is alive.
    /// `wait_ms` > 0 waits up to that long for conflicting holders instead of failing at once.
    Acquire {
        owner: OwnerSpec,
        resources: Vec<Resource>,
        #[serde(default)]
        state: Option<String>,
        #[serde(default)]
        wait_ms: u64,
    },
    /// Give back the listed resources (pause, save, detach). Idempotent. An empty list releases
    /// nothing. Answers with the owner's state string.
    Release { owner: OwnerSpec, resources: Vec<Resource> },
    /// The owner's state string (migration); changes nothing.
    Inquire { owner: OwnerSpec },
    /// Daemon status: node, backend, membership, counts.
    Status,
    /// The lock table (this node's locks, and the cluster's where an inventory exists).
    Locks,
    /// Who holds this resource, and its DLM name.
    Inspect { resource: Resource },
    /// The DLM resource name this daemon would use for a resource.
    ResourceName { resource: Resource },
    /// Release every lock of a VM (admin). Refused while its QEMU runs unless `force`.
    ReleaseVm {
        uuid: String,
        #[serde(default)]
        force: bool,
    },
    /// `release_vm` on node `node` (corosync node id): this daemon asks that node's daemon over
    /// the cluster group and returns its answer (`node_unreachable` when it does not answer).
    ReleaseVmOn {
        node: u32,
        uuid: String,
        #[serde(default)]
        force: bool,
    },
    /// Release locks of owners whose process is gone (admin). `dry_run` only reports.
    Cleanup {
        #[serde(default)]
        dry_run: bool,
    },
    /// The operator confirms that cluster node `node` (name or corosync node id) is down: in a
    /// cluster that cannot fence, grants held back for it resume until it is seen again
    /// (admin; answered with [`Response::ConfirmedDown`]).
    ConfirmDown { node: String },
    /// The lock table, then every lock change as it happens ([`watch`]): the connection
    /// carries nothing else afterwards.
    Watch,
}

impl Op {
    /// Requests the read-only admin socket accepts.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Op::Status
                | Op::Locks
                | Op::Inspect { .. }
                | Op::ResourceName { .. }
                | Op::Inquire { .. }
                | Op::Cleanup { dry_run: true }
                | Op::Watch
        )
    }
}

/// A held (or registered) lock as shown to people and scripts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The DLM resource name (`d1:…` / `l1:…`).
    pub resource: String,
    /// Readable identity: the canonical disk path or `lease lockspace/key`.
    pub identity: String,
    pub mode: Mode,
    pub vm_name: String,
    pub vm_uuid: String,
    pub pid: u32,
    pub node_name: String,
    pub node_id: u32,
    /// Seconds since the Unix epoch when the lock was granted.
    pub since: u64,
    /// `held`, `orphan` (daemon restarted, not yet adopted), or `left` (its node left the
    /// membership; the entry stays until DLM recovery frees the lock).
    #[serde(default = "LockInfo::default_state")]
    pub state: String,
}

impl LockInfo {
    fn default_state() -> String {
        "held".into()
    }
}

/// Who holds a resource another VM wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub identity: String,
    pub resource: String,
    pub wanted: Mode,
    /// The holders known to this node; empty when the holder is on another node and no
    /// inventory entry names it yet.
    pub holders: Vec<LockInfo>,
}

/// Typed error classes; `message` carries the human sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Another holder has the resource in an incompatible mode.
    Conflict,
    /// Malformed JSON, unknown op, bad field.
    BadRequest,
    /// Frame longer than [`MAX_FRAME`].
    FrameTooLarge,
    /// The protocol version differs.
    Version,
    /// The peer may not make this request on this socket.
    Unauthorized,
    /// No such owner / VM.
    UnknownOwner,
    /// The owner's process is gone (or its pid now names another process).
    OwnerGone,
    /// A request not valid in the owner's current state (e.g. acquire after RESTRICT from
    /// the restricted process).
    OutOfOrder,
    /// The journal cannot be written: no new grants until it can.
    Journal,
    /// The lock backend (DLM) failed or is not ready (not quorate, lockspace stopped).
    Backend,
    /// The request was refused because the VM still runs (admin release without force).
    Busy,
    /// The node a request was forwarded to is not in the cluster group, left, or did not answer.
    NodeUnreachable,
    /// Refused while a cluster node is unaccounted for in a cluster that cannot fence it
    /// (`virtdlm confirm-down` lifts it).
    Quarantined,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    /// One sentence for a person: names the disk, the holder, and what to do.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<Conflict>,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Register / Acquire / ReleaseVm / Cleanup done.
    Ok {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        locks: Vec<LockInfo>,
    },
    /// Release / Inquire: the owner's XML-safe state string (`None` when it holds nothing).
    State {
        state: Option<String>,
    },
    Status {
        status: Box<status::Status>,
    },
    Locks {
        locks: Vec<LockInfo>,
    },
    Inspect {
        identity: String,
        resource: String,
        holders: Vec<LockInfo>,
    },
    ResourceName {
        identity: String,
        resource: String,
    },
    /// ConfirmDown: who confirmed which node, when.
    ConfirmedDown {
        confirmation: status::Confirmation,
    },
    /// One lock change of a `watch` stream.
    Event {
        event: watch::LockEvent,
    },
    Error(ErrorReply),
}

impl Response {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error(ErrorReply { code, message: message.into(), conflict: None })
    }
}

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("protocol version {got} is not supported (this side speaks {PROTOCOL_VERSION})")]
    Version { got: u32 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Serialises `msg` into one frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Parses a frame's 4-byte header into a body length, refusing oversized frames.
pub fn body_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a request body, checking the version before the rest so that a newer client gets
/// a version error rather than a confusing parse error.
pub fn decode_request(body: &[u8]) -> Result<Request, FrameError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        v: u32,
    }
    let v: VersionOnly = serde_json::from_slice(body)?;
    if v.v != PROTOCOL_VERSION {
        return Err(FrameError::Version { got: v.v });
    }
    Ok(serde_json::from_slice(body)?)
}

/// Decodes a response body.
pub fn decode_response(body: &[u8]) -> Result<Response, FrameError> {
    Ok(serde_json::from_slice(body)?)
}

/// Writes one frame (blocking).
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame body (blocking). A clean EOF before the header is [`FrameError::Closed`].
pub fn read_frame<R: Read>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = body_len(header)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// One blocking round trip: send `op`, read the answer.
pub fn call<S: Read + Write>(stream: &mut S, op: Op) -> Result<Response, FrameError> {
    write_frame(stream, &Request::new(op))?;
    decode_response(&read_frame(stream)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnerSpec {
        OwnerSpec {
            uuid: "11111111-2222-3333-4444-555555555555".into(),
            name: "web-3".into(),
            pid: 4242,
            id: 7,
            uri: Some("qemu:///system".into()),
            action: FailureAction::Pause,
        }
    }

    #[test]
    fn request_round_trips_through_a_frame() {
        let req = Request::new(Op::Acquire {
            owner: owner(),
            resources: vec![
                Resource::Disk { path: "/var/lib/libvirt/images/a.img".into(), readonly: false, shared: true },
                Resource::Lease { lockspace: Some("space".into()), key: "k".into(), path: None, offset: Some(1024) },
            ],
            state: None,
            wait_ms: 0,
        });
        let frame = encode(&req).unwrap();
        let body = read_frame(&mut &frame[..]).unwrap();
        assert_eq!(decode_request(&body).unwrap(), req);
        let req = Request::new(Op::ConfirmDown { node: "node1".into() });
        let frame = encode(&req).unwrap();
        assert_eq!(decode_request(&read_frame(&mut &frame[..]).unwrap()).unwrap(), req);
        assert_eq!(serde_json::to_string(&req).unwrap(), r#"{"v":1,"op":"confirm_down","node":"node1"}"#);
    }

    #[test]
    fn wire_form_is_stable() {
        let body = serde_json::to_string(&Request::new(Op::Status)).unwrap();
        assert_eq!(body, r#"{"v":1,"op":"status"}"#);
        let err = serde_json::to_string(&Response::error(ErrorCode::Conflict, "x")).unwrap();
        assert_eq!(err, r#"{"result":"error","code":"conflict","message":"x"}"#);
    }

    #[test]
    fn numbers_in_an_answer_cross_the_wire_unchanged() {
        // Found by fuzzing (fuzz/ proto_response): without serde_json's exact float parsing a
        // number like this one came back one ulp off after a second trip.
        let body = br#"{"result":"confirmed_down","confirmation":{"node_id":2,"node_name":"hv2","by_uid":0,"by_user":"root","at":3333333333333333333333333333333333333333333333333333333333333333333333331}}"#;
        let first = decode_response(body).unwrap();
        let again = decode_response(&read_frame(&mut &encode(&first).unwrap()[..]).unwrap()).unwrap();
        assert_eq!(again, first);
        let Response::ConfirmedDown { confirmation } = first else { panic!("{first:?}") };
        let exact: f64 = "3333333333333333333333333333333333333333333333333333333333333333333333331".parse().unwrap();
        assert_eq!(confirmation.at, exact);
    }

    #[test]
    fn oversized_frames_are_refused_before_reading() {
        let header = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(body_len(header), Err(FrameError::TooLarge(_))));
        let mut input = header.to_vec();
        input.extend_from_slice(b"{}");
        assert!(matches!(read_frame(&mut &input[..]), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn wrong_version_is_reported_as_such() {
        let e = decode_request(br#"{"v":99,"op":"frobnicate"}"#).unwrap_err();
        assert!(matches!(e, FrameError::Version { got: 99 }), "{e}");
        assert!(matches!(decode_request(b"not json"), Err(FrameError::Malformed(_))));
        assert!(matches!(decode_request(br#"{"v":1,"op":"frobnicate"}"#), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn eof_before_a_header_is_a_clean_close() {
        assert!(matches!(read_frame(&mut &b""[..]), Err(FrameError::Closed)));
        assert!(matches!(read_frame(&mut &b"\0\0"[..]), Err(FrameError::Closed)));
    }

    #[test]
    fn admin_socket_ops_are_the_read_only_ones() {
        assert!(Op::Status.is_read_only());
        assert!(Op::Cleanup { dry_run: true }.is_read_only());
        assert!(!Op::Cleanup { dry_run: false }.is_read_only());
        assert!(!Op::Release { owner: owner(), resources: vec![] }.is_read_only());
        assert!(!Op::ReleaseVm { uuid: "x".into(), force: false }.is_read_only());
        assert!(!Op::ReleaseVmOn { node: 2, uuid: "x".into(), force: false }.is_read_only());
        assert!(!Op::ConfirmDown { node: "node2".into() }.is_read_only());
    }
}
