//! Disk paths through a real virtdlmd (local backend): two VMs that name one file differently
//! (`..`, `//`, a symlink, a trailing `/`) contend for one lock; what a path cannot be is
//! refused with a sentence that names it (docs/RELIABILITY.md, "Paths").
mod support;

use proto::{ErrorCode, Op, Resource, Response};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use support::*;

fn disk_at(path: &str) -> Resource {
    Resource::Disk { path: path.into(), readonly: false, shared: false }
}

#[test]
fn another_spelling_of_a_held_disk_conflicts() {
    let dir = tmpdir("spellings");
    std::fs::create_dir_all(dir.join("pool/sub")).unwrap();
    std::fs::write(dir.join("pool/vm.img"), b"").unwrap();
    std::os::unix::fs::symlink(dir.join("pool"), dir.join("pool-link")).unwrap();
    std::os::unix::fs::symlink("vm.img", dir.join("pool/alias.img")).unwrap();
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let (a, b) = (Vm::spawn("vm-a"), Vm::spawn("vm-b"));
    let base = dir.to_str().unwrap();
    expect_ok(a.acquire(&d, &[disk_at(&format!("{base}/pool/vm.img"))]));
    for spelling in [
        format!("{base}/pool/sub/../vm.img"),
        format!("{base}//pool//vm.img"),
        format!("{base}/./pool/./vm.img"),
        format!("{base}/pool-link/vm.img"),
        format!("{base}/pool/alias.img"),
        format!("{base}/pool/vm.img/"),
    ] {
        let e = expect_error(b.acquire(&d, &[disk_at(&spelling)]), ErrorCode::Conflict);
        assert!(e.message.contains(&format!("{base}/pool/vm.img")), "{spelling}: {}", e.message);
        assert!(e.message.contains("vm-a"), "{spelling}: {}", e.message);
    }
    assert!(b.held(&d).is_empty());
    // The table shows the one real path, whichever spelling took the lock.
    assert_eq!(a.held(&d)[0].identity, format!("{base}/pool/vm.img"));
}

#[test]
fn a_disk_not_created_yet_is_locked_under_the_name_it_will_have() {
    let dir = tmpdir("not-yet");
    std::fs::create_dir(dir.join("pool")).unwrap();
    std::os::unix::fs::symlink(dir.join("pool"), dir.join("pool-link")).unwrap();
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let (a, b) = (Vm::spawn("vm-a"), Vm::spawn("vm-b"));
    let base = dir.to_str().unwrap();
    expect_ok(a.acquire(&d, &[disk_at(&format!("{base}/pool-link/new.img"))]));
    std::fs::write(dir.join("pool/new.img"), b"").unwrap();
    expect_error(b.acquire(&d, &[disk_at(&format!("{base}/pool/new.img"))]), ErrorCode::Conflict);
}

#[test]
fn a_nul_byte_or_a_symlink_loop_is_refused_by_name() {
    let dir = tmpdir("refused");
    std::os::unix::fs::symlink("loop-b", dir.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", dir.join("loop-b")).unwrap();
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let a = Vm::spawn("vm-a");
    let e = expect_error(a.acquire(&d, &[disk_at("/var/lib/libvirt/images/a\0.img")]), ErrorCode::BadRequest);
    assert!(e.message.contains(r#""/var/lib/libvirt/images/a\0.img" contains a NUL byte"#), "{}", e.message);
    let looped = format!("{}/loop-a/x.img", dir.display());
    let e = expect_error(a.acquire(&d, &[disk_at(&looped)]), ErrorCode::BadRequest);
    assert!(e.message.contains(&looped) && e.message.contains("symlink loop"), "{}", e.message);
    assert!(a.held(&d).is_empty(), "nothing is taken when a path is refused");
}

#[test]
fn a_non_utf8_file_behind_a_utf8_link_locks_and_shows_escaped() {
    let dir = tmpdir("latin1");
    std::fs::write(dir.join(OsStr::from_bytes(b"caf\xe9.img")), b"").unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"caf\xe9.img"), dir.join("vm.img")).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"caf\xe9.img"), dir.join("other-name.img")).unwrap();
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let (a, b) = (Vm::spawn("vm-a"), Vm::spawn("vm-b"));
    let base = dir.to_str().unwrap();
    expect_ok(a.acquire(&d, &[disk_at(&format!("{base}/vm.img"))]));
    assert_eq!(a.held(&d)[0].identity, format!("{base}/caf\\xe9.img"));
    expect_error(b.acquire(&d, &[disk_at(&format!("{base}/other-name.img"))]), ErrorCode::Conflict);
    match d.call(Op::Inspect { resource: disk_at(&format!("{base}/other-name.img")) }) {
        Response::Inspect { identity, holders, .. } => {
            assert_eq!(identity, format!("{base}/caf\\xe9.img"));
            assert_eq!(holders.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}
