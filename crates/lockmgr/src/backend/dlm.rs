//! The `dlm` backend: locks in the kernel DLM, one lockspace for the cluster (default
//! "virtdlm"), following lvmlockd's pattern.
//!
//! - acquire: an NL lock on the resource (the anchor; NL conflicts with nothing and EXPEDITE
//!   grants it at once), then a conversion to the wanted mode with PERSISTENT, and NOQUEUE
//!   unless the caller is willing to wait (a bounded wait ends with a cancel).
//! - release: convert to NL and keep that anchor for the next acquire of the resource (one per
//!   resource), which then costs one conversion instead of a new lock, a conversion and an
//!   unlock: each of those waits for the resource's master, a network round trip when it is
//!   another node. The NL conversion drops PERSISTENT (each conversion replaces the flags), so
//!   a crash leaves no anchor behind. A second anchor of the same resource (two VMs of this
//!   node shared it) is unlocked, from NL: never an unlock straight from EX, for which libdlm
//!   would send uninitialised bytes as the lock value block.
//! - adopt: after a daemon restart, `LKF_ORPHAN` in the same mode takes back the PERSISTENT
//!   lock the previous daemon left as an orphan.
//! - purge: frees every orphan of this node nobody adopted.
//!
//! - retire / reopen: after this node was removed from the cluster, its abandoned lockspace
//!   is recovered alone and released ([`dlm::abandoned`]); once the cluster is back,
//!   the lockspace is joined again.
//!
//! Every call may block while the lockspace is stopped for recovery: call from blocking
//! threads only.

use super::{Backend, BackendError, Grant, ResName};
use dlm::{local_nodeid, DlmError, Lock, LockFlags, LockMode, Lockspace, ResourceName};
use parking_lot::{Mutex, RwLock};
use proto::mode::Mode;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// How long the NL anchor may take: it conflicts with nothing, so only a lockspace stopped for
/// recovery delays it.
const ANCHOR_WAIT: Duration = Duration::from_secs(30);
/// At most this many creator references left by earlier daemons are dropped at a retire.
const MAX_LEFTOVER_CREATORS: u32 = 1000;

/// After this daemon released its own creator reference to a retired lockspace: drops those
/// every earlier virtdlmd on this node left. The kernel counts creators and removes the
/// lockspace only at the last release (and tells no one which release was the last); a
/// virtdlmd killed (-9) or stopped never releases its own, since the locks it leaves orphaned
/// must outlive it. A lockspace left behind keeps the node out of the cluster: the next
/// dlm_controld says "found uncontrolled lockspace" and has corosync remove the node again.
/// Each release goes through a handle opened for it (an open takes no creator reference).
/// Returns how many were dropped.
fn drop_leftover_creators(name: &str) -> Result<u32, DlmError> {
    let listed = std::path::Path::new("/sys/kernel/dlm").join(name);
    let mut dropped = 0;
    while listed.exists() && dropped < MAX_LEFTOVER_CREATORS {
        match Lockspace::open(name).and_then(|ls| ls.release(true)) {
            Ok(_) => dropped += 1,
            // Gone meanwhile: the release before was the last.
            Err(_) if !listed.exists() => break,
            Err(e) => return Err(e),
        }
    }
    if dropped > 0 {
        tracing::info!(lockspace = name, dropped, "released the lockspace for the virtdlmd processes before this one (killed or stopped without releasing it)");
    }
    if listed.exists() {
        tracing::error!(
            lockspace = name,
            "the kernel still lists the lockspace after {dropped} releases: it stays until a reboot"
        );
    }
    Ok(dropped)
}

pub struct DlmBackend {
    ls: RwLock<Lockspace>,
    name: String,
    /// The lockspace was released after being abandoned; calls fail until `reopen`.
    retired: AtomicBool,
    /// A [`DlmBackend::retire`] is under way (it may block in the kernel for good, see there).
    retiring: AtomicBool,
    nodeid: u32,
    node_name: String,
    /// Which joining of the lockspace grants belong to (see [`grant_id`]).
    generation: AtomicU32,
    /// Granted locks by grant id.
    held: Mutex<HashMap<u64, Lock>>,
    /// Anchors: NL locks kept after a release, at most one per resource.
    idle: Mutex<HashMap<ResName, Lock>>,
    /// Nodes dlm_controld configured when the lockspace was joined, for a retire: with
    /// corosync.conf's nodelist, the members the lockspace may have had.
    seen_nodes: Mutex<Vec<u32>>,
}

impl DlmBackend {
    /// Joins (or creates) `lockspace`; blocks until the lockspace has joined the cluster
    /// (needs dlm_controld and quorum). `node_name` is how this node is shown to people.
    pub fn new(lockspace: &str, node_name: impl Into<String>) -> Result<Self, BackendError> {
        let ls = Lockspace::create(lockspace).map_err(|e| unavailable(lockspace, e))?;
        let nodeid = local_nodeid().map_err(|e| unavailable(lockspace, e))?;
        Ok(DlmBackend {
            ls: RwLock::new(ls),
            name: lockspace.to_owned(),
            retired: AtomicBool::new(false),
            retiring: AtomicBool::new(false),
            nodeid,
            node_name: node_name.into(),
            generation: AtomicU32::new(0),
            held: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
            seen_nodes: Mutex::new(dlm::abandoned::configured_nodes()),
        })
    }

    /// The lockspace's name.
    pub fn lockspace_name(&self) -> &str {
        &self.name
    }

    /// Whether a retire is under way: the lockspace is being released, nothing may be granted
    /// through it.
    pub fn is_retiring(&self) -> bool {
        self.retiring.load(Ordering::SeqCst)
    }

    /// Whether the lockspace was retired and not joined again yet.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Releases the lockspace dlm_controld abandoned when this node was removed from the
    /// cluster: recovered with this node alone, closed, released. Every lock held through it
    /// is gone (the rest of the cluster recovered them long before). Blocks until done, which
    /// may be never: closing waits in the kernel (`dlm_clear_proc_locks`) for a recovery that
    /// has been seen not to complete (docs/RELIABILITY.md, "a retire that never finishes").
    pub fn retire(&self) -> Result<(), BackendError> {
        self.retiring.store(true, Ordering::SeqCst);
        let r = self.retire_now();
        self.retiring.store(false, Ordering::SeqCst);
        r
    }

    fn retire_now(&self) -> Result<(), BackendError> {
        let name = &self.name;
        let mut others = crate::corosync_conf::read_node_ids();
        others.extend(self.seen_nodes.lock().iter().copied());
        others.sort_unstable();
        others.dedup();
        dlm::abandoned::run_alone(name, self.nodeid, &others).map_err(|e| unavailable(name, e))?;
        // Closing waits for the recovery just started; with no other node it takes moments.
        let released = self.ls.read().release(true).and_then(|_| drop_leftover_creators(name));
        let cleaned = dlm::abandoned::cleanup(name, self.nodeid);
        // Grants and kept anchors died with the lockspace; a release of one of them still
        // coming (deferred, retried, or in flight) must not find a lock of the lockspace joined
        // again, where its DLM lock id may name another VM's lock.
        {
            let mut held = self.held.lock();
            self.generation.fetch_add(1, Ordering::SeqCst);
            held.clear();
        }
        self.idle.lock().clear();
        released.map_err(|e| unavailable(name, e))?;
        self.retired.store(true, Ordering::SeqCst);
        cleaned.map_err(|e| unavailable(name, e))
    }

    /// Joins the lockspace again after [`DlmBackend::retire`]; blocks until it has joined.
    pub fn reopen(&self) -> Result<(), BackendError> {
        let ls = Lockspace::create(&self.name).map_err(|e| unavailable(&self.name, e))?;
        *self.ls.write() = ls;
        let mut seen = self.seen_nodes.lock();
        seen.extend(dlm::abandoned::configured_nodes());
        seen.sort_unstable();
        seen.dedup();
        drop(seen);
        self.retired.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Number of grants held by this backend.
    pub fn held(&self) -> usize {
        self.held.lock().len()
    }

    /// Whether `grant` was made through the lockspace as joined now (not one retired since).
    pub fn is_current(&self, grant: &Grant) -> bool {
        generation_of(grant.id) == self.generation.load(Ordering::SeqCst)
    }

    fn keep(&self, name: &ResName, mode: Mode, lock: Lock) -> Grant {
        let mut held = self.held.lock();
        let id = grant_id(self.generation.load(Ordering::SeqCst), lock.lkid());
        held.insert(id, lock);
        Grant { name: name.clone(), mode, id }
    }

    /// Keeps `anchor` (granted at NL) for the next acquire of `name`, unless one is kept already.
    fn park(&self, name: &ResName, anchor: Lock) {
        let extra = match self.idle.lock().entry(name.clone()) {
            Entry::Vacant(v) => {
                v.insert(anchor);
                return;
            }
            Entry::Occupied(_) => anchor,
        };
        drop_anchor(name, &extra);
    }

    /// Converts `anchor` to `mode`. A refusal or timeout leaves it at NL: it is kept for the
    /// next acquire; after any other error it is dropped.
    fn convert(&self, name: &ResName, mode: Mode, wait: Option<Duration>, anchor: Lock) -> Result<Grant, BackendError> {
        let flags = match wait {
            None => LockFlags::NOQUEUE | LockFlags::PERSISTENT,
            Some(_) => LockFlags::PERSISTENT,
        };
        match anchor.convert_wait(lock_mode(mode), flags, wait) {
            Ok(()) => Ok(self.keep(name, mode, anchor)),
            Err(e @ (DlmError::WouldBlock(_) | DlmError::TimedOut(_))) => {
                self.park(name, anchor);
                Err(backend_error(name, e))
            }
            Err(e) => {
                drop_anchor(name, &anchor);
                Err(backend_error(name, e))
            }
        }
    }
}

/// A grant's id: the DLM lock id, tagged with the lockspace's generation (bumped by
/// [`DlmBackend::retire`]). A new lockspace numbers its locks afresh, so an untagged id of a
/// lock that died with the old one could name another VM's lock in the new one.
fn grant_id(generation: u32, lkid: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(lkid)
}

fn generation_of(id: u64) -> u32 {
    (id >> 32) as u32
}

/// Unlocks an anchor nobody needs (granted at NL, or already ended).
fn drop_anchor(name: &ResName, anchor: &Lock) {
    if let Err(e) = anchor.release() {
        if !matches!(e, DlmError::Ended(_)) {
            tracing::warn!(resource = %name.0, error = %e, "dropping an NL anchor failed");
        }
    }
}

fn resource(name: &ResName) -> Result<ResourceName, BackendError> {
    ResourceName::new(&name.0).map_err(BackendError::Dlm)
}

fn unavailable(lockspace: &str, e: DlmError) -> BackendError {
    BackendError::Unavailable { lockspace: lockspace.to_owned(), source: e }
}

/// The daemon's view of a wrapper error on resource `name`.
fn backend_error(name: &ResName, e: DlmError) -> BackendError {
    match e {
        DlmError::WouldBlock(_) => BackendError::WouldBlock(name.clone()),
        DlmError::TimedOut(_) => BackendError::TimedOut(name.clone()),
        DlmError::NoOrphan(_) => BackendError::NoOrphan(name.clone()),
        DlmError::Released(_) | DlmError::NoNodeId { .. } => BackendError::NotReady(e),
        other => BackendError::Dlm(other),
    }
}

impl Backend for DlmBackend {
    fn kind(&self) -> &'static str {
        "dlm"
    }

    fn node(&self) -> (u32, String) {
        (self.nodeid, self.node_name.clone())
    }

    fn acquire(&self, name: &ResName, mode: Mode, wait: Option<Duration>) -> Result<Grant, BackendError> {
        let res = resource(name)?;
        let kept = self.idle.lock().remove(name);
        if let Some(anchor) = kept {
            match self.convert(name, mode, wait, anchor) {
                // An anchor that can no longer convert (its lock ended, e.g. with its
                // lockspace) is gone: a new one is taken below.
                Err(e @ (BackendError::Dlm(_) | BackendError::Unavailable { .. } | BackendError::NotReady(_))) => {
                    tracing::debug!(resource = %name.0, error = %e, "kept NL anchor unusable; taking a new one");
                }
                other => return other,
            }
        }
        let anchor = self
            .ls
            .read()
            .lock(&res, LockMode::Nl, LockFlags::EXPEDITE, Some(ANCHOR_WAIT))
            .map_err(|e| backend_error(name, e))?;
        self.convert(name, mode, wait, anchor)
    }

    fn release(&self, grant: &Grant) -> Result<(), BackendError> {
        let Some(lock) = self.held.lock().remove(&grant.id) else {
            return Ok(());
        };
        match lock.convert_wait(LockMode::Nl, LockFlags::NONE, None) {
            Ok(()) => {
                self.park(&grant.name, lock);
                Ok(())
            }
            Err(DlmError::Ended(_)) => Ok(()),
            Err(e) => {
                let err = backend_error(&grant.name, e);
                // Still held: keep it so a retry can release it.
                if !lock.is_ended() {
                    self.held.lock().insert(grant.id, lock);
                }
                Err(err)
            }
        }
    }

    fn adopt(&self, name: &ResName, mode: Mode) -> Result<Grant, BackendError> {
        let res = resource(name)?;
        let lock = self.ls.read().adopt(&res, lock_mode(mode), LockFlags::PERSISTENT).map_err(|e| match e {
            DlmError::OrphanModeMismatch { .. } => {
                BackendError::OrphanModeMismatch { name: name.clone(), wanted: mode }
            }
            e => backend_error(name, e),
        })?;
        Ok(self.keep(name, mode, lock))
    }

    /// The DLM does not say how many orphans it freed: the count is always 0.
    fn purge_orphans(&self) -> Result<usize, BackendError> {
        self.ls.read().purge(self.nodeid, 0).map_err(BackendError::Dlm)?;
        Ok(0)
    }
}

/// The DLM mode a disk's lock is taken in (the mode table, `proto::mode`, chose it).
fn lock_mode(m: Mode) -> LockMode {
    match m {
        Mode::Cr => LockMode::Cr,
        Mode::Cw => LockMode::Cw,
        Mode::Pr => LockMode::Pr,
        Mode::Ex => LockMode::Ex,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_keep_the_kernel_numbers_of_the_mode_table() {
        for m in Mode::ALL {
            assert_eq!(lock_mode(m) as u32, m.dlm_mode(), "{m}");
        }
    }

    #[test]
    fn wrapper_errors_map_to_backend_errors() {
        let n = ResName("d1:abc".into());
        assert!(
            matches!(backend_error(&n, DlmError::WouldBlock("x".into())), BackendError::WouldBlock(r) if r.0 == "d1:abc")
        );
        assert!(matches!(backend_error(&n, DlmError::TimedOut("x".into())), BackendError::TimedOut(_)));
        assert!(matches!(backend_error(&n, DlmError::NoOrphan("x".into())), BackendError::NoOrphan(_)));
        assert!(backend_error(&n, DlmError::Released("virtdlm".into())).is_unavailable());
        assert!(matches!(backend_error(&n, DlmError::Busy("x".into())), BackendError::Dlm(_)));
    }

    /// A lock of a retired lockspace and a lock of the one joined again with the same DLM lock
    /// id (a new lockspace numbers from scratch) have different grant ids, so a late release
    /// of the first can never drop the second. Break it: make `grant_id` return `lkid` alone
    /// (as before): this test fails with "a retired grant's id names a new lock" (checked).
    #[test]
    fn grant_ids_of_a_retired_lockspace_never_name_a_new_lock() {
        let lkid = 0x0001_0003;
        let old = grant_id(0, lkid);
        let new = grant_id(1, lkid);
        assert_ne!(old, new, "a retired grant's id names a new lock");
        assert_eq!((generation_of(old), generation_of(new)), (0, 1));
        assert_eq!(grant_id(u32::MAX, u32::MAX), u64::MAX);
    }

    #[test]
    fn names_the_dlm_refuses_are_errors_not_calls() {
        assert!(matches!(resource(&ResName(String::new())), Err(BackendError::Dlm(_))));
        assert!(matches!(resource(&ResName("x".repeat(65))), Err(BackendError::Dlm(_))));
        assert!(resource(&ResName("d1:0123".into())).is_ok());
    }
}
