//! The lock-mode table: which DLM mode a libvirt disk gets, and which modes coexist.
//!
//! | libvirt disk                    | mode | coexists with                                  |
//! |---------------------------------|------|------------------------------------------------|
//! | plain (exclusive write)         | EX   | nothing                                        |
//! | `<shareable/>` (shared write)   | CW   | other shared writers, tolerant readers (CR)    |
//! | `<readonly/>`                   | PR   | other read-only users (PR, CR); blocks writers |
//! | `<readonly/>` + `<shareable/>`  | CR   | everything but an exclusive writer             |
//!
//! The compatibility matrix is the kernel DLM's (VMS) one, restricted to the four modes used;
//! it was verified on the real cluster (all 36 pairs, including CW/PR being incompatible).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A held lock mode. The numeric values are the DLM's (`LKM_CRMODE` = 1 … `LKM_EXMODE` = 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Mode {
    /// Concurrent read: read-only and shareable.
    Cr = 1,
    /// Concurrent write: shareable writers.
    Cw = 2,
    /// Protected read: read-only, keeps writers out.
    Pr = 3,
    /// Exclusive: one writer, nobody else.
    Ex = 5,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Cr, Mode::Cw, Mode::Pr, Mode::Ex];

    /// The mode for a disk with libvirt's `READONLY` / `SHARED` resource flags.
    pub fn for_disk(readonly: bool, shared: bool) -> Mode {
        match (readonly, shared) {
            (false, false) => Mode::Ex,
            (false, true) => Mode::Cw,
            (true, false) => Mode::Pr,
            (true, true) => Mode::Cr,
        }
    }

    /// Whether a lock in `self` can be granted while another holder has `other`.
    pub fn compatible(self, other: Mode) -> bool {
        use Mode::*;
        match (self, other) {
            (Ex, _) | (_, Ex) => false,
            (Cr, _) | (_, Cr) => true,
            (Cw, Cw) | (Pr, Pr) => true,
            (Cw, Pr) | (Pr, Cw) => false,
        }
    }

    /// The weakest mode that keeps out everything `self` or `other` keeps out: what one owner
    /// must hold when it lists one disk twice (read-only and writable, shared and exclusive).
    /// CW and PR together leave only CR compatible, which none of the four modes is but EX.
    pub fn strongest(self, other: Mode) -> Mode {
        use Mode::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Ex, _) | (_, Ex) | (Cw, Pr) | (Pr, Cw) => Ex,
            (Cr, m) | (m, Cr) => m,
            _ => Ex,
        }
    }

    /// The DLM's numeric mode (`LKM_*MODE`).
    pub fn dlm_mode(self) -> u32 {
        self as u32
    }

    /// The mode's name as the lock table, the logs and the metrics show it (`CR`, `CW`, `PR`, `EX`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Cr => "CR",
            Mode::Cw => "CW",
            Mode::Pr => "PR",
            Mode::Ex => "EX",
        }
    }

    /// What the mode means to a person reading a conflict message or the lock table.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Ex => "exclusively",
            Mode::Cw => "shared-writable",
            Mode::Pr => "read-only (protected)",
            Mode::Cr => "read-only (shared)",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "CR" => Ok(Mode::Cr),
            "CW" => Ok(Mode::Cw),
            "PR" => Ok(Mode::Pr),
            "EX" => Ok(Mode::Ex),
            _ => Err(format!("unknown lock mode {s:?} (expected EX, CW, PR or CR)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_flags_map_to_the_documented_modes() {
        assert_eq!(Mode::for_disk(false, false), Mode::Ex);
        assert_eq!(Mode::for_disk(false, true), Mode::Cw);
        assert_eq!(Mode::for_disk(true, false), Mode::Pr);
        assert_eq!(Mode::for_disk(true, true), Mode::Cr);
    }

    #[test]
    fn compatibility_matches_the_kernel_matrix() {
        // Rows/columns CR, CW, PR, EX of the matrix measured on the real cluster.
        let expect = [
            [true, true, true, false],
            [true, true, false, false],
            [true, false, true, false],
            [false, false, false, false],
        ];
        for (i, a) in Mode::ALL.iter().enumerate() {
            for (j, b) in Mode::ALL.iter().enumerate() {
                assert_eq!(a.compatible(*b), expect[i][j], "{a} vs {b}");
                assert_eq!(a.compatible(*b), b.compatible(*a), "symmetry {a} {b}");
            }
        }
    }

    #[test]
    fn strongest_keeps_out_what_either_keeps_out() {
        for a in Mode::ALL {
            for b in Mode::ALL {
                let s = a.strongest(b);
                assert_eq!(s, b.strongest(a), "symmetry {a} {b}");
                for x in Mode::ALL {
                    if !a.compatible(x) || !b.compatible(x) {
                        assert!(!s.compatible(x), "{a}+{b} gave {s}, which lets {x} in");
                    }
                }
                // And no stronger than needed: the least restrictive such mode of the four.
                let fits =
                    |m: Mode| Mode::ALL.iter().all(|x| m.compatible(*x) <= (a.compatible(*x) && b.compatible(*x)));
                let best = Mode::ALL
                    .iter()
                    .copied()
                    .filter(|m| fits(*m))
                    .max_by_key(|m| Mode::ALL.iter().filter(|x| m.compatible(**x)).count());
                assert_eq!(Some(s), best, "{a}+{b}");
            }
        }
        assert_eq!(Mode::Pr.strongest(Mode::Ex), Mode::Ex);
        assert_eq!(Mode::Cw.strongest(Mode::Pr), Mode::Ex);
    }

    #[test]
    fn parses_what_it_prints() {
        for m in Mode::ALL {
            assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
        }
        assert!("PW".parse::<Mode>().is_err());
    }
}
