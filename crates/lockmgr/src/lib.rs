//! virt-dlm's lock manager: the per-host daemon `virtdlmd`.
//!
//! The layers it stands on are crates of their own: `proto` (the wire protocol the plugin and
//! the `virtdlm` CLI speak, and the lock-mode table), `dlm` and `corosync` (the safe wrappers
//! over libdlm and corosync, where the daemon's `unsafe` lives), `fencing` (acting on QEMU
//! processes). This crate has no `unsafe` of its own.
//!
//! Where things live:
//! - `naming`: disk and lease identities, and the DLM resource names made from them.
//! - `config`: virtdlmd's configuration file.
//! - `journal`: the journal format (who owns which lock, across daemon restarts).
//! - `owner`: recognising a QEMU process (pid + start time) and noticing its exit (pidfd).
//! - `registry`: owners and their locks; acquire all-or-nothing, release, restore.
//! - `unreleased`: releases the backend refused, retried until it lets go.
//! - `server`: the sockets (SO_PEERCRED, framing); `daemon`: start-up order and shutdown.
//! - `cluster`: membership verdict and the cluster-wide lock inventory over CPG.
//! - `lockloss`: stopping VMs whose locks are lost, refusing grants until membership is safe.
//! - `membership_task`: the CPG + quorum driver publishing this node's membership verdict.
//! - `backend`: where a lock lives (`local`, `dlm`); `backend_guard`: no silent `local` in a cluster.
#![forbid(unsafe_code)]

pub mod backend;
pub mod backend_guard;
pub mod cluster;
pub mod config;
pub mod controld;
pub mod daemon;
pub mod journal;
pub mod journal_lock;
pub mod lockloss;
pub mod membership_task;
pub mod naming;
pub mod owner;
pub mod quarantine;
pub mod registry;
pub mod server;
pub mod unreleased;
