//! Quorum: whether this node's partition may act, and who is in it.
//!
//! Same shape as `cpg`: the C callbacks copy into a queue owned by the handle, `dispatch`
//! returns owned [`QuorumEvent`]s. Tracking starts at construction with the current state
//! queued, so the first `dispatch` after the fd turns readable reports where we stand.

use super::error::{check, Error, Result};
use super::ring::RingId;
use cpg_sys as sys;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

/// What `dispatch` hands back, in corosync's order (a `NodeList` precedes its `Quorum`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuorumEvent {
    /// Quorum state of the membership `ring_id` (votequorum's view).
    Quorum { quorate: bool, ring_id: RingId, members: Vec<u32> },
    /// The membership changed (before quorum is recomputed for it).
    NodeList { ring_id: RingId, members: Vec<u32>, joined: Vec<u32>, left: Vec<u32> },
}

struct Inner {
    queue: VecDeque<QuorumEvent>,
    lost_event: bool,
}

/// A libquorum handle with change tracking on.
///
/// `Send` but not `Sync`, for the same reasons as [`super::Cpg`].
pub struct Quorum {
    handle: sys::quorum_handle_t,
    inner: NonNull<Inner>,
    fd: RawFd,
    provider: bool,
}

// SAFETY: the handle is an integer into libquorum's mutex-protected handle table; `inner` is
// only dereferenced by callbacks inside `quorum_dispatch`, called from `dispatch(&mut self)`.
unsafe impl Send for Quorum {}

impl fmt::Debug for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quorum").field("handle", &self.handle).field("provider", &self.provider).finish()
    }
}

impl Quorum {
    /// Connects and starts tracking: `quorum_model_initialize` (`QUORUM_MODEL_V1`),
    /// `quorum_fd_get`, `quorum_trackstart(CS_TRACK_CURRENT | CS_TRACK_CHANGES)`.
    pub fn new() -> Result<Self> {
        let inner = Box::into_raw(Box::new(Inner { queue: VecDeque::new(), lost_event: false }));
        // SAFETY: Box::into_raw never returns null.
        let inner = unsafe { NonNull::new_unchecked(inner) };
        let mut model = sys::quorum_model_v1_data_t {
            model: sys::QUORUM_MODEL_V1,
            quorum_notify_fn: Some(quorum_cb),
            nodelist_notify_fn: Some(nodelist_cb),
        };
        let mut handle: sys::quorum_handle_t = 0;
        let mut quorum_type: u32 = 0;
        // SAFETY: `model` is a valid quorum_model_v1_data_t starting with its model field, as
        // quorum_model_initialize expects (it copies it); out-pointers are valid; `inner`
        // stays valid until Drop, after quorum_finalize.
        let rc = unsafe {
            sys::quorum_model_initialize(
                &mut handle,
                sys::QUORUM_MODEL_V1,
                (&mut model as *mut sys::quorum_model_v1_data_t).cast(),
                &mut quorum_type,
                inner.as_ptr().cast(),
            )
        };
        if let Err(e) = check("quorum_model_initialize", rc) {
            // SAFETY: no handle exists, so nothing else can reach `inner`.
            drop(unsafe { Box::from_raw(inner.as_ptr()) });
            return Err(e);
        }
        let mut q = Quorum { handle, inner, fd: -1, provider: quorum_type == sys::QUORUM_SET };
        let mut fd: std::ffi::c_int = -1;
        // SAFETY: valid handle, valid out-pointer.
        check("quorum_fd_get", unsafe { sys::quorum_fd_get(handle, &mut fd) })?;
        q.fd = fd;
        let flags = sys::CS_TRACK_CURRENT | sys::CS_TRACK_CHANGES;
        // SAFETY: valid handle.
        check("quorum_trackstart", unsafe { sys::quorum_trackstart(handle, flags) })?;
        Ok(q)
    }

    /// False when corosync runs without a quorum provider (`QUORUM_FREE`): then no quorum
    /// events ever arrive and this node must not consider itself quorate.
    pub fn has_provider(&self) -> bool {
        self.provider
    }

    /// One-shot check (`quorum_getquorate`).
    pub fn is_quorate(&self) -> Result<bool> {
        let mut q: std::ffi::c_int = 0;
        // SAFETY: valid handle, valid out-pointer.
        check("quorum_getquorate", unsafe { sys::quorum_getquorate(self.handle, &mut q) })?;
        Ok(q != 0)
    }

    /// Runs every ready callback (`quorum_dispatch` with `CS_DISPATCH_ALL`, non-blocking) and
    /// returns the events. `Error::NotRunning` means corosync went away: drop this handle.
    pub fn dispatch(&mut self) -> Result<Vec<QuorumEvent>> {
        // SAFETY: valid handle; we hold no reference to `inner` during the call.
        let rc = unsafe { sys::quorum_dispatch(self.handle, sys::CS_DISPATCH_ALL) };
        // SAFETY: quorum_dispatch has returned; no callback holds a reference to `inner`.
        let inner = unsafe { &mut *self.inner.as_ptr() };
        let events: Vec<QuorumEvent> = inner.queue.drain(..).collect();
        check("quorum_dispatch", rc)?;
        if std::mem::take(&mut inner.lost_event) {
            return Err(Error::EventLost { call: "quorum_dispatch" });
        }
        Ok(events)
    }
}

impl AsRawFd for Quorum {
    /// The fd to poll for readability (`quorum_fd_get`); then call [`Quorum::dispatch`].
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl AsFd for Quorum {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: libquorum keeps this fd open until quorum_finalize, which only Drop calls.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

impl Drop for Quorum {
    /// `quorum_trackstop`, `quorum_finalize`, then frees the callback state.
    fn drop(&mut self) {
        // SAFETY: valid handle, finalized exactly once; no callback can run afterwards.
        unsafe {
            sys::quorum_trackstop(self.handle);
            sys::quorum_finalize(self.handle);
        }
        // SAFETY: `inner` came from Box::into_raw in `new`; the handle is gone.
        drop(unsafe { Box::from_raw(self.inner.as_ptr()) });
    }
}

/// Runs `f` on the handle's `Inner`, swallowing panics (callbacks must not unwind into C).
fn with_inner(handle: sys::quorum_handle_t, f: impl FnOnce(&mut Inner)) {
    let mut ctx: *const c_void = std::ptr::null();
    // SAFETY: `ctx` is a valid out-pointer; an unknown handle only yields an error code.
    if unsafe { sys::quorum_context_get(handle, &mut ctx) } != sys::CS_OK || ctx.is_null() {
        return;
    }
    // SAFETY: the context is the `Inner` installed by `Quorum::new`, alive until finalize;
    // callbacks run only inside `Quorum::dispatch`, which holds no other reference.
    let inner = unsafe { &mut *(ctx as *mut Inner) };
    if catch_unwind(AssertUnwindSafe(|| f(&mut *inner))).is_err() {
        inner.lost_event = true;
    }
}

/// # Safety
/// `ptr` is null or points to `n` node ids valid for the duration of the call.
unsafe fn nodes(ptr: *const u32, n: u32) -> Vec<u32> {
    if ptr.is_null() || n == 0 {
        return Vec::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(ptr, n as usize) }.to_vec()
}

unsafe extern "C" fn quorum_cb(
    handle: sys::quorum_handle_t,
    quorate: u32,
    ring_id: sys::quorum_ring_id,
    member_n: u32,
    member_list: *const u32,
) {
    with_inner(handle, |inner| {
        // SAFETY: libquorum passes `member_n` node ids, valid during the callback.
        let members = unsafe { nodes(member_list, member_n) };
        inner.queue.push_back(QuorumEvent::Quorum { quorate: quorate != 0, ring_id: ring_id.into(), members });
    });
}

#[allow(clippy::too_many_arguments)] // the C callback's signature
unsafe extern "C" fn nodelist_cb(
    handle: sys::quorum_handle_t,
    ring_id: sys::quorum_ring_id,
    member_n: u32,
    member_list: *const u32,
    joined_n: u32,
    joined_list: *const u32,
    left_n: u32,
    left_list: *const u32,
) {
    with_inner(handle, |inner| {
        // SAFETY: libquorum passes arrays of the given lengths, valid during the callback.
        let members = unsafe { nodes(member_list, member_n) };
        // SAFETY: as above.
        let joined = unsafe { nodes(joined_list, joined_n) };
        // SAFETY: as above.
        let left = unsafe { nodes(left_list, left_n) };
        inner.queue.push_back(QuorumEvent::NodeList { ring_id: ring_id.into(), members, joined, left });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_corosync_new_fails_with_not_running() {
        let err = super::super::test_isolation::without_corosync(Quorum::new)
            .expect_err("no corosync is reachable in an empty network namespace");
        assert!(err.is_not_running(), "{err}");
        assert!(err.to_string().starts_with("quorum_model_initialize:"), "{err}");
    }

    #[test]
    fn callbacks_on_an_unknown_handle_do_nothing() {
        let m = [1u32, 2];
        // SAFETY: valid 2-element array; the handle is unknown to libquorum.
        unsafe { quorum_cb(0xdead, 1, sys::quorum_ring_id { nodeid: 1, seq: 2 }, 2, m.as_ptr()) };
        // SAFETY: a null pointer is allowed (any length).
        assert!(unsafe { nodes(std::ptr::null(), 3) }.is_empty());
        // SAFETY: a valid 2-element array.
        assert_eq!(unsafe { nodes(m.as_ptr(), 2) }, vec![1, 2]);
    }
}
