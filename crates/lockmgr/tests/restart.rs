//! virtdlmd restarts (kill -9 included): live owners keep their locks, dead ones lose them,
//! a damaged journal stops the start.
mod support;

use proto::{ErrorCode, Op, Response};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use support::*;

#[test]
fn kill9_and_restart_keeps_live_owners_locks_and_drops_dead_ones() {
    let dir = tmpdir("restart");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let a = Vm::spawn("vm-a");
    let mut b = Vm::spawn("vm-b");
    let c = Vm::spawn("vm-c");
    let (ia, ib) = (disk(&dir, "a.img", false, false), disk(&dir, "b.img", false, false));
    expect_ok(a.acquire(&d, std::slice::from_ref(&ia)));
    expect_ok(b.acquire(&d, std::slice::from_ref(&ib)));

    // A competitor hammers a.img through the whole restart window: it must never get it.
    // counts: [refused, unreachable, granted]
    let counts = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)]);
    let stop = Arc::new(AtomicBool::new(false));
    let (sock, spec, res, stop2, counts2) =
        (d.socket.clone(), c.spec.clone(), ia.clone(), stop.clone(), counts.clone());
    let competitor = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            let r =
                std::os::unix::net::UnixStream::connect(&sock).map_err(proto::FrameError::from).and_then(|mut s| {
                    proto::call(
                        &mut s,
                        Op::Acquire { owner: spec.clone(), resources: vec![res.clone()], state: None, wait_ms: 0 },
                    )
                });
            let i = match r {
                Ok(Response::Error(e)) if e.code == ErrorCode::Conflict => 0,
                Ok(Response::Ok { .. }) => 2,
                Ok(other) => panic!("unexpected answer {other:?}"),
                Err(_) => 1,
            };
            counts2[i].fetch_add(1, Ordering::SeqCst);
        }
    });
    let wait_for = |i: usize, what: &str| {
        let t0 = std::time::Instant::now();
        while counts[i].load(Ordering::SeqCst) == 0 {
            assert!(t0.elapsed() < PATIENCE, "the competitor never saw: {what}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    wait_for(0, "a refusal before the restart");
    d.kill9();
    b.kill9(); // dies while the daemon is down
    wait_for(1, "the daemon down");
    d.start(&[]);
    let refused_before = counts[0].load(Ordering::SeqCst);
    let t0 = std::time::Instant::now();
    while counts[0].load(Ordering::SeqCst) == refused_before {
        assert!(t0.elapsed() < PATIENCE, "the competitor was never refused after the restart");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    competitor.join().unwrap();
    assert_eq!(counts[2].load(Ordering::SeqCst), 0, "a.img was handed to another VM across the restart");

    let held = a.held(&d);
    assert_eq!(held.len(), 1, "live owner's lock not taken back: {:?}", d.locks());
    assert!(held[0].identity.ends_with("/a.img"));
    assert!(b.held(&d).is_empty());
    expect_ok(c.acquire(&d, &[ib]));
    expect_error(c.acquire(&d, std::slice::from_ref(&ia)), ErrorCode::Conflict);

    // The adopted owner is watched again: its exit releases the lock.
    let mut a = a;
    a.kill9();
    d.wait_until("adopted owner's exit releases its lock", |d| {
        !d.locks().iter().any(|l| l.identity.ends_with("/a.img"))
    });
    expect_ok(c.acquire(&d, &[ia]));
}

#[test]
fn clean_stop_keeps_locks_too() {
    let dir = tmpdir("term");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let a = Vm::spawn("vm-a");
    expect_ok(a.acquire(&d, &[disk(&dir, "a.img", false, false)]));
    let mut child = d.child.take().unwrap();
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!d.socket.exists(), "socket left behind");
    d.start(&[]);
    assert_eq!(a.held(&d).len(), 1);
}

#[test]
fn a_damaged_journal_stops_the_start_unless_recovery_is_asked_for() {
    let dir = tmpdir("corrupt");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let a = Vm::spawn("vm-a");
    expect_ok(a.acquire(&d, &[disk(&dir, "a.img", false, false)]));
    d.kill9();
    let mut bytes = std::fs::read(&d.journal).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x20;
    std::fs::write(&d.journal, &bytes).unwrap();

    let out = d.command(&[]).output().unwrap();
    assert!(!out.status.success(), "started on a damaged journal");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("damaged at byte") && err.contains("--recover-journal"), "{err}");
    assert!(std::os::unix::net::UnixStream::connect(&d.socket).is_err(), "it serves on a damaged journal");

    d.start(&["--recover-journal"]);
    assert!(d.log().contains("was damaged"), "salvage not reported loudly");
    assert!(std::fs::read_dir(d.journal.parent().unwrap()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("damaged-")));
}

#[test]
fn one_daemon_per_journal() {
    let dir = tmpdir("twice");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let mut other = Daemon::new(&dir, "");
    other.socket = dir.join("ctl2.sock");
    other.admin = dir.join("admin2.sock");
    let out = other.command(&[]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another virtdlmd uses the journal"));
}

#[test]
fn bad_config_stops_the_start_with_the_line() {
    let dir = tmpdir("badconf");
    let d = Daemon::new(&dir, "# fine\nlock_readonly = perhaps");
    let out = d.command(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("virtdlmd.conf:4:") && err.contains("not a boolean"), "{err}");
    std::fs::write(&d.config, "lock-readonly = true\n").unwrap();
    let err = String::from_utf8_lossy(&d.command(&[]).output().unwrap().stderr).to_string();
    assert!(err.contains(":1: unknown key"), "{err}");
}

#[test]
fn dlm_backend_reports_clearly_when_absent() {
    let dir = tmpdir("nodlm");
    let d = Daemon::new(&dir, "");
    let out = d.command(&["--backend", "dlm"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("dlm backend"), "{err}");
}
