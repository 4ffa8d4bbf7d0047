//! Owner processes: recognising a QEMU process for sure (pid + start time) and noticing
//! the moment it exits (pidfd).

use crate::journal::OwnerKey;
use rustix::process::{pidfd_open, Pid, PidfdFlags};
use std::os::fd::OwnedFd;
use tokio::io::unix::AsyncFd;

/// The start time of `pid` (field 22 of /proc/<pid>/stat, clock ticks since boot), or `None`
/// when there is no such process or it already exited (a zombie is dead for our purposes:
/// it holds no disk open).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces and ')': the
    // fields we want follow the *last* ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is index 19.
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | Some(&"x")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The key of the live process `pid`, if it is alive.
pub fn key_of(pid: u32) -> Option<OwnerKey> {
    start_time(pid).map(|start| OwnerKey { pid, start })
}

/// Whether the process `key` names is still the one running under that pid.
pub fn is_alive(key: OwnerKey) -> bool {
    start_time(key.pid) == Some(key.start)
}

/// A pidfd for the process `key`, checked against the start time after opening (so a pid
/// reused between our check and `pidfd_open` is caught). `None`: the process is gone.
pub fn open_pidfd(key: OwnerKey) -> Option<OwnedFd> {
    let pid = Pid::from_raw(i32::try_from(key.pid).ok()?)?;
    let fd = pidfd_open(pid, PidfdFlags::empty()).ok()?;
    is_alive(key).then_some(fd)
}

/// Resolves when the process `key` (behind `fd`) exits: a pidfd polls readable at exit.
pub async fn exited(fd: OwnedFd, key: OwnerKey) {
    // `AsyncFd::new` is deprecated because a borrowed raw fd could be closed under it; here
    // the AsyncFd owns the OwnedFd, so that cannot happen, and the unsafe `register` would buy
    // nothing but an `unsafe` block outside the wrapper modules.
    #[allow(deprecated)]
    let afd = AsyncFd::new(fd);
    match afd {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        // Registering with the reactor failed (out of memory for epoll): poll /proc instead.
        Err(_) => {
            while is_alive(key) {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_a_stable_start_time() {
        let me = std::process::id();
        let a = start_time(me).expect("own start time");
        assert_eq!(start_time(me), Some(a));
        assert!(is_alive(OwnerKey { pid: me, start: a }));
        assert!(!is_alive(OwnerKey { pid: me, start: a + 1 }));
    }

    #[test]
    fn dead_and_zombie_processes_are_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Wait until it is a zombie (exited, not reaped).
        for _ in 0..200 {
            if start_time(pid).is_none() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(start_time(pid), None, "zombie counted as alive");
        child.wait().unwrap();
        assert_eq!(start_time(pid), None);
    }

    #[tokio::test]
    async fn pidfd_fires_on_exit() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let key = key_of(child.id()).unwrap();
        let fd = open_pidfd(key).expect("pidfd");
        child.kill().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), exited(fd, key)).await.expect("pidfd fired");
        child.wait().unwrap();
        assert!(open_pidfd(key).is_none());
    }
}
