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
//! `stonith-enabled`, its stonith devices and their kind (a storage-only device such as
//! fence_scsi does not stop a node's VMs), and watchdog fencing (sbd without a disk:
//! `stonith-watchdog-timeout` set and `have-watchdog` true).

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
    /// stops the node: dlm_controld fences, and Pacemaker (if it runs) has stonith on with a
    /// device that powers nodes off, or with working watchdog fencing. Storage-only devices
    /// (fence_scsi, ...) alone do not count: the fenced node's VMs keep running.
    pub fn fencing_works(&self) -> bool {
        self.dlm_fencing == Some(true)
            && self
                .pacemaker
                .as_ref()
                .is_none_or(|p| p.stonith_enabled && (power_devices(p) > 0 || self.watchdog_fencing()))
    }

    /// Watchdog fencing (sbd, no disk) works: Pacemaker has `stonith-watchdog-timeout` set and
    /// sbd runs (`have-watchdog`), and quorum picks one side (a node resets itself only when
    /// it loses quorum: with `two_node` both halves stay quorate, none resets, and each would
    /// count the other fenced after the timeout).
    pub fn watchdog_fencing(&self) -> bool {
        self.pacemaker.as_ref().is_some_and(|p| p.have_watchdog && p.watchdog_timeout.is_some()) && !self.two_node
    }

    /// Stonith devices that do not stop the node they fence (`id (type)`): exclusivity of a
    /// disk is not guaranteed by them. Empty without Pacemaker.
    pub fn storage_only(&self) -> &[String] {
        self.pacemaker.as_ref().map_or(&[], |p| p.storage_only.as_slice())
    }

    /// What a storage-only device leaves unguaranteed, for the start log and `status` (`None`
    /// without one).
    pub fn storage_only_warning(&self) -> Option<String> {
        let devs = self.storage_only();
        (!devs.is_empty()).then(|| {
            format!(
                "storage-only stonith device(s) {}: exclusivity NOT guaranteed by them (a node they fence keeps \
                 running its VMs; only disks on the LUNs they reserve are cut off)",
                devs.join(", ")
            )
        })
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
            let watchdog = p.have_watchdog && p.watchdog_timeout.is_some();
            if !p.stonith_enabled {
                why.push("Pacemaker stonith-enabled=false".into());
            } else if power_devices(p) == 0 && !self.watchdog_fencing() {
                if p.stonith_devices == 0 && !watchdog {
                    why.push("no Pacemaker stonith device".into());
                }
                if !p.storage_only.is_empty() {
                    why.push(format!("only storage-only stonith devices ({})", p.storage_only.join(", ")));
                }
                if p.watchdog_timeout.is_some() && !p.have_watchdog {
                    why.push("stonith-watchdog-timeout set but sbd does not run (have-watchdog=false)".into());
                }
                if watchdog && self.two_node {
                    why.push("watchdog fencing (sbd) with two_node: both halves stay quorate, neither resets".into());
                }
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
                let mut s = format!(
                    "Pacemaker stonith-enabled={} with {} stonith device(s)",
                    p.stonith_enabled, p.stonith_devices
                );
                if let Some(t) = &p.watchdog_timeout {
                    s += &format!(
                        ", watchdog fencing stonith-watchdog-timeout={t} (sbd {})",
                        if p.have_watchdog { "runs" } else { "does not run" }
                    );
                }
                s
            }
        };
        let rule = match self.needs_quarantine() {
            true => "grants wait until every configured node is a member or confirmed down",
            false => "no quarantine needed",
        };
        write!(f, "{fencing}; {quorum}; {pcmk}: {rule}")?;
        match self.storage_only_warning() {
            Some(w) => write!(f, "; {w}"),
            None => Ok(()),
        }
    }
}

/// Stonith devices of a kind that cuts a node off its storage or network but leaves it
/// running (SCSI-3 / multipath reservations, fabric switch ports).
pub const STORAGE_ONLY_AGENTS: &[&str] =
    &["fence_scsi", "fence_mpath", "fence_brocade", "fence_cisco_mds", "fence_ifmib"];

/// Devices that can stop a node (power, watchdog-backed disk sbd, ...): all but storage-only.
fn power_devices(p: &PacemakerFencing) -> usize {
    p.stonith_devices.saturating_sub(p.storage_only.len())
}

/// `enable_fencing` from `dlm_tool dump_config` output (`name=value` lines, the value
/// followed by its source when not the default: `enable_fencing=0 (dlm.conf)`).
pub fn parse_dump_config(out: &str) -> Option<bool> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("enable_fencing="))
        .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
        .map(|v| v != 0)
}

/// Stonith resources in the CIB (`cibadmin --query`, any scope holding `resources`): (id,
/// agent type), in the order of the CIB, including those inside groups and clones.
pub fn stonith_resources(cib: &roxmltree::Document) -> Vec<(String, String)> {
    cib.descendants()
        .filter(|n| n.has_tag_name("primitive") && n.attribute("class") == Some("stonith"))
        .map(|n| (n.attribute("id").unwrap_or("?").to_string(), n.attribute("type").unwrap_or("?").to_string()))
        .collect()
}

/// A cluster property (`crm_config`) as `crm_attribute --type crm_config --query` reads it:
/// from the set `cib-bootstrap-options` first, else from any property set.
fn crm_property(cib: &roxmltree::Document, name: &str) -> Option<String> {
    let sets: Vec<_> = cib
        .descendants()
        .filter(|n| n.has_tag_name("crm_config"))
        .flat_map(|c| c.children().filter(|n| n.has_tag_name("cluster_property_set")))
        .collect();
    let in_set = |set: &roxmltree::Node| {
        set.children()
            .find(|n| n.has_tag_name("nvpair") && n.attribute("name") == Some(name))
            .and_then(|n| n.attribute("value"))
            .map(str::to_string)
    };
    let bootstrap = sets.iter().filter(|s| s.attribute("id") == Some("cib-bootstrap-options"));
    bootstrap.chain(sets.iter()).find_map(in_set)
}

/// Pacemaker's fencing from one `cibadmin --query --scope configuration` (the resources and
/// the cluster properties together: one process instead of one per property).
pub fn pacemaker_from_cib(cib: &str) -> Result<PacemakerFencing, roxmltree::Error> {
    let doc = roxmltree::Document::parse(cib)?;
    let prop = |name: &str| crm_property(&doc, name);
    Ok(pacemaker_fencing(
        stonith_resources(&doc),
        prop("stonith-enabled").as_deref(),
        prop("stonith-watchdog-timeout").as_deref(),
        prop("have-watchdog").as_deref(),
    ))
}

/// Pacemaker's fencing, from the CIB's stonith resources and the cluster properties
/// `stonith-enabled` (unset: true), `stonith-watchdog-timeout` (unset or 0: no watchdog
/// fencing) and `have-watchdog`.
pub fn pacemaker_fencing(
    devices: Vec<(String, String)>,
    stonith_enabled: Option<&str>,
    watchdog_timeout: Option<&str>,
    have_watchdog: Option<&str>,
) -> PacemakerFencing {
    let truthy = |v: &str| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on" | "y");
    PacemakerFencing {
        stonith_enabled: stonith_enabled.is_none_or(|v| !matches!(v.trim(), "false" | "0" | "no" | "off" | "n")),
        stonith_devices: devices.len(),
        storage_only: devices
            .iter()
            .filter(|(_, t)| STORAGE_ONLY_AGENTS.contains(&t.as_str()))
            .map(|(id, t)| format!("{id} ({t})"))
            .collect(),
        watchdog_timeout: watchdog_timeout
            .map(str::trim)
            .filter(|t| !t.is_empty() && !matches!(t.trim_end_matches('s').trim(), "0" | "0m" | "0ms"))
            .map(str::to_string),
        have_watchdog: have_watchdog.is_some_and(truthy),
    }
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
    let pacemaker = run("cibadmin", &["--query", "--scope", "configuration"]).ok().map(|cib| {
        pacemaker_from_cib(&cib).unwrap_or_else(|e| {
            // Unreadable is counted as no working fencing: the quarantine errs on the safe side.
            tracing::error!(
                "fencing shape: cannot read the CIB cibadmin printed ({e}); Pacemaker's fencing counted as off"
            );
            PacemakerFencing {
                stonith_enabled: false,
                stonith_devices: 0,
                storage_only: vec![],
                watchdog_timeout: None,
                have_watchdog: false,
            }
        })
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
            match shape.needs_quarantine() || shape.storage_only_warning().is_some() {
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
                .unwrap_or_else(|| proto::status::FENCING_NOT_READ.into()),
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
            pacemaker: pcmk.map(|(e, d)| PacemakerFencing {
                stonith_enabled: e,
                stonith_devices: d,
                storage_only: vec![],
                watchdog_timeout: None,
                have_watchdog: false,
            }),
        }
    }

    fn with_pcmk(dlm: Option<bool>, two_node: bool, p: PacemakerFencing) -> Shape {
        Shape { dlm_fencing: dlm, two_node, wait_for_all: two_node, pacemaker: Some(p) }
    }

    fn res(xml: &str) -> Vec<(String, String)> {
        stonith_resources(&roxmltree::Document::parse(xml).unwrap())
    }

    fn pf(xml: &str, enabled: Option<&str>, wd: Option<&str>, have: Option<&str>) -> PacemakerFencing {
        pacemaker_fencing(res(xml), enabled, wd, have)
    }

    /// As `cibadmin --query --scope configuration` prints it (Pacemaker 2.1, sbd watchdog-only
    /// plus a power device in a group), trimmed.
    const CIB: &str = r#"<configuration>
  <crm_config>
    <cluster_property_set id="other"><nvpair id="o1" name="stonith-enabled" value="false"/></cluster_property_set>
    <cluster_property_set id="cib-bootstrap-options">
      <nvpair id="b1" name="have-watchdog" value="true"/>
      <nvpair id="b2" name="stonith-enabled" value="true"/>
      <nvpair id="b3" name="stonith-watchdog-timeout" value="20s"/>
    </cluster_property_set>
  </crm_config>
  <nodes><node id="1" uname="node1"/></nodes>
  <resources>
    <group id="g"><primitive id="fence-all" class="stonith" type="fence_uml"/></group>
    <clone id="dlm-clone"><primitive id="dlm" class="ocf" provider="pacemaker" type="controld"/></clone>
  </resources>
</configuration>"#;

    #[test]
    fn one_cib_query_gives_devices_and_properties() {
        let p = pacemaker_from_cib(CIB).unwrap();
        assert_eq!((p.stonith_devices, p.storage_only.len()), (1, 0), "the device inside a group counts");
        assert!(p.stonith_enabled, "cib-bootstrap-options comes first, as crm_attribute reads it");
        assert_eq!((p.watchdog_timeout.as_deref(), p.have_watchdog), (Some("20s"), true));
        let bare = pacemaker_from_cib("<configuration><crm_config/><resources/></configuration>").unwrap();
        assert!(bare.stonith_enabled && bare.stonith_devices == 0 && bare.watchdog_timeout.is_none());
        assert!(pacemaker_from_cib("<configuration><resources>").is_err(), "truncated output is an error");
    }

    const POWER: &str = r#"<resources><primitive id="fence-node1" class="stonith" type="fence_uml"/></resources>"#;
    const SCSI: &str = r#"<resources>
  <primitive id="fence-scsi" class="stonith" type="fence_scsi">
    <instance_attributes id="fence-scsi-ia"><nvpair id="d" name="devices" value="/dev/sdb"/></instance_attributes>
  </primitive>
  <clone id="dlm-clone"><primitive id="dlm" class="ocf" provider="pacemaker" type="controld"/></clone>
</resources>"#;

    #[test]
    fn stonith_devices_are_classified() {
        assert_eq!(
            res(SCSI),
            vec![("fence-scsi".to_string(), "fence_scsi".to_string())],
            "ocf resources are not stonith devices"
        );
        assert_eq!(res("<resources><primitive type='fence_mpath' class='stonith' id='mp'/></resources>").len(), 1);
        let scsi = pf(SCSI, None, None, None);
        assert_eq!(scsi.storage_only, vec!["fence-scsi (fence_scsi)".to_string()]);
        assert!(scsi.stonith_enabled, "unset stonith-enabled is true");
        let power = pf(POWER, Some("true"), Some("0"), Some("false"));
        assert!(power.storage_only.is_empty() && power.watchdog_timeout.is_none() && !power.have_watchdog);
        let sbd = pf("<resources/>", Some("true"), Some("10s"), Some("true"));
        assert_eq!((sbd.stonith_devices, sbd.watchdog_timeout.as_deref(), sbd.have_watchdog), (0, Some("10s"), true));
        assert!(!pf("<resources/>", Some("false"), None, None).stonith_enabled);
    }

    /// Storage-only devices alone are not working fencing: with two_node that means
    /// quarantine; `status` and the start log say exclusivity is not guaranteed by them.
    #[test]
    fn storage_only_fencing_is_not_counted_and_said() {
        let s = with_pcmk(Some(true), true, pf(SCSI, Some("true"), None, None));
        assert!(!s.fencing_works() && s.needs_quarantine(), "{s}");
        let text = s.to_string();
        assert!(text.contains("only storage-only stonith devices (fence-scsi (fence_scsi))"), "{text}");
        assert!(text.contains("exclusivity NOT guaranteed"), "{text}");
        // 3+ nodes: quorum still picks a side, and the warning stays.
        let s3 = with_pcmk(Some(true), false, pf(SCSI, Some("true"), None, None));
        assert!(!s3.fencing_works() && !s3.needs_quarantine());
        assert!(s3.to_string().contains("exclusivity NOT guaranteed"));
        // A power device beside it: fencing works, the storage-only device is still named.
        let both = format!("<configuration>{POWER}{SCSI}</configuration>");
        let s = with_pcmk(Some(true), true, pf(&both, Some("true"), None, None));
        assert!(s.fencing_works() && !s.needs_quarantine());
        assert!(s.storage_only_warning().is_some_and(|w| w.contains("fence-scsi")));
        // A power device alone: no warning.
        let s = with_pcmk(Some(true), true, pf(POWER, Some("true"), None, None));
        assert!(s.fencing_works() && s.storage_only_warning().is_none() && !s.to_string().contains("storage-only"));
    }

    /// sbd without a disk (stonith-watchdog-timeout set, sbd running) is working fencing where
    /// quorum picks a side; not with two_node, nor when sbd does not run.
    #[test]
    fn watchdog_only_sbd_is_working_fencing() {
        let sbd = pf("<resources/>", Some("true"), Some("10s"), Some("true"));
        let s = with_pcmk(Some(true), false, sbd.clone());
        assert!(s.watchdog_fencing() && s.fencing_works(), "{s}");
        let text = s.to_string();
        assert!(
            text.starts_with("fencing works;") && text.contains("stonith-watchdog-timeout=10s (sbd runs)"),
            "{text}"
        );
        let s2 = with_pcmk(Some(true), true, sbd);
        assert!(!s2.fencing_works() && s2.needs_quarantine());
        assert!(s2.to_string().contains("neither resets"), "{s2}");
        let no_sbd = with_pcmk(Some(true), false, pf("<resources/>", Some("true"), Some("10s"), Some("false")));
        assert!(!no_sbd.fencing_works());
        assert!(no_sbd.to_string().contains("sbd does not run (have-watchdog=false)"), "{no_sbd}");
        // dlm_controld must still fence (dlm_stonith waits for Pacemaker's watchdog fence).
        let s = with_pcmk(Some(false), false, pf("<resources/>", None, Some("10"), Some("true")));
        assert!(!s.fencing_works());
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
            res(r#"<resources><primitive id="f" class="stonith" type="fence_x"/><primitive class="ocf"/></resources>"#)
                .len(),
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
