//! One DLM lock: its status block, its state, and the calls that act on it.
//!
//! End-of-life rule (kernel `lkb_is_endoflife`): a lock is gone after `EUNLOCK`, or after
//! `ECANCEL`/`EAGAIN`/`EDEADLK` on a request that was never granted; after that no AST can
//! come for it. Until then the kernel may write the status block and call back with its
//! address, so the cell that holds it stays alive (in the lockspace's registry) until then,
//! or until the lockspace fd is closed, whichever comes first. Dropping a [`Lock`] therefore
//! changes nothing in the kernel: a PERSISTENT lock stays held until unlocked or orphaned.

use super::cell::{LockCell, Op};
use super::completion::Completion;
use super::dispatch::{ast_trampoline, bast_trampoline};
use super::error::DlmError;
use super::flags::{LockFlags, LockMode};
use super::handle::LsInner;
use super::name::ResourceName;
use super::Result;
use std::ptr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A lock on one resource in one lockspace. Operations are asynchronous: they return once
/// issued, and [`Lock::wait`] returns their [`Completion`].
pub struct Lock {
    ls: Arc<LsInner>,
    cell: Arc<LockCell>,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.cell.state.lock();
        f.debug_struct("Lock")
            .field("lockspace", &self.ls.name().as_str())
            .field("resource", &self.cell.resource.to_string())
            .field("lkid", &st.lkid)
            .field("granted", &st.granted)
            .field("pending", &st.pending)
            .finish()
    }
}

impl Lock {
    /// Issues a new request. `dlm_ls_lock(ls, mode, lksb, flags, name, ...)`.
    pub(super) fn request(ls: Arc<LsInner>, res: &ResourceName, mode: LockMode, flags: LockFlags) -> Result<Lock> {
        let cell = LockCell::new(res.clone());
        cell.state.lock().pending = Some(Op::Request(mode));
        ls.register(&cell)?;
        let lock = Lock { ls, cell };
        let rv = lock.ls.with_handle(|h| {
            let name = res.as_bytes();
            // SAFETY: `h` is an open lockspace handle (held open by `with_handle`); the status
            // block and the AST argument point into `cell`, which the registry keeps alive until
            // the lock's end of life or the close of the fd; the name is 1..=64 bytes (checked by
            // ResourceName) and libdlm copies it; the callbacks never unwind.
            unsafe {
                dlm_sys::dlm_ls_lock(
                    h,
                    mode.raw(),
                    lock.cell.lksb_ptr(),
                    flags.bits(),
                    name.as_ptr().cast(),
                    name.len() as u32,
                    0,
                    Some(ast_trampoline),
                    lock.cell.ast_arg(),
                    Some(bast_trampoline),
                    ptr::null_mut(),
                )
            }
        })?;
        if rv != 0 {
            let err = DlmError::last_os("dlm_ls_lock");
            let mut st = lock.cell.state.lock();
            st.pending = None;
            st.ended = true;
            return Err(err);
        }
        lock.note_lkid();
        Ok(lock)
    }

    /// Takes over an orphan of this node: `dlm_ls_lockx(ls, mode, lksb, LKF_ORPHAN | flags, ...)`.
    /// The kernel hands the orphan over synchronously and sends no AST, so a successful return
    /// is the grant (libdlm leaves `sb_status` at EINPROG).
    pub(super) fn adopt(ls: Arc<LsInner>, res: &ResourceName, mode: LockMode, flags: LockFlags) -> Result<Lock> {
        let cell = LockCell::new(res.clone());
        let lock = Lock { ls, cell };
        let rv = lock.ls.with_handle(|h| {
            let name = res.as_bytes();
            // SAFETY: as in `request`; xid and timeout may be null (no timeout flag is passed).
            unsafe {
                dlm_sys::dlm_ls_lockx(
                    h,
                    mode.raw(),
                    lock.cell.lksb_ptr(),
                    flags.bits() | dlm_sys::LKF_ORPHAN,
                    name.as_ptr().cast(),
                    name.len() as u32,
                    0,
                    Some(ast_trampoline),
                    lock.cell.ast_arg(),
                    Some(bast_trampoline),
                    ptr::null_mut(),
                    ptr::null_mut(),
                )
            }
        })?;
        if rv != 0 {
            let err = std::io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ENOENT) => DlmError::NoOrphan(res.to_string()),
                Some(libc::EAGAIN) => DlmError::OrphanModeMismatch { resource: res.to_string(), wanted: mode },
                _ => DlmError::Sys { call: "dlm_ls_lockx", source: err },
            });
        }
        lock.cell.state.lock().granted = Some(mode);
        lock.note_lkid();
        lock.ls.register(&lock.cell)?;
        Ok(lock)
    }

    /// Records the lock id libdlm stored in the status block on this thread (the result of the
    /// `write()`); the AST, if it already came, stored the same value.
    fn note_lkid(&self) {
        // SAFETY: the cell is alive (we hold an Arc); libdlm wrote `sb_lkid` on this thread.
        let lkid = unsafe { ptr::read_volatile(ptr::addr_of!((*self.cell.lksb_ptr()).sb_lkid)) };
        let mut st = self.cell.state.lock();
        if st.lkid == 0 {
            st.lkid = lkid;
        }
    }

    /// Marks `op` in flight, or says why no operation may start now.
    fn begin(&self, op: Op) -> Result<u32> {
        let mut st = self.cell.state.lock();
        if st.closed {
            return Err(DlmError::Released(self.ls.name().to_string()));
        }
        if st.ended {
            return Err(DlmError::Ended(self.resource_string()));
        }
        if st.pending.is_some() {
            return Err(DlmError::Busy(self.resource_string()));
        }
        if st.granted.is_none() {
            return Err(DlmError::Ended(self.resource_string()));
        }
        st.pending = Some(op);
        st.last = None;
        Ok(st.lkid)
    }

    fn abort(&self) {
        self.cell.state.lock().pending = None;
    }

    /// Converts the granted lock to `mode`. `dlm_ls_lock(ls, mode, lksb, LKF_CONVERT | flags, ...)`.
    /// Flags replace the lock's previous flags (pass PERSISTENT again to keep it persistent).
    pub fn convert(&self, mode: LockMode, flags: LockFlags) -> Result<()> {
        self.begin(Op::Convert(mode))?;
        let rv = self.ls.with_handle(|h| {
            // SAFETY: as in `request`; with LKF_CONVERT libdlm takes the lock id from the status
            // block and ignores the name.
            unsafe {
                dlm_sys::dlm_ls_lock(
                    h,
                    mode.raw(),
                    self.cell.lksb_ptr(),
                    flags.bits() | dlm_sys::LKF_CONVERT,
                    ptr::null(),
                    0,
                    0,
                    Some(ast_trampoline),
                    self.cell.ast_arg(),
                    Some(bast_trampoline),
                    ptr::null_mut(),
                )
            }
        });
        self.finish_issue(rv, "dlm_ls_lock")
    }

    /// Unlocks a lock granted in NL, CR, CW or PR. `dlm_ls_unlock(ls, lkid, 0, lksb, arg)`.
    /// PW and EX are refused: convert to NL first ([`Lock::release`] does both).
    pub fn unlock(&self) -> Result<()> {
        if let Some(mode) = self.granted_mode() {
            if mode.writes_lvb_on_unlock() {
                return Err(DlmError::UnsafeUnlock { resource: self.resource_string(), mode });
            }
        }
        let lkid = self.begin(Op::Unlock)?;
        let rv = self.ls.with_handle(|h| {
            // SAFETY: `h` is open; the lock id is ours and alive (not ended); the status block
            // and AST argument stay valid as in `request`.
            unsafe { dlm_sys::dlm_ls_unlock(h, lkid, 0, self.cell.lksb_ptr(), self.cell.ast_arg()) }
        });
        self.finish_issue(rv, "dlm_ls_unlock")
    }

    /// Cancels the request or conversion in flight. `dlm_ls_unlock(ls, lkid, LKF_CANCEL, ...)`.
    /// Its completion is `Cancelled`, or `Granted` if the grant won the race. Does nothing when
    /// nothing is in flight.
    pub fn cancel(&self) -> Result<()> {
        let lkid = {
            let st = self.cell.state.lock();
            match st.pending {
                Some(Op::Request(_) | Op::Convert(_)) if !st.closed => st.lkid,
                _ => return Ok(()),
            }
        };
        let rv = self.ls.with_handle(|h| {
            // SAFETY: as in `unlock`; cancel only names the lock in flight.
            unsafe { dlm_sys::dlm_ls_unlock(h, lkid, dlm_sys::LKF_CANCEL, self.cell.lksb_ptr(), self.cell.ast_arg()) }
        })?;
        if rv != 0 {
            let err = std::io::Error::last_os_error();
            // Nothing left to cancel: the completion is already on its way.
            if matches!(err.raw_os_error(), Some(libc::EBUSY | libc::ENOENT)) {
                return Ok(());
            }
            return Err(DlmError::Sys { call: "dlm_ls_unlock", source: err });
        }
        Ok(())
    }

    fn finish_issue(&self, rv: Result<i32>, call: &'static str) -> Result<()> {
        match rv {
            Ok(0) => Ok(()),
            Ok(_) => {
                let err = DlmError::last_os(call);
                self.abort();
                Err(err)
            }
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }

    /// Waits for the completion of the operation in flight (`None`: no limit). Returns
    /// `TimedOut` when the time runs out (the operation stays in flight: cancel it or wait
    /// again), `Released` if the lockspace was closed meanwhile. With nothing in flight it
    /// returns the last completion not yet taken, else the state as a completion.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Completion> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.cell.state.lock();
        loop {
            if let Some(c) = st.last.take() {
                if st.pending.is_none() {
                    return Ok(c);
                }
                st.last = Some(c);
            }
            if st.closed {
                return Err(DlmError::Released(self.ls.name().to_string()));
            }
            if st.pending.is_none() {
                return Ok(match st.granted {
                    Some(_) => Completion::Granted { demoted: false, lvb_invalid: false },
                    None => Completion::Unlocked,
                });
            }
            match deadline {
                None => self.cell.changed.wait(&mut st),
                Some(d) => {
                    if self.cell.changed.wait_until(&mut st, d).timed_out() && st.pending.is_some() {
                        return Err(DlmError::TimedOut(self.resource_string()));
                    }
                }
            }
        }
    }

    /// Waits up to `timeout` for the operation in flight; when the time runs out, cancels it
    /// (`dlm_ls_unlock(ls, lkid, LKF_CANCEL, ...)`) and waits for the outcome, which may still
    /// be the grant.
    pub fn wait_or_cancel(&self, timeout: Duration) -> Result<Completion> {
        match self.wait(Some(timeout)) {
            Err(DlmError::TimedOut(_)) => {
                self.cancel()?;
                self.wait(None)
            }
            other => other,
        }
    }

    /// Converts and waits: `Ok` once granted, `WouldBlock`, `Deadlock`, or `TimedOut` after a
    /// cancel. `dlm_ls_lock(LKF_CONVERT | flags)`, and `dlm_ls_unlock(LKF_CANCEL)` on timeout.
    pub fn convert_wait(&self, mode: LockMode, flags: LockFlags, timeout: Option<Duration>) -> Result<()> {
        self.convert(mode, flags)?;
        let c = match timeout {
            Some(t) => self.wait_or_cancel(t)?,
            None => self.wait(None)?,
        };
        self.expect_granted(c)
    }

    /// Turns a request's or conversion's completion into `Ok` (granted) or a typed error.
    pub(super) fn expect_granted(&self, c: Completion) -> Result<()> {
        match c {
            Completion::Granted { .. } => Ok(()),
            Completion::WouldBlock => Err(DlmError::WouldBlock(self.resource_string())),
            Completion::Cancelled => Err(DlmError::TimedOut(self.resource_string())),
            Completion::Deadlock => Err(DlmError::Deadlock(self.resource_string())),
            Completion::Unlocked => Err(DlmError::Ended(self.resource_string())),
            Completion::Failed(status) => Err(DlmError::Unexpected { resource: self.resource_string(), status }),
        }
    }

    /// The safe release order: convert to NL (if above NL), then unlock; waits for both.
    /// `dlm_ls_lock(LKF_CONVERT, NL)`, then `dlm_ls_unlock(ls, lkid, 0, ...)`.
    pub fn release(&self) -> Result<()> {
        if self.granted_mode().is_some_and(|m| m != LockMode::Nl) {
            self.convert_wait(LockMode::Nl, LockFlags::NONE, None)?;
        }
        self.unlock()?;
        match self.wait(None)? {
            Completion::Unlocked => Ok(()),
            Completion::Failed(status) => Err(DlmError::Unexpected { resource: self.resource_string(), status }),
            other => Err(DlmError::Unexpected { resource: self.resource_string(), status: other_status(other) }),
        }
    }

    /// The granted mode (`None` before the grant and after the end of life).
    pub fn granted_mode(&self) -> Option<LockMode> {
        self.cell.state.lock().granted
    }

    /// The kernel's lock id (0 until the request was written).
    pub fn lkid(&self) -> u32 {
        self.cell.state.lock().lkid
    }

    /// Whether the lock is gone (no more operations possible).
    pub fn is_ended(&self) -> bool {
        self.cell.ended()
    }

    /// How many blocking ASTs arrived (another holder waits for this resource).
    pub fn blocking_asts(&self) -> u64 {
        self.cell.basts.load(Ordering::Relaxed)
    }

    pub fn resource(&self) -> &ResourceName {
        &self.cell.resource
    }

    fn resource_string(&self) -> String {
        self.cell.resource.to_string()
    }
}

fn other_status(c: Completion) -> i32 {
    match c {
        Completion::Granted { .. } => 0,
        Completion::WouldBlock => libc::EAGAIN,
        Completion::Cancelled => dlm_sys::ECANCEL as i32,
        Completion::Unlocked => dlm_sys::EUNLOCK as i32,
        Completion::Deadlock => libc::EDEADLK,
        Completion::Failed(s) => s,
    }
}
