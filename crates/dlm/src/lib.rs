//! Safe wrapper over libdlm (the `libdlm_lt` flavour: no library threads), over the raw
//! bindings of `dlm-sys`. It knows nothing of VMs, disks or the daemon: virtdlmd's DLM backend
//! (`lockmgr::backend::dlm`) is its user.
//!
//! Only the asynchronous calls are used (`dlm_ls_lock`, `dlm_ls_lockx`, `dlm_ls_unlock`,
//! `dlm_ls_purge`); their completions (ASTs) are read by one dispatcher thread per lockspace that
//! polls the lockspace fd and calls `dlm_dispatch`. The `*_wait` calls are never used: their
//! behaviour differs between libdlm flavours and they hang without an AST thread.
//!
//! - [`Lockspace`] (`lockspace.rs`) owns the libdlm handle: create, open, release, close, purge.
//! - [`Lock`] (`lock.rs`) owns one lock's status block: request, convert, unlock, cancel, adopt.
//! - `dispatch.rs`: the dispatcher thread and the C callbacks (ASTs, BASTs).
//! - [`Completion`] (`completion.rs`): what an AST reports.
//! - [`LockMode`], [`LockFlags`] (`flags.rs`); [`LockspaceName`], [`ResourceName`] (`name.rs`):
//!   validated before anything reaches the C library.
//! - [`local_nodeid`] (`node.rs`): this node's DLM id, from configfs.
//! - [`abandoned`]: a lockspace dlm_controld left stopped when this node was removed from the
//!   cluster, started with this node alone so that it can be released.
//!
//! Every lock call can block while the lockspace is stopped for recovery (membership change,
//! quorum loss), and creating a lockspace blocks until it has joined: call this module from
//! threads that may block, never from an async executor thread.
//!
//! Release order: convert to NL, then unlock ([`Lock::release`]). libdlm's unlock sends 32
//! bytes of uninitialised stack as the lock value block, which the kernel stores when the lock
//! was PW or EX; [`Lock::unlock`] therefore refuses to unlock those modes directly.

pub mod abandoned;
mod cell;
mod completion;
mod dispatch;
mod error;
mod flags;
mod handle;
mod lock;
mod lockspace;
mod name;
mod node;

pub use completion::Completion;
pub use error::DlmError;
pub use flags::{LockFlags, LockMode};
pub use lock::Lock;
pub use lockspace::{Lockspace, ReleaseOutcome};
pub use name::{LockspaceName, ResourceName};
pub use node::local_nodeid;

pub type Result<T, E = DlmError> = std::result::Result<T, E>;
