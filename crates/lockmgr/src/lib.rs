//! virt-dlm's lock manager: the per-host daemon `virtdlmd`.
//!
//! The layers it stands on are crates of their own: `proto` (the wire protocol the plugin and
//! the `virtdlm` CLI speak, and the lock-mode table), `dlm` and `corosync` (the safe wrappers
//! over libdlm and corosync, where the daemon's `unsafe` lives), `fencing` (acting on QEMU
//! processes). This crate has no `unsafe` of its own.
//!
//! Where things live:
//! - `naming`: disk and lease identities, and the DLM resource names made from them.
//! - `chain`: a disk's qcow2 backing chain (header parsing, following it), locked with the disk.
//! - `config`: virtdlmd's configuration file.
//! - `journal`: the journal format (who owns which lock, across daemon restarts).
//! - `owner`: recognising a QEMU process (pid + start time) and noticing its exit (pidfd).
//! - `registry`: owners and their locks; acquire all-or-nothing, release, restore.
//! - `unreleased`: releases the backend refused, retried until it lets go.
//! - `server`: the sockets (SO_PEERCRED, framing); `daemon`: start-up order and shutdown.
//! - `cluster`: the cluster-wide lock inventory over CPG, and `release --vm` across nodes.
//! - `lockloss`: the lock-loss policy, all of it: when locks are lost (membership verdict,
//!   lockspace, dlm_controld: `lockloss::controld`), stopping the VMs that held them, the grant
//!   hold, and refusing grants while a lost node may still write (`lockloss::quarantine`).
//! - `membership`: the one CPG + quorum driver publishing this node's membership verdict.
//! - `metrics`: the Prometheus metrics, served over HTTP and/or written for node_exporter.
//! - `backend`: where a lock lives (`local`, `dlm`); `backend_guard`: no silent `local` in a cluster.
#![forbid(unsafe_code)]

pub mod backend;
pub mod backend_guard;
pub mod chain;
pub mod cluster;
pub mod config;
pub mod corosync_conf;
pub mod daemon;
pub mod events;
pub mod journal;
pub mod journal_lock;
pub mod lockloss;
pub mod membership;
pub mod metrics;
pub mod naming;
pub mod owner;
pub mod registry;
pub mod server;
pub mod unreleased;
