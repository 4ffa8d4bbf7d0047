//! A VM's pid recycled for real: its QEMU dies while virtdlmd is down (or while lock loss is
//! about to stop it) and another process is made to take the very same pid (by setting the
//! kernel's next pid, `/proc/sys/kernel/ns_last_pid`). virtdlmd must not take that process
//! for the VM: its locks are freed, and the impostor is never signalled. Owners are known by
//! pid *and* start time (lockmgr::owner, fencing::PidProcess).
//!
//! Break it: make `owner::is_alive` check the pid only (`start_time(key.pid).is_some()`):
//! the first test fails with "the impostor on pid N was taken for the dead VM" (checked); make
//! `PidProcess::open` ignore `start_time`: the second fails with "the impostor on pid N was
//! signalled" (checked).
mod support;

use lockmgr::lockloss::{LockLoss, LossReason};
use proto::{FailureAction, OwnerSpec, Resource, Response};
use std::process::{Child, Command};
use std::sync::Arc;
use support::*;

/// A process killed when the test ends, passed or not.
struct Impostor(Child);

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sleep` on exactly `pid` (free by now): the kernel hands out `ns_last_pid + 1`
/// next, unless another process of this busy host forks in between; then try again.
///
/// A process's start time (`/proc/PID/stat` field 22) counts clock ticks (10 ms at
/// USER_HZ 100). A pid is reused naturally only after the pid space wrapped, never within
/// the tick its first process started in; forcing it here could otherwise put the impostor
/// in the VM's own tick, where no kernel-visible identity tells the two apart. So wait until
/// at least two ticks have passed since the VM started.
fn impostor_on(pid: u32) -> Impostor {
    std::thread::sleep(std::time::Duration::from_millis(30));
    for _ in 0..500 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("writing /proc/sys/kernel/ns_last_pid (needs root, as the test tiers run)");
        let mut c = Command::new("sleep")
            .arg("600")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn sleep");
        if c.id() == pid {
            return Impostor(c);
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    panic!("could not start a process on pid {pid} (500 tries)");
}

fn alive(c: &mut Impostor) -> bool {
    c.0.try_wait().unwrap().is_none()
}

#[test]
fn a_restarted_daemon_does_not_take_a_process_on_a_dead_vms_pid_for_the_vm() {
    let dir = tmpdir("pidreuse");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let mut a = Vm::spawn("vm-a");
    let img = disk(&dir, "a.img", false, false);
    expect_ok(a.acquire(&d, std::slice::from_ref(&img)));
    let pid = a.spec.pid;

    d.kill9();
    a.kill9();
    let mut impostor = impostor_on(pid);
    d.start(&[]);
    assert!(d.locks().is_empty(), "the impostor on pid {pid} was taken for the dead VM: {:?}", d.locks());
    assert!(
        d.log().contains(&format!("(pid {pid}) exited while virtdlmd was down")),
        "the dead VM's lock is released as such:\n{}",
        d.log()
    );
    let b = Vm::spawn("vm-b");
    expect_ok(b.acquire(&d, std::slice::from_ref(&img)));
    assert!(alive(&mut impostor), "the impostor on pid {pid} was signalled");
    // The impostor cannot act as the VM either: its start time is not the VM's.
    let r = d.call(proto::Op::Release { owner: a.spec.clone(), resources: vec![img] });
    assert!(matches!(r, Response::State { state: None }), "{r:?}");
    assert_eq!(b.held(&d).len(), 1, "vm-b keeps the disk");
}

#[test]
fn lock_loss_does_not_signal_a_process_on_a_dead_vms_pid() {
    let dir = tmpdir("pidreuse-loss");
    let (journal, _) = lockmgr::journal::Journal::open(&dir.join("journal"), 1 << 20, false).unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = Arc::new(lockmgr::backend::local::LocalBackend::new("n1"));
    let registry = Arc::new(lockmgr::registry::Registry::new(backend, lockmgr::naming::Naming::default(), journal, tx));
    let mut vm = Command::new("sleep").arg("600").spawn().unwrap();
    let pid = vm.id();
    let spec = OwnerSpec {
        uuid: "00000000-0000-4000-8000-000000000001".into(),
        name: "vm-a".into(),
        pid,
        id: 1,
        uri: None,
        action: FailureAction::Default,
    };
    let lease = [Resource::Lease { lockspace: None, key: "a".into(), path: None, offset: None }];
    assert!(registry.acquire(None, &spec, &lease, 0).is_ok());
    // The VM dies and its pid goes to another process before its exit was handled (nothing
    // watches its pidfd here): lock loss then finds the impostor under the VM's pid.
    let _ = vm.kill();
    let _ = vm.wait();
    let mut impostor = impostor_on(pid);
    let cfg = fencing::FencerConfig {
        grace: std::time::Duration::from_millis(500),
        kill_wait: std::time::Duration::from_millis(500),
        ..Default::default()
    };
    let loss = LockLoss::new(
        registry.clone(),
        lockmgr::lockloss::Gate::attach(&registry).loss,
        fencing::Fencer::new(cfg, fencing::Watchdog::none()),
        std::time::Duration::ZERO,
        None,
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(loss.trigger(LossReason::QuorumLost));
    let ev = loss.gate().last().expect("event");
    assert_eq!(ev.vms.len(), 1, "{ev:?}");
    assert_eq!(ev.vms[0].outcome, "gone", "{ev:?}");
    assert!(alive(&mut impostor), "the impostor on pid {pid} was signalled");
}
