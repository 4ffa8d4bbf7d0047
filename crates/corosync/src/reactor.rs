//! Registering corosync handles with tokio's reactor.
//!
//! `tokio::io::unix::AsyncFd::register` is `unsafe` (the fd must stay open and unchanged
//! while registered); our handles guarantee that, so the registration is done here once.
//! Readiness is edge-triggered: after a readable wakeup call `dispatch` until it returns no
//! events, and only then `clear_ready`.

use super::{Cpg, Quorum};
use std::io;
use std::os::fd::AsRawFd;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Cpg {}
    impl Sealed for super::Quorum {}
}

/// A corosync handle whose fd is opened at construction, closed only when it is dropped, and
/// never replaced in between.
pub trait CorosyncFd: AsRawFd + sealed::Sealed {}
impl CorosyncFd for Cpg {}
impl CorosyncFd for Quorum {}

/// Registers `handle` for readability with the current tokio runtime (panics outside one).
pub fn register<T: CorosyncFd>(handle: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `CorosyncFd` types return the fd libcpg/libquorum opened at initialize, which
    // stays open and the same until the handle is finalized in its Drop; AsyncFd drops its
    // registration before (or hands the handle back via into_inner without dropping it).
    let registered = unsafe { AsyncFd::register_with_interest(handle, Interest::READABLE) };
    registered.map_err(io::Error::from)
}
