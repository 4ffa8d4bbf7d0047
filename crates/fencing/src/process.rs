//! A QEMU process pinned by a pidfd, so that a pid reused by another process is never signalled.

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fd::OwnedFd;
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use std::io;
use std::time::{Duration, Instant};

use crate::action::Action;

/// Something that can be asked to stop and watched until it has.
pub trait Process: Send {
    /// Sends `sig`. A process that has already exited is not an error.
    fn signal(&self, sig: Signal) -> io::Result<()>;
    /// Waits up to `timeout` for the process to exit; true once it has.
    fn wait_exit(&self, timeout: Duration) -> bool;
}

/// A live process, opened by pid and checked against its start time.
#[derive(Debug)]
pub struct PidProcess {
    pid: u32,
    fd: OwnedFd,
}

impl PidProcess {
    /// Opens `pid` (`pidfd_open`). With `start_time` (clock ticks since boot, field 22 of
    /// /proc/PID/stat), a process with that pid but another start time is treated as gone:
    /// the pidfd is taken first, so the check cannot race with a reuse of the pid.
    /// `Ok(None)` means the process is gone.
    pub fn open(pid: u32, start_time: Option<u64>) -> io::Result<Option<PidProcess>> {
        let Some(fd) = pidfd(pid)? else {
            return Ok(None);
        };
        if let Some(expected) = start_time {
            match proc_start_time(pid) {
                Some(t) if t == expected => {}
                _ => return Ok(None),
            }
        }
        Ok(Some(PidProcess { pid, fd }))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl Process for PidProcess {
    fn signal(&self, sig: Signal) -> io::Result<()> {
        match pidfd_send_signal(&self.fd, sig) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn wait_exit(&self, timeout: Duration) -> bool {
        // A pidfd polls readable once the process has exited (zombie included).
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ts = Timespec::try_from(left).unwrap_or(Timespec { tv_sec: 0, tv_nsec: 0 });
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                Ok(n) if n > 0 => return true,
                Ok(_) => return false,
                Err(rustix::io::Errno::INTR) if !left.is_zero() => continue,
                Err(_) => return false,
            }
        }
    }
}

/// A pidfd for `pid` (`pidfd_open`). `Ok(None)`: there is no such process.
pub fn pidfd(pid: u32) -> io::Result<Option<OwnedFd>> {
    let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("pid {pid} names no process")));
    };
    match pidfd_open(raw, PidfdFlags::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::SRCH) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What /proc/PID/stat says of a process: the two fields virt-dlm reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (being reaped), …
    pub state: char,
    /// Field 22: clock ticks since boot. With the pid, it names one process for good.
    pub start_time: u64,
}

impl ProcStat {
    /// Reads /proc/PID/stat; `None` when there is no such process.
    pub fn read(pid: u32) -> Option<ProcStat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) is in parentheses and may contain spaces and ')': the
        // fields we want follow the *last* ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest starts at field 3 (state); field 22 is index 19.
        let state = fields.first()?.chars().next()?;
        Some(ProcStat { state, start_time: fields.get(19)?.parse().ok()? })
    }

    /// Exited: a zombie (or a process being reaped) holds no file open any more.
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn proc_start_time(pid: u32) -> Option<u64> {
    ProcStat::read(pid).map(|s| s.start_time)
}

/// A VM whose locks are lost, and what its configuration says to do.
pub struct Target {
    pub name: String,
    pub uuid: String,
    /// libvirt URI for the `pause` action (`qemu:///system` when unknown).
    pub uri: Option<String>,
    pub action: Action,
    pub process: Box<dyn Process>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("uuid", &self.uuid)
            .field("action", &self.action)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn start_time_of_self_is_readable_and_stable() {
        let me = std::process::id();
        let a = proc_start_time(me).expect("own start time");
        assert_eq!(proc_start_time(me), Some(a));
    }

    #[test]
    fn a_wrong_start_time_means_the_process_is_gone() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let t = proc_start_time(pid).unwrap();
        assert!(PidProcess::open(pid, Some(t)).unwrap().is_some());
        assert!(PidProcess::open(pid, Some(t + 1)).unwrap().is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn sigterm_through_the_pidfd_ends_the_process() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let p = PidProcess::open(child.id(), None).unwrap().unwrap();
        assert!(!p.wait_exit(Duration::from_millis(50)), "sleep exited by itself");
        p.signal(Signal::TERM).unwrap();
        assert!(p.wait_exit(Duration::from_secs(10)));
        child.wait().unwrap();
        // Signalling an exited (reaped) process is not an error.
        p.signal(Signal::KILL).unwrap();
    }
}
