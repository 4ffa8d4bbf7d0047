//! The backend a host may run on: `local` where other hosts could share its disks would give
//! each host its own lock table and no cross-host exclusion, silently. So `backend` has no
//! default on a cluster host: where corosync knows more than one node, virtdlmd starts on
//! `local` only if the operator wrote `backend = local` (file or `--backend`). On a host
//! without a multi-node corosync, an unset `backend` means `local` (one host: nothing to
//! exclude across). `local` with `cluster = true` runs (the inventory without the DLM is how
//! the inventory is tested on hosts without a kernel DLM) but is warned about in the log,
//! `virtdlm status` and `virtdlm locks`.

use crate::config::{BackendKind, Config, DEFAULT_CONFIG};

/// Where virtdlmd learnt that this host is in a multi-node cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSeen {
    /// Nodes in the corosync nodelist.
    pub nodes: usize,
    /// What was read: the running corosync (cmap) or its configuration file.
    pub seen_in: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "this host is one of {nodes} nodes of a corosync cluster ({seen_in}) and no lock backend is configured. \
     The `local` backend keeps locks on this host only: another host could start a VM on the same disk \
     and both would write it. Write `backend = dlm` in {DEFAULT_CONFIG} (locks in the kernel DLM, \
     cluster-wide; needs dlm_controld), or `backend = local` if this host's VMs never share a disk \
     with another host's"
)]
pub struct UnsafeDefault {
    pub nodes: usize,
    pub seen_in: String,
}

/// The warning for `local` + `cluster = true`, shown in the log, `virtdlm status` and above
/// `virtdlm locks`.
pub const LOCAL_IN_CLUSTER: &str = "backend = local with cluster = true: the lock table lists the whole \
     cluster, but each host grants its locks alone: NO cross-host exclusion (use backend = dlm)";

/// Whether `config` may run given what corosync says; `Ok` carries the warnings to log.
pub fn check(config: &Config, cluster: Option<&ClusterSeen>) -> Result<Vec<&'static str>, UnsafeDefault> {
    if config.backend == BackendKind::Local && !config.backend_explicit {
        if let Some(c) = cluster.filter(|c| c.nodes > 1) {
            return Err(UnsafeDefault { nodes: c.nodes, seen_in: c.seen_in.clone() });
        }
    }
    Ok(warnings(config.backend, config.cluster_enabled()))
}

/// The warnings a running daemon shows for its backend and cluster setting.
pub fn warnings(backend: BackendKind, cluster: bool) -> Vec<&'static str> {
    if backend == BackendKind::Local && cluster {
        vec![LOCAL_IN_CLUSTER]
    } else {
        Vec::new()
    }
}

/// The multi-node cluster this host is in, if any: the running corosync's nodelist, or, when
/// corosync is not running (yet: virtdlmd may start before it), `corosync_conf`'s.
pub fn probe(corosync_conf: &std::path::Path) -> Option<ClusterSeen> {
    match corosync::Cmap::new().and_then(|c| c.node_names()) {
        Ok(names) => Some(ClusterSeen { nodes: names.len(), seen_in: "the running corosync's nodelist".into() }),
        Err(e) => {
            tracing::debug!("corosync cmap not readable ({e}); reading {}", corosync_conf.display());
            let text = std::fs::read_to_string(corosync_conf).ok()?;
            Some(ClusterSeen {
                nodes: crate::corosync_conf::node_count(&text),
                seen_in: format!("the nodelist of {}", corosync_conf.display()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("t.conf")).unwrap()
    }

    fn seen(nodes: usize) -> ClusterSeen {
        ClusterSeen { nodes, seen_in: "test".into() }
    }

    // Break it: make `check` ignore `cluster` (return Ok(warnings(..)) at once): the first
    // assertion fails ("local by default in a 3-node cluster must be refused"). Done.
    #[test]
    fn default_local_is_refused_in_a_multi_node_cluster() {
        let e = check(&config(""), Some(&seen(3))).expect_err("local by default in a 3-node cluster must be refused");
        assert_eq!(e.nodes, 3);
        let msg = e.to_string();
        assert!(msg.contains("backend = dlm") && msg.contains("backend = local"), "{msg}");
        assert!(msg.contains("3 nodes"), "{msg}");
    }

    #[test]
    fn written_local_or_dlm_runs_in_a_cluster() {
        assert_eq!(check(&config("backend = local\n"), Some(&seen(3))), Ok(vec![]));
        assert_eq!(check(&config("backend = dlm\n"), Some(&seen(3))), Ok(vec![]));
    }

    #[test]
    fn default_local_runs_without_a_cluster_or_on_one_node() {
        assert_eq!(check(&config(""), None), Ok(vec![]));
        assert_eq!(check(&config(""), Some(&seen(1))), Ok(vec![]));
    }

    // Break it: return an empty Vec from `warnings`: this test fails. Done.
    #[test]
    fn local_with_cluster_is_warned_about() {
        assert_eq!(check(&config("backend = local\ncluster = true\n"), Some(&seen(3))), Ok(vec![LOCAL_IN_CLUSTER]));
        assert_eq!(check(&config("backend = local\ncluster = true\n"), None), Ok(vec![LOCAL_IN_CLUSTER]));
        assert_eq!(check(&config("backend = dlm\ncluster = true\n"), None), Ok(vec![]));
        assert_eq!(check(&config("backend = dlm\n"), None), Ok(vec![]));
    }
}
