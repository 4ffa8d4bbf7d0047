//! virtdlmd's configuration file: `key = value` lines, `#` starts a comment, blank lines are
//! ignored. Every key, its default and its meaning are in `deploy/virtdlmd.conf`.
//! An unknown key, a repeated single-valued key or a bad value stops the daemon at start
//! with the line number and the reason: a typo must never silently leave a default in force.
//!
//! The lines are split here (libvirt's syntax: values bare or in double quotes); their meaning
//! is serde's: [`FileConfig`] is the file as a typed struct, unknown keys refused. Each line is
//! first read alone into it, so that an error names its line; then the whole file.

use crate::naming::{parse_path_map_rule, PathMap};
use proto::{DEFAULT_ADMIN_SOCKET, DEFAULT_SOCKET};
use serde::{de, Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG: &str = "/etc/virt-dlm/virtdlmd.conf";
pub const DEFAULT_JOURNAL: &str = "/run/virt-dlm/journal";
/// The CPG group of the cluster-wide lock inventory (`cluster`).
pub const DEFAULT_CLUSTER_GROUP: &str = "virtdlm";

/// Every key the file may set.
pub const KEYS: &[&str] = &[
    "backend",
    "socket",
    "admin_socket",
    "journal",
    "journal_compact_bytes",
    "recover_journal",
    "node_name",
    "lockspace",
    "path_map",
    "lock_readonly",
    "backing_chains",
    "allowed_uids",
    "allowed_gid",
    "read_timeout_ms",
    "fence_grace_ms",
    "fence_kill_wait_ms",
    "fence_pause_timeout_ms",
    "allow_ignore",
    "watchdog",
    "virsh",
    "grant_hold_ms",
    "watchdog_timeout_ms",
    "cluster",
    "cluster_group",
    "metrics_listen",
    "metrics_textfile",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Local,
    Dlm,
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(BackendKind::Local),
            "dlm" => Ok(BackendKind::Dlm),
            _ => Err(format!("unknown backend {s:?} (expected local or dlm)")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub backend: BackendKind,
    /// The operator wrote `backend` (file or `--backend`). An unset backend is `local`, which
    /// virtdlmd refuses on a multi-node corosync host (crate::backend_guard).
    pub backend_explicit: bool,
    pub socket: PathBuf,
    pub admin_socket: PathBuf,
    pub journal: PathBuf,
    /// Name this node reports in lock tables and conflict messages.
    pub node_name: String,
    /// DLM lockspace used by the `dlm` backend.
    pub lockspace: String,
    pub path_map: PathMap,
    pub lock_readonly: bool,
    /// Whether the backing images of each qcow2 disk are locked (PR) with it (crate::chain).
    pub backing_chains: bool,
    /// Peers (by uid) allowed on the control socket; root is always allowed.
    pub allowed_uids: Vec<u32>,
    /// Peers whose primary gid is this may also use the control socket (the socket is then
    /// made group-accessible).
    pub allowed_gid: Option<u32>,
    /// Time a client has to send the rest of a frame once it started one.
    pub read_timeout: Duration,
    /// The journal is rewritten when it grows past this many bytes.
    pub journal_compact_bytes: u64,
    /// Start even if the journal is damaged, keeping its valid prefix.
    pub recover_journal: bool,
    /// Lock loss: SIGTERM→SIGKILL grace, SIGKILL→watchdog wait, libvirt suspend timeout,
    /// whether `ignore` is honoured, the virsh binary (crates/fencing).
    pub fencing: fencing::FencerConfig,
    /// The watchdog device fired when a VM survives SIGKILL; `None` = no watchdog (`none`).
    pub watchdog: Option<PathBuf>,
    /// After a membership change, grants wait this long; `None`: see [`Config::default_grant_hold`].
    pub grant_hold: Option<Duration>,
    /// How long the watchdog takes to reset a host once it fired; `None`: as the device
    /// reports it (`WDIOC_GETTIMEOUT`), 0 without a watchdog.
    pub watchdog_timeout: Option<Duration>,
    /// Join the CPG inventory group (membership verdict, cluster-wide lock table).
    /// `None`: on for the `dlm` backend, off for `local`.
    pub cluster: Option<bool>,
    /// The inventory's CPG group.
    pub cluster_group: String,
    /// Serve the Prometheus metrics over HTTP (`GET /metrics`) on this address; `None`: off.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Write the Prometheus metrics to this file for node_exporter's textfile collector;
    /// `None`: off.
    pub metrics_textfile: Option<PathBuf>,
}

impl Config {
    /// The grant hold when `grant_hold_ms` is unset: the longest a cut-off node's VM may still
    /// write after the membership changed. That is the escalation bound (pause + grace +
    /// kill_wait), then, for a VM that survived SIGKILL, the watchdog's own timeout until the
    /// host resets (`watchdog_timeout`: the configured one, else what the device reports),
    /// plus 1 s for the time between the change and the loss handling.
    pub fn default_grant_hold(&self, device_timeout: Option<Duration>) -> Duration {
        let watchdog = self.watchdog_timeout.or(device_timeout).unwrap_or_default();
        self.fencing.bound() + watchdog + Duration::from_secs(1)
    }

    /// Whether the daemon joins the cluster (see [`Config::cluster`]).
    pub fn cluster_enabled(&self) -> bool {
        self.cluster.unwrap_or(self.backend == BackendKind::Dlm)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: BackendKind::Local,
            backend_explicit: false,
            socket: DEFAULT_SOCKET.into(),
            admin_socket: DEFAULT_ADMIN_SOCKET.into(),
            journal: DEFAULT_JOURNAL.into(),
            node_name: host_name(),
            lockspace: "virtdlm".into(),
            path_map: PathMap::default(),
            lock_readonly: true,
            backing_chains: true,
            allowed_uids: vec![0],
            allowed_gid: None,
            read_timeout: Duration::from_secs(5),
            journal_compact_bytes: 1 << 20,
            recover_journal: false,
            fencing: fencing::FencerConfig::default(),
            watchdog: None,
            grant_hold: None,
            watchdog_timeout: None,
            cluster: None,
            cluster_group: DEFAULT_CLUSTER_GROUP.into(),
            metrics_listen: None,
            metrics_textfile: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {reason}")]
    Line { path: PathBuf, line: usize, reason: String },
}

impl Config {
    /// Loads `path`. A missing file is fine only when it is the default path (no config =
    /// defaults); a file named on the command line must exist.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read { path: path.into(), source }),
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut all = serde_json::Map::new();
        for (i, raw) in text.lines().enumerate() {
            let err = |reason: String| ConfigError::Line { path: path.into(), line: i + 1, reason };
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            let (key, value) =
                line.split_once('=').ok_or_else(|| err(format!("expected `key = value`, got {line:?}")))?;
            let (key, value) = (key.trim(), value.trim());
            // Values may be quoted like libvirt's config files.
            let value = serde_json::Value::String(unquote(value).map_err(err)?.to_owned());
            // This line alone: an unknown key or a bad value is reported with its line.
            let value = if key == "path_map" { serde_json::Value::Array(vec![value]) } else { value };
            let one = serde_json::Map::from_iter([(key.to_owned(), value.clone())]);
            if let Err(e) = FileConfig::deserialize(serde_json::Value::Object(one)) {
                return Err(err(line_error(key, &e.to_string())));
            }
            match all.get_mut(key) {
                Some(serde_json::Value::Array(rules)) if key == "path_map" => {
                    rules.extend(value.as_array().cloned().unwrap_or_default())
                }
                Some(_) => return Err(err(format!("{key} is set twice"))),
                None => {
                    all.insert(key.to_owned(), value);
                }
            }
        }
        let file = FileConfig::deserialize(serde_json::Value::Object(all)).map_err(|e| ConfigError::Line {
            path: path.into(),
            line: 0,
            reason: e.to_string(),
        })?;
        Ok(file.into_config())
    }
}

/// The reason a line is refused, in the words of this file's syntax ("key", not "field").
fn line_error(key: &str, serde: &str) -> String {
    if serde.starts_with("unknown field") {
        format!("unknown key {key:?} (known: {})", KEYS.join(", "))
    } else {
        format!("{key}: {serde}")
    }
}

/// The file as serde reads it: every key optional (a missing key keeps its default), unknown
/// keys refused. Values are text in the file; each field's reader checks its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default, deserialize_with = "backend")]
    backend: Option<BackendKind>,
    #[serde(default, deserialize_with = "abs_path")]
    socket: Option<PathBuf>,
    #[serde(default, deserialize_with = "abs_path")]
    admin_socket: Option<PathBuf>,
    #[serde(default, deserialize_with = "abs_path")]
    journal: Option<PathBuf>,
    #[serde(default, deserialize_with = "number::<_, u64, 4096, { u64::MAX }>")]
    journal_compact_bytes: Option<u64>,
    #[serde(default, deserialize_with = "boolean")]
    recover_journal: Option<bool>,
    #[serde(default, deserialize_with = "node_name")]
    node_name: Option<String>,
    #[serde(default, deserialize_with = "lockspace")]
    lockspace: Option<String>,
    #[serde(default, deserialize_with = "path_map")]
    path_map: Vec<(PathBuf, PathBuf)>,
    #[serde(default, deserialize_with = "boolean")]
    lock_readonly: Option<bool>,
    #[serde(default, deserialize_with = "boolean")]
    backing_chains: Option<bool>,
    #[serde(default, deserialize_with = "uids")]
    allowed_uids: Option<Vec<u32>>,
    #[serde(default, deserialize_with = "number::<_, u32, 0, { u32::MAX as u64 }>")]
    allowed_gid: Option<u32>,
    #[serde(default, deserialize_with = "ms::<_, 100, 600_000>")]
    read_timeout_ms: Option<Duration>,
    #[serde(default, deserialize_with = "ms::<_, 0, 600_000>")]
    fence_grace_ms: Option<Duration>,
    #[serde(default, deserialize_with = "ms::<_, 100, 600_000>")]
    fence_kill_wait_ms: Option<Duration>,
    #[serde(default, deserialize_with = "ms::<_, 100, 600_000>")]
    fence_pause_timeout_ms: Option<Duration>,
    #[serde(default, deserialize_with = "boolean")]
    allow_ignore: Option<bool>,
    /// `none`, or the device.
    #[serde(default, deserialize_with = "watchdog")]
    watchdog: Option<Option<PathBuf>>,
    #[serde(default, deserialize_with = "program")]
    virsh: Option<String>,
    #[serde(default, deserialize_with = "ms::<_, 0, 600_000>")]
    grant_hold_ms: Option<Duration>,
    #[serde(default, deserialize_with = "ms::<_, 0, 600_000>")]
    watchdog_timeout_ms: Option<Duration>,
    #[serde(default, deserialize_with = "boolean")]
    cluster: Option<bool>,
    #[serde(default, deserialize_with = "cluster_group")]
    cluster_group: Option<String>,
    #[serde(default, deserialize_with = "listen")]
    metrics_listen: Option<std::net::SocketAddr>,
    #[serde(default, deserialize_with = "abs_path")]
    metrics_textfile: Option<PathBuf>,
}

impl FileConfig {
    fn into_config(self) -> Config {
        let mut c = Config::default();
        if let Some(b) = self.backend {
            c.backend = b;
            c.backend_explicit = true;
        }
        let set = |slot: &mut PathBuf, v: Option<PathBuf>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut c.socket, self.socket);
        set(&mut c.admin_socket, self.admin_socket);
        set(&mut c.journal, self.journal);
        c.journal_compact_bytes = self.journal_compact_bytes.unwrap_or(c.journal_compact_bytes);
        c.recover_journal = self.recover_journal.unwrap_or(c.recover_journal);
        c.node_name = self.node_name.unwrap_or(c.node_name);
        c.lockspace = self.lockspace.unwrap_or(c.lockspace);
        c.path_map = PathMap::new(self.path_map);
        c.lock_readonly = self.lock_readonly.unwrap_or(c.lock_readonly);
        c.backing_chains = self.backing_chains.unwrap_or(c.backing_chains);
        if let Some(mut uids) = self.allowed_uids {
            // Root is always allowed.
            if !uids.contains(&0) {
                uids.push(0);
            }
            c.allowed_uids = uids;
        }
        c.allowed_gid = self.allowed_gid;
        c.read_timeout = self.read_timeout_ms.unwrap_or(c.read_timeout);
        c.fencing.grace = self.fence_grace_ms.unwrap_or(c.fencing.grace);
        c.fencing.kill_wait = self.fence_kill_wait_ms.unwrap_or(c.fencing.kill_wait);
        c.fencing.pause_timeout = self.fence_pause_timeout_ms.unwrap_or(c.fencing.pause_timeout);
        c.fencing.allow_ignore = self.allow_ignore.unwrap_or(c.fencing.allow_ignore);
        c.watchdog = self.watchdog.unwrap_or(c.watchdog);
        c.fencing.virsh = self.virsh.unwrap_or(c.fencing.virsh);
        c.grant_hold = self.grant_hold_ms;
        c.watchdog_timeout = self.watchdog_timeout_ms;
        c.cluster = self.cluster;
        c.cluster_group = self.cluster_group.unwrap_or(c.cluster_group);
        c.metrics_listen = self.metrics_listen;
        c.metrics_textfile = self.metrics_textfile;
        c
    }
}

/// A value's text, checked by `check`.
fn text<'de, D: Deserializer<'de>, T>(
    d: D,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error> {
    let v = String::deserialize(d)?;
    check(&v).map(Some).map_err(de::Error::custom)
}

fn backend<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BackendKind>, D::Error> {
    text(d, str::parse)
}

fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    text(d, parse_bool)
}

fn abs_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    text(d, abs)
}

fn number<'de, D: Deserializer<'de>, T: TryFrom<u64>, const MIN: u64, const MAX: u64>(
    d: D,
) -> Result<Option<T>, D::Error> {
    text(d, |v| {
        let n: u64 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
        if !(MIN..=MAX).contains(&n) {
            return Err(format!("{n} is outside {MIN}..={MAX}"));
        }
        T::try_from(n).map_err(|_| format!("{n} is too large"))
    })
}

fn ms<'de, D: Deserializer<'de>, const MIN: u64, const MAX: u64>(d: D) -> Result<Option<Duration>, D::Error> {
    text(d, |v| {
        let ms: u64 = v.parse().map_err(|_| format!("{v:?} is not a number of milliseconds"))?;
        if !(MIN..=MAX).contains(&ms) {
            return Err(format!("{ms} is outside {MIN}..={MAX}"));
        }
        Ok(Duration::from_millis(ms))
    })
}

fn node_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    text(d, |v| {
        if v.is_empty() || v.len() > 64 || v.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            return Err(format!("{v:?} must be 1..=64 characters without spaces"));
        }
        Ok(v.to_owned())
    })
}

fn lockspace<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    text(d, |v| {
        if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
            return Err(format!("{v:?} must be 1..=64 of [A-Za-z0-9_-]"));
        }
        Ok(v.to_owned())
    })
}

fn cluster_group<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    text(d, |v| {
        if v.is_empty() || v.len() > 128 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(format!("{v:?} must be 1..=128 of [A-Za-z0-9_.-]"));
        }
        Ok(v.to_owned())
    })
}

/// `metrics_listen`: `ADDRESS:PORT` (`[v6]:PORT`), `localhost:PORT`, or a port alone
/// (localhost).
fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::net::SocketAddr>, D::Error> {
    use std::net::{Ipv4Addr, SocketAddr};
    text(d, |v| {
        let bad = || format!("{v:?} is not ADDRESS:PORT, localhost:PORT or a port");
        let addr = if let Ok(port) = v.parse::<u16>() {
            SocketAddr::from((Ipv4Addr::LOCALHOST, port))
        } else if let Some(port) = v.strip_prefix("localhost:") {
            SocketAddr::from((Ipv4Addr::LOCALHOST, port.parse::<u16>().map_err(|_| bad())?))
        } else {
            v.parse::<SocketAddr>().map_err(|_| bad())?
        };
        if addr.port() == 0 {
            return Err(format!("{v:?}: the port must not be 0"));
        }
        Ok(addr)
    })
}

fn program<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    text(d, |v| if v.is_empty() { Err("must name a program".into()) } else { Ok(v.to_owned()) })
}

fn watchdog<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<PathBuf>>, D::Error> {
    text(d, |v| if v == "none" { Ok(None) } else { abs(v).map(Some) })
}

fn uids<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u32>>, D::Error> {
    text(d, |v| v.split(',').map(|u| u.trim().parse::<u32>().map_err(|_| format!("{u:?} is not a uid"))).collect())
}

/// `path_map` may be given on many lines: one rule each.
fn path_map<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(PathBuf, PathBuf)>, D::Error> {
    Vec::<String>::deserialize(d)?.iter().map(|r| parse_path_map_rule(r).map_err(de::Error::custom)).collect()
}

/// The line up to its comment: a `#` outside double quotes (`virsh = "/opt/a#b"` keeps it).
fn strip_comment(raw: &str) -> &str {
    let mut quoted = false;
    for (i, c) in raw.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &raw[..i],
            _ => {}
        }
    }
    raw
}

/// A value as written: bare, or in one pair of double quotes.
fn unquote(v: &str) -> Result<&str, String> {
    match v.strip_prefix('"') {
        None => Ok(v),
        Some(rest) => match rest.strip_suffix('"') {
            Some(inner) if !inner.contains('"') => Ok(inner),
            _ => Err(format!("value {v:?} has an unmatched or misplaced double quote")),
        },
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(format!("{v:?} is not a boolean (true or false)")),
    }
}

fn abs(v: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(v);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(format!("{v:?} is not an absolute path"))
    }
}

/// The kernel's host name (what `uname -n` prints).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.conf"))
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = parse("# nothing\n\n").unwrap();
        assert_eq!(c.backend, BackendKind::Local);
        assert!(c.lock_readonly);
        assert!(c.backing_chains);
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.allowed_uids, vec![0]);
    }

    #[test]
    fn every_key_parses() {
        let c = parse(
            "backend = dlm\nsocket = /tmp/s\nadmin_socket = \"/tmp/a\"\njournal = /tmp/j # inline comment\n\
             node_name = hv2\nlockspace = vms\npath_map = /mnt/a:/shared\npath_map = /mnt/b:/other\n\
             lock_readonly = false\nbacking_chains = no\nallowed_uids = 107, 108\nallowed_gid = 64055\nread_timeout_ms = 2000\n\
             journal_compact_bytes = 65536\nrecover_journal = yes\nfence_grace_ms = 1500\nfence_kill_wait_ms = 700\n\
             fence_pause_timeout_ms = 900\nallow_ignore = true\nwatchdog = none\nvirsh = /usr/bin/virsh\ngrant_hold_ms = 4000\n",
        )
        .unwrap();
        assert_eq!(c.backend, BackendKind::Dlm);
        assert_eq!(c.admin_socket, PathBuf::from("/tmp/a"));
        assert_eq!(c.journal, PathBuf::from("/tmp/j"));
        assert_eq!(c.node_name, "hv2");
        assert_eq!(c.path_map.apply(Path::new("/mnt/b/x")), PathBuf::from("/other/x"));
        assert!(!c.lock_readonly);
        assert!(!c.backing_chains);
        assert_eq!(c.allowed_uids, vec![107, 108, 0]);
        assert_eq!(c.allowed_gid, Some(64055));
        assert_eq!(c.read_timeout, Duration::from_secs(2));
        assert!(c.recover_journal);
        assert_eq!(c.fencing.grace, Duration::from_millis(1500));
        assert_eq!(c.fencing.kill_wait, Duration::from_millis(700));
        assert_eq!(c.fencing.pause_timeout, Duration::from_millis(900));
        assert!(c.fencing.allow_ignore);
        assert_eq!(c.watchdog, None);
        assert_eq!(c.fencing.virsh, "/usr/bin/virsh");
        assert_eq!(c.grant_hold, Some(Duration::from_secs(4)));
        assert_eq!(parse("watchdog = /dev/watchdog1").unwrap().watchdog, Some(PathBuf::from("/dev/watchdog1")));
    }

    /// The default hold covers a VM that survives SIGKILL until its host's watchdog resets
    /// it. Break it: leave the watchdog timeout out of `default_grant_hold` (as before): this
    /// test fails with "left: 6s, right: 66s" (checked).
    #[test]
    fn the_default_hold_includes_the_watchdog_timeout() {
        let c = parse("watchdog = /dev/watchdog\n").unwrap();
        let bound = c.fencing.bound();
        assert_eq!(c.default_grant_hold(None), bound + Duration::from_secs(1), "no timeout known");
        assert_eq!(c.default_grant_hold(Some(Duration::from_secs(60))), bound + Duration::from_secs(61));
        let c = parse("watchdog = /dev/watchdog\nwatchdog_timeout_ms = 10000\n").unwrap();
        assert_eq!(
            c.default_grant_hold(Some(Duration::from_secs(60))),
            bound + Duration::from_secs(11),
            "the configured one wins"
        );
        assert_eq!(parse("").unwrap().default_grant_hold(None), Duration::from_secs(6), "the documented default");
    }

    fn line_of(e: ConfigError) -> (usize, String) {
        match e {
            ConfigError::Line { line, reason, .. } => (line, reason),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let (line, reason) = line_of(parse("backend = local\n\n lock_read_only = false\n").unwrap_err());
        assert_eq!(line, 3);
        assert!(reason.contains("unknown key \"lock_read_only\""), "{reason}");
    }

    #[test]
    fn bad_values_are_refused_with_their_line() {
        for (text, want_line, want) in [
            ("lock_readonly = maybe", 1, "not a boolean"),
            ("#\nbackend = sanlock", 2, "unknown backend"),
            ("socket = relative.sock", 1, "not an absolute path"),
            ("read_timeout_ms = 5", 1, "outside"),
            ("fence_kill_wait_ms = 5", 1, "outside"),
            ("fence_grace_ms = soon", 1, "not a number"),
            ("watchdog = dev/watchdog", 1, "not an absolute path"),
            ("allowed_uids = 0, x", 1, "not a uid"),
            ("path_map = /a", 1, "LOCAL:SHARED"),
            ("backend = local\nbackend = dlm", 2, "set twice"),
            ("just words", 1, "key = value"),
            ("node_name = \"hv1", 1, "unmatched"),
            ("\nvirsh = \"/usr/bin/virsh\" extra", 2, "misplaced"),
        ] {
            let (line, reason) = line_of(parse(text).unwrap_err());
            assert_eq!(line, want_line, "{text}");
            assert!(reason.contains(want), "{text}: {reason}");
        }
    }

    #[test]
    fn a_hash_inside_quotes_is_part_of_the_value() {
        let c = parse("virsh = \"/opt/v#2/virsh\" # the wrapper\nnode_name = hv1#not part of it\n").unwrap();
        assert_eq!(c.fencing.virsh, "/opt/v#2/virsh");
        assert_eq!(c.node_name, "hv1");
        // Before quotes were honoured, this was cut at the `#`, leaving the name `"hv`.
        assert_eq!(parse("node_name = \"hv#1\"").unwrap().node_name, "hv#1");
    }

    #[test]
    fn the_example_file_documents_every_key_and_parses_uncommented() {
        let example = include_str!("../../../deploy/virtdlmd.conf");
        let mut documented = std::collections::BTreeSet::new();
        let mut uncommented = String::new();
        for line in example.lines() {
            let Some(rest) = line.strip_prefix('#') else { continue };
            let Some((key, value)) = rest.split_once('=') else { continue };
            let key = key.trim_end();
            if !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                documented.insert(key.to_owned());
                if !value.trim().is_empty() && !uncommented.contains(&format!("{key} =")) {
                    uncommented.push_str(&format!("{key} = {value}\n"));
                }
            }
        }
        let known: std::collections::BTreeSet<String> = KEYS.iter().map(|k| k.to_string()).collect();
        assert_eq!(documented, known);
        parse(&uncommented).unwrap();
    }

    #[test]
    fn metrics_are_off_by_default_and_on_localhost_when_only_a_port_is_given() {
        let c = parse("").unwrap();
        assert_eq!((c.metrics_listen, c.metrics_textfile), (None, None));
        for (v, want) in [
            ("9665", "127.0.0.1:9665"),
            ("localhost:9665", "127.0.0.1:9665"),
            ("\"[::1]:9665\"", "[::1]:9665"),
            ("0.0.0.0:9665", "0.0.0.0:9665"),
        ] {
            let c = parse(&format!("metrics_listen = {v}")).unwrap();
            assert_eq!(c.metrics_listen.map(|a| a.to_string()).as_deref(), Some(want), "{v}");
        }
        for v in ["0", "localhost", "host:9665", "127.0.0.1:0", "127.0.0.1:99999"] {
            let (line, reason) = line_of(parse(&format!("metrics_listen = {v}")).unwrap_err());
            assert_eq!(line, 1, "{v}");
            assert!(reason.contains("metrics_listen"), "{v}: {reason}");
        }
        let c = parse("metrics_textfile = /var/lib/prometheus/node-exporter/virtdlm.prom").unwrap();
        assert_eq!(c.metrics_textfile.as_deref(), Some(Path::new("/var/lib/prometheus/node-exporter/virtdlm.prom")));
        assert!(parse("metrics_textfile = virtdlm.prom").is_err(), "a relative path");
    }

    #[test]
    fn missing_file_is_fine_only_at_the_default_path() {
        let p = Path::new("/nonexistent/virtdlmd.conf");
        assert!(Config::load(p, false).is_ok());
        assert!(matches!(Config::load(p, true), Err(ConfigError::Read { .. })));
    }
}
