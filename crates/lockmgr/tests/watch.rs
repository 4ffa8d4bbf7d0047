//! `watch` on the admin socket: the table as it stands, then every lock change as it happens,
//! with the VM, the disk, the mode and why.
mod support;

use proto::mode::Mode;
use proto::watch::{EventKind, LockEvent};
use proto::{self, Op, Request, Response};
use std::io::Write;
use std::os::unix::net::UnixStream;
use support::*;

fn next(s: &mut UnixStream) -> LockEvent {
    match proto::decode_response(&proto::read_frame(s).expect("an event frame")).unwrap() {
        Response::Event { event } => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn a_watcher_sees_the_table_then_each_grant_and_release() {
    let dir = tmpdir("watch");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let a = disk(&dir, "a.img", false, false);
    let b = disk(&dir, "b.img", true, false);
    let early = Vm::spawn("early");
    expect_ok(early.acquire(&d, std::slice::from_ref(&a)));

    // Read-only: any user may watch, through the admin socket.
    let mut s = UnixStream::connect(&d.admin).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let Response::Locks { locks } = proto::call(&mut s, Op::Watch).unwrap() else { panic!("the table comes first") };
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].vm_name, "early");

    let mut web = Vm::spawn("web");
    expect_ok(web.acquire(&d, std::slice::from_ref(&b)));
    let e = next(&mut s);
    let l = e.lock.as_ref().unwrap();
    assert_eq!((e.kind, l.vm_name.as_str(), l.mode), (EventKind::Granted, "web", Mode::Pr));
    assert!(l.identity.ends_with("/b.img"), "{}", l.identity);

    assert!(matches!(early.release(&d, std::slice::from_ref(&a)), Response::State { .. }));
    let e = next(&mut s);
    assert_eq!((e.kind, e.lock.as_ref().unwrap().vm_name.as_str()), (EventKind::Released, "early"));
    assert_eq!(e.why, None);

    // QEMU gone: the daemon frees its locks and says why.
    web.kill9();
    let e = next(&mut s);
    assert_eq!((e.kind, e.lock.as_ref().unwrap().vm_name.as_str()), (EventKind::Released, "web"));
    assert_eq!(e.why.as_deref(), Some("its QEMU process exited"));

    // A refusal changes nothing: no event. The stream ends when the watcher writes anything.
    let again = Vm::spawn("again");
    expect_ok(again.acquire(&d, std::slice::from_ref(&a)));
    let other = Vm::spawn("other");
    expect_error(other.acquire(&d, std::slice::from_ref(&a)), proto::ErrorCode::Conflict);
    let e = next(&mut s);
    assert_eq!((e.kind, e.lock.as_ref().unwrap().vm_name.as_str()), (EventKind::Granted, "again"));
    s.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
    assert!(proto::read_frame(&mut s).is_err(), "no event for a refusal");
    s.write_all(&proto::encode(&Request::new(Op::Status)).unwrap()).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    // Closed with the rest of the request unread: an end of file or a reset, never a frame.
    match proto::read_frame(&mut s) {
        Err(proto::FrameError::Closed) => {}
        Err(proto::FrameError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the watch should have ended, got {other:?}"),
    }
    // The daemon serves on.
    assert!(matches!(d.call(Op::Status), Response::Status { .. }));
}
