//! One request to virtdlmd, over the admin socket (read-only) or the control socket.

use super::exit::{Code, Failure};
use proto::watch::LockEvent;
use proto::{self, FrameError, LockInfo, Op, Response};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Sends `op` to the daemon at `socket` and returns its answer; an error answer becomes a
/// [`Failure`].
pub fn ask(socket: &Path, op: Op) -> Result<Response, Failure> {
    let mut s = connect(socket)?;
    answer(socket, proto::call(&mut s, op))
}

/// Starts a `watch` on the daemon at `socket`: returns the lock table as it stands and the
/// connection the events then arrive on (with no read timeout: changes may be hours apart).
pub fn watch(socket: &Path) -> Result<(Vec<LockInfo>, UnixStream), Failure> {
    let mut s = connect(socket)?;
    match answer(socket, proto::call(&mut s, Op::Watch))? {
        Response::Locks { locks } => {
            let _ = s.set_read_timeout(None);
            Ok((locks, s))
        }
        other => Err(unexpected(&other)),
    }
}

/// The next event of a `watch`; `None` when the daemon closed the stream (it stopped).
pub fn next_event(socket: &Path, s: &mut UnixStream) -> Result<Option<LockEvent>, Failure> {
    match proto::read_frame(s).and_then(|b| proto::decode_response(&b)) {
        Err(FrameError::Closed) => Ok(None),
        other => match answer(socket, other)? {
            Response::Event { event } => Ok(Some(event)),
            other => Err(unexpected(&other)),
        },
    }
}

fn unreachable(socket: &Path, why: String) -> Failure {
    Failure::new(Code::Unreachable, "unreachable", format!("cannot ask virtdlmd at {}: {why}", socket.display()))
}

fn connect(socket: &Path) -> Result<UnixStream, Failure> {
    let s = UnixStream::connect(socket).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => " (is virtdlmd running?)",
            std::io::ErrorKind::PermissionDenied => " (this request needs root)",
            _ => "",
        };
        unreachable(socket, format!("{e}{hint}"))
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    Ok(s)
}

fn answer(socket: &Path, r: Result<Response, FrameError>) -> Result<Response, Failure> {
    match r {
        Ok(Response::Error(e)) => Err(Failure::from_reply(e)),
        Ok(r) => Ok(r),
        Err(FrameError::TooLarge(n)) => {
            Err(Failure::bad_input(format!("the request is {n} bytes, over the daemon's limit")))
        }
        Err(FrameError::Closed) => Err(unreachable(socket, "it closed the connection without answering".into())),
        Err(e) => Err(unreachable(socket, e.to_string())),
    }
}

/// The answer was not the kind this command expects (a daemon of another version).
pub fn unexpected(r: &Response) -> Failure {
    let kind = serde_json::to_value(r).ok().and_then(|v| v["result"].as_str().map(str::to_owned)).unwrap_or_default();
    Failure::new(
        Code::Unreachable,
        "version",
        format!("virtdlmd answered with an unexpected {kind:?} reply; is it another version?"),
    )
}
