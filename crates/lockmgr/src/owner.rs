//! Owner processes: recognising a QEMU process for sure (pid + start time) and noticing
//! the moment it exits (pidfd).

use crate::journal::OwnerKey;
use fencing::process::{pidfd, ProcStat};
use std::os::fd::OwnedFd;
use tokio::io::unix::AsyncFd;

/// The start time of `pid` (field 22 of /proc/<pid>/stat, clock ticks since boot), or `None`
/// when there is no such process or it already exited (a zombie is dead for our purposes:
/// it holds no disk open).
pub fn start_time(pid: u32) -> Option<u64> {
    ProcStat::read(pid).filter(|s| !s.exited()).map(|s| s.start_time)
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
    let fd = pidfd(key.pid).ok().flatten()?;
    is_alive(key).then_some(fd)
}

/// A live process and a pidfd for it, opened together: the pidfd first, then the start time,
/// then the pidfd asked whether its process still runs. If it does, the start time read is
/// its own (a pid is not reused while its process lives). `None`: no such process, or it
/// exited meanwhile. The pidfd is `None` where pidfd_open itself fails for another reason
/// (out of file descriptors): the key is then read alone, as [`key_of`] does.
pub fn open(pid: u32) -> Option<(OwnerKey, Option<OwnedFd>)> {
    let fd = match pidfd(pid) {
        Ok(Some(fd)) => fd,
        Ok(None) => return None,
        Err(_) => return key_of(pid).map(|k| (k, None)),
    };
    let key = key_of(pid)?;
    runs(&fd).then_some((key, Some(fd)))
}

/// Whether the process behind `fd` has not exited yet (a pidfd polls readable once it has,
/// zombie included). Unlike [`is_alive`] this reads nothing under /proc, which blocks while
/// the process is in the middle of an exec, as a QEMU just started is.
pub fn runs(fd: &impl std::os::fd::AsFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    loop {
        match poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })) {
            Ok(n) => return n == 0,
            Err(rustix::io::Errno::INTR) => continue,
            // Cannot tell: say it runs, and let the caller's own check decide.
            Err(_) => return true,
        }
    }
}

/// Resolves when the process `key` (behind `fd`) exits: a pidfd polls readable at exit.
pub async fn exited<F: std::os::fd::AsRawFd>(fd: F, key: OwnerKey) {
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

    #[test]
    fn open_gives_the_key_and_a_pidfd_that_sees_the_exit() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let (key, fd) = open(child.id()).expect("live child");
        let fd = fd.expect("pidfd");
        assert_eq!(Some(key), key_of(child.id()));
        assert!(runs(&fd));
        child.kill().unwrap();
        // Exited but not reaped (a zombie) is already dead for the pidfd, as for `is_alive`.
        for _ in 0..1000 {
            if !runs(&fd) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!runs(&fd), "pidfd still says the killed child runs");
        assert!(!is_alive(key));
        child.wait().unwrap();
        assert!(open(key.pid).is_none());
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
