//! Starting a virtdlmd on the local backend for the examples (bench, stall), and talking to it.

use proto::{Op, Response};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The control socket of the daemon [`spawn`] starts in `dir`.
pub fn socket(dir: &Path) -> std::path::PathBuf {
    dir.join("ctl.sock")
}

/// Starts `virtdlmd` with its config, sockets and journal in `dir` (`backend = local`), logging
/// at `rust_log` to `dir/virtdlmd.log` (appended: a restart keeps the first run's lines), and
/// returns once it answers on its socket, polled every `poll`.
pub fn spawn(virtdlmd: &Path, dir: &Path, rust_log: &str, poll: Duration) -> Child {
    std::fs::write(dir.join("virtdlmd.conf"), "backend = local\n").unwrap();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("virtdlmd.log")).unwrap();
    let sock = socket(dir);
    let _ = std::fs::remove_file(&sock);
    let child = Command::new(virtdlmd)
        .arg("--config")
        .arg(dir.join("virtdlmd.conf"))
        .arg("--socket")
        .arg(&sock)
        .arg("--admin-socket")
        .arg(dir.join("admin.sock"))
        .arg("--journal")
        .arg(dir.join("journal"))
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start virtdlmd");
    while UnixStream::connect(&sock).is_err() {
        std::thread::sleep(poll);
    }
    child
}

/// One request on a connection of its own, as dlm.so sends them.
pub fn call(sock: &Path, op: Op) -> Response {
    let mut s = UnixStream::connect(sock).expect("connect");
    proto::call(&mut s, op).expect("call")
}
