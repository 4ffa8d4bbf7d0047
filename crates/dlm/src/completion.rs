//! What a completion AST reports, decoded from the lock status block.

/// The result of one request, conversion, unlock or cancel (`sb_status` + `sb_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Granted in the requested mode. `demoted`: `DLM_SBF_DEMOTED`; `lvb_invalid`:
    /// `DLM_SBF_VALNOTVALID`.
    Granted { demoted: bool, lvb_invalid: bool },
    /// NOQUEUE conflict (`EAGAIN`). A refused new request is gone; a refused conversion keeps
    /// its old mode.
    WouldBlock,
    /// Cancelled (`ECANCEL`): the request is gone, or the conversion kept its old mode.
    Cancelled,
    /// Unlocked (`EUNLOCK`): the lock is gone.
    Unlocked,
    /// Conversion deadlock (`EDEADLK`): the conversion was refused, the old mode kept.
    Deadlock,
    /// Any other status (an errno).
    Failed(i32),
}

impl Completion {
    /// Decodes `sb_status` (libdlm has already made it positive) and `sb_flags`.
    pub(super) fn from_status(status: i32, flags: u8) -> Completion {
        const ECANCEL: i32 = dlm_sys::ECANCEL as i32;
        const EUNLOCK: i32 = dlm_sys::EUNLOCK as i32;
        match status {
            0 => Completion::Granted {
                demoted: flags & dlm_sys::DLM_SBF_DEMOTED as u8 != 0,
                lvb_invalid: flags & dlm_sys::DLM_SBF_VALNOTVALID as u8 != 0,
            },
            libc::EAGAIN => Completion::WouldBlock,
            ECANCEL => Completion::Cancelled,
            EUNLOCK => Completion::Unlocked,
            libc::EDEADLK => Completion::Deadlock,
            other => Completion::Failed(other),
        }
    }

    /// A short snake_case name (for logs and machine-readable output).
    pub fn name(&self) -> &'static str {
        match self {
            Completion::Granted { .. } => "granted",
            Completion::WouldBlock => "would_block",
            Completion::Cancelled => "cancelled",
            Completion::Unlocked => "unlocked",
            Completion::Deadlock => "deadlock",
            Completion::Failed(_) => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decode_as_measured_on_the_cluster() {
        assert_eq!(Completion::from_status(0, 0), Completion::Granted { demoted: false, lvb_invalid: false });
        assert_eq!(Completion::from_status(0, 0x2), Completion::Granted { demoted: false, lvb_invalid: true });
        assert_eq!(Completion::from_status(0, 0x1), Completion::Granted { demoted: true, lvb_invalid: false });
        assert_eq!(Completion::from_status(11, 0), Completion::WouldBlock);
        assert_eq!(Completion::from_status(0x10001, 0), Completion::Cancelled);
        assert_eq!(Completion::from_status(0x10002, 0), Completion::Unlocked);
        assert_eq!(Completion::from_status(libc::EDEADLK, 0), Completion::Deadlock);
        assert_eq!(Completion::from_status(libc::EINVAL, 0), Completion::Failed(libc::EINVAL));
    }
}
