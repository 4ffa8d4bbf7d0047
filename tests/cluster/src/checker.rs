//! The lock-history checker: replays grant and release events gathered from every node and
//! finds two holders of one resource whose holds overlapped in incompatible modes.
//!
//! Times are seconds on the host's time line: guest stamps corrected by the caller with each
//! guest's measured clock offset (and widened by its uncertainty). Each hold is taken at its widest: from the moment its holder *could*
//! start using the resource (the grant's answer arrived) to the moment it certainly stopped
//! (its release was answered, or its process was seen dead). So a history the checker passes
//! had no overlap, whatever happened inside those bounds.

use proto::mode::Mode;
use std::collections::HashMap;

/// One event of a lock's life, as a node reported it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `holder` (a VM on `node`) was told it holds `resource` in `mode` at `at`.
    Grant { node: u32, holder: String, resource: String, mode: Mode, at: f64 },
    /// `holder` certainly no longer used `resource` from `at` on (release answered, or the
    /// process was dead).
    End { node: u32, holder: String, resource: String, at: f64 },
}

/// A hold of one resource by one holder; `to == None`: still held when the history ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    pub node: u32,
    pub holder: String,
    pub resource: String,
    pub mode: Mode,
    pub from: f64,
    pub to: Option<f64>,
}

impl Hold {
    fn overlaps(&self, o: &Hold) -> bool {
        let (a_end, b_end) = (self.to.unwrap_or(f64::INFINITY), o.to.unwrap_or(f64::INFINITY));
        self.from < b_end && o.from < a_end
    }
}

/// Turns events into holds. An end without a grant, or a second grant of a resource its
/// holder already holds, is a broken history and an error.
pub fn replay(events: &[Event]) -> Result<Vec<Hold>, String> {
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by(|a, b| at(a).total_cmp(&at(b)));
    let mut open: HashMap<(u32, String, String), Hold> = HashMap::new();
    let mut done = Vec::new();
    for e in sorted {
        match e {
            Event::Grant { node, holder, resource, mode, at } => {
                let key = (*node, holder.clone(), resource.clone());
                if open.contains_key(&key) {
                    return Err(format!("{holder} on node{node} granted {resource} twice (second at {at})"));
                }
                open.insert(
                    key,
                    Hold {
                        node: *node,
                        holder: holder.clone(),
                        resource: resource.clone(),
                        mode: *mode,
                        from: *at,
                        to: None,
                    },
                );
            }
            Event::End { node, holder, resource, at } => {
                let Some(mut h) = open.remove(&(*node, holder.clone(), resource.clone())) else {
                    return Err(format!("{holder} on node{node} ended {resource} at {at} without holding it"));
                };
                h.to = Some(*at);
                done.push(h);
            }
        }
    }
    done.extend(open.into_values());
    Ok(done)
}

fn at(e: &Event) -> f64 {
    match e {
        Event::Grant { at, .. } | Event::End { at, .. } => *at,
    }
}

/// Every pair of holds of one resource that overlapped in incompatible modes.
pub fn conflicts(holds: &[Hold]) -> Vec<(Hold, Hold)> {
    let mut out = Vec::new();
    for (i, a) in holds.iter().enumerate() {
        for b in &holds[i + 1..] {
            if a.resource == b.resource
                && (a.node, &a.holder) != (b.node, &b.holder)
                && !a.mode.compatible(b.mode)
                && a.overlaps(b)
            {
                out.push((a.clone(), b.clone()));
            }
        }
    }
    out
}

/// Replays `events` and fails, naming the pairs, if two incompatible holders overlapped.
pub fn check(events: &[Event]) -> Result<usize, String> {
    let holds = replay(events)?;
    let bad = conflicts(&holds);
    if bad.is_empty() {
        Ok(holds.len())
    } else {
        Err(bad
            .iter()
            .map(|(a, b)| {
                format!(
                    "{} ({} on node{}, {:.3}..{}) overlapped {} ({} on node{}, {:.3}..{})",
                    a.resource,
                    a.mode,
                    a.node,
                    a.from,
                    a.to.map_or("end".into(), |t| format!("{t:.3}")),
                    b.holder,
                    b.mode,
                    b.node,
                    b.from,
                    b.to.map_or("end".into(), |t| format!("{t:.3}"))
                )
            })
            .collect::<Vec<_>>()
            .join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(node: u32, holder: &str, res: &str, mode: Mode, at: f64) -> Event {
        Event::Grant { node, holder: holder.into(), resource: res.into(), mode, at }
    }
    fn end(node: u32, holder: &str, res: &str, at: f64) -> Event {
        Event::End { node, holder: holder.into(), resource: res.into(), at }
    }

    #[test]
    fn a_handover_after_the_end_passes() {
        let ev = [grant(3, "a", "d", Mode::Ex, 1.0), end(3, "a", "d", 5.0), grant(1, "b", "d", Mode::Ex, 5.5)];
        assert_eq!(check(&ev), Ok(2));
    }

    #[test]
    fn an_exclusive_grant_before_the_previous_end_is_caught() {
        let ev = [grant(3, "a", "d", Mode::Ex, 1.0), grant(1, "b", "d", Mode::Ex, 4.9), end(3, "a", "d", 5.0)];
        let e = check(&ev).unwrap_err();
        assert!(e.contains("node3") && e.contains("node1"), "{e}");
    }

    #[test]
    fn a_holder_never_ended_overlaps_every_later_incompatible_grant() {
        let ev = [grant(3, "a", "d", Mode::Ex, 1.0), grant(1, "b", "d", Mode::Pr, 100.0)];
        assert!(check(&ev).is_err());
    }

    #[test]
    fn compatible_modes_may_overlap_and_other_resources_do_not_matter() {
        let ev = [
            grant(1, "a", "d", Mode::Cw, 1.0),
            grant(2, "b", "d", Mode::Cw, 2.0),
            grant(3, "c", "d", Mode::Cr, 2.5),
            grant(3, "c", "e", Mode::Ex, 2.5),
            grant(2, "x", "f", Mode::Ex, 2.6),
            end(1, "a", "d", 3.0),
        ];
        assert_eq!(check(&ev), Ok(5));
        // A protected reader (PR) and a shared writer (CW) are not compatible.
        let ev = [grant(1, "a", "d", Mode::Cw, 1.0), grant(2, "b", "d", Mode::Pr, 2.0)];
        assert!(check(&ev).is_err());
    }

    #[test]
    fn broken_histories_are_errors() {
        assert!(check(&[end(1, "a", "d", 1.0)]).unwrap_err().contains("without holding"));
        assert!(check(&[grant(1, "a", "d", Mode::Ex, 1.0), grant(1, "a", "d", Mode::Ex, 2.0)])
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn events_are_replayed_in_time_order_whatever_order_they_were_gathered_in() {
        let ev = [grant(1, "b", "d", Mode::Ex, 5.5), end(3, "a", "d", 5.0), grant(3, "a", "d", Mode::Ex, 1.0)];
        assert_eq!(check(&ev), Ok(2));
    }
}
