//! What administrators ask of the registry (`virtdlm status`, `inspect`, `resource-name`,
//! `confirm-down`, `release --vm`, `cleanup`): reads of the table and releases under the
//! registry's own rules.

use super::{vm, Registry, RegistryError};
use crate::journal::OwnerKey;
use crate::owner;
use proto::{LockInfo, Resource};

/// What `inspect` finds of one disk or lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspected {
    /// The disk or lease as people read it.
    pub identity: String,
    /// Its lock (resource) name; empty when it is not locked at all.
    pub resource: String,
    pub holders: Vec<LockInfo>,
}

impl Registry {
    pub fn inspect(&self, res: &Resource) -> Result<Inspected, RegistryError> {
        match self.naming.resolve(res) {
            Ok(Some(n)) => {
                Ok(Inspected { holders: self.holders(&n.name, None), identity: n.readable, resource: n.name.0 })
            }
            Ok(None) => Ok(Inspected {
                identity: "read-only disk: not locked (lock_readonly = false)".into(),
                resource: String::new(),
                holders: vec![],
            }),
            Err(e) => Err(RegistryError::BadRequest(e.to_string())),
        }
    }

    /// A resource's identity (as people read it) and its lock name.
    pub fn resource_name(&self, res: &Resource) -> Result<(String, String), RegistryError> {
        match self.naming.resolve(res) {
            Ok(Some(n)) => Ok((n.readable, n.name.0)),
            Ok(None) => Ok(("read-only disk: not locked (lock_readonly = false)".into(), String::new())),
            Err(e) => Err(RegistryError::BadRequest(e.to_string())),
        }
    }

    pub fn status(&self) -> proto::status::Status {
        let cluster = self.cluster.get().map(|l| l.status());
        let lock_loss = self.gate().lock_loss_status();
        let t = self.table.lock();
        let (node_id, node_name) = self.node();
        let kind = if self.backend.kind() == "local" {
            crate::config::BackendKind::Local
        } else {
            crate::config::BackendKind::Dlm
        };
        proto::status::Status {
            cluster,
            last_lock_loss: lock_loss.last.clone(),
            node_name,
            node_id,
            backend: self.backend.kind().into(),
            // Setups that run but do not protect (crate::backend_guard).
            warnings: crate::backend_guard::warnings(kind, self.cluster.get().is_some())
                .into_iter()
                .map(String::from)
                .collect(),
            owners: t.owners.len(),
            locks: t.owners.values().map(|o| o.held.len()).sum::<usize>(),
            journal: t.journal.path().display().to_string(),
            journal_bytes: t.journal.size(),
            journal_compactions: t.journal.compactions(),
            lock_readonly: self.naming.lock_readonly,
            pid: std::process::id(),
            protocol: proto::PROTOCOL_VERSION,
            lock_loss,
            releases_pending: self.unreleased.list(),
            fencing: self.gate().fencing_status(),
        }
    }

    /// Admin: an operator confirms a node is down (crate::lockloss::quarantine).
    pub fn confirm_down(&self, node: &str, uid: u32) -> Result<proto::status::Confirmation, RegistryError> {
        self.gate().confirm_down(node, uid)
    }

    /// Admin: release every lock of a VM. Refused while its QEMU runs unless `force`.
    pub fn release_vm(&self, uuid: &str, force: bool) -> Result<Vec<LockInfo>, RegistryError> {
        let mut t = self.table.lock();
        let keys: Vec<OwnerKey> = t.owners.iter().filter(|(_, o)| o.spec.uuid == uuid).map(|(k, _)| *k).collect();
        if keys.is_empty() {
            return Err(RegistryError::UnknownOwner(format!(
                "no VM with uuid {uuid} holds or registered locks on this node"
            )));
        }
        if !force {
            if let Some(k) = keys.iter().find(|k| owner::is_alive(**k)) {
                let o = &t.owners[k];
                return Err(RegistryError::Busy(format!(
                    "VM {} still runs as pid {}; stop it first, or force the release if you know its disks are closed",
                    vm(&o.spec),
                    k.pid
                )));
            }
        }
        let mut locks = Vec::new();
        for k in keys {
            locks.extend(self.drop_owner(&mut t, k, "released by the administrator"));
        }
        self.unlock_and_release(t);
        Ok(locks)
    }

    /// Admin: release the locks of owners whose process is gone (normally the pidfd already
    /// did). `dry_run` only reports them.
    pub fn cleanup(&self, dry_run: bool) -> Vec<LockInfo> {
        let mut t = self.table.lock();
        let dead: Vec<OwnerKey> = t.owners.keys().filter(|k| !owner::is_alive(**k)).copied().collect();
        let mut locks = Vec::new();
        for k in dead {
            if dry_run {
                locks.extend(self.infos_of(k, &t.owners[&k]));
            } else {
                locks.extend(self.drop_owner(&mut t, k, "cleanup: its QEMU process is gone"));
            }
        }
        self.unlock_and_release(t);
        locks
    }
}
