//! `/etc/libvirt/qemu-dlm.conf`: the plugin's settings, in libvirt's virConf syntax.
//!
//! Only the subset the plugin uses is accepted: `key = value` lines, values are double-quoted
//! strings or integers; `#` starts a comment. A missing file means
//! every default. Any other line is an error naming its line number, so a typo never passes
//! silently (libvirtd then refuses to start, which is what a broken lock setup must do).

use proto::DEFAULT_SOCKET;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The plugin's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// virtdlmd's control socket.
    pub socket: PathBuf,
    /// Upper bound on one round trip to virtdlmd (connect, send, answer).
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config { socket: PathBuf::from(DEFAULT_SOCKET), timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS) }
    }
}

/// Default for `timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}:{line}: {reason}")]
    Syntax { path: String, line: usize, reason: String },
}

/// A value as virConf writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Str(String),
    Int(u64),
}

impl Config {
    /// Reads the file at `path`; a file that does not exist gives the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(ConfigError::Read { path: path.display().to_string(), reason: e.to_string() }),
        }
    }

    /// Parses the text of a config file; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let err = |reason: String| ConfigError::Syntax { path: origin.to_string(), line, reason };
            let Some((key, value)) = split_line(raw).map_err(err)? else { continue };
            match (key, value) {
                ("socket", Value::Str(s)) if s.starts_with('/') => cfg.socket = PathBuf::from(s),
                ("socket", _) => return Err(err("socket must be an absolute path in double quotes".into())),
                ("timeout_ms", Value::Int(n)) if n > 0 => cfg.timeout = Duration::from_millis(n),
                ("timeout_ms", _) => return Err(err("timeout_ms must be a positive integer (milliseconds)".into())),
                (other, _) => return Err(err(format!("unknown setting {other:?} (known: socket, timeout_ms)"))),
            }
        }
        Ok(cfg)
    }
}

/// One line: `None` for blank lines and comments, else the key and its value.
fn split_line(raw: &str) -> Result<Option<(&str, Value)>, String> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (key, rest) = line.split_once('=').ok_or("expected `key = value`")?;
    let key = key.trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("invalid setting name {key:?}"));
    }
    let rest = rest.trim();
    let (value, tail) = if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.find('"').ok_or("unterminated string (missing closing \")")?;
        (Value::Str(quoted[..end].to_string()), &quoted[end + 1..])
    } else {
        let end = rest.find(|c: char| c.is_whitespace() || c == '#').unwrap_or(rest.len());
        let word = &rest[..end];
        let n = word.parse::<u64>().map_err(|_| format!("value {word:?} is neither a \"string\" nor an integer"))?;
        (Value::Int(n), &rest[end..])
    };
    let tail = tail.trim();
    if !(tail.is_empty() || tail.starts_with('#')) {
        return Err(format!("unexpected text after the value: {tail:?}"));
    }
    Ok(Some((key, value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_missing_files_give_defaults() {
        assert_eq!(Config::parse("", "x").unwrap(), Config::default());
        assert_eq!(Config::load(Path::new("/nonexistent/qemu-dlm.conf")).unwrap(), Config::default());
        assert_eq!(Config::default().socket, PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn reads_every_key_with_comments() {
        let text = "# header\n\nsocket = \"/tmp/s.sock\"  # trailing\ntimeout_ms=1500\n";
        let cfg = Config::parse(text, "x").unwrap();
        assert_eq!(cfg.socket, PathBuf::from("/tmp/s.sock"));
        assert_eq!(cfg.timeout, Duration::from_millis(1500));
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let cases = [
            ("socket = /tmp/x\n", 1),
            ("\n\ntimeout_ms = \"10\"\n", 3),
            ("# ok\nlock_readonly_disks = 0\n", 2),
            ("sockett = \"/x\"\n", 1),
            ("socket = \"/x\n", 1),
            ("just words\n", 1),
            ("timeout_ms = 0\n", 1),
            ("socket = \"/x\" extra\n", 1),
        ];
        for (text, want) in cases {
            match Config::parse(text, "/etc/libvirt/qemu-dlm.conf") {
                Err(ConfigError::Syntax { line, ref path, .. }) => {
                    assert_eq!(line, want, "{text:?}");
                    assert_eq!(path, "/etc/libvirt/qemu-dlm.conf");
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn the_shipped_example_parses_to_the_defaults() {
        let text = include_str!("../../../deploy/qemu-dlm.conf");
        assert_eq!(Config::parse(text, "deploy/qemu-dlm.conf").unwrap(), Config::default());
    }
}
