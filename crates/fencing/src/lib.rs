//! Carries out libvirt's `<on_lockfailure>` actions on QEMU processes when their locks are lost.
//!
//! This crate knows nothing of DLM or Corosync: the daemon decides *that* locks are lost and
//! hands over the affected VMs as [`Target`]s; this crate decides *how* they stop, with the
//! escalation sanlock uses: ask (SIGTERM), insist (SIGKILL), and when a process outlives even
//! that, stop petting the watchdog so the host resets before the survivors' fencing delay ends.
//!
//! - `action`: the failure actions and what each one does here.
//! - `process`: a QEMU process pinned by a pidfd (a reused pid is never signalled).
//! - `escalate`: the escalation itself, one small function.
//! - `libvirt`: suspending a VM through libvirt for the `pause` action.
//! - `watchdog`: the hardware watchdog, or an explicit "none" that only logs.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod action;
pub mod escalate;
pub mod libvirt;
pub mod process;
pub mod watchdog;

pub use action::Action;
pub use escalate::{Fencer, FencerConfig, Outcome, Report};
pub use process::{PidProcess, Process, Target};
pub use watchdog::Watchdog;
