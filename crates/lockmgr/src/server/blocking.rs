//! The control socket served on plain threads: a trusted peer's connection is accepted,
//! read, dispatched and answered on one thread, in blocking syscalls.
//!
//! Served as a runtime task, a request crossed threads several times (accepted on one worker,
//! run on another, and dispatched under `block_in_place`, which hands the worker's other tasks
//! to a second thread and back): the profile of the request path showed a fifth of the
//! daemon's CPU time in switching threads. Here the only wake-up is the kernel's, of the
//! thread waiting in `accept`. Each open connection keeps a thread, so only trusted peers
//! (root, the allowed uids and gid, who could stop the daemon anyway) are served this way;
//! the others, capped and closed when idle, go to the runtime as tasks.
//!
//! The framing rules are the async path's: a peer may stay idle between requests as long as
//! it likes, but a frame once started must be complete within the read timeout.

use super::{dispatch, frame, judge, panic_text, peer_of, watch, Incoming, Peer, Socket};
use proto::{ErrorCode, FrameError, Op, Response};
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most acceptor threads left waiting in `accept` once a burst of connections is over. More
/// than two: a client's next connection routinely arrives while the thread that served its
/// last one still reads that one's end, and a thread started and ended for each such overlap
/// would cost more than the hop this module removes.
const IDLE_ACCEPTORS: usize = 4;

/// Threads waiting in `accept` on one listener (the kernel wakes one per connection), each
/// serving the connection it accepts. When the last waiting one takes a connection it starts
/// another first, so a request that blocks (a journal sync, a DLM wait) never holds up the
/// next connection; once the load is gone, the surplus threads end.
struct Acceptors {
    listener: UnixListener,
    socket: Arc<Socket>,
    /// Threads in (or about to enter) `accept`.
    waiting: AtomicUsize,
    rt: tokio::runtime::Handle,
}

/// Serves `listener` on acceptor threads (call on the runtime: untrusted connections and
/// `watch` streams go back to it).
pub(super) fn start(listener: tokio::net::UnixListener, socket: Arc<Socket>) -> io::Result<()> {
    let listener = listener.into_std()?;
    listener.set_nonblocking(false)?;
    let acceptors =
        Arc::new(Acceptors { listener, socket, waiting: AtomicUsize::new(0), rt: tokio::runtime::Handle::current() });
    acceptors.spawn()
}

impl Acceptors {
    fn spawn(self: &Arc<Self>) -> io::Result<()> {
        // Counted before it runs, so that two threads taking connections at once do not both
        // see nobody waiting.
        self.waiting.fetch_add(1, SeqCst);
        let me = self.clone();
        std::thread::Builder::new().name("virtdlmd-conn".into()).spawn(move || me.run()).map(drop).inspect_err(|_| {
            self.waiting.fetch_sub(1, SeqCst);
        })
    }

    fn run(self: Arc<Self>) {
        loop {
            let accepted = self.listener.accept();
            if self.waiting.fetch_sub(1, SeqCst) == 1 {
                if let Err(e) = self.spawn() {
                    tracing::warn!("cannot start a thread to accept connections: {e}");
                }
            }
            match accepted {
                Ok((stream, _)) => self.connection(stream),
                Err(e) => {
                    tracing::warn!("accept on the {:?} socket failed: {e}", self.socket.kind);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            // Back to waiting, unless enough threads already are (never the last one).
            if self.waiting.fetch_update(SeqCst, SeqCst, |n| (n < IDLE_ACCEPTORS).then_some(n + 1)).is_err() {
                return;
            }
        }
    }

    fn connection(&self, stream: UnixStream) {
        let Some(peer) = peer_of(&stream) else { return };
        if self.socket.trusts(peer) {
            return self.serve(stream, peer);
        }
        let _rt = self.rt.enter();
        match stream.set_nonblocking(true).and_then(|()| tokio::net::UnixStream::from_std(stream)) {
            Ok(s) => self.socket.untrusted(s, peer),
            Err(e) => tracing::warn!(peer_pid = peer.pid, "cannot serve the connection: {e}"),
        }
    }

    /// A trusted peer's requests, until it closes the connection or sends a bad frame.
    fn serve(&self, stream: UnixStream, peer: Peer) {
        let Peer { uid, pid, .. } = peer;
        let Socket { registry, read_timeout, .. } = &*self.socket;
        let mut frames = Frames { stream, buf: Vec::new(), timeout_set: false };
        loop {
            let req = match frames.request(*read_timeout) {
                Incoming::Closed => return,
                Incoming::Bad(resp) => {
                    tracing::warn!(peer_pid = pid, peer_uid = uid, "bad frame: {resp:?}");
                    let _ = frames.send(&resp);
                    return;
                }
                Incoming::Request(r) => r,
            };
            if req.op == Op::Watch {
                // A stream of events for as long as the client stays: back to the runtime,
                // so that it keeps no thread.
                tracing::info!(peer_pid = pid, peer_uid = uid, "watch: streaming lock changes");
                let Frames { stream, .. } = frames;
                let registry = registry.clone();
                self.rt.spawn(async move {
                    match stream.set_nonblocking(true).and_then(|()| tokio::net::UnixStream::from_std(stream)) {
                        Ok(mut s) => watch(&mut s, &registry).await,
                        Err(e) => tracing::warn!(peer_pid = pid, "watch: cannot stream to the connection: {e}"),
                    }
                });
                return;
            }
            // The inventory hears of this request's lock changes once the VM has its answer.
            let answer_first = crate::cluster::changes::AnswerFirst::begin();
            let run = std::panic::AssertUnwindSafe(|| dispatch(registry, Some(peer), req.op));
            let resp = std::panic::catch_unwind(run).unwrap_or_else(|p| {
                Response::error(ErrorCode::Internal, format!("request handler failed: {}", panic_text(&p)))
            });
            let sent = frames.send(&resp);
            drop(answer_first);
            if !sent {
                return;
            }
        }
    }
}

/// Frames read off a blocking socket. One read usually brings a whole request (they are
/// small), so the socket's read timeout is set only when a frame arrives in pieces.
struct Frames {
    stream: UnixStream,
    /// Bytes read and not yet consumed (a client may send its next request early).
    buf: Vec<u8>,
    /// Whether SO_RCVTIMEO is set on the socket now.
    timeout_set: bool,
}

impl Frames {
    fn request(&mut self, read_timeout: Duration) -> Incoming {
        if self.buf.is_empty() {
            match self.fill(None) {
                Ok(0) | Err(_) => return Incoming::Closed,
                Ok(_) => {}
            }
        }
        let deadline = Instant::now() + read_timeout;
        judge(self.body(deadline), read_timeout)
    }

    fn body(&mut self, deadline: Instant) -> Result<Vec<u8>, FrameError> {
        self.fill_to(4, deadline)?;
        let len = proto::body_len(self.buf[..4].try_into().expect("4 bytes"))?;
        self.fill_to(4 + len, deadline)?;
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(body)
    }

    fn fill_to(&mut self, want: usize, deadline: Instant) -> Result<(), FrameError> {
        while self.buf.len() < want {
            if self.fill(Some(deadline))? == 0 {
                return Err(FrameError::Closed);
            }
        }
        Ok(())
    }

    /// One read, appended to `buf`; with a deadline, a read that would outlast it fails
    /// with `TimedOut` (or `WouldBlock`, as SO_RCVTIMEO reports it).
    fn fill(&mut self, deadline: Option<Instant>) -> io::Result<usize> {
        match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                self.stream.set_read_timeout(Some(left))?;
                self.timeout_set = true;
            }
            None if self.timeout_set => {
                self.stream.set_read_timeout(None)?;
                self.timeout_set = false;
            }
            None => {}
        }
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn send(&mut self, resp: &Response) -> bool {
        match frame(resp) {
            Some(f) => self.stream.write_all(&f).is_ok(),
            None => false,
        }
    }
}
