//! The connection to virtdlmd: one blocking round trip per plugin call.
//!
//! Only plain blocking syscalls (socket, connect, write, read, close), no threads and no locks,
//! because one of the calls runs in libvirtd's forked child between fork and exec.
//! `connect` on a Unix socket does not wait for the server to accept, so the read/write
//! timeouts bound the whole call.

use crate::config::Config;
use crate::error::PluginError;
use proto::{self, FrameError, Op, Response};
use std::io;
use std::os::unix::net::UnixStream;

/// Sends `op` to virtdlmd and returns its answer; a daemon-side error becomes `Refused`.
pub fn call(cfg: &Config, op: Op) -> Result<Response, PluginError> {
    let socket = cfg.socket.display().to_string();
    let unreachable = |e: io::Error| PluginError::Unreachable { socket: socket.clone(), reason: plain(&e) };
    let mut stream = UnixStream::connect(&cfg.socket).map_err(unreachable)?;
    stream.set_read_timeout(Some(cfg.timeout)).map_err(unreachable)?;
    stream.set_write_timeout(Some(cfg.timeout)).map_err(unreachable)?;
    match proto::call(&mut stream, op) {
        Ok(Response::Error(e)) => Err(PluginError::Refused { code: e.code, message: e.message }),
        Ok(answer) => Ok(answer),
        Err(FrameError::Io(e)) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            Err(PluginError::Timeout { socket, ms: cfg.timeout.as_millis() })
        }
        Err(FrameError::Closed) => Err(PluginError::Protocol(format!("virtdlmd at {socket} closed the connection"))),
        Err(e) => Err(PluginError::Protocol(e.to_string())),
    }
}

/// "No such file or directory" rather than "No such file or directory (os error 2)".
fn plain(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
