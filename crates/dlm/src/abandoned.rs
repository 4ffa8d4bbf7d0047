//! A lockspace dlm_controld abandoned: this node was removed from the cluster (corosync
//! killed by the others' dlm_controld after a partition, a "stateful merge"), dlm_controld
//! exited with it, and the kernel lockspace stays stopped for good.
//!
//! Nothing can be done with such a lockspace, not even closing it: closing the device
//! (`dlm_clear_proc_locks`) waits for a recovery only dlm_controld would start. And while it
//! exists, a new dlm_controld refuses to run (`check_uncontrolled_lockspaces`: "reboot").
//!
//! [`run_alone`] does for it what dlm_controld does for a lockspace whose only member is this
//! node: the lockspace is stopped, configfs gets this node alone as member and comms entry,
//! and the lockspace is started, so the kernel recovers it with no other node (nothing is
//! sent: no other node is configured). The stop comes first because dlm_controld may have
//! started a recovery with the other nodes just before it exited; that recovery waits for
//! their answers for ever, and a start only queues behind it. A stop aborts it
//! (`dlm_ls_stop` sets `LSFL_RECOVER_STOP`), as dlm_controld stops before every start.
//!
//! The other nodes are written into the lockspace's configfs member list and removed again,
//! which leaves them listed as gone: kernels from 6.15 refuse a recovery that drops a member
//! the list does not name as gone ("remove member N invalid", the recovery fails with EFAULT
//! and the lockspace stays stopped). dlm_controld removes departed members that way; a node
//! that never was a member is ignored (both checked on a 7.2 kernel), and older kernels forget
//! a removed entry. It then runs, and can be closed and released like any other. The others
//! recovered the lockspace without this node long before; its locks were theirs to grant from
//! then on, which is why lock-loss handling stopped this node's VMs first.

use super::error::DlmError;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const CONFIGFS: &str = "/sys/kernel/config/dlm/cluster";
const SYSFS: &str = "/sys/kernel/dlm";

/// Paths of one lockspace's kernel interfaces.
struct Paths {
    cluster: PathBuf,
    lockspace: PathBuf,
}

impl Paths {
    fn real(ls: &str) -> Paths {
        Paths { cluster: PathBuf::from(CONFIGFS), lockspace: Path::new(SYSFS).join(ls) }
    }
}

/// Whether `ls` is abandoned: listed by the kernel while no dlm_controld configures the DLM
/// (it creates configfs' `cluster` at start and removes it when it exits).
pub fn is_abandoned(ls: &str) -> bool {
    let p = Paths::real(ls);
    p.lockspace.exists() && !p.cluster.exists()
}

/// Starts the abandoned lockspace `ls` with this node (`nodeid`) as its only member. Refused
/// while dlm_controld runs. Returns once the start is requested; the kernel's recovery, with
/// no other node, follows at once. Call [`cleanup`] after releasing the lockspace.
/// `others`: every other node that may have been a member (the cluster's nodes).
pub fn run_alone(ls: &str, nodeid: u32, others: &[u32]) -> Result<(), DlmError> {
    run_alone_in(&Paths::real(ls), ls, nodeid, others, &mut write)
}

/// The node ids dlm_controld configured (configfs `comms`), while it runs.
pub fn configured_nodes() -> Vec<u32> {
    let Ok(entries) = fs::read_dir(Path::new(CONFIGFS).join("comms")) else { return Vec::new() };
    let mut ids: Vec<u32> = entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    ids.sort_unstable();
    ids
}

/// `write` is called for every attribute in order (the tests record the order).
fn run_alone_in(
    p: &Paths,
    ls: &str,
    nodeid: u32,
    others: &[u32],
    write: &mut dyn FnMut(&Path, u32) -> Result<(), DlmError>,
) -> Result<(), DlmError> {
    if !p.lockspace.exists() {
        return Err(DlmError::Released(ls.to_owned()));
    }
    if p.cluster.exists() {
        return Err(abandon_err(
            "check",
            &p.cluster,
            io::Error::other("dlm_controld configures the DLM; it must recover this lockspace"),
        ));
    }
    let control = p.lockspace.join("control");
    write(&control, 0)?;
    let nodes = p.cluster.join("spaces").join(ls).join("nodes");
    let node = nodes.join(nodeid.to_string());
    let comm = p.cluster.join("comms").join(nodeid.to_string());
    for d in [&node, &comm] {
        fs::create_dir_all(d).map_err(|e| abandon_err("mkdir", d, e))?;
    }
    for &other in others.iter().filter(|&&n| n != nodeid) {
        let gone = nodes.join(other.to_string());
        fs::create_dir(&gone).map_err(|e| abandon_err("mkdir", &gone, e))?;
        write(&gone.join("nodeid"), other)?;
        // configfs removes a node directory with rmdir, attribute files and all.
        fs::remove_dir(&gone).map_err(|e| abandon_err("rmdir", &gone, e))?;
    }
    write(&node.join("nodeid"), nodeid)?;
    write(&node.join("weight"), 1)?;
    write(&comm.join("nodeid"), nodeid)?;
    write(&comm.join("local"), 1)?;
    write(&control, 1)
}

/// The kernel's recovery state of `ls`, for a report: `recover_status` (the `DLM_RS_*` bits
/// reached) and `recover_nodeid` from sysfs, or why they cannot be read.
pub fn recover_status(ls: &str) -> String {
    let dir = Path::new(SYSFS).join(ls);
    let read = |f: &str| {
        fs::read_to_string(dir.join(f)).map(|v| v.trim().to_owned()).unwrap_or_else(|e| format!("({f}: {e})"))
    };
    format!("recover_status={} recover_nodeid={}", read("recover_status"), read("recover_nodeid"))
}

/// Removes what [`run_alone`] put in configfs (after the lockspace is released), so that a
/// new dlm_controld starts from nothing.
pub fn cleanup(ls: &str, nodeid: u32) -> Result<(), DlmError> {
    cleanup_in(&Paths::real(ls), ls, nodeid)
}

fn cleanup_in(p: &Paths, ls: &str, nodeid: u32) -> Result<(), DlmError> {
    let space = p.cluster.join("spaces").join(ls);
    let dirs = [
        space.join("nodes").join(nodeid.to_string()),
        space.clone(),
        p.cluster.join("comms").join(nodeid.to_string()),
        p.cluster.clone(),
    ];
    for d in dirs {
        // configfs directories go with rmdir even though they list attribute files.
        match fs::remove_dir(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(abandon_err("rmdir", &d, e)),
        }
    }
    Ok(())
}

fn write(path: &Path, v: u32) -> Result<(), DlmError> {
    fs::write(path, format!("{v}\n")).map_err(|e| abandon_err("write", path, e))
}

fn abandon_err(step: &'static str, path: &Path, source: io::Error) -> DlmError {
    DlmError::Abandoned { step, path: path.display().to_string(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> (PathBuf, Paths) {
        let root = std::env::temp_dir().join(format!("dlm-abandoned-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let p = Paths { cluster: root.join("config/cluster"), lockspace: root.join("sysfs/ls1") };
        fs::create_dir_all(&p.lockspace).unwrap();
        (root, p)
    }

    #[test]
    fn configures_this_node_alone_and_starts_the_lockspace() {
        let (root, p) = scratch("run");
        run_alone_in(&p, "ls1", 3, &[], &mut write).unwrap();
        let read = |q: PathBuf| fs::read_to_string(q).unwrap();
        assert_eq!(read(p.cluster.join("spaces/ls1/nodes/3/nodeid")), "3\n");
        assert_eq!(read(p.cluster.join("spaces/ls1/nodes/3/weight")), "1\n");
        assert_eq!(read(p.cluster.join("comms/3/local")), "1\n");
        assert_eq!(read(p.lockspace.join("control")), "1\n");
        fs::remove_dir_all(root).unwrap();
    }

    /// Break it: drop the `write(&control, 0)` in `run_alone_in`, or its loop over `others`:
    /// this test fails (both checked).
    #[test]
    fn stops_the_lockspace_before_configuring_and_starting_it() {
        let (root, p) = scratch("order");
        let mut seen = Vec::new();
        run_alone_in(&p, "ls1", 3, &[1, 2, 3], &mut |path, v| {
            seen.push(format!("{}={v}", path.file_name().unwrap().to_string_lossy()));
            // A plain directory, unlike configfs, keeps a file from its rmdir: the others'
            // entries are only recorded.
            if path.parent().and_then(Path::file_name).is_some_and(|d| d != "3") && path.ends_with("nodeid") {
                return Ok(());
            }
            write(path, v)
        })
        .unwrap();
        assert_eq!(seen.first().map(String::as_str), Some("control=0"), "{seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some("control=1"), "{seen:?}");
        assert_eq!(seen.iter().filter(|w| w.starts_with("control=")).count(), 2, "{seen:?}");
        // The others were listed, then removed (left as gone), before the start.
        let listed: Vec<&String> = seen.iter().filter(|w| w.starts_with("nodeid=")).collect();
        assert_eq!(listed, ["nodeid=1", "nodeid=2", "nodeid=3", "nodeid=3"], "{seen:?}");
        for n in [1, 2] {
            assert!(!p.cluster.join(format!("spaces/ls1/nodes/{n}")).exists(), "node {n} must be removed again");
        }
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn cleanup_removes_this_nodes_entry_first_and_tolerates_missing_ones() {
        let (root, p) = scratch("cleanup");
        cleanup_in(&p, "ls1", 3).unwrap();
        // configfs removes a space's `nodes` group with the space; a plain directory does not,
        // so here the walk stops there, after removing our node's entry, and says where.
        fs::create_dir_all(p.cluster.join("spaces/ls1/nodes/3")).unwrap();
        let r = cleanup_in(&p, "ls1", 3);
        assert!(
            matches!(&r, Err(DlmError::Abandoned { step: "rmdir", path, .. }) if path.ends_with("spaces/ls1")),
            "{r:?}"
        );
        assert!(!p.cluster.join("spaces/ls1/nodes/3").exists());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn refuses_while_dlm_controld_configures_the_dlm_or_without_the_lockspace() {
        let (root, p) = scratch("refuse");
        fs::create_dir_all(&p.cluster).unwrap();
        assert!(matches!(run_alone_in(&p, "ls1", 3, &[], &mut write), Err(DlmError::Abandoned { step: "check", .. })));
        assert!(!p.lockspace.join("control").exists(), "the lockspace must not be started");
        fs::remove_dir_all(&p.lockspace).unwrap();
        assert!(matches!(run_alone_in(&p, "ls1", 3, &[], &mut write), Err(DlmError::Released(_))));
        fs::remove_dir_all(root).unwrap();
    }
}
