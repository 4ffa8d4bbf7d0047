//! The DLM's lock modes and their compatibility, written here from the DLM's own matrix
//! (linux fs/dlm/lock.c `__dlm_compat_matrix`, the VMS lock manager's table), not taken
//! from the daemon: a checker that reused the daemon's table would share its mistakes.
//!
//! ```text
//!        NL CR CW PR PW EX
//!   NL    1  1  1  1  1  1
//!   CR    1  1  1  1  1  0
//!   CW    1  1  1  0  0  0
//!   PR    1  1  0  1  0  0
//!   PW    1  1  0  0  0  0
//!   EX    1  0  0  0  0  0
//! ```

const NAMES: [&str; 6] = ["NL", "CR", "CW", "PR", "PW", "EX"];

const MATRIX: [[bool; 6]; 6] = [
    [true, true, true, true, true, true],
    [true, true, true, true, true, false],
    [true, true, true, false, false, false],
    [true, true, false, true, false, false],
    [true, true, false, false, false, false],
    [true, false, false, false, false, false],
];

fn index(mode: &str) -> Option<usize> {
    NAMES.iter().position(|n| n.eq_ignore_ascii_case(mode))
}

/// Whether holders in modes `a` and `b` may hold one resource at once; an unknown mode is
/// compatible with nothing (the checker assumes the worst).
pub fn compatible(a: &str, b: &str) -> bool {
    match (index(a), index(b)) {
        (Some(i), Some(j)) => MATRIX[i][j],
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_is_symmetric_and_matches_the_dlm() {
        for a in NAMES {
            for b in NAMES {
                assert_eq!(compatible(a, b), compatible(b, a), "{a}/{b}");
            }
        }
        assert!(!compatible("EX", "PR") && !compatible("EX", "CR") && compatible("EX", "NL"));
        assert!(compatible("PR", "PR") && !compatible("PR", "CW") && compatible("CW", "CW"));
        assert!(compatible("CR", "PW") && !compatible("PW", "PW") && !compatible("XX", "NL"));
    }
}
