//! After a daemon restart: the journal's owners registered again, then their locks taken back
//! from the backend (which may block on the DLM, so it runs once lock-loss handling is on).

use super::{Held, LockChange, Owner, Registry, NOT_TAKEN_BACK};
use crate::backend::{Grant, ResName};
use crate::journal::{JournalError, LockEntry, OwnerKey, Record};
use crate::owner;
use proto::OwnerSpec;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What [`Registry::restore`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    pub owners_adopted: usize,
    pub locks_adopted: usize,
    pub owners_dead: usize,
    pub locks_released: usize,
    pub locks_lost: usize,
    /// As the backend counts them (the DLM's purge does not count: 0).
    pub orphans_purged: usize,
    /// Live owners with a lock that could not be taken back: their VMs run unprotected.
    pub unconfirmed: Vec<OwnerKey>,
    /// Journaled locks of live owners, registered but not taken back yet
    /// ([`Registry::adopt_restored`] empties it).
    pub to_adopt: Vec<(OwnerKey, ResName)>,
    /// The journal could not be rewritten (full or read-only filesystem): the locks above
    /// are held, the journal still says what it said before, and nothing new is granted
    /// until it can be written.
    pub journal_unwritable: Option<String>,
}

impl Registry {
    /// After a daemon restart, before serving: takes back the journaled locks of owners that
    /// still run, drops those of owners that died meanwhile, purges what nobody claims.
    /// [`Registry::restore_owners`] then [`Registry::adopt_restored`].
    pub fn restore(&self) -> Result<Restored, JournalError> {
        let mut r = self.restore_owners()?;
        self.adopt_restored(&mut r);
        Ok(r)
    }

    /// First step of a restore, with no backend call (nothing here can block on the DLM): the
    /// owners that still run are registered again with their journaled locks, so that lock-loss
    /// handling, started next, knows which VMs to stop; those that died meanwhile are dropped.
    /// The locks are taken back by [`Registry::adopt_restored`].
    pub fn restore_owners(&self) -> Result<Restored, JournalError> {
        let mut t = self.table.lock();
        let mut r = Restored::default();
        let saved = t.journal.state().clone();
        let mut records = Vec::new();
        for (key, o) in saved.owners {
            let Some(spec) = o.spec.map(OwnerSpec::from) else {
                records.push(Record::Gone { key });
                continue;
            };
            if !owner::is_alive(key) {
                r.owners_dead += 1;
                for (name, lock) in &o.locks {
                    r.locks_released += 1;
                    tracing::info!(vm = %spec.name, uuid = %spec.uuid, disk = %lock.identity, mode = %lock.mode, resource = %name,
                        "released: the VM's QEMU (pid {}) exited while virtdlmd was down", key.pid);
                }
                records.push(Record::Gone { key });
                continue;
            }
            let mut held = BTreeMap::new();
            for (name, lock) in o.locks {
                let res = ResName(name);
                let grant = Grant { name: res.clone(), mode: lock.mode, id: NOT_TAKEN_BACK };
                r.to_adopt.push((key, res.clone()));
                held.insert(
                    res,
                    Held { grant, readable: lock.identity, since: lock.since, backing: lock.backing, source: None },
                );
            }
            r.owners_adopted += 1;
            let pidfd = owner::open_pidfd(key).map(Arc::new);
            t.owners.insert(key, Owner { spec, held, pidfd });
            let _ = self.watch.send(key);
        }
        // The journal as read stays true if it cannot be rewritten now: it names the locks
        // being taken back (under their old grant ids, which nothing reads back), and dead
        // owners are found dead again at the next start.
        if let Err(e) = t.journal.append(&records).and_then(|()| t.journal.compact()) {
            match e {
                JournalError::Damaged { .. } => return Err(e),
                e => r.journal_unwritable = Some(e.to_string()),
            }
        }
        Ok(r)
    }

    /// Second step of a restore: takes back, in the backend, the locks [`Registry::restore_owners`]
    /// registered, then purges what nobody claimed. The DLM blocks both while the lockspace is
    /// stopped (this node cut off), so no table lock is held across them, and lock-loss
    /// handling should be running already. A lock that cannot be taken back leaves the table,
    /// and its owner is listed in `unconfirmed` (its VM runs unprotected: stop it).
    pub fn adopt_restored(&self, r: &mut Restored) {
        for (key, res) in std::mem::take(&mut r.to_adopt) {
            let mode = {
                let t = self.table.lock();
                match t.owners.get(&key).and_then(|o| o.held.get(&res)) {
                    Some(h) if h.grant.id == NOT_TAKEN_BACK => h.grant.mode,
                    // Released, or its owner exited, meanwhile: an orphan for the purge.
                    _ => continue,
                }
            };
            let got = self.backend.adopt(&res, mode);
            let mut guard = self.table.lock();
            let t = &mut *guard;
            let Some(o) =
                t.owners.get_mut(&key).filter(|o| o.held.get(&res).is_some_and(|h| h.grant.id == NOT_TAKEN_BACK))
            else {
                // Let go of while it was being taken back: give it up again.
                if let Ok(g) = got {
                    drop(guard);
                    self.backend_release(&g, &res.0, "(exited while its lock was taken back)");
                }
                continue;
            };
            let h = o.held.get_mut(&res).expect("checked above");
            match got {
                Ok(grant) => {
                    r.locks_adopted += 1;
                    tracing::info!(vm = %o.spec.name, uuid = %o.spec.uuid, disk = %h.readable, mode = %mode, resource = %res.0,
                        "adopted after restart");
                    let lock = LockEntry {
                        identity: h.readable.clone(),
                        mode,
                        id: grant.id,
                        since: h.since,
                        backing: h.backing,
                    };
                    h.grant = grant;
                    if let Err(e) = t.journal.append(&[Record::Grant { key, name: res.0.clone(), lock }]) {
                        tracing::warn!("journal: could not record the new grant id of a lock taken back (it keeps the old one, which nothing reads back): {e}");
                    }
                }
                Err(e) => {
                    r.locks_lost += 1;
                    if !r.unconfirmed.contains(&key) {
                        r.unconfirmed.push(key);
                    }
                    tracing::error!(vm = %o.spec.name, uuid = %o.spec.uuid, disk = %h.readable, mode = %mode, resource = %res.0,
                        "LOCK LOST: could not take back the lock after restart: {e}");
                    if let Some(h) = o.held.remove(&res) {
                        self.publish(
                            LockChange::Released(self.info(key, &o.spec, &res, &h)),
                            Some("not taken back after a restart"),
                        );
                    }
                    if let Err(e) = t.journal.append(&[Record::Release { key, name: res.0.clone() }]) {
                        tracing::error!("journal write failed while dropping a lock not taken back: {e}");
                    }
                }
            }
        }
        r.orphans_purged = self.backend.purge_orphans().unwrap_or_else(|e| {
            tracing::error!("purging orphan locks failed: {e}");
            0
        });
    }
}
