//! CPG: one closed process group, its membership changes and its totally ordered messages.
//!
//! One `Cpg` is one libcpg handle joined to one group. The C callbacks only copy what they
//! are given into a queue owned by the handle; `dispatch` runs `cpg_dispatch` and hands the
//! queue back as owned [`CpgEvent`]s, so no user code ever runs inside libcpg.
//!
//! Virtual synchrony: every member that stays in the group sees the same configuration
//! changes and, between two of them, the same messages in the same order — its own included.
//! `mcast` only hands the message to the local corosync; **the commit point of a message is
//! its delivery back to us** (`CpgEvent::Deliver` with `own == true`): from then on every
//! member of the configuration it was delivered in has it, in the same place in the order.
//! A message whose own delivery never arrives (we were cut off, corosync died) must be
//! treated as never sent.

use super::error::{check, Error, Result};
use super::retry::retry;
use super::ring::RingId;
use cpg_sys as sys;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::time::Duration;

/// How long `join`/`leave` keep retrying `CS_ERR_TRY_AGAIN` (a previous leave of ours not yet
/// delivered, or a membership change in progress).
const JOIN_RETRY: Duration = Duration::from_secs(30);
/// How long `mcast` keeps retrying `CS_ERR_TRY_AGAIN` (IPC flow control).
const MCAST_RETRY: Duration = Duration::from_secs(10);

/// A group member: a process on a node. Within one group this pair is unique (corosync
/// refuses a second join of the same pid to the same group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub nodeid: u32,
    pub pid: u32,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.nodeid, self.pid)
    }
}

/// Why a member joined or left (`cpg_reason_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// It called `cpg_join`.
    Join,
    /// It called `cpg_leave`.
    Leave,
    /// Its node left the cluster membership (crash, cut off, corosync stopped).
    NodeDown,
    /// Its node (re)joined the cluster with the process already in the group (partition heal).
    NodeUp,
    /// The process went away without `cpg_leave` (crash, kill, closed its connection).
    ProcDown,
    /// `CPG_REASON_UNDEFINED`.
    Undefined,
    /// A reason this build does not know.
    Unknown(u32),
}

impl Reason {
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            sys::CPG_REASON_JOIN => Reason::Join,
            sys::CPG_REASON_LEAVE => Reason::Leave,
            sys::CPG_REASON_NODEDOWN => Reason::NodeDown,
            sys::CPG_REASON_NODEUP => Reason::NodeUp,
            sys::CPG_REASON_PROCDOWN => Reason::ProcDown,
            sys::CPG_REASON_UNDEFINED => Reason::Undefined,
            other => Reason::Unknown(other),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Join => f.write_str("join"),
            Reason::Leave => f.write_str("leave"),
            Reason::NodeDown => f.write_str("nodedown"),
            Reason::NodeUp => f.write_str("nodeup"),
            Reason::ProcDown => f.write_str("procdown"),
            Reason::Undefined => f.write_str("undefined"),
            Reason::Unknown(raw) => write!(f, "unknown({raw})"),
        }
    }
}

/// A member that joined or left, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Change {
    pub addr: Address,
    pub reason: Reason,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.reason)
    }
}

/// What `dispatch` hands back, in corosync's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpgEvent {
    /// A message multicast to the group. `own` is true for our own messages (commit point).
    Deliver { sender: Address, own: bool, msg: Vec<u8> },
    /// The group's membership changed. `members` is the new membership.
    ConfChg { members: Vec<Address>, left: Vec<Change>, joined: Vec<Change> },
    /// The cluster (totem) membership changed; `ring_id` is comparable with quorum's.
    /// With `CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF` corosync sends the current one with the
    /// first group configuration change it reports after we connected, which can be just
    /// before our own join's `ConfChg` (seen on real clusters), so do not rely on the order.
    TotemConfChg { ring_id: RingId, members: Vec<u32> },
}

/// State the C callbacks reach through the libcpg context pointer.
struct Inner {
    me: Address,
    queue: VecDeque<CpgEvent>,
    /// A callback panicked (allocation failure): an event was lost.
    lost_event: bool,
}

/// A libcpg handle for one group.
///
/// `Send` but not `Sync`: one thread at a time drives it (dispatch and mcast); libcpg's
/// handle table is thread-safe, the callback queue is only touched inside `dispatch(&mut self)`.
pub struct Cpg {
    handle: sys::cpg_handle_t,
    inner: NonNull<Inner>,
    group: sys::cpg_name,
    group_text: String,
    fd: RawFd,
    joined: bool,
}

// SAFETY: the handle is an integer into libcpg's mutex-protected handle table, usable from any
// thread; `inner` is owned by this value and only dereferenced by the callbacks, which run
// inside `cpg_dispatch` called from `dispatch(&mut self)` on whichever thread owns the `Cpg`.
unsafe impl Send for Cpg {}

impl fmt::Debug for Cpg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cpg")
            .field("group", &self.group_text)
            .field("me", &self.me())
            .field("joined", &self.joined)
            .finish()
    }
}

fn group_name(group: &str) -> Result<sys::cpg_name> {
    let bad = |why| Error::BadName { what: "CPG group name", name: group.to_owned(), why };
    if group.is_empty() {
        return Err(bad("it is empty"));
    }
    if group.len() > sys::CPG_MAX_NAME_LENGTH as usize {
        return Err(bad("it is longer than 128 bytes"));
    }
    if group.as_bytes().contains(&0) {
        return Err(bad("it contains a NUL byte"));
    }
    let mut name = sys::cpg_name { length: group.len() as u32, ..Default::default() };
    for (dst, src) in name.value.iter_mut().zip(group.bytes()) {
        *dst = src as std::ffi::c_char;
    }
    Ok(name)
}

impl Cpg {
    /// Connects to the local corosync for `group` (`cpg_model_initialize` with `CPG_MODEL_V1`
    /// and `CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`, then `cpg_fd_get`, `cpg_local_get`).
    /// Not joined yet: call [`Cpg::join`].
    pub fn new(group: &str) -> Result<Self> {
        let name = group_name(group)?;
        let inner = Box::into_raw(Box::new(Inner {
            // corosync names members by the pid it sees on the IPC socket: this holds as long
            // as we share corosync's pid namespace (true on a host and in the test guests).
            me: Address { nodeid: 0, pid: std::process::id() },
            queue: VecDeque::new(),
            lost_event: false,
        }));
        // SAFETY: Box::into_raw never returns null.
        let inner = unsafe { NonNull::new_unchecked(inner) };
        let mut model = sys::cpg_model_v1_data_t {
            model: sys::CPG_MODEL_V1,
            cpg_deliver_fn: Some(deliver_cb),
            cpg_confchg_fn: Some(confchg_cb),
            cpg_totem_confchg_fn: Some(totem_confchg_cb),
            flags: sys::CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
        };
        let mut handle: sys::cpg_handle_t = 0;
        // SAFETY: `model` is a valid cpg_model_v1_data_t whose first field is the model, as
        // cpg_model_initialize expects for CPG_MODEL_V1 (it copies it); `inner` stays valid
        // until Drop, after cpg_finalize, so the context never dangles.
        let rc = unsafe {
            sys::cpg_model_initialize(
                &mut handle,
                sys::CPG_MODEL_V1,
                (&mut model as *mut sys::cpg_model_v1_data_t).cast(),
                inner.as_ptr().cast(),
            )
        };
        if let Err(e) = check("cpg_model_initialize", rc) {
            // SAFETY: no handle exists, so nothing else can reach `inner`.
            drop(unsafe { Box::from_raw(inner.as_ptr()) });
            return Err(e);
        }
        // From here Drop finalizes the handle and frees `inner`.
        let mut cpg = Cpg { handle, inner, group: name, group_text: group.to_owned(), fd: -1, joined: false };
        let mut fd: std::ffi::c_int = -1;
        // SAFETY: valid handle, `fd` is a valid out-pointer.
        check("cpg_fd_get", unsafe { sys::cpg_fd_get(handle, &mut fd) })?;
        cpg.fd = fd;
        let mut nodeid: std::ffi::c_uint = 0;
        // SAFETY: valid handle, `nodeid` is a valid out-pointer.
        check("cpg_local_get", unsafe { sys::cpg_local_get(handle, &mut nodeid) })?;
        // SAFETY: no dispatch is running (we hold the only reference), so no callback aliases.
        unsafe { (*cpg.inner.as_ptr()).me.nodeid = nodeid };
        Ok(cpg)
    }

    /// Joins the group (`cpg_join`), retrying `CS_ERR_TRY_AGAIN`. Our own join shows up as a
    /// `ConfChg` with us in `joined`; the initial `TotemConfChg` may come before or after it.
    pub fn join(&mut self) -> Result<()> {
        let (h, name) = (self.handle, self.group);
        // SAFETY: valid handle; `name` is a valid cpg_name that outlives the call.
        retry("cpg_join", JOIN_RETRY, || unsafe { sys::cpg_join(h, &name) })?;
        self.joined = true;
        Ok(())
    }

    /// Leaves the group (`cpg_leave`), retrying `CS_ERR_TRY_AGAIN`. The others see us in a
    /// `ConfChg` left list with `Reason::Leave`.
    pub fn leave(&mut self) -> Result<()> {
        let (h, name) = (self.handle, self.group);
        // SAFETY: valid handle; `name` is a valid cpg_name that outlives the call.
        retry("cpg_leave", JOIN_RETRY, || unsafe { sys::cpg_leave(h, &name) })?;
        self.joined = false;
        Ok(())
    }

    /// Multicasts `msg` to the group in agreed (total) order (`cpg_mcast_joined`,
    /// `CPG_TYPE_AGREED`), retrying `CS_ERR_TRY_AGAIN` with backoff for up to 10 s.
    ///
    /// Success only means the local corosync took the message. It is committed when it comes
    /// back to us as `CpgEvent::Deliver { own: true, .. }` (see the module docs).
    /// Refused with `Error::NotJoined` before `join` or after `leave`: corosync would accept
    /// the message and drop it. Under flow control this sleeps between retries, so call it
    /// where blocking for a while is acceptable.
    pub fn mcast(&self, msg: &[u8]) -> Result<()> {
        if !self.joined {
            return Err(Error::NotJoined { group: self.group_text.clone() });
        }
        let iov = libc::iovec { iov_base: msg.as_ptr() as *mut c_void, iov_len: msg.len() };
        let h = self.handle;
        // SAFETY: valid handle; `iov` points at `msg`, which outlives the call; libcpg only
        // reads through iov_base (the cast to *mut is the C signature's, not a write).
        retry("cpg_mcast_joined", MCAST_RETRY, || unsafe { sys::cpg_mcast_joined(h, sys::CPG_TYPE_AGREED, &iov, 1) })
    }

    /// Runs every callback that is ready (`cpg_dispatch` with `CS_DISPATCH_ALL`, which never
    /// blocks) and returns the events, in corosync's order. Call it when [`Cpg::as_fd`] is
    /// readable. `Error::NotRunning` means corosync went away: drop this handle (events
    /// queued before the error are discarded with it; the membership they describe is gone).
    pub fn dispatch(&mut self) -> Result<Vec<CpgEvent>> {
        // SAFETY: valid handle. The callbacks it runs reach `inner` through the context
        // pointer; we hold no reference to `inner` during the call.
        let rc = unsafe { sys::cpg_dispatch(self.handle, sys::CS_DISPATCH_ALL) };
        // SAFETY: cpg_dispatch has returned, so no callback holds a reference to `inner`.
        let inner = unsafe { &mut *self.inner.as_ptr() };
        let events: Vec<CpgEvent> = inner.queue.drain(..).collect();
        check("cpg_dispatch", rc)?;
        if std::mem::take(&mut inner.lost_event) {
            return Err(Error::EventLost { call: "cpg_dispatch" });
        }
        Ok(events)
    }

    /// This process as a group member: our node id (`cpg_local_get`) and our pid.
    /// Compare with `Deliver::sender` / `ConfChg` entries to recognise ourselves.
    pub fn me(&self) -> Address {
        // SAFETY: `inner` is valid; no dispatch runs while we hold `&self` (dispatch needs
        // `&mut self`), and `me` is only written in `new`.
        unsafe { (*self.inner.as_ptr()).me }
    }

    /// The group name.
    pub fn group(&self) -> &str {
        &self.group_text
    }

    /// Whether `join` succeeded and `leave` was not called since.
    pub fn is_joined(&self) -> bool {
        self.joined
    }
}

impl AsRawFd for Cpg {
    /// The fd to poll for readability (`cpg_fd_get`); then call [`Cpg::dispatch`].
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl AsFd for Cpg {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: libcpg keeps this fd open until cpg_finalize, which only Drop calls.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

impl Drop for Cpg {
    /// `cpg_leave` (if joined), then `cpg_finalize`, then frees the callback state.
    fn drop(&mut self) {
        if self.joined {
            // SAFETY: valid handle and group name. Errors are moot: finalize follows.
            let _ = unsafe { sys::cpg_leave(self.handle, &self.group) };
        }
        // SAFETY: valid handle, finalized exactly once; no callback can run afterwards.
        let _ = unsafe { sys::cpg_finalize(self.handle) };
        // SAFETY: `inner` came from Box::into_raw in `new`; the handle that could reach it
        // is gone.
        drop(unsafe { Box::from_raw(self.inner.as_ptr()) });
    }
}

/// Runs `f` on the handle's `Inner`, swallowing panics (callbacks must not unwind into C).
fn with_inner(handle: sys::cpg_handle_t, f: impl FnOnce(&mut Inner)) {
    let mut ctx: *mut c_void = std::ptr::null_mut();
    // SAFETY: `ctx` is a valid out-pointer; an unknown handle only yields an error code.
    if unsafe { sys::cpg_context_get(handle, &mut ctx) } != sys::CS_OK || ctx.is_null() {
        return;
    }
    // SAFETY: the context is the `Inner` installed by `Cpg::new`, alive until the handle is
    // finalized; callbacks run only inside `Cpg::dispatch`, which holds no other reference.
    let inner = unsafe { &mut *ctx.cast::<Inner>() };
    if catch_unwind(AssertUnwindSafe(|| f(&mut *inner))).is_err() {
        inner.lost_event = true;
    }
}

/// Copies a C array of `n` elements; empty for a null pointer.
///
/// # Safety
/// `ptr` is null or points to `n` initialised elements valid for the duration of the call.
unsafe fn copy_list<T: Copy>(ptr: *const T, n: usize) -> Vec<T> {
    if ptr.is_null() || n == 0 {
        return Vec::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(ptr, n) }.to_vec()
}

/// A delivered message as an event; `own` when the sender is this process (`me`).
fn delivery(me: Address, nodeid: u32, pid: u32, msg: Vec<u8>) -> CpgEvent {
    let sender = Address { nodeid, pid };
    CpgEvent::Deliver { sender, own: sender == me, msg }
}

fn addr(a: &sys::cpg_address) -> Address {
    Address { nodeid: a.nodeid, pid: a.pid }
}

fn change(a: &sys::cpg_address) -> Change {
    Change { addr: addr(a), reason: Reason::from_raw(a.reason) }
}

unsafe extern "C" fn deliver_cb(
    handle: sys::cpg_handle_t,
    _group: *const sys::cpg_name,
    nodeid: u32,
    pid: u32,
    msg: *mut c_void,
    msg_len: usize,
) {
    with_inner(handle, |inner| {
        // SAFETY: libcpg passes `msg_len` readable bytes at `msg`, valid during the callback.
        let msg = unsafe { copy_list(msg.cast::<u8>().cast_const(), msg_len) };
        inner.queue.push_back(delivery(inner.me, nodeid, pid, msg));
    });
}

#[allow(clippy::too_many_arguments)] // the C callback's signature
unsafe extern "C" fn confchg_cb(
    handle: sys::cpg_handle_t,
    _group: *const sys::cpg_name,
    member_list: *const sys::cpg_address,
    member_n: usize,
    left_list: *const sys::cpg_address,
    left_n: usize,
    joined_list: *const sys::cpg_address,
    joined_n: usize,
) {
    with_inner(handle, |inner| {
        // SAFETY: libcpg passes arrays of the given lengths, valid during the callback.
        let (members, left, joined) = unsafe {
            (copy_list(member_list, member_n), copy_list(left_list, left_n), copy_list(joined_list, joined_n))
        };
        inner.queue.push_back(CpgEvent::ConfChg {
            members: members.iter().map(addr).collect(),
            left: left.iter().map(change).collect(),
            joined: joined.iter().map(change).collect(),
        });
    });
}

unsafe extern "C" fn totem_confchg_cb(
    handle: sys::cpg_handle_t,
    ring_id: sys::cpg_ring_id,
    member_n: u32,
    member_list: *const u32,
) {
    with_inner(handle, |inner| {
        // SAFETY: libcpg passes `member_n` node ids, valid during the callback.
        let members = unsafe { copy_list(member_list, member_n as usize) };
        inner.queue.push_back(CpgEvent::TotemConfChg { ring_id: ring_id.into(), members });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_from_cpg_reason_t() {
        assert_eq!(Reason::from_raw(sys::CPG_REASON_JOIN), Reason::Join);
        assert_eq!(Reason::from_raw(sys::CPG_REASON_LEAVE), Reason::Leave);
        assert_eq!(Reason::from_raw(sys::CPG_REASON_NODEDOWN), Reason::NodeDown);
        assert_eq!(Reason::from_raw(sys::CPG_REASON_NODEUP), Reason::NodeUp);
        assert_eq!(Reason::from_raw(sys::CPG_REASON_PROCDOWN), Reason::ProcDown);
        assert_eq!(Reason::from_raw(sys::CPG_REASON_UNDEFINED), Reason::Undefined);
        assert_eq!(Reason::from_raw(77), Reason::Unknown(77));
        assert_eq!(
            (1..=5).map(|r| Reason::from_raw(r).to_string()).collect::<Vec<_>>(),
            ["join", "leave", "nodedown", "nodeup", "procdown"]
        );
    }

    #[test]
    fn own_messages_are_recognised_by_node_and_pid() {
        let me = Address { nodeid: 2, pid: 40 };
        let own = |nodeid, pid| match delivery(me, nodeid, pid, b"m".to_vec()) {
            CpgEvent::Deliver { own, msg, .. } => {
                assert_eq!(msg, b"m");
                own
            }
            other => panic!("{other:?}"),
        };
        assert!(own(2, 40));
        assert!(!own(2, 41), "another process on our node");
        assert!(!own(3, 40), "the same pid on another node");
    }

    #[test]
    fn group_names_are_checked() {
        let n = group_name("virtdlm").unwrap();
        assert_eq!(n.length, 7);
        assert_eq!(n.value[..7].iter().map(|&c| c as u8).collect::<Vec<_>>(), b"virtdlm");
        assert!(group_name(&"x".repeat(128)).is_ok());
        for bad in ["", "a\0b", &"x".repeat(129)] {
            assert!(matches!(group_name(bad), Err(Error::BadName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn confchg_copies_the_c_lists() {
        // Drive the callback the way libcpg would, through a handle libcpg does not know:
        // cpg_context_get fails, so the callback must do nothing (and not crash).
        let a = [sys::cpg_address { nodeid: 1, pid: 2, reason: sys::CPG_REASON_JOIN }];
        // SAFETY: the pointers and lengths describe valid arrays (or null with length 0).
        unsafe { confchg_cb(0xdead, std::ptr::null(), a.as_ptr(), 1, std::ptr::null(), 0, a.as_ptr(), 1) };
        assert_eq!(change(&a[0]), Change { addr: Address { nodeid: 1, pid: 2 }, reason: Reason::Join });
        // SAFETY: a null pointer is allowed (any length).
        assert!(unsafe { copy_list::<u32>(std::ptr::null(), 5) }.is_empty());
        // SAFETY: a valid 1-element array.
        assert_eq!(unsafe { copy_list(a.as_ptr(), 1) }.len(), 1);
    }

    #[test]
    fn without_corosync_new_fails_with_not_running() {
        let err = super::super::test_isolation::without_corosync(|| Cpg::new("virtdlm-test"))
            .expect_err("no corosync is reachable in an empty network namespace");
        assert!(err.is_not_running(), "{err}");
        assert!(err.to_string().starts_with("cpg_model_initialize:"), "{err}");
    }
}
