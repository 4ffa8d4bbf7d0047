//! Errors of the DLM wrapper.

use super::flags::LockMode;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum DlmError {
    /// The lockspace name is empty, longer than 64 bytes, or contains NUL or '/'.
    #[error("invalid DLM lockspace name {name:?}: {why}")]
    InvalidLockspaceName { name: String, why: &'static str },
    /// The resource name is empty or longer than 64 bytes.
    #[error("invalid DLM resource name {name:?}: {why}")]
    InvalidResourceName { name: String, why: &'static str },
    /// The lockspace was released or closed; its handle and locks are gone from this process.
    #[error("DLM lockspace {0} is released or closed in this process")]
    Released(String),
    /// NOQUEUE request or conversion refused: someone holds the resource in a conflicting mode.
    #[error("DLM resource {0} is held in a conflicting mode")]
    WouldBlock(String),
    /// A conversion was refused to break a conversion deadlock; the lock keeps its old mode.
    #[error("conversion on DLM resource {0} refused: conversion deadlock")]
    Deadlock(String),
    /// A bounded wait ran out and the request was cancelled.
    #[error("timed out waiting for DLM resource {0} (request cancelled)")]
    TimedOut(String),
    /// Adoption found no orphan of that name on this node.
    #[error("no orphan lock on DLM resource {0} on this node")]
    NoOrphan(String),
    /// Adoption found an orphan of that name, but granted in another mode.
    #[error("the orphan lock on DLM resource {resource} is held in another mode than {wanted}")]
    OrphanModeMismatch { resource: String, wanted: LockMode },
    /// Another operation on this lock has not completed yet (only a cancel may overlap it).
    #[error("an operation on the lock on DLM resource {0} is still in progress")]
    Busy(String),
    /// The lock no longer exists (unlocked, refused or cancelled before it was ever granted).
    #[error("the lock on DLM resource {0} no longer exists")]
    Ended(String),
    /// Unlocking a PW/EX lock directly would publish garbage as the lock value block.
    #[error("lock on DLM resource {resource} is {mode}: convert it to NL before unlocking")]
    UnsafeUnlock { resource: String, mode: LockMode },
    /// The kernel answered with a status this wrapper does not expect for the operation.
    #[error("DLM operation on resource {resource} completed with status {status}")]
    Unexpected { resource: String, status: i32 },
    /// This node's DLM node id could not be found in configfs.
    #[error("this node's DLM node id is not in {path}: {why}")]
    NoNodeId { path: String, why: String },
    /// Starting an abandoned lockspace alone failed (see `abandoned.rs`).
    #[error("cannot recover the abandoned lockspace alone ({step} {path}): {source}")]
    Abandoned {
        step: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    /// A libdlm call failed (errno).
    #[error("{call} failed: {source}")]
    Sys {
        call: &'static str,
        #[source]
        source: io::Error,
    },
}

impl DlmError {
    /// The error for a failed libdlm call, from `errno`.
    pub(super) fn last_os(call: &'static str) -> Self {
        DlmError::Sys { call, source: io::Error::last_os_error() }
    }

    /// The errno of a failed libdlm call, if that is what this is.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            DlmError::Sys { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
