//! Lock modes and request flags, as the DLM numbers them.

use std::fmt;
use std::ops::BitOr;

/// A DLM lock mode (`LKM_*MODE`). NL and PW exist here for anchors and completeness; virt-dlm's
/// disks use CR, CW, PR and EX (the mode table, `proto::mode`, maps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LockMode {
    Nl = 0,
    Cr = 1,
    Cw = 2,
    Pr = 3,
    Pw = 4,
    Ex = 5,
}

impl LockMode {
    pub(super) fn raw(self) -> u32 {
        self as u32
    }

    /// Whether an unlock from this mode may write the lock value block (PW, EX).
    pub fn writes_lvb_on_unlock(self) -> bool {
        matches!(self, LockMode::Pw | LockMode::Ex)
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Nl => "NL",
            LockMode::Cr => "CR",
            LockMode::Cw => "CW",
            LockMode::Pr => "PR",
            LockMode::Pw => "PW",
            LockMode::Ex => "EX",
        })
    }
}

impl std::str::FromStr for LockMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "NL" => LockMode::Nl,
            "CR" => LockMode::Cr,
            "CW" => LockMode::Cw,
            "PR" => LockMode::Pr,
            "PW" => LockMode::Pw,
            "EX" => LockMode::Ex,
            _ => return Err(format!("unknown DLM mode {s:?} (NL, CR, CW, PR, PW or EX)")),
        })
    }
}

/// Flags a caller may pass with a request or conversion. `CONVERT`, `ORPHAN` and `CANCEL` are
/// set by the wrapper itself; value blocks are not used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockFlags(u32);

impl LockFlags {
    pub const NONE: LockFlags = LockFlags(0);
    /// `LKF_NOQUEUE`: fail at once (`WouldBlock`) instead of waiting behind a conflict.
    pub const NOQUEUE: LockFlags = LockFlags(dlm_sys::LKF_NOQUEUE);
    /// `LKF_PERSISTENT`: on process exit the lock stays as an orphan instead of being unlocked.
    /// Every conversion replaces the flags: pass it again on each convert to keep it.
    pub const PERSISTENT: LockFlags = LockFlags(dlm_sys::LKF_PERSISTENT);
    /// `LKF_EXPEDITE`: grant a new NL request at once, ahead of queued requests.
    pub const EXPEDITE: LockFlags = LockFlags(dlm_sys::LKF_EXPEDITE);

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn contains(self, other: LockFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for LockFlags {
    type Output = LockFlags;
    fn bitor(self, rhs: LockFlags) -> LockFlags {
        LockFlags(self.0 | rhs.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_have_the_kernel_numbers() {
        assert_eq!(LockMode::Nl.raw(), dlm_sys::LKM_NLMODE);
        assert_eq!(LockMode::Cr.raw(), dlm_sys::LKM_CRMODE);
        assert_eq!(LockMode::Cw.raw(), dlm_sys::LKM_CWMODE);
        assert_eq!(LockMode::Pr.raw(), dlm_sys::LKM_PRMODE);
        assert_eq!(LockMode::Pw.raw(), dlm_sys::LKM_PWMODE);
        assert_eq!(LockMode::Ex.raw(), dlm_sys::LKM_EXMODE);
    }

    #[test]
    fn only_pw_and_ex_write_the_value_block_on_unlock() {
        let writers: Vec<_> = [LockMode::Nl, LockMode::Cr, LockMode::Cw, LockMode::Pr, LockMode::Pw, LockMode::Ex]
            .into_iter()
            .filter(|m| m.writes_lvb_on_unlock())
            .collect();
        assert_eq!(writers, [LockMode::Pw, LockMode::Ex]);
    }

    #[test]
    fn flags_combine() {
        let f = LockFlags::NOQUEUE | LockFlags::PERSISTENT;
        assert_eq!(f.bits(), 0x81);
        assert!(f.contains(LockFlags::PERSISTENT));
        assert!(!f.contains(LockFlags::EXPEDITE));
        assert_eq!("nl".parse::<LockMode>().unwrap(), LockMode::Nl);
        assert!("XX".parse::<LockMode>().is_err());
    }
}
