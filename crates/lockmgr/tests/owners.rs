//! Owners and their locks through a real virtdlmd (local backend), with real processes as
//! the VMs' QEMUs.
mod support;

use proto::mode::Mode;
use proto::{ErrorCode, Response};
use support::*;

#[test]
fn qemu_exit_releases_every_lock_at_once() {
    let dir = tmpdir("exit");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let mut a = Vm::spawn("vm-a");
    let res = [disk(&dir, "a.img", false, false), disk(&dir, "b.img", false, true)];
    expect_ok(a.register(&d, &res));
    assert!(a.held(&d).is_empty(), "REGISTER_ONLY must take no lock");
    expect_ok(a.acquire(&d, &res));
    let held = a.held(&d);
    assert_eq!(held.len(), 2);
    assert!(held.iter().any(|l| l.mode == Mode::Ex && l.identity.ends_with("/a.img")));
    assert!(held.iter().any(|l| l.mode == Mode::Cw && l.identity.ends_with("/b.img")));

    a.kill9();
    d.wait_until("the dead VM's locks are released", |d| d.locks().is_empty());
    let b = Vm::spawn("vm-b");
    expect_ok(b.acquire(&d, &res[..1]));
    assert!(d.log().contains("released: its QEMU process exited"), "release not logged");
}

/// One disk listed twice in one request (read-only then writable; shared then exclusive) is
/// locked once, in the mode that keeps out what either listing keeps out: a VM writing a disk
/// it also lists read-only must not hold it in PR, where another VM's PR would be let in.
/// Break it: keep the first listing's mode in `Registry::resolve_all` (as before): this test
/// fails with "PR+EX: held PR, not EX" (checked).
#[test]
fn a_disk_listed_twice_is_locked_in_the_strongest_mode() {
    let dir = tmpdir("twice");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let (a, b) = (Vm::spawn("vm-a"), Vm::spawn("vm-b"));
    let flags = |m: Mode| match m {
        Mode::Ex => (false, false),
        Mode::Cw => (false, true),
        Mode::Pr => (true, false),
        Mode::Cr => (true, true),
    };
    for (first, second, want) in [
        (Mode::Pr, Mode::Ex, Mode::Ex),
        (Mode::Ex, Mode::Pr, Mode::Ex),
        (Mode::Cw, Mode::Ex, Mode::Ex),
        (Mode::Cw, Mode::Pr, Mode::Ex),
        (Mode::Cr, Mode::Cw, Mode::Cw),
        (Mode::Cr, Mode::Pr, Mode::Pr),
    ] {
        let (r1, s1) = flags(first);
        let (r2, s2) = flags(second);
        let both = [disk(&dir, "twice.img", r1, s1), disk(&dir, "twice.img", r2, s2)];
        expect_ok(a.acquire(&d, &both));
        let held = a.held(&d);
        assert_eq!(held.len(), 1, "{first}+{second}: {held:?}");
        assert_eq!(held[0].mode, want, "{first}+{second}: held {}, not {want}", held[0].mode);
        // Another VM asking for either listing's mode is refused when the strongest mode says so.
        for m in [first, second] {
            let (r, s) = flags(m);
            let other = disk(&dir, "twice.img", r, s);
            match b.acquire(&d, std::slice::from_ref(&other)) {
                Response::Ok { .. } => {
                    assert!(want.compatible(m), "{first}+{second}: vm-b got {m}");
                    b.release(&d, &[other]);
                }
                r => {
                    expect_error(r, ErrorCode::Conflict);
                    assert!(!want.compatible(m), "{first}+{second}: vm-b refused {m}");
                }
            }
        }
        a.release(&d, &both);
        assert!(d.locks().is_empty(), "{first}+{second}: leftover {:?}", d.locks());
    }
}

#[test]
fn two_owners_contend_in_every_mode_pair() {
    let dir = tmpdir("modes");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let (a, b) = (Vm::spawn("vm-a"), Vm::spawn("vm-b"));
    let flags = |m: Mode| match m {
        Mode::Ex => (false, false),
        Mode::Cw => (false, true),
        Mode::Pr => (true, false),
        Mode::Cr => (true, true),
    };
    for ma in Mode::ALL {
        for mb in Mode::ALL {
            let (ra, sa) = flags(ma);
            let (rb, sb) = flags(mb);
            let da = disk(&dir, "pair.img", ra, sa);
            let db = disk(&dir, "pair.img", rb, sb);
            expect_ok(a.acquire(&d, std::slice::from_ref(&da)));
            let got = b.acquire(&d, std::slice::from_ref(&db));
            if ma.compatible(mb) {
                expect_ok(got);
                assert_eq!(b.held(&d).len(), 1, "{ma} then {mb}");
                b.release(&d, &[db]);
            } else {
                let e = expect_error(got, ErrorCode::Conflict);
                let c = e.conflict.expect("conflict details");
                assert_eq!(c.wanted, mb);
                assert_eq!(c.holders.len(), 1);
                assert_eq!(c.holders[0].vm_uuid, a.spec.uuid);
                assert_eq!(c.holders[0].mode, ma);
                assert!(e.message.contains("pair.img") && e.message.contains("VM vm-a"), "{}", e.message);
                assert!(e.message.contains(&a.spec.uuid) && e.message.contains("node testnode"), "{}", e.message);
                assert!(b.held(&d).is_empty());
            }
            a.release(&d, &[da]);
            assert!(d.locks().is_empty(), "{ma} then {mb}: leftover {:?}", d.locks());
        }
    }
}

#[test]
fn conflict_message_reads_as_documented() {
    let dir = tmpdir("msg");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let (a, b) = (Vm::spawn("web-3"), Vm::spawn("web-4"));
    let img = disk(&dir, "a.img", false, false);
    expect_ok(a.acquire(&d, std::slice::from_ref(&img)));
    let e = expect_error(b.acquire(&d, &[img]), ErrorCode::Conflict);
    let want = format!(
        "disk {}/a.img is held exclusively by VM web-3 (uuid {}) on node testnode since ",
        std::fs::canonicalize(&dir).unwrap().display(),
        a.spec.uuid
    );
    assert!(e.message.starts_with(&want), "{}", e.message);
    assert!(e.message.ends_with("stop that VM or detach the disk first"), "{}", e.message);
}

#[test]
fn acquire_is_all_or_nothing() {
    let dir = tmpdir("aon");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let (a, b) = (Vm::spawn("vm-a"), Vm::spawn("vm-b"));
    let disks =
        [disk(&dir, "1.img", false, false), disk(&dir, "2.img", false, false), disk(&dir, "3.img", false, false)];
    expect_ok(b.acquire(&d, &disks[2..]));
    let e = expect_error(a.acquire(&d, &disks), ErrorCode::Conflict);
    assert!(e.message.contains("3.img"), "{}", e.message);
    assert!(a.held(&d).is_empty(), "partial acquisition left behind: {:?}", a.held(&d));
    // The first two are free for anyone.
    let c = Vm::spawn("vm-c");
    expect_ok(c.acquire(&d, &disks[..2]));
}

#[test]
fn hotplug_adds_and_removes_one_resource() {
    let dir = tmpdir("hot");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let a = Vm::spawn("vm-a");
    let base = disk(&dir, "a.img", false, false);
    let hot = disk(&dir, "hot.img", false, false);
    let lease = proto::Resource::Lease {
        lockspace: Some("space".into()),
        key: "k1".into(),
        path: Some("/x".into()),
        offset: Some(0),
    };
    expect_ok(a.register(&d, std::slice::from_ref(&base)));
    expect_ok(a.acquire(&d, std::slice::from_ref(&base)));
    expect_ok(a.acquire(&d, std::slice::from_ref(&hot)));
    expect_ok(a.acquire(&d, std::slice::from_ref(&lease)));
    assert_eq!(a.held(&d).len(), 3);
    assert!(a.held(&d).iter().any(|l| l.identity == "lease space/k1"));
    // Re-acquiring what is held (resume after start) changes nothing.
    expect_ok(a.acquire(&d, &[lease.clone(), base.clone(), hot.clone()]));
    assert_eq!(a.held(&d).len(), 3);
    match a.release(&d, &[hot]) {
        Response::State { state: Some(s) } => {
            assert!(s.starts_with("dlm1-2-") && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'), "{s}")
        }
        other => panic!("{other:?}"),
    }
    a.release(&d, &[lease]);
    let held = a.held(&d);
    assert_eq!(held.len(), 1);
    assert!(held[0].identity.ends_with("/a.img"));
}

#[test]
fn release_is_idempotent_and_zero_resources_are_a_no_op() {
    let dir = tmpdir("idem");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let a = Vm::spawn("vm-a");
    let res = [disk(&dir, "a.img", false, false), disk(&dir, "cd.iso", true, false)];
    expect_ok(a.acquire(&d, &[]));
    assert!(d.locks().is_empty());
    expect_ok(a.acquire(&d, &res));
    assert!(matches!(a.release(&d, &[]), Response::State { state: Some(_) }));
    assert_eq!(a.held(&d).len(), 2);
    // libvirt's suspend releases twice.
    assert_eq!(a.release(&d, &res), Response::State { state: None });
    assert_eq!(a.release(&d, &res), Response::State { state: None });
    assert!(d.locks().is_empty());
    // And resume takes them again.
    expect_ok(a.acquire(&d, &res));
    assert_eq!(a.held(&d).len(), 2);
}

#[test]
fn readonly_disks_can_be_left_unlocked() {
    let dir = tmpdir("ro");
    let mut d = Daemon::new(&dir, "lock_readonly = false");
    d.start(&[]);
    let (a, b) = (Vm::spawn("vm-a"), Vm::spawn("vm-b"));
    let ro = disk(&dir, "base.img", true, false);
    let rw = disk(&dir, "base.img", false, false);
    expect_ok(a.acquire(&d, &[ro]));
    assert!(d.locks().is_empty());
    expect_ok(b.acquire(&d, &[rw]));
}

#[test]
fn a_dead_or_reused_pid_gets_no_lock() {
    let dir = tmpdir("gone");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let mut a = Vm::spawn("vm-a");
    let img = disk(&dir, "a.img", false, false);
    a.kill9();
    expect_error(a.acquire(&d, std::slice::from_ref(&img)), ErrorCode::OwnerGone);
    expect_error(a.register(&d, &[img]), ErrorCode::OwnerGone);
    assert!(d.locks().is_empty());
}

#[test]
fn a_pid_belongs_to_one_vm() {
    let dir = tmpdir("ooo");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let a = Vm::spawn("vm-a");
    let img = disk(&dir, "a.img", false, false);
    expect_ok(a.register(&d, std::slice::from_ref(&img)));
    let mut impostor = a.spec.clone();
    impostor.uuid = "99999999-9999-4999-8999-999999999999".into();
    let r =
        d.call(proto::Op::Acquire { owner: impostor.clone(), resources: vec![img.clone()], state: None, wait_ms: 0 });
    expect_error(r, ErrorCode::OutOfOrder);
    expect_error(d.call(proto::Op::Release { owner: impostor, resources: vec![img] }), ErrorCode::UnknownOwner);
    assert!(d.locks().is_empty());
}

#[test]
fn bounded_wait_gets_the_lock_when_the_holder_exits() {
    let dir = tmpdir("wait");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let mut a = Vm::spawn("vm-a");
    let b = Vm::spawn("vm-b");
    let img = disk(&dir, "a.img", false, false);
    expect_ok(a.acquire(&d, std::slice::from_ref(&img)));
    let (sock, spec, res) = (d.socket.clone(), b.spec.clone(), img.clone());
    let waiter = std::thread::spawn(move || {
        let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
        proto::call(&mut s, proto::Op::Acquire { owner: spec, resources: vec![res], state: None, wait_ms: 30_000 })
            .unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    a.kill9();
    expect_ok(waiter.join().unwrap());
    assert_eq!(b.held(&d).len(), 1);
}
