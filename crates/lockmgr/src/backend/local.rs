//! The `local` backend: one host, no cluster. The lock is an entry in this table; the daemon's
//! journal makes it outlive a daemon restart (the restarted daemon adopts every journaled
//! lock of a live owner before it serves anyone). Same modes and compatibility as the DLM.

use super::{Backend, BackendError, Grant, ResName};
use parking_lot::{Condvar, Mutex};
use proto::mode::Mode;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Table {
    /// Holders of each resource: (grant id, mode).
    held: HashMap<ResName, Vec<(u64, Mode)>>,
    /// Requests waiting (a bounded wait) for each resource: only a release of one of these
    /// wakes the waiters, not every release on the host.
    waiting: HashMap<ResName, usize>,
    next_id: u64,
}

impl Table {
    fn grantable(&self, name: &ResName, mode: Mode) -> bool {
        self.held.get(name).is_none_or(|hs| hs.iter().all(|(_, m)| mode.compatible(*m)))
    }

    fn grant(&mut self, name: &ResName, mode: Mode) -> Grant {
        self.next_id += 1;
        self.held.entry(name.clone()).or_default().push((self.next_id, mode));
        Grant { name: name.clone(), mode, id: self.next_id }
    }
}

pub struct LocalBackend {
    node_name: String,
    table: Mutex<Table>,
    /// Signalled when a resource someone waits for is released (bounded waits).
    released: Condvar,
}

impl LocalBackend {
    pub fn new(node_name: impl Into<String>) -> Self {
        LocalBackend { node_name: node_name.into(), table: Mutex::new(Table::default()), released: Condvar::new() }
    }

    /// Number of grants held (for status).
    pub fn held(&self) -> usize {
        self.table.lock().held.values().map(Vec::len).sum()
    }
}

impl Backend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn node(&self) -> (u32, String) {
        (0, self.node_name.clone())
    }

    fn acquire(&self, name: &ResName, mode: Mode, wait: Option<Duration>) -> Result<Grant, BackendError> {
        let mut t = self.table.lock();
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            if t.grantable(name, mode) {
                return Ok(t.grant(name, mode));
            }
            match deadline {
                None => return Err(BackendError::WouldBlock(name.clone())),
                Some(d) => {
                    *t.waiting.entry(name.clone()).or_default() += 1;
                    let timed_out = self.released.wait_until(&mut t, d).timed_out();
                    if let Some(n) = t.waiting.get_mut(name) {
                        *n -= 1;
                        if *n == 0 {
                            t.waiting.remove(name);
                        }
                    }
                    if timed_out && !t.grantable(name, mode) {
                        return Err(BackendError::TimedOut(name.clone()));
                    }
                }
            }
        }
    }

    fn release(&self, grant: &Grant) -> Result<(), BackendError> {
        let mut t = self.table.lock();
        if let Some(hs) = t.held.get_mut(&grant.name) {
            hs.retain(|(id, _)| *id != grant.id);
            if hs.is_empty() {
                t.held.remove(&grant.name);
            }
        }
        // Waking every waiter on each release made a host's unrelated releases each wake the
        // waiting request's thread (docs/PERFORMANCE.md, "A request waiting on a held disk").
        if t.waiting.contains_key(&grant.name) {
            self.released.notify_all();
        }
        Ok(())
    }

    /// Nothing survives a daemon restart in memory: adoption re-takes the lock from the
    /// journal. It cannot conflict, because adoption runs before any request is served and
    /// the journal only ever held compatible grants.
    fn adopt(&self, name: &ResName, mode: Mode) -> Result<Grant, BackendError> {
        let mut t = self.table.lock();
        if !t.grantable(name, mode) {
            return Err(BackendError::IncompatibleJournal(name.clone()));
        }
        Ok(t.grant(name, mode))
    }

    fn purge_orphans(&self) -> Result<usize, BackendError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> ResName {
        ResName(s.into())
    }

    #[test]
    fn every_mode_pair_follows_the_table() {
        for a in Mode::ALL {
            for b in Mode::ALL {
                let be = LocalBackend::new("h");
                let g = be.acquire(&n("r"), a, None).unwrap();
                let second = be.acquire(&n("r"), b, None);
                assert_eq!(second.is_ok(), a.compatible(b), "{a} then {b}");
                be.release(&g).unwrap();
                assert!(be.acquire(&n("r"), b, None).is_ok(), "{b} after release of {a}");
            }
        }
    }

    #[test]
    fn release_is_idempotent_and_per_grant() {
        let be = LocalBackend::new("h");
        let g1 = be.acquire(&n("r"), Mode::Cw, None).unwrap();
        let g2 = be.acquire(&n("r"), Mode::Cw, None).unwrap();
        be.release(&g1).unwrap();
        be.release(&g1).unwrap();
        assert!(be.acquire(&n("r"), Mode::Ex, None).is_err());
        be.release(&g2).unwrap();
        assert!(be.acquire(&n("r"), Mode::Ex, None).is_ok());
    }

    #[test]
    fn bounded_wait_gets_the_lock_when_released_or_times_out() {
        let be = std::sync::Arc::new(LocalBackend::new("h"));
        let g = be.acquire(&n("r"), Mode::Ex, None).unwrap();
        assert!(matches!(
            be.acquire(&n("r"), Mode::Ex, Some(Duration::from_millis(50))),
            Err(BackendError::TimedOut(_))
        ));
        let be2 = be.clone();
        let t = std::thread::spawn(move || be2.acquire(&n("r"), Mode::Ex, Some(Duration::from_secs(30))));
        std::thread::sleep(Duration::from_millis(50));
        be.release(&g).unwrap();
        assert!(t.join().unwrap().is_ok());
    }

    #[test]
    fn every_waiter_on_a_released_resource_wakes_and_others_keep_waiting() {
        let be = std::sync::Arc::new(LocalBackend::new("h"));
        let held = be.acquire(&n("r"), Mode::Ex, None).unwrap();
        let other = be.acquire(&n("s"), Mode::Ex, None).unwrap();
        let wait = |name: &'static str| {
            let be = be.clone();
            std::thread::spawn(move || be.acquire(&n(name), Mode::Pr, Some(Duration::from_secs(30))))
        };
        let (r1, r2, s1) = (wait("r"), wait("r"), wait("s"));
        std::thread::sleep(Duration::from_millis(50));
        // A release of an unrelated resource wakes nobody waiting for r or s.
        let free = be.acquire(&n("t"), Mode::Ex, None).unwrap();
        be.release(&free).unwrap();
        be.release(&held).unwrap();
        assert!(r1.join().unwrap().is_ok() && r2.join().unwrap().is_ok(), "both readers of r granted");
        assert!(!s1.is_finished(), "the waiter for s still waits");
        be.release(&other).unwrap();
        assert!(s1.join().unwrap().is_ok());
        assert!(be.table.lock().waiting.is_empty(), "no waiter left counted");
    }
}
