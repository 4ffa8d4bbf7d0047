//! Hostile clients on a real virtdlmd's sockets (local backend): unauthorised uids, oversized
//! frames, a user hammering read-only requests, slow-loris frames, thousands of idle
//! connections. None of them changes a lock or stops service to well-behaved clients, whose
//! latency under each attack is printed.
//! Needs root (clients run as other uids through setpriv; RLIMIT_NOFILE is raised).
//!
//! Run by tests/reliability/run.sh (it prints its figures); see docs/RELIABILITY.md.
//! (tests/protocol.rs checks each bad frame's typed answer and the admin socket's read-only
//! rule one request at a time; this file attacks in bulk and measures.)
mod support;

use proto::{self, ErrorCode, Op, OwnerSpec, Resource, Response, MAX_FRAME};
use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// Set in a child process started as another uid: what it is to do.
const CHILD: &str = "VDLM_HOSTILE_CHILD";
const NOBODY: u32 = 65534;
const OTHER_USER: u32 = 65533;

fn must_be_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test must run as root: it starts clients as other uids with setpriv"
    );
}

/// Enough open files for thousands of connections, in this process and the ones it starts.
fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    let max = lim.maximum.unwrap_or(u64::MAX).max(want);
    lim.maximum = Some(max);
    lim.current = Some(max);
    setrlimit(Resource::Nofile, lim).expect("raise RLIMIT_NOFILE (root may raise the hard limit)");
    max
}

fn set_soft_nofile(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    lim.current = Some(n);
    setrlimit(Resource::Nofile, lim).unwrap();
}

/// Runs this test binary's `test` as `uid`, with `args` for the child side.
fn as_uid(uid: u32, test: &str, args: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}")).arg(format!("--regid={uid}")).arg("--clear-groups");
    c.arg(std::env::current_exe().unwrap()).args([
        "--exact",
        test,
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
    ]);
    c.env(CHILD, args);
    c
}

fn answer_kind(r: &Result<Response, proto::FrameError>) -> String {
    match r {
        Ok(Response::Error(e)) => format!("{:?}", e.code),
        Ok(Response::Status { .. }) => "status".into(),
        Ok(Response::Locks { .. }) => "locks".into(),
        Ok(Response::Inspect { .. }) => "inspect".into(),
        Ok(Response::ResourceName { .. }) => "resource_name".into(),
        Ok(Response::State { .. }) => "state".into(),
        Ok(Response::Ok { .. }) => "ok".into(),
        Ok(Response::ConfirmedDown { .. }) => "confirmed_down".into(),
        Ok(Response::Event { .. }) => "event".into(),
        Err(e) => format!("io:{e}"),
    }
}

/// The requests an unauthorised peer tries, each on a fresh connection: (name, op, read-only).
fn every_op(victim: &OwnerSpec, own: &OwnerSpec, res: &Resource) -> Vec<(&'static str, Op, bool)> {
    vec![
        ("register", Op::Register { owner: own.clone(), resources: vec![res.clone()] }, false),
        ("acquire", Op::Acquire { owner: own.clone(), resources: vec![res.clone()], state: None, wait_ms: 0 }, false),
        (
            "acquire-as-victim",
            Op::Acquire { owner: victim.clone(), resources: vec![res.clone()], state: None, wait_ms: 0 },
            false,
        ),
        ("release", Op::Release { owner: victim.clone(), resources: vec![res.clone()] }, false),
        ("release-vm", Op::ReleaseVm { uuid: victim.uuid.clone(), force: true }, false),
        ("release-vm-on", Op::ReleaseVmOn { node: 0, uuid: victim.uuid.clone(), force: true }, false),
        ("cleanup", Op::Cleanup { dry_run: false }, false),
        ("confirm-down", Op::ConfirmDown { node: "1".into() }, false),
        ("status", Op::Status, true),
        ("locks", Op::Locks, true),
        ("inspect", Op::Inspect { resource: res.clone() }, true),
        ("resource-name", Op::ResourceName { resource: res.clone() }, true),
        ("inquire", Op::Inquire { owner: victim.clone() }, true),
        ("cleanup-dry-run", Op::Cleanup { dry_run: true }, true),
        ("watch", Op::Watch, true),
    ]
}

#[test]
#[ignore = "reliability tier (tests/reliability/run.sh): needs root to run clients as other uids"]
fn unauthorised_peers_change_nothing() {
    if let Ok(args) = std::env::var(CHILD) {
        // Child side, as uid 65534: ctl|admin|ctl_default|victim json|resource json
        let parts: Vec<&str> = args.splitn(5, '|').collect();
        let victim: OwnerSpec = serde_json::from_str(parts[3]).unwrap();
        let res: Resource = serde_json::from_str(parts[4]).unwrap();
        let mut own = victim.clone();
        own.pid = std::process::id();
        own.uuid = "99999999-0000-4000-8000-000000000001".into();
        for sock in &parts[..2] {
            for (name, op, _) in every_op(&victim, &own, &res) {
                let r = UnixStream::connect(sock)
                    .map_err(proto::FrameError::from)
                    .and_then(|mut s| proto::call(&mut s, op));
                println!("ANSWER {sock} {name} {}", answer_kind(&r));
            }
        }
        match UnixStream::connect(parts[2]) {
            Ok(_) => println!("CONNECT {} allowed", parts[2]),
            Err(e) => println!("CONNECT {} refused {:?}", parts[2], e.kind()),
        }
        return;
    }
    must_be_root();
    let dir = tmpdir("unauth");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // A non-root uid is allowed, so the control socket is world-connectable and only
    // SO_PEERCRED stands between uid 65534 and it.
    let mut d = Daemon::new(&dir, "allowed_uids = 12345");
    d.start(&[]);
    // And one as installed by default: control socket for root only.
    let ddir = dir.join("default");
    std::fs::create_dir_all(&ddir).unwrap();
    let mut plain = Daemon::new(&ddir, "");
    plain.start(&[]);
    let victim = Vm::spawn("victim");
    let img = disk(&dir, "a.img", false, false);
    expect_ok(victim.acquire(&d, std::slice::from_ref(&img)));
    let before = d.locks();

    let args = format!(
        "{}|{}|{}|{}|{}",
        d.socket.display(),
        d.admin.display(),
        plain.socket.display(),
        serde_json::to_string(&victim.spec).unwrap(),
        serde_json::to_string(&img).unwrap()
    );
    let out = as_uid(NOBODY, "unauthorised_peers_change_nothing", &args).output().expect("setpriv (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let own = victim.spec.clone();
    let (mut refused_ctl, mut refused_admin, mut answered) = (0, 0, 0);
    for (name, _, read_only) in every_op(&victim.spec, &own, &img) {
        let ctl = format!("ANSWER {} {name} Unauthorized", d.socket.display());
        assert!(stdout.contains(&ctl), "control socket, {name}: {stdout}");
        refused_ctl += 1;
        let admin = format!("ANSWER {} {name} ", d.admin.display());
        let line = stdout
            .lines()
            .find_map(|l| l.find(&admin).map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("no answer to {name}: {stdout}"));
        if read_only {
            assert!(
                !line.ends_with("Unauthorized") && !line.contains(" io:"),
                "admin socket refused read-only {name}: {line}"
            );
            answered += 1;
        } else {
            assert!(line.ends_with("Unauthorized"), "admin socket, {name}: {line}");
            refused_admin += 1;
        }
    }
    assert!(stdout.contains(&format!("CONNECT {} refused PermissionDenied", plain.socket.display())), "{stdout}");
    assert_eq!(d.locks(), before, "an unauthorised peer changed the lock table");
    println!(
        "FIGURE hostile-uid: uid {NOBODY}: all {refused_ctl} request kinds refused (unauthorized) on the control socket (allowed_uids = 12345, mode 0666); on the admin socket {refused_admin} change requests refused, {answered} read-only ones answered; lock table unchanged; default control socket (0600): connect refused"
    );
}

/// A well-behaved root client: acquire + release of its own disk on one connection, and a
/// status on a fresh connection (as the CLI does), `n` times each.
fn measure(d: &Daemon, vm: &Vm, img: &Resource, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut c = Conn::open(&d.socket).unwrap();
    let (mut rounds, mut fresh) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t0 = Instant::now();
        expect_ok(c.acquire(&vm.spec, std::slice::from_ref(img)).unwrap());
        assert_eq!(c.release(&vm.spec, std::slice::from_ref(img)).unwrap(), Response::State { state: None });
        rounds.push(t0.elapsed());
        let t0 = Instant::now();
        assert!(matches!(d.try_call(&d.socket, Op::Status), Ok(Response::Status { .. })));
        fresh.push(t0.elapsed());
    }
    (rounds, fresh)
}

fn report(phase: &str, (rounds, fresh): (Vec<Duration>, Vec<Duration>)) {
    println!(
        "FIGURE hostile-latency [{phase}]: acquire+release {}; connect+status {}",
        summary(rounds),
        summary(fresh)
    );
}

/// Is the connection closed by the daemon (EOF or reset), without blocking?
fn closed_by_peer(s: &UnixStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    let mut r = s;
    loop {
        match r.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (e.g. a timeout error) before the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Opens `n` connections to `sock` and keeps them; reports how many the daemon kept open.
fn open_idle(sock: &Path, n: usize) -> Vec<UnixStream> {
    (0..n).map(|_| UnixStream::connect(sock).expect("connect")).collect()
}

fn still_open(conns: &[UnixStream]) -> usize {
    conns.iter().filter(|s| !closed_by_peer(s)).count()
}

const FLOOD: usize = 3000;
const SAMPLES: usize = 150;

#[test]
#[ignore = "reliability tier (tests/reliability/run.sh): needs root, thousands of connections, prints latencies"]
fn floods_of_bad_and_idle_connections_do_not_stop_service() {
    if let Ok(args) = std::env::var(CHILD) {
        child_flood(&args);
        return;
    }
    must_be_root();
    let nofile = raise_nofile(4 * FLOOD as u64 + 4096);
    let dir = shm_dir("flood");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut d = Daemon::new(&dir, "allowed_uids = 12345\nread_timeout_ms = 2000");
    // The daemon starts with the usual soft limit (1024), as under systemd, and must raise it
    // itself to keep thousands of connections.
    set_soft_nofile(1024);
    d.start(&[]);
    set_soft_nofile(nofile);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.child.as_ref().unwrap().id())).unwrap();
    let daemon_nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("")
        .split_whitespace()
        .nth(3)
        .unwrap_or("?")
        .to_string();
    assert_ne!(daemon_nofile, "1024", "virtdlmd did not raise its open-file limit");
    let vm = Vm::spawn("steady");
    let img = disk(&dir, "steady.img", false, false);
    println!("RLIMIT_NOFILE: virtdlmd started with soft 1024 and raised it to {daemon_nofile}");
    report("baseline", measure(&d, &vm, &img, SAMPLES));

    // Oversized frames (refused from the header) and the largest allowed frame of garbage
    // (read in full, then refused), from two clients as fast as they can.
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Vec<_> = [(MAX_FRAME + 1, 0usize), (MAX_FRAME, MAX_FRAME)]
        .into_iter()
        .map(|(len, body)| {
            let (sock, stop) = (d.socket.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut frame = (len as u32).to_be_bytes().to_vec();
                frame.resize(4 + body, b'x');
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let mut s = UnixStream::connect(&sock).unwrap();
                    s.set_read_timeout(Some(PATIENCE)).unwrap();
                    let _ = s.write_all(&frame);
                    let r = proto::read_frame(&mut s).map(|b| proto::decode_response(&b));
                    match r {
                        Ok(Ok(Response::Error(e))) => {
                            assert!(matches!(e.code, ErrorCode::FrameTooLarge | ErrorCode::BadRequest), "{e:?}")
                        }
                        other => panic!("a bad frame got {other:?}"),
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let lat = measure(&d, &vm, &img, SAMPLES);
    stop.store(true, Ordering::Relaxed);
    let n: Vec<usize> = counts.into_iter().map(|t| t.join().unwrap()).collect();
    report(&format!("{} oversized + {} maximal garbage frames", n[0], n[1]), lat);

    // An unprivileged user asking read-only questions as fast as it can, on as many admin
    // connections as it may keep (not rate-limited: this measures what that costs others).
    let mut hammer = as_uid(
        NOBODY,
        "floods_of_bad_and_idle_connections_do_not_stop_service",
        &format!("hammer|{}", d.admin.display()),
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .expect("setpriv (util-linux)");
    let hammer_lines = child_lines(hammer.stdout.take().unwrap());
    hammer_lines.recv_timeout(2 * PATIENCE).expect("the hammering child started");
    let lat = measure(&d, &vm, &img, SAMPLES);
    drop(hammer.stdin.take());
    let done = hammer_lines.recv_timeout(2 * PATIENCE).expect("the hammering child reported");
    assert!(hammer.wait().unwrap().success());
    report(&format!("uid {NOBODY} {}", done.trim_start_matches("HAMMERED ")), lat);

    // Slow loris: root connections that start a frame and stall, half in the header, half
    // in the body. Each is answered and closed after read_timeout_ms; nobody waits for them.
    let loris: Vec<UnixStream> = (0..FLOOD / 2)
        .map(|i| {
            let mut s = UnixStream::connect(&d.socket).unwrap();
            s.write_all(if i % 2 == 0 { &[0, 0][..] } else { &[0, 0, 0, 40, b'{', b'"'][..] }).unwrap();
            s
        })
        .collect();
    let t0 = Instant::now();
    report(&format!("{} slow-loris connections", loris.len()), measure(&d, &vm, &img, SAMPLES));
    let deadline = Instant::now() + PATIENCE;
    while still_open(&loris) > 0 {
        assert!(Instant::now() < deadline, "slow-loris connections were not closed after the read timeout");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("FIGURE hostile-loris: all {} stalled frames answered and closed {:.1} s after they started (read_timeout_ms = 2000)", loris.len(), t0.elapsed().as_secs_f64());
    drop(loris);

    // Thousands of idle connections: root's on the control socket (kept: root could stop the
    // daemon anyway), and uid 65534's on both sockets (capped per uid).
    let idle_root = open_idle(&d.socket, FLOOD);
    let mut child = as_uid(
        NOBODY,
        "floods_of_bad_and_idle_connections_do_not_stop_service",
        &format!("flood|{}|{}", d.socket.display(), d.admin.display()),
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .expect("setpriv (util-linux)");
    let line = child_lines(child.stdout.take().unwrap())
        .recv_timeout(2 * PATIENCE)
        .expect("the flooding child reported how many connections it kept");
    let kept: Vec<usize> = line.split_whitespace().skip(1).map(|w| w.parse().unwrap()).collect();
    assert!(
        kept[0] <= lockmgr::server::UNTRUSTED_PER_UID && kept[1] <= lockmgr::server::UNTRUSTED_PER_UID,
        "uid {NOBODY} kept {kept:?} connections open"
    );
    let lat = measure(&d, &vm, &img, SAMPLES);
    assert_eq!(still_open(&idle_root), FLOOD, "root's idle control connections were closed");
    // Another unprivileged user still gets read-only answers on the admin socket.
    let out = as_uid(
        OTHER_USER,
        "floods_of_bad_and_idle_connections_do_not_stop_service",
        &format!("measure|{}", d.admin.display()),
    )
    .output()
    .unwrap();
    let other = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "uid {OTHER_USER} could not use the admin socket: {other}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other_line =
        other.lines().find_map(|l| l.find("ADMIN ").map(|at| l[at..].to_string())).expect("the other user's figures");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    report(&format!("{FLOOD} idle root connections + {FLOOD}x2 from uid {NOBODY} (kept {}/{})", kept[0], kept[1]), lat);
    println!(
        "FIGURE hostile-latency [same flood, uid {OTHER_USER} on the admin socket]: status {}",
        other_line.trim_start_matches("ADMIN ")
    );
    drop(idle_root);
    report("after the floods", measure(&d, &vm, &img, SAMPLES));
    assert_eq!(d.locks(), vec![], "the floods left a lock behind");
}

/// The child's report lines (KEPT, STARTED, HAMMERED, ADMIN), from where they start: libtest
/// starts its own line ("test NAME ... ") before the child's first output.
fn child_lines(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            for tag in ["KEPT ", "STARTED", "HAMMERED ", "ADMIN "] {
                if let Some(at) = l.find(tag) {
                    let _ = tx.send(l[at..].to_string());
                }
            }
        }
    });
    rx
}

/// Child side of the flood test.
fn child_flood(args: &str) {
    let parts: Vec<&str> = args.split('|').collect();
    match parts[0] {
        "flood" => {
            let ctl = open_idle(Path::new(parts[1]), FLOOD);
            let admin = open_idle(Path::new(parts[2]), FLOOD);
            // Give the daemon time to accept (and close) them all.
            std::thread::sleep(Duration::from_millis(500));
            println!("KEPT {} {}", still_open(&ctl), still_open(&admin));
            std::io::stdout().flush().unwrap();
            let mut rest = String::new();
            let _ = std::io::stdin().read_to_string(&mut rest);
        }
        "hammer" => {
            let stop = Arc::new(AtomicBool::new(false));
            let threads: Vec<_> = (0..lockmgr::server::UNTRUSTED_PER_UID)
                .map(|_| {
                    let (sock, stop) = (parts[1].to_string(), stop.clone());
                    std::thread::spawn(move || {
                        let mut c = Conn::open(Path::new(&sock)).unwrap();
                        let mut n = 0usize;
                        while !stop.load(Ordering::Relaxed) {
                            assert!(matches!(c.call(Op::Locks), Ok(Response::Locks { .. })));
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            println!("STARTED");
            std::io::stdout().flush().unwrap();
            let t0 = Instant::now();
            let mut rest = String::new();
            let _ = std::io::stdin().read_to_string(&mut rest);
            stop.store(true, Ordering::Relaxed);
            let n: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            println!(
                "HAMMERED {} connections, {n} read-only requests in {:.1} s",
                lockmgr::server::UNTRUSTED_PER_UID,
                t0.elapsed().as_secs_f64()
            );
        }
        "measure" => {
            let mut times = Vec::new();
            for _ in 0..50 {
                let t0 = Instant::now();
                let mut s = UnixStream::connect(parts[1]).unwrap();
                s.set_read_timeout(Some(PATIENCE)).unwrap();
                assert!(matches!(proto::call(&mut s, Op::Status), Ok(Response::Status { .. })));
                times.push(t0.elapsed());
            }
            println!("ADMIN {}", summary(times));
        }
        other => panic!("unknown child mode {other}"),
    }
}
