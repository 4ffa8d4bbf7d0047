//! Shared by the daemon tests: a real virtdlmd on private paths, real processes as owners.
#![allow(dead_code)]

use proto::{self, ErrorCode, ErrorReply, FailureAction, LockInfo, Op, OwnerSpec, Resource, Response};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Generous bound for things that should happen at once (not a performance assertion).
pub const PATIENCE: Duration = Duration::from_secs(15);

pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vdlm-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// virtdlmd's path. The daemon crate's own tests get it from cargo; the CLI's tests
/// (crates/cli) run the one built beside them in target/<profile>/, which
/// `cargo test --workspace` (and `cargo build --workspace`) builds first.
pub fn virtdlmd() -> PathBuf {
    if let Some(built) = option_env!("CARGO_BIN_EXE_virtdlmd") {
        return built.into();
    }
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/virtdlmd
    let exe = std::env::current_exe().unwrap();
    let beside = exe.parent().unwrap().parent().unwrap().join("virtdlmd");
    assert!(beside.exists(), "{} is not built: cargo build -p lockmgr --bin virtdlmd", beside.display());
    beside
}

pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub admin: PathBuf,
    pub journal: PathBuf,
    pub config: PathBuf,
}

impl Daemon {
    /// A daemon on private paths in `dir`, with `extra_config` appended to its config file.
    pub fn new(dir: &Path, extra_config: &str) -> Daemon {
        let config = dir.join("virtdlmd.conf");
        std::fs::write(&config, format!("backend = local\nnode_name = testnode\n{extra_config}\n")).unwrap();
        Daemon {
            child: None,
            dir: dir.into(),
            socket: dir.join("ctl.sock"),
            admin: dir.join("admin.sock"),
            journal: dir.join("run/journal"),
            config,
        }
    }

    pub fn command(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(virtdlmd());
        c.arg("--config").arg(&self.config);
        c.arg("--socket").arg(&self.socket);
        c.arg("--admin-socket").arg(&self.admin);
        c.arg("--journal").arg(&self.journal);
        c.args(extra);
        c.env("RUST_LOG", "info");
        c
    }

    /// Starts it and waits until it answers.
    pub fn start(&mut self, extra: &[&str]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("virtdlmd.log")).unwrap();
        let child = self.command(extra).stdout(Stdio::null()).stderr(log).spawn().expect("spawn virtdlmd");
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            if let Ok(Response::Status { .. }) = self.try_call(&self.socket, Op::Status) {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("virtdlmd exited at start ({st}); log:\n{}", self.log());
            }
            assert!(t0.elapsed() < PATIENCE, "virtdlmd did not come up; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("virtdlmd.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn try_call(&self, sock: &Path, op: Op) -> Result<Response, proto::FrameError> {
        let mut s = UnixStream::connect(sock)?;
        s.set_read_timeout(Some(PATIENCE))?;
        proto::call(&mut s, op)
    }

    pub fn call(&self, op: Op) -> Response {
        self.try_call(&self.socket, op).unwrap_or_else(|e| panic!("call failed: {e}; log:\n{}", self.log()))
    }

    pub fn locks(&self) -> Vec<LockInfo> {
        match self.call(Op::Locks) {
            Response::Locks { locks } => locks,
            other => panic!("{other:?}"),
        }
    }

    pub fn wait_until(&self, what: &str, mut cond: impl FnMut(&Daemon) -> bool) {
        let t0 = Instant::now();
        while !cond(self) {
            assert!(t0.elapsed() < PATIENCE, "timed out waiting for: {what}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // Keep the directory (log, journal) of a failed test for a look.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A VM stand-in: a real process (`sleep`) as its QEMU.
pub struct Vm {
    pub child: Child,
    pub spec: OwnerSpec,
}

impl Vm {
    pub fn spawn(name: &str) -> Vm {
        let child = Command::new("sleep").arg("600").spawn().expect("spawn sleep");
        let n: u32 = name.bytes().map(u32::from).sum();
        let spec = OwnerSpec {
            uuid: format!("{:08x}-0000-4000-8000-{:012x}", n, child.id()),
            name: name.into(),
            pid: child.id(),
            id: 1,
            uri: Some("qemu:///system".into()),
            action: FailureAction::Default,
        };
        Vm { child, spec }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn register(&self, d: &Daemon, res: &[Resource]) -> Response {
        d.call(Op::Register { owner: self.spec.clone(), resources: res.to_vec() })
    }

    pub fn acquire(&self, d: &Daemon, res: &[Resource]) -> Response {
        d.call(Op::Acquire { owner: self.spec.clone(), resources: res.to_vec(), state: None, wait_ms: 0 })
    }

    pub fn release(&self, d: &Daemon, res: &[Resource]) -> Response {
        d.call(Op::Release { owner: self.spec.clone(), resources: res.to_vec() })
    }

    pub fn held(&self, d: &Daemon) -> Vec<LockInfo> {
        d.locks().into_iter().filter(|l| l.vm_uuid == self.spec.uuid).collect()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn disk(dir: &Path, name: &str, readonly: bool, shared: bool) -> Resource {
    let p = dir.join(name);
    if !p.exists() {
        std::fs::write(&p, b"").unwrap();
    }
    Resource::Disk { path: p.to_str().unwrap().into(), readonly, shared }
}

pub fn expect_ok(r: Response) {
    assert!(matches!(r, Response::Ok { .. }), "expected Ok, got {r:?}");
}

pub fn expect_error(r: Response, code: ErrorCode) -> ErrorReply {
    match r {
        Response::Error(e) if e.code == code => e,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

/// A directory on a tmpfs (/dev/shm) when there is one: the journal's fsyncs then cost what
/// they cost under /run in production, not what the build disk's cost.
pub fn shm_dir(tag: &str) -> PathBuf {
    let base = Path::new("/dev/shm");
    if !base.is_dir() {
        return tmpdir(tag);
    }
    let d = base.join(format!("vdlm-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One persistent client connection (as libvirtd's plugin keeps one per call site).
pub struct Conn {
    pub stream: UnixStream,
}

impl Conn {
    pub fn open(sock: &Path) -> std::io::Result<Conn> {
        let stream = UnixStream::connect(sock)?;
        stream.set_read_timeout(Some(PATIENCE))?;
        stream.set_write_timeout(Some(PATIENCE))?;
        Ok(Conn { stream })
    }

    pub fn call(&mut self, op: Op) -> Result<Response, proto::FrameError> {
        proto::call(&mut self.stream, op)
    }

    pub fn acquire(&mut self, owner: &OwnerSpec, res: &[Resource]) -> Result<Response, proto::FrameError> {
        self.call(Op::Acquire { owner: owner.clone(), resources: res.to_vec(), state: None, wait_ms: 0 })
    }

    pub fn release(&mut self, owner: &OwnerSpec, res: &[Resource]) -> Result<Response, proto::FrameError> {
        self.call(Op::Release { owner: owner.clone(), resources: res.to_vec() })
    }
}

/// Small deterministic generator (xorshift64*): the tests print their seed and replay with it.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The seed for a randomised test: `VDLM_SEED` if set, else the clock.
pub fn seed() -> u64 {
    std::env::var("VDLM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    })
}

/// Percentiles of durations, for the figures the reliability tests print.
pub fn summary(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort();
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    format!("n={} min {} p50 {} p99 {} max {}", v.len(), ms(v[0]), ms(p(0.5)), ms(p(0.99)), ms(v[v.len() - 1]))
}
