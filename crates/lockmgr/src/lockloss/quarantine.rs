//! Quarantine: in a cluster that can neither fence a lost node nor let quorum pick one
//! survivor, no lock is granted while a configured node is unaccounted for.
//!
//! Why: after a partition of a `two_node: 1` cluster both halves stay quorate, and with
//! dlm_controld's `enable_fencing=0` (or Pacemaker without a working stonith device) each
//! half's DLM recovers alone and grants anything, including a disk the other half's VM still
//! writes, and a fresh disk both halves may start a VM on. So while a node in corosync's
//! nodelist is neither a member nor confirmed down by an operator (`virtdlm confirm-down`),
//! every new grant is refused. VMs already running keep their locks (granted before the split).
//! The rule needs no state across a daemon restart: a restarted daemon sees the same
//! missing node; a confirmation is simply asked for again.
//!
//! The shape is read at start and again after every membership change (off the request path):
//! dlm_controld's running `enable_fencing` (`dlm_tool dump_config`), corosync's
//! `quorum.two_node` / `quorum.wait_for_all` (cmap), and where Pacemaker runs, its
//! `stonith-enabled` and whether a stonith device is configured.

use corosync::Cmap;
use parking_lot::Mutex;
pub use proto::status::{Confirmation, FencingShape, FencingStatus, NodeRef as Unaccounted, PacemakerFencing};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How this cluster makes sure a lost node is dead before its locks are handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shape {
    /// dlm_controld's running `enable_fencing`; `None` when it could not be read
    /// (dlm_controld not running, or `dlm_tool` missing): counted as no fencing.
    pub dlm_fencing: Option<bool>,
    /// corosync `quorum.two_node`: both halves of a split stay quorate.
    pub two_node: bool,
    /// corosync `quorum.wait_for_all`.
    pub wait_for_all: bool,
    /// `None`: Pacemaker does not run here.
    pub pacemaker: Option<PacemakerFencing>,
}

impl Shape {
    /// The DLM waits for a lost node to be fenced before recovering its locks, and the fence
    /// can succeed: dlm_controld fences, and Pacemaker (if it runs) has stonith on with a device.
    pub fn fencing_works(&self) -> bool {
        self.dlm_fencing == Some(true)
            && self.pacemaker.as_ref().is_none_or(|p| p.stonith_enabled && p.stonith_devices > 0)
    }

    /// Quorum leaves at most one side able to act after a split (no `two_node`).
    pub fn quorum_picks_survivor(&self) -> bool {
        !self.two_node
    }

    /// As `status` shows it.
    pub fn wire(&self) -> FencingShape {
        FencingShape {
            dlm_fencing: self.dlm_fencing,
            two_node: self.two_node,
            wait_for_all: self.wait_for_all,
            pacemaker: self.pacemaker.clone(),
        }
    }

    /// Whether grants must wait for every configured node to be accounted for.
    pub fn needs_quarantine(&self) -> bool {
        !self.fencing_works() && !self.quorum_picks_survivor()
    }

    /// Why fencing does not work, for people (empty when it does).
    fn no_fencing_because(&self) -> String {
        let mut why = Vec::new();
        match self.dlm_fencing {
            Some(false) => why.push("dlm_controld enable_fencing=0".to_string()),
            None => why.push("dlm_controld's enable_fencing unknown (dlm_tool dump_config failed)".to_string()),
            Some(true) => {}
        }
        if let Some(p) = &self.pacemaker {
            if !p.stonith_enabled {
                why.push("Pacemaker stonith-enabled=false".into());
            } else if p.stonith_devices == 0 {
                why.push("no Pacemaker stonith device".into());
            }
        }
        why.join(", ")
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fencing = match self.fencing_works() {
            true => "fencing works".to_string(),
            false => format!("no working fencing ({})", self.no_fencing_because()),
        };
        let quorum = match self.two_node {
            true => format!(
                "two_node: 1{} (both halves of a split stay quorate)",
                if self.wait_for_all { ", wait_for_all: 1" } else { "" }
            ),
            false => "quorum picks one side".to_string(),
        };
        let pcmk = match &self.pacemaker {
            None => "no Pacemaker".to_string(),
            Some(p) => {
                format!("Pacemaker stonith-enabled={} with {} stonith device(s)", p.stonith_enabled, p.stonith_devices)
            }
        };
        let rule = match self.needs_quarantine() {
            true => "grants wait until every configured node is a member or confirmed down",
            false => "no quarantine needed",
        };
        write!(f, "{fencing}; {quorum}; {pcmk}: {rule}")
    }
}

/// `enable_fencing` from `dlm_tool dump_config` output (`name=value` lines, the value
/// followed by its source when not the default: `enable_fencing=0 (dlm.conf)`).
pub fn parse_dump_config(out: &str) -> Option<bool> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("enable_fencing="))
        .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
        .map(|v| v != 0)
}

/// Stonith resources in `cibadmin --query --scope resources` output.
pub fn count_stonith(cib: &str) -> usize {
    cib.matches("class=\"stonith\"").count()
}

/// Runs a command with a bound; its stdout if it exited 0.
pub(crate) fn run(prog: &str, args: &[&str]) -> Result<String, Option<i32>> {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|_| None)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(None);
            }
        }
    }
    let out = child.wait_with_output().map_err(|_| None)?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(out.status.code()),
    }
}

/// Reads the shape and corosync's configured nodes (blocking: runs the cluster tools).
pub fn detect() -> (Shape, BTreeMap<u32, String>) {
    let dlm_fencing = run("dlm_tool", &["dump_config"]).ok().and_then(|o| parse_dump_config(&o));
    let (two_node, wait_for_all, nodes) = match Cmap::new() {
        Ok(c) => {
            let flag = |k: &str| c.get_u8(k).ok().flatten().is_some_and(|v| v != 0);
            (flag("quorum.two_node"), flag("quorum.wait_for_all"), c.node_names().unwrap_or_default())
        }
        Err(e) => {
            tracing::warn!("fencing shape: cannot read corosync's cmap: {e}");
            (false, false, BTreeMap::new())
        }
    };
    // Pacemaker runs when its CIB answers; absent Pacemaker is not an error.
    let pacemaker = run("cibadmin", &["--query", "--scope", "resources"]).ok().map(|cib| {
        // crm_attribute exits non-zero when the property is unset: Pacemaker's default is true.
        let enabled =
            run("crm_attribute", &["--type", "crm_config", "--name", "stonith-enabled", "--query", "--quiet"])
                .map(|v| !matches!(v.trim(), "false" | "0" | "no" | "off"))
                .unwrap_or(true);
        PacemakerFencing { stonith_enabled: enabled, stonith_devices: count_stonith(&cib) }
    });
    (Shape { dlm_fencing, two_node, wait_for_all, pacemaker }, nodes)
}

#[derive(Debug, Default)]
struct State {
    shape: Option<Shape>,
    /// corosync's nodelist, plus every node ever seen a member.
    configured: BTreeMap<u32, String>,
    /// The quorum membership; `None` until corosync told us.
    members: Option<BTreeSet<u32>>,
    confirmed: BTreeMap<u32, Confirmation>,
}

/// The quarantine rule of one daemon. Off (grants nothing held) until a shape is set.
#[derive(Debug, Default)]
pub struct Quarantine {
    state: Mutex<State>,
    refreshing: AtomicBool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfirmError {
    #[error("no node {0:?} in corosync's nodelist (give its name or node id)")]
    UnknownNode(String),
    #[error("node {name} (id {id}) is a member of the cluster now: it is not down")]
    IsMember { name: String, id: u32 },
}

impl Quarantine {
    /// Sets the shape and the configured nodes (at start, and after each re-read).
    pub fn set_shape(&self, shape: Shape, nodes: BTreeMap<u32, String>) {
        let mut s = self.state.lock();
        if s.shape.as_ref() != Some(&shape) {
            let msg = format!("cluster fencing shape: {shape}");
            match shape.needs_quarantine() {
                true => tracing::warn!("{msg}"),
                false => tracing::info!("{msg}"),
            }
        }
        s.shape = Some(shape);
        for (id, name) in nodes {
            s.configured.insert(id, name);
        }
    }

    /// Reads the shape again on a thread of its own (a membership changed): at most one
    /// re-read at a time; one already running reads the newest state anyway.
    pub fn membership_changed(self: &Arc<Self>) {
        if self.state.lock().shape.is_none() || self.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("fencing-shape".into()).spawn(move || {
            let (shape, nodes) = detect();
            me.set_shape(shape, nodes);
            me.refreshing.store(false, Ordering::SeqCst);
        });
        if spawned.is_err() {
            self.refreshing.store(false, Ordering::SeqCst);
        }
    }

    /// The quorum membership (corosync node ids) changed. A confirmation ends when its node is
    /// seen again: the next loss of it needs a new one.
    pub fn set_members(&self, members: &[u32]) {
        let mut s = self.state.lock();
        let members: BTreeSet<u32> = members.iter().copied().collect();
        for id in &members {
            if let Some(c) = s.confirmed.remove(id) {
                tracing::warn!(node = %c.node_name, node_id = id, "node confirmed down by {} is a member again; its confirmation ends", c.by_user);
            }
            s.configured.entry(*id).or_insert_with(|| format!("node{id}"));
        }
        s.members = Some(members);
        let quarantined = s.shape.as_ref().is_some_and(Shape::needs_quarantine);
        let missing = unaccounted(&s);
        if quarantined && !missing.is_empty() {
            tracing::warn!(
                "no lock is granted while {} unaccounted for (run `virtdlm confirm-down NODE` once it is known to be down)",
                names(&missing)
            );
        }
    }

    /// The nodes holding grants back now (empty when the shape needs no quarantine).
    pub fn unaccounted(&self) -> Vec<Unaccounted> {
        let s = self.state.lock();
        match s.shape.as_ref().is_some_and(Shape::needs_quarantine) {
            true => unaccounted(&s),
            false => Vec::new(),
        }
    }

    /// The refusal for a grant of `disk` to VM `vm`, or `None` when it may be granted.
    pub fn refusal(&self, vm: &str, disk: &str) -> Option<String> {
        let s = self.state.lock();
        let shape = s.shape.as_ref().filter(|sh| sh.needs_quarantine())?;
        let missing = unaccounted(&s);
        if missing.is_empty() {
            return None;
        }
        if s.members.is_none() {
            return Some(format!(
                "VM {vm}: {disk} not locked: the cluster membership is not known yet and this cluster cannot fence ({}); try again once corosync's membership is in",
                shape.no_fencing_because()
            ));
        }
        let first = &missing[0].node_name;
        Some(format!(
            "VM {vm}: {disk} not locked: {} not a member of the cluster and not confirmed down. This cluster cannot make sure a lost node is dead ({}, two_node: 1), so {} may still run VMs and this node's DLM would grant its locks. Make sure {} is powered off (or its VMs stopped), then run `virtdlm confirm-down {first}`{}",
            names(&missing),
            shape.no_fencing_because(),
            if missing.len() == 1 { "it" } else { "they" },
            if missing.len() == 1 { first.to_string() } else { "each".to_string() },
            if missing.len() == 1 { "".to_string() } else { " for each of them".to_string() },
        ))
    }

    /// An operator confirms `node` (name or id) is down.
    pub fn confirm_down(&self, node: &str, by_uid: u32) -> Result<Confirmation, ConfirmError> {
        let mut s = self.state.lock();
        let (id, name) = s
            .configured
            .iter()
            .find(|(id, name)| *name == node || id.to_string() == node)
            .map(|(id, name)| (*id, name.clone()))
            .ok_or_else(|| ConfirmError::UnknownNode(node.to_owned()))?;
        if s.members.as_ref().is_some_and(|m| m.contains(&id)) {
            return Err(ConfirmError::IsMember { name, id });
        }
        let c = Confirmation {
            node_id: id,
            node_name: name,
            by_uid,
            by_user: user_name(by_uid),
            at: crate::lockloss::wall_now(),
        };
        tracing::warn!(node = %c.node_name, node_id = id, uid = by_uid, user = %c.by_user, "node confirmed down by the operator: its locks may be granted here until it is seen again");
        s.confirmed.insert(id, c.clone());
        Ok(c)
    }

    pub fn status(&self) -> FencingStatus {
        let s = self.state.lock();
        let needs = s.shape.as_ref().is_some_and(Shape::needs_quarantine);
        let missing = if needs { unaccounted(&s) } else { Vec::new() };
        FencingStatus {
            summary: s
                .shape
                .as_ref()
                .map(|sh| sh.to_string())
                .unwrap_or_else(|| "not read (no cluster backend)".into()),
            shape: s.shape.as_ref().map(Shape::wire),
            needs_quarantine: needs,
            active: !missing.is_empty(),
            unaccounted: missing,
            confirmed_down: s.confirmed.values().cloned().collect(),
        }
    }
}

fn unaccounted(s: &State) -> Vec<Unaccounted> {
    s.configured
        .iter()
        .filter(|(id, _)| !s.members.as_ref().is_some_and(|m| m.contains(id)) && !s.confirmed.contains_key(id))
        .map(|(id, name)| Unaccounted { node_id: *id, node_name: name.clone() })
        .collect()
}

fn names(n: &[Unaccounted]) -> String {
    let list: Vec<String> = n.iter().map(|u| format!("node {} (id {})", u.node_name, u.node_id)).collect();
    match list.len() {
        1 => format!("{} is", list[0]),
        _ => format!("{} are", list.join(", ")),
    }
}

/// The login name of `uid` from /etc/passwd, or the number.
fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(dlm: Option<bool>, two_node: bool, pcmk: Option<(bool, usize)>) -> Shape {
        Shape {
            dlm_fencing: dlm,
            two_node,
            wait_for_all: two_node,
            pacemaker: pcmk.map(|(e, d)| PacemakerFencing { stonith_enabled: e, stonith_devices: d }),
        }
    }

    /// (dlm enable_fencing, two_node, Pacemaker (stonith-enabled, devices), quarantine).
    type Row = (Option<bool>, bool, Option<(bool, usize)>, bool);

    #[test]
    fn decision_table() {
        let rows: &[Row] = &[
            (Some(false), true, None, true),
            (None, true, None, true),
            (Some(true), true, None, false),
            (Some(true), true, Some((true, 1)), false),
            (Some(true), true, Some((false, 1)), true),
            (Some(true), true, Some((true, 0)), true),
            (Some(false), true, Some((true, 1)), true),
            // 3+ nodes (no two_node): quorum picks one side, as before.
            (Some(false), false, None, false),
            (None, false, Some((false, 0)), false),
            (Some(true), false, Some((true, 1)), false),
        ];
        for (dlm, two, pcmk, want) in rows {
            let s = shape(*dlm, *two, *pcmk);
            assert_eq!(s.needs_quarantine(), *want, "{s:?}: {s}");
        }
    }

    #[test]
    fn dump_config_and_cib_are_parsed() {
        assert_eq!(parse_dump_config("daemon_debug=0\nenable_fencing=0\nenable_quorum_fencing=1\n"), Some(false));
        assert_eq!(parse_dump_config("enable_fencing=1\n"), Some(true));
        // As dlm_controld 4.2 prints it when dlm.conf sets it.
        assert_eq!(parse_dump_config("post_join_delay=0 (dlm.conf)\nenable_fencing=0 (dlm.conf)\n"), Some(false));
        assert_eq!(parse_dump_config("enable_fencing_x\n"), None);
        assert_eq!(
            count_stonith(
                r#"<resources><primitive id="f" class="stonith" type="fence_x"/><primitive class="ocf"/></resources>"#
            ),
            1
        );
    }

    fn two_nodes(shape: Shape) -> Quarantine {
        let q = Quarantine::default();
        q.set_shape(shape, BTreeMap::from([(1, "node1".into()), (2, "node2".into())]));
        q
    }

    #[test]
    fn every_grant_waits_for_a_lost_node_until_confirmed_or_back() {
        let q = two_nodes(shape(Some(false), true, None));
        // Membership not known yet (a daemon restarted during a split): refused.
        assert!(q.refusal("a", "/d").is_some());
        q.set_members(&[1, 2]);
        assert_eq!(q.refusal("a", "/d"), None);
        q.set_members(&[2]);
        let m = q.refusal("a", "/dev/disk1").expect("node1 is unaccounted for");
        assert!(
            m.contains("/dev/disk1")
                && m.contains("node1 (id 1)")
                && m.contains("virtdlm confirm-down node1")
                && m.contains("enable_fencing=0"),
            "{m}"
        );
        assert!(q.status().active);
        // A member cannot be confirmed down; an unknown node neither.
        assert!(matches!(q.confirm_down("node2", 0), Err(ConfirmError::IsMember { .. })));
        assert!(matches!(q.confirm_down("node9", 0), Err(ConfirmError::UnknownNode(_))));
        let c = q.confirm_down("1", 0).unwrap();
        assert_eq!((c.node_name.as_str(), c.by_uid), ("node1", 0));
        assert_eq!(q.refusal("a", "/d"), None);
        assert_eq!(q.status().confirmed_down.len(), 1);
        // Seen again: the confirmation ends, and a new loss needs a new one.
        q.set_members(&[1, 2]);
        assert!(q.status().confirmed_down.is_empty());
        q.set_members(&[2]);
        assert!(q.refusal("a", "/d").is_some());
    }

    #[test]
    fn working_fencing_or_quorum_needs_no_quarantine() {
        for s in [shape(Some(true), true, None), shape(Some(false), false, None)] {
            let q = two_nodes(s);
            q.set_members(&[2]);
            assert_eq!(q.refusal("a", "/d"), None);
            assert!(q.unaccounted().is_empty());
        }
        // No shape (local backend): nothing is held.
        let q = Quarantine::default();
        q.set_members(&[2]);
        assert_eq!(q.refusal("a", "/d"), None);
    }
}
