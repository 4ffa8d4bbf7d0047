//! Releases the backend refused: the registry has given the lock up (its owner released it or
//! exited), but the DLM may still hold it, keeping every other VM off the disk. Each is
//! retried with a growing delay until the backend lets go of it (or says it is gone), and is
//! shown by `Status` meanwhile; none is ever forgotten.

use crate::backend::{Backend, Grant};
use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// The first retry comes after this; each failure doubles it, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
pub const MAX_DELAY: Duration = Duration::from_secs(60);

struct Entry {
    grant: Grant,
    /// The disk as people read it.
    readable: String,
    /// The VM that held it (name and uuid).
    vm: String,
    attempts: u32,
    next: Instant,
    error: String,
}

/// One pending release as `Status` shows it.
pub use proto::status::PendingRelease as Pending;

#[derive(Default)]
pub struct Unreleased {
    pending: Mutex<Vec<Entry>>,
}

fn delay(attempts: u32) -> Duration {
    FIRST_DELAY.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(MAX_DELAY)
}

impl Unreleased {
    /// Records a release the backend refused with `error`; retried from [`Unreleased::retry`].
    pub fn add(&self, grant: Grant, readable: &str, vm: &str, error: String) {
        tracing::error!(disk = %readable, mode = %grant.mode, resource = %grant.name.0, vm = %vm,
            "backend release failed: {error}; the lock may still be held in the DLM, retrying in {:?}", FIRST_DELAY);
        self.pending.lock().push(Entry {
            grant,
            readable: readable.to_owned(),
            vm: vm.to_owned(),
            attempts: 1,
            next: Instant::now() + delay(1),
            error,
        });
    }

    /// Retries every release due at `now` (the backend calls run without the list's lock, so
    /// a blocking one stops nothing else); returns how many are still pending.
    pub fn retry(&self, backend: &dyn Backend, now: Instant) -> usize {
        let due: Vec<Entry> = {
            let mut p = self.pending.lock();
            let (due, later) = std::mem::take(&mut *p).into_iter().partition(|e| e.next <= now);
            *p = later;
            due
        };
        let mut again = Vec::new();
        for mut e in due {
            match backend.release(&e.grant) {
                Ok(()) => {
                    tracing::info!(disk = %e.readable, mode = %e.grant.mode, resource = %e.grant.name.0, vm = %e.vm,
                    attempts = e.attempts + 1, "released (retry)")
                }
                Err(err) => {
                    e.attempts += 1;
                    e.error = err.to_string();
                    e.next = Instant::now() + delay(e.attempts);
                    tracing::error!(disk = %e.readable, mode = %e.grant.mode, resource = %e.grant.name.0, vm = %e.vm,
                        attempts = e.attempts, "backend release failed again: {err}; retrying in {:?}", delay(e.attempts));
                    again.push(e);
                }
            }
        }
        let mut p = self.pending.lock();
        p.extend(again);
        p.len()
    }

    pub fn list(&self) -> Vec<Pending> {
        self.pending
            .lock()
            .iter()
            .map(|e| Pending {
                resource: e.grant.name.0.clone(),
                disk: e.readable.clone(),
                mode: e.grant.mode.to_string(),
                vm: e.vm.clone(),
                attempts: e.attempts,
                error: e.error.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_a_minute() {
        assert_eq!(delay(1), Duration::from_secs(1));
        assert_eq!(delay(2), Duration::from_secs(2));
        assert_eq!(delay(4), Duration::from_secs(8));
        assert_eq!(delay(7), Duration::from_secs(60));
        assert_eq!(delay(u32::MAX), Duration::from_secs(60));
    }
}
