//! The sockets: typed errors for bad input, the read-only admin socket, admin requests.
mod support;

use proto::{self, ErrorCode, Op, Resource, Response, MAX_FRAME};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use support::*;

fn raw(sock: &std::path::Path, bytes: &[u8]) -> (Response, bool) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(bytes).unwrap();
    let resp = proto::decode_response(&proto::read_frame(&mut s).unwrap()).unwrap();
    let mut rest = Vec::new();
    let closed = matches!(s.read_to_end(&mut rest), Ok(0));
    (resp, closed)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

#[test]
fn bad_frames_get_a_typed_answer_and_the_connection_closes() {
    let dir = tmpdir("frames");
    let mut d = Daemon::new(&dir, "read_timeout_ms = 300");
    d.start(&[]);
    let cases: Vec<(Vec<u8>, ErrorCode)> = vec![
        (((MAX_FRAME + 1) as u32).to_be_bytes().to_vec(), ErrorCode::FrameTooLarge),
        (frame(b"{not json"), ErrorCode::BadRequest),
        (frame(br#"{"v":1,"op":"frobnicate"}"#), ErrorCode::BadRequest),
        (frame(br#"{"v":7,"op":"status"}"#), ErrorCode::Version),
        (frame(br#"{"v":1,"op":"acquire","owner":{"uuid":"u","name":"n"},"resources":[]}"#), ErrorCode::BadRequest),
        // A frame that never finishes.
        (vec![0, 0, 0, 50, b'{'], ErrorCode::BadRequest),
    ];
    for (bytes, code) in cases {
        let (resp, closed) = raw(&d.socket, &bytes);
        let e = expect_error(resp, code);
        assert!(!e.message.is_empty());
        assert!(closed, "connection left open after {code:?}");
    }
    assert!(d.locks().is_empty());
    // The daemon still serves.
    assert!(matches!(d.call(Op::Status), Response::Status { .. }));
}

/// Each of a trusted peer's connections keeps the thread that accepted it (server/blocking.rs):
/// fails if the last thread waiting in accept takes a connection without starting another
/// (Acceptors::run), or if surplus threads end while none is left waiting. The stalled frames
/// would be cut off after the read timeout, so it is set far beyond the calls' patience.
#[test]
fn a_slow_client_blocks_nobody() {
    let dir = tmpdir("slow");
    let mut d = Daemon::new(&dir, "read_timeout_ms = 600000");
    d.start(&[]);
    // More stalled connections than the threads left waiting after a burst.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(&[0, 0, 0]).unwrap();
        slow.push(s);
        assert!(matches!(d.call(Op::Status), Response::Status { .. }));
    }
    drop(slow);
    for _ in 0..3 {
        assert!(matches!(d.call(Op::Status), Response::Status { .. }));
    }
}

#[test]
fn many_requests_on_one_connection() {
    let dir = tmpdir("conn");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let a = Vm::spawn("vm-a");
    let img = disk(&dir, "a.img", false, false);
    let mut s = UnixStream::connect(&d.socket).unwrap();
    expect_ok(proto::call(&mut s, Op::Register { owner: a.spec.clone(), resources: vec![img.clone()] }).unwrap());
    expect_ok(
        proto::call(
            &mut s,
            Op::Acquire { owner: a.spec.clone(), resources: vec![img.clone()], state: None, wait_ms: 0 },
        )
        .unwrap(),
    );
    assert!(matches!(
        proto::call(&mut s, Op::Inquire { owner: a.spec.clone() }).unwrap(),
        Response::State { state: Some(_) }
    ));
    assert_eq!(
        proto::call(&mut s, Op::Release { owner: a.spec.clone(), resources: vec![img] }).unwrap(),
        Response::State { state: None }
    );
}

#[test]
fn admin_socket_is_read_only() {
    let dir = tmpdir("admin");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let a = Vm::spawn("vm-a");
    let img = disk(&dir, "a.img", false, false);
    expect_ok(a.acquire(&d, std::slice::from_ref(&img)));
    let mode =
        std::fs::metadata(&d.admin).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777).unwrap();
    assert_eq!(mode, 0o666);
    let ctl_mode = std::fs::metadata(&d.socket)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(ctl_mode, 0o600);

    let admin = |op| d.try_call(&d.admin, op).unwrap();
    match admin(Op::Status) {
        Response::Status { status } => {
            assert_eq!(status.locks, 1);
            assert_eq!(status.backend, "local");
            assert_eq!(status.node_name, "testnode");
        }
        other => panic!("{other:?}"),
    }
    match admin(Op::Locks) {
        Response::Locks { locks } => assert_eq!(locks.len(), 1),
        other => panic!("{other:?}"),
    }
    match admin(Op::Inspect { resource: img.clone() }) {
        Response::Inspect { holders, resource, .. } => {
            assert_eq!(holders.len(), 1);
            assert_eq!(holders[0].vm_name, "vm-a");
            assert!(resource.starts_with("d1:"));
        }
        other => panic!("{other:?}"),
    }
    match admin(Op::ResourceName {
        resource: Resource::Lease { lockspace: None, key: "k".into(), path: None, offset: None },
    }) {
        Response::ResourceName { resource, identity } => {
            assert!(resource.starts_with("l1:") && resource.len() <= 64);
            assert_eq!(identity, "lease k");
        }
        other => panic!("{other:?}"),
    }
    for op in [
        Op::Release { owner: a.spec.clone(), resources: vec![img.clone()] },
        Op::Acquire { owner: a.spec.clone(), resources: vec![img.clone()], state: None, wait_ms: 0 },
        Op::ReleaseVm { uuid: a.spec.uuid.clone(), force: true },
        Op::Cleanup { dry_run: false },
        Op::ConfirmDown { node: "node2".into() },
    ] {
        expect_error(admin(op), ErrorCode::Unauthorized);
    }
    assert_eq!(a.held(&d).len(), 1, "an admin-socket request changed something");
}

#[test]
fn release_vm_and_cleanup() {
    let dir = tmpdir("relvm");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let a = Vm::spawn("vm-a");
    let img = disk(&dir, "a.img", false, false);
    expect_ok(a.acquire(&d, &[img]));
    expect_error(d.call(Op::ReleaseVm { uuid: a.spec.uuid.clone(), force: false }), ErrorCode::Busy);
    expect_error(d.call(Op::ReleaseVm { uuid: "nope".into(), force: false }), ErrorCode::UnknownOwner);
    // Without the cluster inventory there is nobody to forward a release to.
    expect_error(
        d.call(Op::ReleaseVmOn { node: 2, uuid: a.spec.uuid.clone(), force: true }),
        ErrorCode::NodeUnreachable,
    );
    assert_eq!(a.held(&d).len(), 1, "a release that could not be forwarded releases nothing");
    match d.call(Op::Cleanup { dry_run: true }) {
        Response::Ok { locks } => assert!(locks.is_empty()),
        other => panic!("{other:?}"),
    }
    match d.call(Op::ReleaseVm { uuid: a.spec.uuid.clone(), force: true }) {
        Response::Ok { locks } => assert_eq!(locks.len(), 1),
        other => panic!("{other:?}"),
    }
    assert!(d.locks().is_empty());
}

#[test]
fn the_qemu_process_itself_may_not_take_locks() {
    // This test process plays a QEMU that registered (REGISTER_ONLY|RESTRICT) and then
    // tries to lock through its own connection.
    let dir = tmpdir("restrict");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let img = disk(&dir, "a.img", false, false);
    let me = proto::OwnerSpec {
        uuid: "12345678-1234-4234-8234-123456789abc".into(),
        name: "self".into(),
        pid: std::process::id(),
        id: 1,
        uri: None,
        action: Default::default(),
    };
    expect_ok(d.call(Op::Register { owner: me.clone(), resources: vec![img.clone()] }));
    let e = expect_error(
        d.call(Op::Acquire { owner: me.clone(), resources: vec![img.clone()], state: None, wait_ms: 0 }),
        ErrorCode::OutOfOrder,
    );
    assert!(e.message.contains("restricted"), "{}", e.message);
    expect_error(d.call(Op::Release { owner: me, resources: vec![img] }), ErrorCode::OutOfOrder);
    assert!(d.locks().is_empty());
}

/// When set, this test binary acts as a client (run as another user) and prints the answers.
const CLIENT_ENV: &str = "VDLM_TEST_CLIENT_SOCKETS";

#[test]
fn control_socket_checks_the_peer_uid() {
    if let Ok(socks) = std::env::var(CLIENT_ENV) {
        // Child side: we run as uid 65534.
        let (ctl, admin) = socks.split_once(',').unwrap();
        for sock in [ctl, admin] {
            let mut s = UnixStream::connect(sock).expect("connect");
            match proto::call(&mut s, Op::Status).unwrap() {
                Response::Error(e) => println!("ANSWER {sock} {:?}", e.code),
                Response::Status { .. } => println!("ANSWER {sock} status"),
                other => println!("ANSWER {sock} {other:?}"),
            }
        }
        return;
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "this test must run as root: it starts a client as uid 65534 with setpriv"
    );
    let dir = tmpdir("peercred");
    // A non-root uid is allowed, so the socket file is world-accessible and only
    // SO_PEERCRED stands between uid 65534 and the control socket.
    let mut d = Daemon::new(&dir, "allowed_uids = 12345");
    d.start(&[]);
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "control_socket_checks_the_peer_uid", "--nocapture", "--test-threads=1"])
        .env(CLIENT_ENV, format!("{},{}", d.socket.display(), d.admin.display()))
        .output()
        .expect("setpriv (util-linux) is needed for this test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("ANSWER {} Unauthorized", d.socket.display())), "{stdout}");
    assert!(stdout.contains(&format!("ANSWER {} status", d.admin.display())), "{stdout}");
}

#[test]
fn owner_details_are_checked() {
    let dir = tmpdir("validate");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let a = Vm::spawn("vm-a");
    let img = disk(&dir, "a.img", false, false);
    for (uuid, name, pid) in
        [("not-a-uuid", "x", a.spec.pid), (a.spec.uuid.as_str(), "", a.spec.pid), (a.spec.uuid.as_str(), "x", 1)]
    {
        let mut spec = a.spec.clone();
        spec.uuid = uuid.into();
        spec.name = name.into();
        spec.pid = pid;
        expect_error(d.call(Op::Register { owner: spec.clone(), resources: vec![] }), ErrorCode::BadRequest);
        expect_error(
            d.call(Op::Acquire { owner: spec, resources: vec![img.clone()], state: None, wait_ms: 0 }),
            ErrorCode::BadRequest,
        );
    }
    let rel = Resource::Disk { path: "relative/a.img".into(), readonly: false, shared: false };
    expect_error(a.acquire(&d, &[img, rel]), ErrorCode::BadRequest);
    assert!(d.locks().is_empty());
}

#[test]
fn idle_admin_connections_cannot_starve_the_daemon() {
    let dir = tmpdir("flood");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    // Far more idle admin connections than the cap: the control socket still answers, and
    // the admin socket still serves once a slot frees.
    let mut idle: Vec<UnixStream> = (0..200).filter_map(|_| UnixStream::connect(&d.admin).ok()).collect();
    assert!(matches!(d.call(Op::Status), Response::Status { .. }));
    idle.truncate(0);
    let t0 = std::time::Instant::now();
    loop {
        if let Ok(Response::Status { .. }) = d.try_call(&d.admin, Op::Status) {
            break;
        }
        assert!(t0.elapsed() < PATIENCE, "admin socket never recovered");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
