//! The journal's filesystem fails under a running virtdlmd (local backend): full (a small
//! tmpfs) or read-only (a bind mount remounted read-only). New grants are refused with an
//! error naming the journal and what to do; held locks stay held and listed; a release is
//! refused (the lock stays held, so the journal stays the truth); a QEMU exit still frees its
//! locks; once the filesystem is writable again everything works and a restart finds exactly
//! what the clients were told. Needs root (mounts).
//!
//! Run by tests/reliability/run.sh (it prints what the clients read); see docs/RELIABILITY.md.
mod support;

use proto::{ErrorCode, Op, Response};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

fn must_be_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test must run as root: it mounts a tmpfs and remounts a bind mount read-only"
    );
}

fn mount(args: &[&str]) {
    let out = Command::new("mount").args(args).output().expect("mount(8)");
    assert!(out.status.success(), "mount {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A mount that is undone when the test ends, however it ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        // The daemon's directory around it was removed but for the mount point.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir(&self.0);
            if let Some(parent) = self.0.parent() {
                let _ = std::fs::remove_dir_all(parent);
            }
        }
    }
}

fn names_journal(msg: &str, journal: &Path) {
    assert!(msg.contains(&journal.display().to_string()), "the error does not name the journal: {msg}");
}

fn journal_error(r: Response) -> String {
    expect_error(r, ErrorCode::Journal).message
}

#[test]
#[ignore = "reliability tier (tests/reliability/run.sh): needs root to mount a tmpfs"]
fn a_full_journal_filesystem_stops_new_grants_and_keeps_held_locks() {
    must_be_root();
    let dir = tmpdir("jfull");
    let fs = dir.join("fs");
    std::fs::create_dir_all(&fs).unwrap();
    mount(&["-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", fs.to_str().unwrap()]);
    let _m = Mounted(fs.clone());
    let mut d = Daemon::new(&dir, "");
    d.journal = fs.join("journal");
    d.start(&[]);
    let (a, mut b, c, e) = (Vm::spawn("full-a"), Vm::spawn("full-b"), Vm::spawn("full-c"), Vm::spawn("full-e"));
    let (ia, ib) = (disk(&dir, "a.img", false, false), disk(&dir, "b.img", false, false));
    expect_ok(a.acquire(&d, std::slice::from_ref(&ia)));
    expect_ok(b.acquire(&d, std::slice::from_ref(&ib)));
    expect_ok(c.register(&d, &[]));
    expect_ok(e.register(&d, &[]));

    // Fill the filesystem to the last byte.
    let mut filler = std::fs::File::create(fs.join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    while filler.write_all(&chunk).is_ok() {}
    while filler.write_all(&chunk[..1]).is_ok() {}
    drop(filler);

    // The journal's last page may still have room for a few records: grants go on until it
    // is used up, then they are refused.
    let mut granted_on_slack = Vec::new();
    let refusal = loop {
        let img = disk(&dir, &format!("c{}.img", granted_on_slack.len()), false, false);
        match c.acquire(&d, std::slice::from_ref(&img)) {
            Response::Ok { .. } => granted_on_slack.push(img),
            other => break journal_error(other),
        }
        assert!(granted_on_slack.len() < 100, "grants never stopped on a full filesystem");
    };
    names_journal(&refusal, &d.journal);
    assert!(refusal.contains("full") && refusal.contains("free space"), "{refusal}");
    println!("a grant on a full journal filesystem ({} more were granted first, in the last page's slack) is refused with:\n  {refusal}", granted_on_slack.len());

    // Held locks: still held, still listed, still keep others out.
    let held: Vec<String> = d.locks().iter().map(|l| l.vm_name.clone()).collect();
    assert!(held.contains(&"full-a".to_string()) && held.contains(&"full-b".to_string()), "{held:?}");
    let Response::Status { status } = d.call(Op::Status) else { panic!("status") };
    assert_eq!(status.locks, 2 + granted_on_slack.len());
    expect_error(e.acquire(&d, std::slice::from_ref(&ia)), ErrorCode::Conflict);
    // A new owner cannot be recorded either.
    let f = Vm::spawn("full-f");
    names_journal(&journal_error(f.register(&d, &[])), &d.journal);

    // A release that cannot be journaled is refused; the lock stays.
    let rel = journal_error(a.release(&d, std::slice::from_ref(&ia)));
    names_journal(&rel, &d.journal);
    assert!(rel.contains("Nothing was released"), "{rel}");
    assert_eq!(a.held(&d).len(), 1, "a release that was refused let the lock go");
    println!("a release on a full journal filesystem is refused with:\n  {rel}");

    // A QEMU that exits loses its locks whatever the journal says.
    b.kill9();
    d.wait_until("the exited VM's lock goes although the journal is full", |d| b.held(d).is_empty());

    // Space again: everything works, and nothing torn was left in the journal.
    std::fs::remove_file(fs.join("filler")).unwrap();
    assert!(matches!(a.release(&d, std::slice::from_ref(&ia)), Response::State { state: None }));
    expect_ok(e.acquire(&d, std::slice::from_ref(&ib)));
    let before: Vec<(String, String)> = d.locks().into_iter().map(|l| (l.vm_name, l.identity)).collect();
    d.kill9();
    d.start(&[]);
    assert!(!d.log().contains("damaged"), "the journal was left damaged:\n{}", d.log());
    let after: Vec<(String, String)> = d.locks().into_iter().map(|l| (l.vm_name, l.identity)).collect();
    assert_eq!(after, before, "the restart found something else than the clients were told");
    assert_eq!(after.len(), 1 + granted_on_slack.len());
    println!(
        "FIGURE journal-full: tmpfs size=256k filled; {} grants still fitted in the journal's last page, then new grants refused; the {} held locks kept and listed, release refused (lock kept), owner exit freed its lock; after space came back: release and grant work, no torn record, restart finds exactly the {} locks the clients were told of",
        granted_on_slack.len(),
        2 + granted_on_slack.len(),
        after.len()
    );
}

#[test]
#[ignore = "reliability tier (tests/reliability/run.sh): needs root to remount a bind mount read-only"]
fn a_read_only_journal_filesystem_stops_new_grants_and_keeps_held_locks() {
    must_be_root();
    let dir = tmpdir("jro");
    let (store, view) = (dir.join("store"), dir.join("view"));
    std::fs::create_dir_all(&store).unwrap();
    std::fs::create_dir_all(&view).unwrap();
    mount(&["--bind", store.to_str().unwrap(), view.to_str().unwrap()]);
    let _m = Mounted(view.clone());
    let mut d = Daemon::new(&dir, "");
    d.journal = view.join("journal");
    d.start(&[]);
    let (a, mut b, c) = (Vm::spawn("ro-a"), Vm::spawn("ro-b"), Vm::spawn("ro-c"));
    let (ia, ib, ic) =
        (disk(&dir, "a.img", false, false), disk(&dir, "b.img", false, true), disk(&dir, "c.img", false, false));
    expect_ok(a.acquire(&d, std::slice::from_ref(&ia)));
    expect_ok(b.acquire(&d, std::slice::from_ref(&ib)));
    expect_ok(c.register(&d, &[]));

    // The daemon holds no write reference on the filesystem, so it can go read-only under it.
    mount(&["-o", "remount,bind,ro", view.to_str().unwrap()]);
    let refusal = journal_error(c.acquire(&d, std::slice::from_ref(&ic)));
    names_journal(&refusal, &d.journal);
    assert!(refusal.contains("read-only") && refusal.contains("remount it read-write"), "{refusal}");
    println!("a grant on a read-only journal filesystem is refused with:\n  {refusal}");
    assert!(c.held(&d).is_empty());
    assert_eq!(a.held(&d).len(), 1);
    assert_eq!(b.held(&d).len(), 1);
    expect_error(c.acquire(&d, std::slice::from_ref(&ia)), ErrorCode::Conflict);
    let rel = journal_error(a.release(&d, std::slice::from_ref(&ia)));
    assert!(rel.contains("Nothing was released"), "{rel}");
    assert_eq!(a.held(&d).len(), 1);
    b.kill9();
    d.wait_until("the exited VM's lock goes although the journal is read-only", |d| b.held(d).is_empty());

    // A restart on the read-only journal: the locks of live VMs are taken back and kept,
    // nothing new is granted. (b's exit could not be journaled: b is found dead again.)
    d.kill9();
    d.start(&[]);
    assert!(d.log().contains("cannot be written"), "the start on a read-only journal is not reported:\n{}", d.log());
    let held: Vec<String> = d.locks().into_iter().map(|l| l.vm_name).collect();
    assert_eq!(held, vec!["ro-a".to_string()], "after a restart on a read-only journal");
    names_journal(&journal_error(c.acquire(&d, std::slice::from_ref(&ic))), &d.journal);
    expect_error(c.acquire(&d, std::slice::from_ref(&ia)), ErrorCode::Conflict);

    // Writable again: grants and releases work, and a restart agrees.
    mount(&["-o", "remount,bind,rw", view.to_str().unwrap()]);
    expect_ok(c.acquire(&d, std::slice::from_ref(&ic)));
    assert!(matches!(a.release(&d, std::slice::from_ref(&ia)), Response::State { state: None }));
    d.kill9();
    d.start(&[]);
    let held: Vec<String> = d.locks().into_iter().map(|l| l.vm_name).collect();
    assert_eq!(held, vec!["ro-c".to_string()]);
    println!("FIGURE journal-readonly: new grants refused, held locks kept and listed, release refused (lock kept), owner exit freed its lock; restart on the read-only journal took back the live VM's lock and refused new grants; after remount rw: grant, release and restart agree");
}
