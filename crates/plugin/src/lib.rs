//! dlm.so: the libvirt lock-manager plugin (`lock_manager = "dlm"` in qemu.conf).
//!
//! A thin, synchronous client of virtdlmd: libvirt's calls become one request each on the
//! daemon's Unix socket. The plugin holds no lock itself and keeps no state between calls,
//! so libvirtd can restart, and the forked child before QEMU's exec only does plain blocking
//! syscalls. It links neither tokio nor libdlm nor libcpg (`tests/linkage.rs` checks).
//!
//! - `abi`: the exported `virLockDriverImpl` and every `unsafe` line of the plugin.
//! - `manager`: the owner and resources libvirt describes, decoded into protocol types.
//! - `ops`: acquire / release / inquire as requests to virtdlmd.
//! - `client`: the blocking socket round trip.
//! - `config`: `/etc/libvirt/qemu-dlm.conf`.
//! - `error`: failures and the libvirt error codes they are shown with.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
pub mod client;
pub mod config;
pub mod error;
pub mod manager;
pub mod ops;
