//! One request to virtdlmd, over the admin socket (read-only) or the control socket.

use super::exit::{Code, Failure};
use proto::{self, FrameError, Op, Response};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Sends `op` to the daemon at `socket` and returns its answer; an error answer becomes a
/// [`Failure`].
pub fn ask(socket: &Path, op: Op) -> Result<Response, Failure> {
    let unreachable = |why: String| {
        Failure::new(Code::Unreachable, "unreachable", format!("cannot ask virtdlmd at {}: {why}", socket.display()))
    };
    let mut s = UnixStream::connect(socket).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => " (is virtdlmd running?)",
            std::io::ErrorKind::PermissionDenied => " (this request needs root)",
            _ => "",
        };
        unreachable(format!("{e}{hint}"))
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    match proto::call(&mut s, op) {
        Ok(Response::Error(e)) => Err(Failure::from_reply(e)),
        Ok(r) => Ok(r),
        Err(FrameError::TooLarge(n)) => {
            Err(Failure::bad_input(format!("the request is {n} bytes, over the daemon's limit")))
        }
        Err(FrameError::Closed) => Err(unreachable("it closed the connection without answering".into())),
        Err(e) => Err(unreachable(e.to_string())),
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
