//! virt-dlm's lock manager: the per-host daemon `virtdlmd`, the admin CLI `virtdlm`, and the
//! wire protocol (`proto`) that the libvirt plugin speaks to the daemon.
//!
//! Where things live:
//! - `mode`: the lock-mode table (libvirt disk flags -> DLM mode, compatibility).
//! - `proto`: the wire protocol (frames, requests, answers). Usable without the `daemon` feature.
//! - `naming`, `config`, `journal` also build with the `formats` feature alone (no daemon).
//! - `naming`: disk and lease identities, and the DLM resource names made from them.
//! - `config`: virtdlmd's configuration file.
//! - `journal`: the journal format (who owns which lock, across daemon restarts).
//! - `owner`: recognising a QEMU process (pid + start time) and noticing its exit (pidfd).
//! - `registry`: owners and their locks; acquire all-or-nothing, release, restore.
//! - `unreleased`: releases the backend refused, retried until it lets go.
//! - `conflict`: the message a refused user reads.
//! - `server`: the sockets (SO_PEERCRED, framing); `daemon`: start-up order and shutdown.
//! - `cluster`: membership verdict and the cluster-wide lock inventory over CPG.
//! - `lockloss`: stopping VMs whose locks are lost, refusing grants until membership is safe.
//! - `membership_task`: the CPG + quorum driver publishing this node's membership verdict.
//! - `backend`: where a lock lives (`local`, `dlm`); `backend_guard`: no silent `local` in a cluster.
//! - `dlm`, `corosync`: the only modules with `unsafe`: safe wrappers over libdlm and corosync.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod mode;
pub mod proto;

#[cfg(feature = "daemon")]
pub mod backend;
#[cfg(feature = "daemon")]
pub mod backend_guard;
#[cfg(feature = "daemon")]
pub mod cluster;
#[cfg(feature = "formats")]
pub mod config;
#[cfg(feature = "daemon")]
pub mod conflict;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "formats")]
pub mod journal;
#[cfg(feature = "daemon")]
pub mod journal_lock;
#[cfg(feature = "daemon")]
pub mod lockloss;
#[cfg(feature = "daemon")]
pub mod membership_task;
#[cfg(feature = "formats")]
pub mod naming;
#[cfg(feature = "daemon")]
pub mod owner;
#[cfg(feature = "daemon")]
pub mod quarantine;
#[cfg(feature = "daemon")]
pub mod registry;
#[cfg(feature = "daemon")]
pub mod server;
#[cfg(feature = "daemon")]
pub mod unreleased;

#[cfg(feature = "daemon")]
pub mod dlm;
#[cfg(feature = "daemon")]
pub mod corosync;
