//! virt-dlm's lock manager: the per-host daemon `virtdlmd`, the admin CLI `virtdlm`, and the
//! wire protocol (`proto`) that the libvirt plugin speaks to the daemon.
//!
//! Where things live:
//! - `mode`: the lock-mode table (libvirt disk flags -> DLM mode, compatibility).
//! - `proto`: the wire protocol (frames, requests, answers). Usable without the `daemon` feature.
//! - `dlm`, `corosync`: the only modules with `unsafe`: safe wrappers over libdlm and corosync.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod mode;
pub mod proto;

#[cfg(feature = "daemon")]
pub mod backend;

#[cfg(feature = "daemon")]
pub mod dlm;
#[cfg(feature = "daemon")]
pub mod corosync;
