//! Safe wrappers over corosync (the raw bindings of `cpg-sys`): CPG (group membership and
//! ordered messages), quorum, cmap (node names) and cfg (our node id), plus the membership rule
//! built on them. Nothing here knows of VMs or the daemon.
//!
//! Every `unsafe` call into corosync lives in these files; each wrapper method names the C
//! call it makes. C callbacks only copy data into queues owned by the handle and never unwind.
//!
//! - `cpg`: [`Cpg`], [`CpgEvent`]; our own delivery is a message's commit point.
//! - `quorum`: [`Quorum`], [`QuorumEvent`].
//! - `cmap`: [`Cmap::node_names`].
//! - `cfg`: [`Cfg::local_nodeid`].
//! - `membership`: [`MembershipView`], "safe to act" = quorate and CPG ring == quorum ring.
//! - `reactor` (feature `tokio`): `reactor::register` a `Cpg`/`Quorum` with tokio (`AsyncFd`).
//! - `ring`: [`RingId`]; `error`: [`Error`], [`CsError`]; `retry`: `CS_ERR_TRY_AGAIN` backoff.

pub mod cfg;
pub mod cmap;
pub mod cpg;
pub mod error;
pub mod membership;
pub mod quorum;
#[cfg(feature = "tokio")]
pub mod reactor;
mod retry;
pub mod ring;

pub use cfg::Cfg;
pub use cmap::Cmap;
pub use cpg::{Address, Change, Cpg, CpgEvent, Reason};
pub use error::{CsError, Error, Result};
pub use membership::{MembershipView, Verdict};
pub use quorum::{Quorum, QuorumEvent};
pub use ring::RingId;

#[cfg(test)]
pub(crate) mod test_isolation {
    //! Runs a closure where no corosync is reachable: corosync's IPC sockets are abstract
    //! unix sockets, which are per network namespace, so a thread in a fresh, empty network
    //! namespace cannot reach any corosync running on the machine.

    /// Runs `f` on a thread moved into a new network namespace (needs CAP_SYS_ADMIN).
    /// Without that capability, runs it in place but only if no corosync listens here;
    /// otherwise the test fails, saying why (it never passes without checking).
    pub fn without_corosync<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let newnet = rustix::thread::UnshareFlags::NEWNET;
                // SAFETY: only the network namespace is unshared, on this thread alone, which
                // touches no fds of other threads; FILES (the unsafe case) is not used.
                let isolated = unsafe { rustix::thread::unshare_unsafe(newnet) };
                if let Err(e) = isolated {
                    let unix = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
                    assert!(
                        !unix.lines().any(|l| l.ends_with(" @cpg") || l.ends_with(" @quorum")),
                        "cannot isolate from the corosync running here (unshare(CLONE_NEWNET): \
                         {e}); run the tests as root"
                    );
                }
                f()
            })
            .join()
            .expect("isolated test thread panicked")
        })
    }
}
