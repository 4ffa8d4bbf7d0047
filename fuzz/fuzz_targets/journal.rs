//! The journal replay (what a restarted virtdlmd believes it holds).
//! Input: a mode byte, then either raw journal bytes (odd mode: header, lengths and
//! checksums as given) or record bodies separated by newlines that this target frames with
//! the right header, lengths and checksums (even mode: reaches the JSON and replay logic).
//! Properties: no panic; damage is reported inside the file; salvage (the state before the
//! damage) is exactly what the undamaged prefix replays to; a clean journal rewritten by
//! compaction replays to the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockmgr::journal;
use sha2::{Digest, Sha256};

/// The version 1 layout, as documented in journal.rs.
fn framed(bodies: &[u8]) -> Vec<u8> {
    let mut out = b"virtdlmj".to_vec();
    out.extend_from_slice(&journal::VERSION.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    for body in bodies.split(|&b| b == b'\n').filter(|b| !b.is_empty()) {
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&Sha256::digest(body)[..8]);
        out.extend_from_slice(body);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = if mode & 1 == 1 { rest.to_vec() } else { framed(rest) };
    let (state, damage) = journal::parse(&bytes);
    match damage {
        None => {
            let rewritten = journal::encode(&state);
            assert_eq!(journal::parse(&rewritten), (state, None));
        }
        Some((offset, reason)) => {
            assert!(offset as usize <= bytes.len(), "damage at {offset} of {} bytes", bytes.len());
            assert!(!reason.is_empty());
            if offset as usize >= 16 {
                assert_eq!(journal::parse(&bytes[..offset as usize]), (state, None));
            }
        }
    }
});
