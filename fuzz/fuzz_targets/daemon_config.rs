//! virtdlmd.conf. Properties: no panic; every refusal names a line that exists, and the
//! same line (shifted by one) with the same reason once a comment line is put in front;
//! a comment line in front of a valid file keeps it valid, and no value keeps its quote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockmgr::config::{Config, ConfigError};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("fuzz.conf");
    let shifted = format!("# comment\n{text}");
    match (Config::parse(text, path), Config::parse(&shifted, path)) {
        (Ok(c), Ok(_)) => {
            // Quotes delimit a value; they never end up in one at its edge.
            for v in [&c.node_name, &c.fencing.virsh, &c.lockspace, &c.cluster_group] {
                assert!(!v.starts_with('"'), "{text:?} gave the value {v:?}");
            }
        }
        (Err(ConfigError::Line { line, reason, .. }), Err(ConfigError::Line { line: line2, reason: reason2, .. })) => {
            assert!(line >= 1 && line <= text.lines().count(), "line {line} of a {}-line file", text.lines().count());
            assert!(!reason.is_empty());
            assert_eq!((line2, &reason2), (line + 1, &reason));
        }
        (a, b) => panic!("{text:?}: {:?} but with a comment in front {:?}", a.map(|_| ()), b.map(|_| ())),
    }
});
