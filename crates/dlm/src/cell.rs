//! The heap cell of one lock: the status block libdlm writes and the state our callbacks
//! record. Its address is the AST argument, so it lives (in the lockspace's registry) until the
//! lock's end of life or the close of the lockspace fd. [`super::dispatch`] calls into it,
//! [`super::lock`] waits on it.

use super::completion::Completion;
use super::flags::LockMode;
use super::name::ResourceName;
use parking_lot::{Condvar, Mutex};
use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The operation in flight on a lock (at most one, plus possibly a cancel of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Request(LockMode),
    Convert(LockMode),
    Unlock,
}

#[derive(Debug, Default)]
pub(super) struct CellState {
    pub(super) lkid: u32,
    pub(super) granted: Option<LockMode>,
    pub(super) pending: Option<Op>,
    /// The completion of the last operation, until a waiter takes it.
    pub(super) last: Option<Completion>,
    /// End of life reached: no AST can follow, the cell may be freed.
    pub(super) ended: bool,
    /// The lockspace fd was closed: no AST will ever come.
    pub(super) closed: bool,
}

/// The heap cell whose address libdlm gets as the AST argument: the status block and what the
/// callbacks record.
pub(super) struct LockCell {
    /// Written by libdlm on the issuing thread (during `dlm_ls_lock`/`dlm_ls_unlock`) and on the
    /// dispatcher thread (just before it calls our AST); read by our AST on the dispatcher thread.
    lksb: UnsafeCell<dlm_sys::dlm_lksb>,
    pub(super) state: Mutex<CellState>,
    pub(super) changed: Condvar,
    pub(super) basts: AtomicU64,
    pub(super) resource: ResourceName,
}

// SAFETY: the only non-thread-safe part is the status block in the UnsafeCell. libdlm writes
// it only while an operation is in flight (the state machine admits one at a time) and from the
// dispatcher right before the AST; our code reads it only in the AST (dispatcher thread) and
// reads `sb_lkid` on the issuing thread right after the call, when libdlm wrote it there.
// The raw `sb_lvbptr` is always null (value blocks are not used).
unsafe impl Send for LockCell {}
// SAFETY: see `Send`; all other fields are Mutex/Condvar/atomics.
unsafe impl Sync for LockCell {}

impl LockCell {
    pub(super) fn new(resource: ResourceName) -> Arc<LockCell> {
        Arc::new(LockCell {
            lksb: UnsafeCell::new(dlm_sys::dlm_lksb {
                sb_status: 0,
                sb_lkid: 0,
                sb_flags: 0,
                sb_lvbptr: ptr::null_mut(),
            }),
            state: Mutex::new(CellState::default()),
            changed: Condvar::new(),
            basts: AtomicU64::new(0),
            resource,
        })
    }

    pub(super) fn lksb_ptr(&self) -> *mut dlm_sys::dlm_lksb {
        self.lksb.get()
    }

    pub(super) fn ast_arg(self: &Arc<Self>) -> *mut c_void {
        Arc::as_ptr(self) as *mut c_void
    }

    /// Completion AST (dispatcher thread): record the result, wake waiters.
    pub(super) fn on_ast(&self) {
        // SAFETY: libdlm filled the status block on this thread just before calling us.
        let sb = unsafe { ptr::read_volatile(self.lksb.get()) };
        let completion = Completion::from_status(sb.sb_status, sb.sb_flags as u8);
        let mut st = self.state.lock();
        let op = st.pending.take();
        st.lkid = sb.sb_lkid;
        match completion {
            Completion::Granted { .. } => {
                if let Some(Op::Request(m) | Op::Convert(m)) = op {
                    st.granted = Some(m);
                }
            }
            Completion::Unlocked => {
                st.granted = None;
                st.ended = true;
            }
            // Refused, cancelled or failed: a request never granted is gone; a conversion
            // keeps the old mode.
            _ => {
                if st.granted.is_none() {
                    st.ended = true;
                }
            }
        }
        st.last = Some(completion);
        drop(st);
        self.changed.notify_all();
    }

    /// Blocking AST (dispatcher thread): somebody waits for this resource.
    pub(super) fn on_bast(&self) {
        self.basts.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn ended(&self) -> bool {
        self.state.lock().ended
    }

    /// The lockspace fd is closed: no completion will come, wake every waiter.
    pub(super) fn on_close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        st.pending = None;
        drop(st);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cell with `op` in flight whose AST reports `status` (as libdlm would deliver it).
    fn complete(cell: &LockCell, op: Op, status: i32) {
        cell.state.lock().pending = Some(op);
        // SAFETY: test-only; no libdlm call can touch this cell.
        unsafe { (*cell.lksb_ptr()).sb_status = status };
        cell.on_ast();
    }

    fn cell() -> Arc<LockCell> {
        LockCell::new(ResourceName::new("r").unwrap())
    }

    #[test]
    fn a_refused_request_reaches_its_end_of_life() {
        for status in [libc::EAGAIN, dlm_sys::ECANCEL as i32, libc::EDEADLK] {
            let c = cell();
            complete(&c, Op::Request(LockMode::Ex), status);
            assert!(c.ended(), "status {status}");
            assert_eq!(c.state.lock().granted, None);
        }
    }

    #[test]
    fn a_refused_conversion_keeps_the_granted_mode() {
        let c = cell();
        complete(&c, Op::Request(LockMode::Nl), 0);
        assert_eq!(c.state.lock().granted, Some(LockMode::Nl));
        for status in [libc::EAGAIN, dlm_sys::ECANCEL as i32, libc::EDEADLK] {
            complete(&c, Op::Convert(LockMode::Ex), status);
            assert!(!c.ended(), "status {status}");
            assert_eq!(c.state.lock().granted, Some(LockMode::Nl));
        }
        complete(&c, Op::Convert(LockMode::Ex), 0);
        assert_eq!(c.state.lock().granted, Some(LockMode::Ex));
    }

    #[test]
    fn unlock_ends_the_lock_and_close_wakes_waiters() {
        let c = cell();
        complete(&c, Op::Request(LockMode::Pr), 0);
        complete(&c, Op::Unlock, dlm_sys::EUNLOCK as i32);
        assert!(c.ended());
        assert_eq!(c.state.lock().last, Some(Completion::Unlocked));

        let c = cell();
        c.state.lock().pending = Some(Op::Request(LockMode::Ex));
        c.on_close();
        let st = c.state.lock();
        assert!(st.closed && st.pending.is_none());
    }
}
