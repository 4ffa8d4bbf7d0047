//! disk-writer: a VM stand-in that really writes the shared disk images it holds, for the
//! corruption oracle (`oracle-check`) under the nemesis (tests/nemesis.rs).
//!
//! It runs inside a cluster guest and registers itself with that guest's virtdlmd exactly as
//! a QEMU is registered by the plugin: an `Acquire` whose owner pid is its own pid (the daemon
//! registers a live pid on the way, watches it and kills or pauses it on lock loss). Then, in
//! cycles until the stop file exists: pick one image and a mode (EX mostly, PR sometimes),
//! acquire it, use it for a while, release it, idle.
//!
//! Its name is `<vm>-<pid>-<boot id>`: unique in a run even across the reboots of its guest.
//! While it holds an image in EX it writes records (node, pid, name, disk, hold, sequence,
//! CLOCK_MONOTONIC, CLOCK_REALTIME, checksum) to a fresh slot (`1 + hash(node, name, seq) %
//! SLOTS`) and to block 0 ("the last write"), and reads block 0 back after each write and
//! before the next one: anything but its own last record there is a second writer, logged as a
//! `mismatch` event. While it holds an image in PR it only reads block 0 and logs a `mismatch`
//! if it changes under it. Everything it does goes to its own event log (JSON lines, one
//! `write(2)` each, on the shared directory), so a kill -9 loses at most the line of the
//! request in flight; the disk records stay.
//!
//! Bypassing the guest's cache: UML hostfs refuses O_DIRECT (open gives EINVAL, measured), so
//! the image is opened O_SYNC (hostfs writes through to the host file at once anyway) and
//! every read is preceded by `posix_fadvise(DONTNEED)` over the whole file, which drops the
//! guest's clean cached pages so the read goes to the host file.
//!
//! Usage: disk-writer KEY=VALUE...
//!   socket=PATH node=N vm=NAME logdir=DIR stop=FILE images=PATH[,PATH...]
//!   [pr=PERCENT (20)] [hold_ms=MS (600)] [idle_ms=MS (300)] [action=default|pause]
//!   [uuid_dir=DIR: writes DIR/<uuid> = pid, for a fake `virsh suspend`]

use cluster_tests::{fnv, uuid_of};
use proto::{self, FailureAction, Op, OwnerSpec, Resource, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Record size; block 0 is the last write, blocks 1..=SLOTS the history.
const BLOCK: u64 = 512;
const SLOTS: u64 = 16384;
/// Time between two writes (or reads) of a hold.
const TICK: Duration = Duration::from_millis(100);

fn realtime() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid, owned `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

struct Args {
    socket: String,
    node: u32,
    vm: String,
    logdir: String,
    stop: String,
    images: Vec<String>,
    pr: u64,
    hold_ms: u64,
    idle_ms: u64,
    action: FailureAction,
    uuid_dir: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut kv: HashMap<String, String> = HashMap::new();
    for a in std::env::args().skip(1) {
        let (k, v) = a.split_once('=').ok_or_else(|| format!("argument {a:?} is not KEY=VALUE"))?;
        kv.insert(k.into(), v.into());
    }
    let get = |k: &str| kv.get(k).cloned().ok_or_else(|| format!("missing {k}="));
    let num = |k: &str, d: u64| kv.get(k).map(|v| v.parse().map_err(|_| format!("bad {k}={v}"))).unwrap_or(Ok(d));
    Ok(Args {
        socket: get("socket")?,
        node: get("node")?.parse().map_err(|_| "bad node=")?,
        vm: get("vm")?,
        logdir: get("logdir")?,
        stop: get("stop")?,
        images: get("images")?.split(',').map(str::to_string).collect(),
        pr: num("pr", 20)?,
        hold_ms: num("hold_ms", 600)?,
        idle_ms: num("idle_ms", 300)?,
        action: match kv.get("action").map(String::as_str) {
            None | Some("default") => FailureAction::Default,
            Some("pause") => FailureAction::Pause,
            Some(a) => return Err(format!("bad action={a}")),
        },
        uuid_dir: kv.get("uuid_dir").cloned(),
    })
}

struct Writer {
    a: Args,
    pid: u32,
    name: String,
    log: File,
    rng: u64,
    seq: u64,
    holds: u64,
    files: HashMap<String, File>,
}

impl Writer {
    fn event(&mut self, ev: &str, extra: Value) {
        let mut v = json!({ "ev": ev, "node": self.a.node, "pid": self.pid, "vm": self.name, "real": realtime(), "mono": monotonic() });
        if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
            m.extend(x);
        }
        // One write(2) per line: a kill between two lines never leaves half a line.
        let _ = self.log.write_all(format!("{v}\n").as_bytes());
    }

    fn rand(&mut self, n: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n.max(1)
    }

    fn stopped(&self) -> bool {
        Path::new(&self.a.stop).exists()
    }

    fn owner(&self) -> OwnerSpec {
        OwnerSpec {
            uuid: uuid_of(&self.name),
            name: self.name.clone(),
            pid: self.pid,
            id: 1,
            uri: (self.a.action == FailureAction::Pause).then(|| "qemu:///system".to_string()),
            action: self.a.action,
        }
    }

    /// A request to the daemon, made by a child process (libvirtd's part): the daemon refuses
    /// lock requests from the QEMU process itself, as the plugin registers it restricted.
    fn call(&self, op: Op) -> Result<Response, String> {
        let op = serde_json::to_string(&op).map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let out = std::process::Command::new(exe)
            .args(["--call", &self.a.socket, &op])
            .output()
            .map_err(|e| format!("spawn: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str::<Value>(text.trim()) {
            Ok(v) if v.get("io").is_some() => Err(v["io"].as_str().unwrap_or("?").to_string()),
            Ok(v) => serde_json::from_value(v).map_err(|e| e.to_string()),
            Err(e) => Err(format!("requester: {e}: {text}")),
        }
    }

    fn file(&mut self, path: &str) -> std::io::Result<&File> {
        if !self.files.contains_key(path) {
            let f = OpenOptions::new().read(true).write(true).custom_flags(libc::O_SYNC).open(path)?;
            self.files.insert(path.to_string(), f);
        }
        Ok(&self.files[path])
    }

    /// Block 0 as the host file has it now (the guest's cached pages dropped first).
    fn read0(&mut self, path: &str) -> std::io::Result<Vec<u8>> {
        let f = self.file(path)?;
        // SAFETY: posix_fadvise only advises the kernel about the open descriptor `f`.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let mut buf = vec![0u8; BLOCK as usize];
        f.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }

    fn record(&self, disk: &str, hold: &str, seq: u64) -> (Vec<u8>, Value) {
        let v = json!({ "magic": "oracle1", "node": self.a.node, "pid": self.pid, "vm": self.name, "disk": disk, "hold": hold,
                        "seq": seq, "mono": monotonic(), "real": realtime() });
        let text = v.to_string();
        let mut buf = format!("{text}\n{:016x}\n", fnv(text.as_bytes())).into_bytes();
        buf.resize(BLOCK as usize, 0);
        (buf, v)
    }

    fn cycle(&mut self) {
        let n = self.a.images.len() as u64;
        let i = self.rand(n) as usize;
        let disk = self.a.images[i].clone();
        let shared = self.rand(100) < self.a.pr;
        let mode = if shared { "PR" } else { "EX" };
        self.holds += 1;
        let hold = format!("{}-{}-{}", self.a.node, self.name, self.holds);
        let res = Resource::Disk { path: disk.clone(), readonly: shared, shared: false };
        let sent = realtime();
        let r =
            self.call(Op::Acquire { owner: self.owner(), resources: vec![res.clone()], state: None, wait_ms: 1500 });
        let answered = realtime();
        let got = outcome(&r);
        self.event("acquire", json!({ "hold": hold, "disk": disk, "mode": mode, "sent": sent, "answered": answered, "outcome": got, "message": message(&r) }));
        if !matches!(r, Ok(Response::Ok { .. })) {
            return;
        }
        self.use_disk(&disk, &hold, shared);
        // From here on this writer does not touch the disk: the release may be in flight.
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let sent = realtime();
            let r = self.call(Op::Release { owner: self.owner(), resources: vec![res.clone()] });
            let got = outcome(&r);
            self.event("release", json!({ "hold": hold, "disk": disk, "sent": sent, "answered": realtime(), "outcome": got, "attempts": attempts, "message": message(&r) }));
            // Only an unreachable daemon (killed, restarting) leaves it in doubt: ask again.
            if got != "io" || (self.stopped() && attempts > 600) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn use_disk(&mut self, disk: &str, hold: &str, shared: bool) {
        let end = Instant::now() + Duration::from_millis(self.a.hold_ms / 2 + self.rand(self.a.hold_ms));
        let mut expect = match self.read0(disk) {
            Ok(b) => b,
            Err(e) => return self.event("io-error", json!({ "hold": hold, "disk": disk, "message": e.to_string() })),
        };
        let mut first = true;
        while Instant::now() < end && !self.stopped() {
            if !first || shared {
                let now = match self.read0(disk) {
                    Ok(b) => b,
                    Err(e) => {
                        return self.event("io-error", json!({ "hold": hold, "disk": disk, "message": e.to_string() }))
                    }
                };
                if now != expect {
                    let found = parse_record(&now);
                    self.event(
                        "mismatch",
                        json!({ "hold": hold, "disk": disk, "shared": shared, "when": "before", "found": found }),
                    );
                    expect = now;
                }
                if shared {
                    self.event("read", json!({ "hold": hold, "disk": disk }));
                }
            }
            first = false;
            if !shared {
                self.seq += 1;
                let seq = self.seq;
                let (buf, rec) = self.record(disk, hold, seq);
                let slot = 1 + fnv(format!("{}:{}:{seq}", self.a.node, self.name).as_bytes()) % SLOTS;
                let w = self
                    .file(disk)
                    .and_then(|f| f.write_all_at(&buf, slot * BLOCK).and_then(|_| f.write_all_at(&buf, 0)));
                if let Err(e) = w {
                    return self.event("io-error", json!({ "hold": hold, "disk": disk, "message": e.to_string() }));
                }
                self.event("write", json!({ "hold": hold, "disk": disk, "seq": seq, "slot": slot, "rec_real": rec["real"], "rec_mono": rec["mono"] }));
                match self.read0(disk) {
                    Ok(back) if back != buf => {
                        let found = parse_record(&back);
                        self.event("mismatch", json!({ "hold": hold, "disk": disk, "shared": false, "when": "readback", "seq": seq, "found": found }));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return self.event("io-error", json!({ "hold": hold, "disk": disk, "message": e.to_string() }))
                    }
                }
                expect = buf;
            }
            std::thread::sleep(TICK);
        }
    }
}

/// What a block holds, for the log: the record's JSON, or `null` when it is none.
fn parse_record(b: &[u8]) -> Value {
    let text = String::from_utf8_lossy(b);
    text.split('\n').next().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null)
}

fn message(r: &Result<Response, String>) -> Value {
    match r {
        Ok(Response::Error(e)) => serde_json::to_value(e).ok().map(|v| v["message"].clone()).unwrap_or(Value::Null),
        Err(e) => json!(e),
        _ => Value::Null,
    }
}

fn outcome(r: &Result<Response, String>) -> String {
    match r {
        Ok(Response::Error(e)) => {
            serde_json::to_value(e.code).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
        }
        Ok(resp) => {
            serde_json::to_value(resp).ok().and_then(|v| v["result"].as_str().map(str::to_string)).unwrap_or_default()
        }
        Err(_) => "io".into(),
    }
}

/// `disk-writer --call SOCKET OP`: one request, the response printed as JSON.
fn requester(socket: &str, op: &str) {
    let r = (|| {
        let op: Op = serde_json::from_str(op).map_err(|e| e.to_string())?;
        let mut s = UnixStream::connect(socket).map_err(|e| format!("connect {socket}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
        proto::call(&mut s, op).map_err(|e| e.to_string())
    })();
    match r {
        Ok(resp) => println!("{}", serde_json::to_string(&resp).unwrap_or_default()),
        Err(e) => println!("{}", json!({ "io": e })),
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() == 4 && argv[1] == "--call" {
        return requester(&argv[2], &argv[3]);
    }
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("disk-writer: {e}");
            std::process::exit(2);
        }
    };
    let pid = std::process::id();
    // The name, and with it the owner, its holds' ids and its log, must be this process's alone
    // for the whole run: a node the nemesis reboots numbers its processes afresh, and a writer
    // started there may get the pid of one that ran before the reboot. The boot's id tells
    // them apart (the oracle would otherwise merge two holds into one).
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let boot: String = boot.chars().filter(char::is_ascii_hexdigit).take(8).collect();
    let name = format!("{}-{pid}-{boot}", a.vm);
    let path = format!("{}/n{}-{name}.jsonl", a.logdir, a.node);
    let log = match OpenOptions::new().create(true).append(true).open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("disk-writer: {path}: {e}");
            std::process::exit(1);
        }
    };
    let mut w = Writer {
        rng: fnv(format!("{name}{}", realtime()).as_bytes()) | 1,
        a,
        pid,
        name,
        log,
        seq: 0,
        holds: 0,
        files: HashMap::new(),
    };
    if let Some(dir) = w.a.uuid_dir.clone() {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(format!("{dir}/{}", uuid_of(&w.name)), pid.to_string());
    }
    let action = if w.a.action == FailureAction::Pause { "pause" } else { "default" };
    w.event("start", json!({ "action": action, "uuid": uuid_of(&w.name) }));
    while !w.stopped() {
        w.cycle();
        let idle = w.a.idle_ms / 2 + w.rand(w.a.idle_ms);
        std::thread::sleep(Duration::from_millis(idle));
    }
    w.event("exit", json!({}));
}
