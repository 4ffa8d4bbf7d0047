//! One virtdlmd per journal: an exclusive flock on `<journal>.lock`, held for the daemon's
//! life, and the one case where it is taken over.
//!
//! A virtdlmd killed (-9) while its DLM lockspace is stopped (its node cut off) cannot finish
//! exiting: closing the DLM device waits in the kernel for a recovery of the lockspace
//! (`dlm_clear_proc_locks`), which never comes if the node is then removed from the cluster.
//! Its other files, the lock file among them, are released only after that close, so its
//! flock stays taken and no virtdlmd could start on this node again: the VMs the dead one was
//! guarding would run with no lock-loss handling, and the lockspace would never be released
//! (only a running virtdlmd does that, `dlm::abandoned`). Such a process runs no code of its
//! own any more (every thread of it is exiting), so it will never write the journal again: its
//! lock file is moved aside (`<journal>.lock.exiting-<pid>`) and a new one is taken. Nothing
//! else is taken over: a holder with a thread neither exiting nor with SIGKILL pending is a
//! live virtdlmd.
//!
//! Take-overs are serialised by a second flock, on `<journal>.lock-takeover` (held only
//! during one), so two virtdlmd starting at once never both take over.
//!
//! The files are held open read-only (flock needs no more), so that the filesystem can still
//! be remounted read-only.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("another virtdlmd uses the journal {0} (its lock file is taken)")]
    InUse(String),
}

/// `PF_EXITING` in the flags of /proc/<pid>/task/<tid>/stat: the thread is in `do_exit`.
const PF_EXITING: u64 = 0x4;

/// The journal's lock, held while this lives.
pub struct JournalLock {
    _file: File,
    /// The pid of the dying virtdlmd it was taken over from: its sockets are still bound (their
    /// files are released only when it finishes exiting) and answer no one, so the new daemon
    /// replaces them instead of refusing to start beside "another daemon".
    pub taken_from: Option<u32>,
}

/// Takes the journal's lock.
pub fn lock(journal: &Path) -> Result<JournalLock, LockError> {
    let (file, taken_from) = lock_file(journal)?;
    Ok(JournalLock { _file: file, taken_from })
}

fn lock_file(journal: &Path) -> Result<(File, Option<u32>), LockError> {
    let path = journal.with_extension("lock");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| LockError::Io { path: dir.into(), source })?;
    }
    if let Some(f) = try_lock(&path)? {
        return Ok((f, None));
    }
    let in_use = || LockError::InUse(journal.display().to_string());
    let guard_path = journal.with_extension("lock-takeover");
    let guard = open_or_create(&guard_path)?;
    rustix::fs::flock(&guard, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| LockError::Io { path: guard_path, source: e.into() })?;
    // Again under the take-over lock: the file at the path now, and who holds it.
    if let Some(f) = try_lock(&path)? {
        return Ok((f, None));
    }
    let f = File::open(&path).map_err(|source| LockError::Io { path: path.clone(), source })?;
    let m = f.metadata().map_err(|source| LockError::Io { path: path.clone(), source })?;
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let holders = flock_holders(&locks, m.dev(), m.ino());
    let Some(&pid) = holders.first() else { return Err(in_use()) };
    if holders.len() > 1 || !all_threads_exiting(Path::new("/proc"), pid) {
        return Err(in_use());
    }
    let aside = PathBuf::from(format!("{}.exiting-{pid}", path.display()));
    std::fs::rename(&path, &aside).map_err(|source| LockError::Io { path: path.clone(), source })?;
    tracing::warn!(
        "the journal's lock was held by virtdlmd pid {pid}, killed and stuck exiting in the kernel (its DLM lockspace stopped); \
         it can no longer write: taking over (its lock file moved to {})",
        aside.display()
    );
    try_lock(&path)?.map(|f| (f, Some(pid))).ok_or_else(in_use)
}

fn open_or_create(path: &Path) -> Result<File, LockError> {
    let io = |source| LockError::Io { path: path.into(), source };
    if !path.exists() {
        File::create(path).map_err(io)?;
    }
    File::open(path).map_err(io)
}

/// The lock file, flocked; None if another process holds it.
fn try_lock(path: &Path) -> Result<Option<File>, LockError> {
    let f = open_or_create(path)?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(f)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(LockError::Io { path: path.into(), source: e.into() }),
    }
}

/// Pids holding a FLOCK on the file (`dev`, `ino`), from the text of /proc/locks
/// (`1: FLOCK  ADVISORY  WRITE 1234 fe:01:5678 0 EOF`; the device as hex major:minor).
fn flock_holders(locks: &str, dev: u64, ino: u64) -> Vec<u32> {
    let want = format!("{:02x}:{:02x}:{ino}", rustix::fs::major(dev), rustix::fs::minor(dev));
    locks
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Lines of waiters start with "->" and shift the fields: skipped.
            (f.len() >= 6 && f[1] == "FLOCK" && f[5] == want).then(|| f[4].parse().ok()).flatten()
        })
        .collect()
}

/// Whether every thread of `pid` is dying: in `do_exit`, or with SIGKILL pending (a thread
/// blocked in the kernel, e.g. a DLM purge on the stopped lockspace, goes from its system call
/// straight to `do_exit`). None of them will run user code again.
fn all_threads_exiting(proc: &Path, pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(proc.join(pid.to_string()).join("task")) else { return false };
    let mut seen = 0;
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else { return false };
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else { return false };
        let exiting = stat_flags(&stat).is_some_and(|f| f & PF_EXITING != 0);
        if !exiting && !sigkill_pending(&status) {
            return false;
        }
        seen += 1;
    }
    seen > 0
}

/// Whether the thread's own pending set (`SigPnd` of its status) holds SIGKILL: a fatal
/// signal is queued to every thread of the process.
fn sigkill_pending(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigPnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGKILL - 1)) != 0)
}

/// The flags field (the 9th) of a /proc stat line; the name (2nd) may hold spaces and ')'.
fn stat_flags(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(6)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flock_holders_are_read_from_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 fe:01:5678 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 1234 fe:01:5678 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 999 fe:01:5678 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 55 fe:01:9999 0 EOF\n";
        let dev = rustix::fs::makedev(0xfe, 1);
        assert_eq!(flock_holders(locks, dev, 5678), vec![1234]);
        assert!(flock_holders(locks, dev, 1).is_empty());
    }

    #[test]
    fn stat_flags_survive_odd_process_names() {
        let stat = "993 (virtdlmd) x) Z 1 993 993 0 -1 4219916 0 0 0";
        assert_eq!(stat_flags(stat), Some(4219916));
        assert_eq!(stat_flags(stat).unwrap() & PF_EXITING, 4);
    }

    #[test]
    fn sigkill_is_read_from_the_pending_set() {
        assert!(sigkill_pending("Name:\tvirtdlmd\nSigPnd:\t0000000000000100\nShdPnd:\t0000000000000000\n"));
        assert!(!sigkill_pending("SigPnd:\t0000000000000002\nShdPnd:\t0000000000000100\n"));
        assert!(!sigkill_pending("Name:\tx\n"));
    }

    /// Our own process is running, not exiting: never taken over.
    #[test]
    fn a_running_process_is_not_exiting() {
        assert!(!all_threads_exiting(Path::new("/proc"), std::process::id()));
        assert!(!all_threads_exiting(Path::new("/proc"), u32::MAX));
    }

    /// A live holder keeps the lock: a second taker is refused, nothing moved aside.
    #[test]
    fn a_live_holder_is_never_taken_over() {
        let dir = std::env::temp_dir().join(format!("virtdlm-journal-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let journal = dir.join("journal");
        let held = lock(&journal).unwrap();
        // flock is per open file: a second open in this process conflicts like another process.
        assert!(matches!(lock(&journal), Err(LockError::InUse(_))));
        assert!(journal.with_extension("lock").exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "only the lock and take-over files");
        drop(held);
        assert!(lock(&journal).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
