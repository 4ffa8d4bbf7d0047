//! dlm_controld on this node, watched while corosync runs on.
//!
//! When dlm_controld dies on a node whose corosync stays up, nothing changes in the totem
//! ring: corosync only reports its CPG groups left with reason "procdown". The other nodes'
//! dlm_controld then recovers every lockspace without this node at once and, with
//! `enable_fencing=0`, fences nothing (with `enable_fencing=1` it fences the node first:
//! `dlm_controld/daemon_cpg.c`, `confchg_cb_daemon` sets `need_fencing` for "procdown" as for
//! "nodedown"). Here the kernel lockspace keeps running as if nothing happened, so a VM goes
//! on writing a disk whose lock the others already hand out. A dlm_controld that hangs
//! (SIGSTOP, stuck) stays in its groups: the others keep the locks, and their next recovery
//! waits for it, but it can no longer take part in one.
//!
//! How it is watched, and why: dlm_controld's pid (its pid file) is read every
//! [`CHECK_EVERY`]: gone or stopped (`T` in /proc) is seen within that, with no process
//! spawned; and every [`PROBE_EVERY`] `dlm_tool status` must be answered (its main loop serves
//! that query beside its CPG events; bounded by `quarantine::run`'s 10 s), which covers a live
//! but stuck daemon: two probes in a row unanswered (a loaded host can be slow once), so a
//! hang is acted on within about 25 s. A daemon that refuses the connection is gone. Not chosen: the daemon CPG group `dlm:controld` (seeing its members
//! means joining it, and dlm_controld would take us for a daemon of its protocol), and the
//! lockspace's configfs members here (a killed dlm_controld leaves them as they were).
//!
//! The other nodes see the change in the lockspace's members in configfs ([`Members`]),
//! which dlm_controld writes before the kernel recovers; that starts their grant hold.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// dlm_controld's pid file (its `RUNDIR`, Debian and upstream).
const PIDFILE: &str = "/run/dlm_controld/dlm_controld.pid";
/// Where dlm_controld sets the kernel's members of a lockspace (one directory per node id).
const SPACES: &str = "/sys/kernel/config/dlm/cluster/spaces";

/// How often the pid is checked (a death is acted on within this).
pub const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How often dlm_controld must answer a query.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// The watch of this node's dlm_controld.
#[derive(Debug)]
pub struct Watch {
    last_probe: Instant,
    /// `dlm_tool status` answered at start: probing is possible.
    probe: bool,
    /// Probes in a row that were not answered in time.
    unanswered: u32,
}

impl Watch {
    /// Starts watching; an error (said why) when dlm_controld is not running now, so there is
    /// nothing to watch (the lockspace could not have been joined without it).
    pub fn start() -> Result<Watch, String> {
        let pid = pid()?;
        if let Some(why) = state_problem(pid) {
            return Err(format!("dlm_controld (pid {pid}) {why}"));
        }
        let probe = matches!(crate::lockloss::quarantine::run("dlm_tool", &["status"]), Ok(out) if out.contains("cluster nodeid"));
        if !probe {
            tracing::warn!(pid, "dlm_tool status does not answer now: dlm_controld is watched by its pid only (a hang that leaves it running is not seen)");
        }
        tracing::info!(pid, "watching dlm_controld");
        Ok(Watch { last_probe: Instant::now(), probe, unanswered: 0 })
    }

    /// What is wrong with dlm_controld now, if anything (blocking: may run `dlm_tool`).
    pub fn check(&mut self) -> Option<String> {
        let pid = match pid() {
            Ok(p) => p,
            Err(e) => return Some(e),
        };
        if let Some(why) = state_problem(pid) {
            return Some(format!("(pid {pid}) {why}"));
        }
        if self.probe && self.last_probe.elapsed() >= PROBE_EVERY {
            self.last_probe = Instant::now();
            // `dlm_tool status` exits 0 even when it cannot connect: its answer must be there.
            match crate::lockloss::quarantine::run("dlm_tool", &["status"]) {
                Ok(out) if out.contains("cluster nodeid") => self.unanswered = 0,
                Ok(out) => return Some(format!("(pid {pid}) does not answer `dlm_tool status`: {}", out.trim())),
                Err(_) => {
                    self.unanswered += 1;
                    tracing::warn!(
                        pid,
                        unanswered = self.unanswered,
                        "dlm_controld did not answer `dlm_tool status` within 10 s"
                    );
                    if self.unanswered >= 2 {
                        return Some(format!(
                            "(pid {pid}) did not answer `dlm_tool status` twice in a row within 10 s (hung)"
                        ));
                    }
                }
            }
        }
        None
    }
}

/// dlm_controld's pid, from its pid file.
fn pid() -> Result<u32, String> {
    let text = std::fs::read_to_string(PIDFILE).map_err(|e| format!("is not running ({PIDFILE}: {e})"))?;
    text.trim().parse().map_err(|_| format!("is not running ({PIDFILE} holds {:?})", text.trim()))
}

/// Gone, a zombie, or stopped: why `pid` is not a working dlm_controld.
fn state_problem(pid: u32) -> Option<String> {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(_) => return Some("exited".into()),
    };
    // The state follows the parenthesised command name, which may itself hold spaces.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    match state {
        Some("Z" | "X" | "x") => Some("exited".into()),
        Some("T") => Some("is stopped (SIGSTOP)".into()),
        _ if !stat.contains("(dlm_controld)") => Some("exited (its pid is another program's now)".into()),
        _ => None,
    }
}

/// The members dlm_controld last set for one lockspace (configfs), to see nodes leave it.
#[derive(Debug)]
pub struct Members {
    dir: PathBuf,
    last: Option<BTreeSet<u32>>,
}

impl Members {
    pub fn new(lockspace: &str) -> Members {
        Members { dir: PathBuf::from(SPACES).join(lockspace).join("nodes"), last: None }
    }

    #[cfg(test)]
    pub(crate) fn at(dir: PathBuf) -> Members {
        Members { dir, last: None }
    }

    /// Reads the members again; returns the nodes that left since the last read. A tree that
    /// cannot be read (no dlm_controld) changes nothing.
    pub fn refresh(&mut self) -> Vec<u32> {
        let Ok(now) = read_members(&self.dir) else { return Vec::new() };
        let left = left_since(self.last.as_ref(), &now);
        self.last = Some(now);
        left
    }
}

fn read_members(dir: &std::path::Path) -> std::io::Result<BTreeSet<u32>> {
    Ok(std::fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
}

/// The nodes of `before` missing from `now`.
fn left_since(before: Option<&BTreeSet<u32>>, now: &BTreeSet<u32>) -> Vec<u32> {
    before.map(|b| b.difference(now).copied().collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_left_the_lockspace_is_reported_once() {
        let dir = std::env::temp_dir().join(format!("virtdlm-members-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for n in ["1", "2", "3"] {
            std::fs::create_dir_all(dir.join(n)).unwrap();
        }
        let mut m = Members { dir: dir.clone(), last: None };
        assert!(m.refresh().is_empty(), "the first read is the baseline");
        std::fs::remove_dir(dir.join("3")).unwrap();
        assert_eq!(m.refresh(), vec![3]);
        assert!(m.refresh().is_empty());
        std::fs::create_dir(dir.join("4")).unwrap();
        assert!(m.refresh().is_empty(), "a node joining is no reason to hold");
        m.dir = dir.join("gone");
        assert!(m.refresh().is_empty(), "an unreadable tree changes nothing");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn our_own_process_is_not_dlm_controld() {
        let me = std::process::id();
        assert!(state_problem(me).is_some_and(|w| w.contains("another program")));
        assert_eq!(state_problem(u32::MAX).as_deref(), Some("exited"));
    }
}
