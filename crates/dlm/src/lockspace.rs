//! A DLM lockspace as opened by this process: the libdlm handle, its dispatcher thread, and
//! the registry of locks the kernel may still call back for.

use super::error::DlmError;
use super::flags::{LockFlags, LockMode};
use super::handle::{close_open, LsInner, LIBDLM_GLOBAL};
use super::lock::Lock;
use super::name::{LockspaceName, ResourceName};
use super::node::local_nodeid;
use super::Result;
use std::ffi::CString;
use std::sync::Arc;
use std::time::Duration;

/// Permissions of the lockspace device node created by `dlm_new_lockspace`.
const DEVICE_MODE: libc::mode_t = 0o600;

/// What `dlm_release_lockspace` achieved. libdlm returns 0 even when the kernel refused the
/// removal (EBUSY: locks remain, ours or other nodes' master copies); the wrapper tells the
/// two apart by `errno`. Either way this process's handle is closed afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The kernel dropped our reference (the lockspace is gone unless others still hold one).
    Released,
    /// The kernel refused (EBUSY): locks remain, the lockspace stays. `force` frees it.
    Busy,
}

/// A lockspace opened (or created) by this process. Cloning shares the same handle.
#[derive(Clone)]
pub struct Lockspace {
    inner: Arc<LsInner>,
}

impl std::fmt::Debug for Lockspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lockspace").field("name", &self.inner.name.as_str()).finish()
    }
}

impl Lockspace {
    /// Creates the lockspace, or joins it if it exists (the kernel counts creators; each needs
    /// one release). Blocks until the lockspace has joined the cluster: needs dlm_controld and,
    /// by default, quorum. `dlm_new_lockspace(name, 0600, 0)`.
    pub fn create(name: &str) -> Result<Lockspace> {
        let name = LockspaceName::new(name)?;
        Self::open_with(name, "dlm_new_lockspace", |c| {
            // SAFETY: `c` is a valid NUL-terminated name of 1..=64 bytes.
            unsafe { dlm_sys::dlm_new_lockspace(c.as_ptr(), DEVICE_MODE, 0) }
        })
    }

    /// Opens an existing lockspace (no creator reference is taken). `dlm_open_lockspace(name)`.
    pub fn open(name: &str) -> Result<Lockspace> {
        let name = LockspaceName::new(name)?;
        Self::open_with(name, "dlm_open_lockspace", |c| {
            // SAFETY: `c` is a valid NUL-terminated name of 1..=64 bytes.
            unsafe { dlm_sys::dlm_open_lockspace(c.as_ptr()) }
        })
    }

    fn open_with(
        name: LockspaceName,
        call: &'static str,
        f: impl FnOnce(&CString) -> dlm_sys::dlm_lshandle_t,
    ) -> Result<Lockspace> {
        Ok(Lockspace { inner: Arc::new(LsInner::open(name, call, f)?) })
    }

    pub fn name(&self) -> &LockspaceName {
        &self.inner.name
    }

    /// Issues a new lock request; [`Lock::wait`] gives its completion. A NOQUEUE conflict
    /// completes as `Completion::WouldBlock`. `dlm_ls_lock(ls, mode, lksb, flags, name, ...)`.
    pub fn request(&self, resource: &ResourceName, mode: LockMode, flags: LockFlags) -> Result<Lock> {
        Lock::request(self.inner.clone(), resource, mode, flags)
    }

    /// Requests a lock and waits for the answer: `Ok` once granted, `WouldBlock` on a NOQUEUE
    /// conflict, `TimedOut` (after cancelling) when `timeout` runs out. `dlm_ls_lock`, and
    /// `dlm_ls_unlock(LKF_CANCEL)` on timeout.
    pub fn lock(
        &self,
        resource: &ResourceName,
        mode: LockMode,
        flags: LockFlags,
        timeout: Option<Duration>,
    ) -> Result<Lock> {
        let lock = self.request(resource, mode, flags)?;
        let c = match timeout {
            Some(t) => lock.wait_or_cancel(t)?,
            None => lock.wait(None)?,
        };
        lock.expect_granted(c)?;
        Ok(lock)
    }

    /// Takes over an orphan (a PERSISTENT lock left by a dead process of this node) in the same
    /// mode. Fails with `NoOrphan` when there is none, `OrphanModeMismatch` when it is held in
    /// another mode. `dlm_ls_lockx(ls, mode, lksb, LKF_ORPHAN | flags, name, ...)`.
    pub fn adopt(&self, resource: &ResourceName, mode: LockMode, flags: LockFlags) -> Result<Lock> {
        Lock::adopt(self.inner.clone(), resource, mode, flags)
    }

    /// Frees orphans: all of node `nodeid`'s when `pid` is 0, else those the process `pid` left.
    /// `dlm_ls_purge(ls, nodeid, pid)`.
    pub fn purge(&self, nodeid: u32, pid: u32) -> Result<()> {
        let rv = self.inner.with_handle(|h| {
            // SAFETY: `h` is open for the duration of the call.
            unsafe { dlm_sys::dlm_ls_purge(h, nodeid as i32, pid as i32) }
        })?;
        if rv != 0 {
            return Err(DlmError::last_os("dlm_ls_purge"));
        }
        Ok(())
    }

    /// Frees every orphan of this node; returns this node's id (read from configfs).
    /// `dlm_ls_purge(ls, our_nodeid, 0)`.
    pub fn purge_own_orphans(&self) -> Result<u32> {
        let nodeid = local_nodeid()?;
        self.purge(nodeid, 0)?;
        Ok(nodeid)
    }

    /// Drops this process's creator reference and closes the handle. Locks of this process are
    /// orphaned (PERSISTENT) or unlocked by the close. `force` frees the lockspace even with
    /// locks in it (other nodes' locks included). `dlm_release_lockspace(name, ls, force)`.
    pub fn release(&self, force: bool) -> Result<ReleaseOutcome> {
        let open = self.inner.take_open()?;
        open.dispatcher.stop();
        let _g = LIBDLM_GLOBAL.lock();
        // libdlm ignores the kernel's answer but leaves its errno: clear errno first.
        // SAFETY: errno is thread-local; writing it is always allowed.
        unsafe { *libc::__errno_location() = 0 };
        let (name, handle) = (self.inner.cname.as_ptr(), open.handle.0.as_ptr());
        // SAFETY: the handle is live, its dispatcher stopped; libdlm closes and frees it.
        let rv = unsafe { dlm_sys::dlm_release_lockspace(name, handle, force as i32) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        self.inner.closed();
        if rv != 0 {
            return Err(DlmError::last_os("dlm_release_lockspace"));
        }
        Ok(if errno == Some(libc::EBUSY) { ReleaseOutcome::Busy } else { ReleaseOutcome::Released })
    }

    /// Closes this process's handle without releasing the lockspace. Locks are orphaned
    /// (PERSISTENT) or unlocked, exactly as at process exit. `dlm_close_lockspace(ls)`.
    pub fn close(&self) -> Result<()> {
        let open = self.inner.take_open()?;
        close_open(open);
        self.inner.closed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Registry;
    use parking_lot::RwLock;

    /// A lockspace whose handle is already gone, as after `release` or `close`.
    fn released(name: &str) -> Lockspace {
        Lockspace {
            inner: Arc::new(LsInner {
                name: LockspaceName::new(name).unwrap(),
                cname: CString::new(name).unwrap(),
                open: RwLock::new(None),
                registry: Arc::new(Registry::default()),
            }),
        }
    }

    #[test]
    fn calls_on_a_released_lockspace_are_refused() {
        let ls = released("gone");
        let res = ResourceName::new("r").unwrap();
        let is_released = |e: DlmError| matches!(e, DlmError::Released(ref n) if n == "gone");
        assert!(is_released(ls.request(&res, LockMode::Ex, LockFlags::NOQUEUE).unwrap_err()));
        assert!(is_released(ls.lock(&res, LockMode::Ex, LockFlags::NONE, None).unwrap_err()));
        assert!(is_released(ls.adopt(&res, LockMode::Ex, LockFlags::PERSISTENT).unwrap_err()));
        assert!(is_released(ls.purge(1, 0).unwrap_err()));
        assert!(is_released(ls.release(false).unwrap_err()));
        assert!(is_released(ls.close().unwrap_err()));
    }

    #[test]
    fn bad_lockspace_names_never_reach_libdlm() {
        // Without a DLM on this host, a name that reached libdlm would fail with a Sys error.
        for name in ["", "a\0b", &"x".repeat(65)] {
            assert!(matches!(Lockspace::create(name), Err(DlmError::InvalidLockspaceName { .. })), "{name:?}");
            assert!(matches!(Lockspace::open(name), Err(DlmError::InvalidLockspaceName { .. })), "{name:?}");
        }
    }
}
