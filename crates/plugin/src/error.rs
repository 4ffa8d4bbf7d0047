//! What can go wrong in a plugin call, and how libvirt should classify it.
//!
//! Every failure reaches the user through libvirt's own error reporting (see `abi::report`):
//! the message is the whole explanation, so it names the disk, the holder or the socket.

use crate::config::ConfigError;
use proto::ErrorCode;

/// libvirt's error domain for lock drivers (`VIR_FROM_LOCKING`, shown as "Lock Driver error").
pub const VIR_FROM_LOCKING: i32 = 42;
/// `VIR_ERR_INTERNAL_ERROR`.
pub const VIR_ERR_INTERNAL_ERROR: i32 = 1;
/// `VIR_ERR_OPERATION_FAILED`.
pub const VIR_ERR_OPERATION_FAILED: i32 = 9;
/// `VIR_ERR_CONF_SYNTAX`.
pub const VIR_ERR_CONF_SYNTAX: i32 = 33;
/// `VIR_ERR_CONFIG_UNSUPPORTED`.
pub const VIR_ERR_CONFIG_UNSUPPORTED: i32 = 67;
/// `VIR_ERR_OPERATION_TIMEOUT`.
pub const VIR_ERR_OPERATION_TIMEOUT: i32 = 68;
/// `VIR_ERR_RESOURCE_BUSY` (shown as "resource busy").
pub const VIR_ERR_RESOURCE_BUSY: i32 = 87;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// libvirt called the plugin in a way this version does not support.
    #[error("{0}")]
    Unsupported(String),
    /// A call that breaks the lock-driver contract (missing owner parameter, bad string).
    #[error("{0}")]
    BadCall(String),
    #[error("cannot reach virtdlmd at {socket}: {reason} (is virtdlmd running? `systemctl status virtdlmd`)")]
    Unreachable { socket: String, reason: String },
    #[error("virtdlmd at {socket} did not answer within {ms} ms")]
    Timeout { socket: String, ms: u128 },
    #[error("unexpected answer from virtdlmd: {0}")]
    Protocol(String),
    /// virtdlmd refused; its message says why.
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    #[error("internal error in dlm.so: {0}")]
    Internal(String),
}

impl PluginError {
    /// The `virErrorNumber` libvirt shows for this error.
    pub fn virt_code(&self) -> i32 {
        match self {
            PluginError::Config(_) => VIR_ERR_CONF_SYNTAX,
            PluginError::Unsupported(_) => VIR_ERR_CONFIG_UNSUPPORTED,
            PluginError::Timeout { .. } => VIR_ERR_OPERATION_TIMEOUT,
            PluginError::Refused { code: ErrorCode::Conflict, .. } => VIR_ERR_RESOURCE_BUSY,
            PluginError::Unreachable { .. } | PluginError::Refused { .. } => VIR_ERR_OPERATION_FAILED,
            PluginError::BadCall(_) | PluginError::Protocol(_) | PluginError::Internal(_) => VIR_ERR_INTERNAL_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_resource_busy_and_the_rest_is_not() {
        let busy = PluginError::Refused { code: ErrorCode::Conflict, message: "m".into() };
        assert_eq!(busy.virt_code(), VIR_ERR_RESOURCE_BUSY);
        assert_eq!(busy.to_string(), "m");
        let down = PluginError::Unreachable { socket: "/s".into(), reason: "No such file".into() };
        assert_eq!(down.virt_code(), VIR_ERR_OPERATION_FAILED);
        assert!(down.to_string().contains("/s"));
        assert_eq!(PluginError::Unsupported("x".into()).virt_code(), VIR_ERR_CONFIG_UNSUPPORTED);
    }
}
