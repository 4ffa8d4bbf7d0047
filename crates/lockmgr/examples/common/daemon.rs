//! Starting a virtdlmd on the local backend for the examples (bench, stall), and talking to it.

use proto::{Op, Response};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What both examples start from: their command line, a scratch directory and a daemon in it.
pub struct Setup {
    /// The example's arguments (`--name value` pairs; see [`Setup::arg`]).
    pub args: Vec<String>,
    #[allow(dead_code)] // bench restarts the daemon; stall does not
    pub virtdlmd: PathBuf,
    /// `--dir` (default: the temporary directory) / `virtdlm-<tag>-<pid>`: the journal is here.
    /// Production keeps it on tmpfs (/run); pass `--dir /dev/shm` to match.
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub daemon: Child,
}

impl Setup {
    /// Reads `--virtdlmd` (default: the virtdlmd built beside the example) and `--dir`, and
    /// starts the daemon logging at info, as in production.
    pub fn start(tag: &str) -> Setup {
        let args: Vec<String> = std::env::args().collect();
        let exe = std::env::current_exe().unwrap();
        let virtdlmd = value(&args, "--virtdlmd")
            .map(PathBuf::from)
            .unwrap_or_else(|| exe.parent().unwrap().parent().unwrap().join("virtdlmd"));
        let base = value(&args, "--dir").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("virtdlm-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = socket(&dir);
        let daemon = spawn(&virtdlmd, &dir, "info", Duration::from_millis(10));
        println!("virtdlmd {} (pid {}), journal on {}", virtdlmd.display(), daemon.id(), dir.display());
        Setup { args, virtdlmd, dir, sock, daemon }
    }

    /// The value after `name` on the command line.
    pub fn arg(&self, name: &str) -> Option<String> {
        value(&self.args, name)
    }
}

fn value(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

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
