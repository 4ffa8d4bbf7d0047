//! dlm.so's qemu-dlm.conf. Properties: no panic; a refusal names a line that exists, and the
//! same line (shifted by one) with the same reason behind a comment line; a valid file, written
//! back in the canonical form, parses to the same settings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtdlm_plugin::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let shifted = format!("# comment\n{text}");
    match (Config::parse(text, "fuzz.conf"), Config::parse(&shifted, "fuzz.conf")) {
        (Ok(cfg), Ok(cfg2)) => {
            assert_eq!(cfg, cfg2);
            let socket = cfg.socket.to_str().expect("parsed from text");
            let canonical = format!("socket = \"{socket}\"\ntimeout_ms = {}\n", cfg.timeout.as_millis());
            assert_eq!(Config::parse(&canonical, "canonical.conf"), Ok(cfg), "{canonical:?}");
        }
        (
            Err(ConfigError::Syntax { line, reason, .. }),
            Err(ConfigError::Syntax { line: line2, reason: reason2, .. }),
        ) => {
            assert!(line >= 1 && line <= text.lines().count(), "line {line} of a {}-line file", text.lines().count());
            assert!(!reason.is_empty());
            assert_eq!((line2, &reason2), (line + 1, &reason));
        }
        (a, b) => panic!("{text:?}: {a:?} but with a comment in front {b:?}"),
    }
});
