//! oracle-check: after a nemesis run, reads the shared disk images and every writer's event
//! log (tests/cluster/src/bin/disk-writer.rs) and reports any instant at which two holders in
//! incompatible modes used the same image. It trusts neither the daemon's code nor its reports:
//! it reads what the writers did to the disk and what they saw there.
//!
//! Usage: oracle-check RUNDIR
//!
//! A writer is known by its name (`vm` in its events and records), which it makes unique for
//! the run (VM, pid and boot id: a rebooted guest reuses pids); a hold by the id its writer gave
//! it. Two grants under one hold id, or one hold id on two images or of two writers, mean the
//! writers' identities are not unique: a hold's span would then be a merge of several, and
//! merged spans overlap holds that never met. The checker refuses to judge such input (exit 2).
//!
//! RUNDIR holds `images/*.img` (the shared images, as the host has them), `logs/*.jsonl` (the
//! writers' event logs), `clocks.jsonl` (`{"node","off","unc"}`: each guest's wall clock minus
//! the host's, and that measure's uncertainty, measured through the harness during the run)
//! and `gone.jsonl` (`{"at","node","pids"|null,"kind"}`: host times at which owners were gone
//! for sure: kill -9 of an owner, a node killed). Writes `RUNDIR/oracle.json` and prints it;
//! exits 1 when it found an overlap, 2 when it cannot read or cannot trust its input.
//!
//! Two kinds of evidence, either is an overlap:
//! - **Disk**: a writer read back, in block 0 of an image it held, something other than its own
//!   last record (or a reader in PR saw block 0 change under it): a `mismatch` event.
//! - **Time**: two holds of different owners on one image, in incompatible modes, each with the
//!   first and last instants it used the image (writes for EX: from the log and from the
//!   records found on the disk; reads for PR) put on one time line. Every stamp is widened by
//!   its node's clock uncertainty `eps` (the largest offset plus the measure's uncertainty seen
//!   in the run), so that only certain overlaps count: hold A is surely in use throughout
//!   `[first_A + eps_A, last_A - eps_A]`, and B surely meets that span when
//!   `first_B + eps_B < last_A - eps_A` and `last_B - eps_B > first_A + eps_A`.

mod modes;

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

const BLOCK: usize = 512;

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The record in a block, if it is one with a good checksum.
fn record(block: &[u8]) -> Option<Value> {
    let end = block.iter().position(|&b| b == 0).unwrap_or(block.len());
    let text = std::str::from_utf8(&block[..end]).ok()?;
    let mut lines = text.split('\n');
    let (json, sum) = (lines.next()?, lines.next()?);
    if format!("{:016x}", fnv(json.as_bytes())) != sum {
        return None;
    }
    let v: Value = serde_json::from_str(json).ok()?;
    (v["magic"] == "oracle1").then_some(v)
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == ext)).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn base(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// One hold of one image by one owner: its mode and the instants it used the image.
#[derive(Debug, Default)]
struct Hold {
    node: u64,
    owner: String,
    disk: String,
    mode: String,
    /// (host time, uncertainty) of each use.
    uses: Vec<(f64, f64)>,
    /// Whether its grant was logged.
    granted: bool,
}

/// Binds `h` (id `hold`) to its writer and image; another writer or image under the same id
/// is a collision.
fn bind(h: &mut Hold, hold: &str, node: u64, owner: &str, disk: String, collisions: &mut BTreeSet<String>) {
    if !h.disk.is_empty() && (h.disk != disk || h.owner != owner || h.node != node) {
        collisions.insert(hold.to_string());
    }
    (h.node, h.owner, h.disk) = (node, owner.to_string(), disk);
}

/// Per node, the measures of its clock against the host's: (host time, offset, uncertainty).
struct Clocks {
    measures: HashMap<u64, Vec<(f64, f64, f64)>>,
}

impl Clocks {
    /// A guest stamp on the host's time line, and its uncertainty: corrected by the measure
    /// nearest in time, widened by that measure's uncertainty and by how much the offset moved
    /// to the measures on either side (drift; a reboot resets the clock). A node never measured
    /// gets no correction and a 0.5 s margin.
    fn host(&self, node: u64, t: f64) -> (f64, f64) {
        let Some(m) = self.measures.get(&node).filter(|m| !m.is_empty()) else { return (t, 0.5) };
        let i = (0..m.len()).min_by(|&a, &b| (m[a].0 - t).abs().total_cmp(&(m[b].0 - t).abs())).unwrap_or(0);
        let (_, off, unc) = m[i];
        let before = if i > 0 { (off - m[i - 1].1).abs() } else { 0.0 };
        let after = if i + 1 < m.len() { (m[i + 1].1 - off).abs() } else { 0.0 };
        (t - off, unc + before.max(after))
    }

    fn eps(&self, node: u64) -> f64 {
        self.measures.get(&node).map(|m| m.iter().map(|x| x.1.abs() + x.2).fold(0.0, f64::max)).unwrap_or(0.5)
    }
}

/// What the checker concluded about one run directory.
struct Verdict {
    report: Value,
    time_overlaps: usize,
    mismatches: usize,
    /// Hold ids that name more than one hold (see the module's doc): the input cannot be judged.
    collisions: Vec<String>,
}

fn main() {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: oracle-check RUNDIR");
        std::process::exit(2);
    };
    let v = match check(&dir) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("oracle-check: {e}");
            std::process::exit(2);
        }
    };
    let text = serde_json::to_string_pretty(&v.report).unwrap_or_default();
    let _ = std::fs::write(dir.join("oracle.json"), &text);
    println!("{text}");
    if !v.collisions.is_empty() {
        let some: Vec<&String> = v.collisions.iter().take(5).collect();
        eprintln!("oracle-check: {} hold ids name more than one hold (the writers' names are not unique), e.g. {some:?}: cannot judge", v.collisions.len());
        std::process::exit(2);
    }
    if v.time_overlaps > 0 || v.mismatches > 0 {
        eprintln!("oracle-check: {} overlaps in time, {} mismatches read on the disks", v.time_overlaps, v.mismatches);
        std::process::exit(1);
    }
}

fn check(dir: &Path) -> Result<Verdict, String> {
    let logs = files(&dir.join("logs"), "jsonl");
    let images = files(&dir.join("images"), "img");
    if logs.is_empty() || images.is_empty() {
        return Err(format!("no logs/*.jsonl or images/*.img in {}", dir.display()));
    }
    let mut measures: HashMap<u64, Vec<(f64, f64, f64)>> = HashMap::new();
    for c in jsonl(&dir.join("clocks.jsonl")) {
        let (Some(n), Some(at), Some(off), Some(unc)) =
            (c["node"].as_u64(), c["at"].as_f64(), c["off"].as_f64(), c["unc"].as_f64())
        else {
            continue;
        };
        measures.entry(n).or_default().push((at, off, unc));
    }
    for m in measures.values_mut() {
        m.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let clocks = Clocks { measures };

    let events: Vec<Value> = logs.iter().flat_map(|p| jsonl(p)).collect();
    let mut holds: BTreeMap<String, Hold> = BTreeMap::new();
    // A write is known by its writer (node, name) and its sequence number.
    let mut seen_writes: HashSet<(u64, String, u64)> = HashSet::new();
    let mut collisions: BTreeSet<String> = BTreeSet::new();
    let (mut grants, mut writes, mut reads, mut io_kills) = (0u64, 0u64, 0u64, 0u64);
    // Of which acquires and releases (a daemon killed in the middle of one).
    let (mut acquires_cut, mut releases_cut) = (0u64, 0u64);
    let mut mismatches = Vec::new();
    for e in &events {
        let hold = e["hold"].as_str().unwrap_or("").to_string();
        let node = e["node"].as_u64().unwrap_or(0);
        let disk = base(e["disk"].as_str().unwrap_or(""));
        match e["ev"].as_str().unwrap_or("") {
            "acquire" if e["outcome"] == "ok" => {
                grants += 1;
                let h = holds.entry(hold.clone()).or_default();
                if h.granted {
                    collisions.insert(hold.clone());
                }
                h.granted = true;
                h.mode = e["mode"].as_str().unwrap_or("?").to_string();
                bind(h, &hold, node, e["vm"].as_str().unwrap_or("?"), disk, &mut collisions);
            }
            k @ ("acquire" | "release") if e["outcome"] == "io" => {
                io_kills += 1;
                *(if k == "acquire" { &mut acquires_cut } else { &mut releases_cut }) += 1;
            }
            "write" => {
                writes += 1;
                let vm = e["vm"].as_str().unwrap_or("?");
                seen_writes.insert((node, vm.to_string(), e["seq"].as_u64().unwrap_or(0)));
                let h = holds.entry(hold.clone()).or_default();
                bind(h, &hold, node, vm, disk, &mut collisions);
                if h.mode.is_empty() {
                    h.mode = "EX".into();
                }
                h.uses.push(clocks.host(node, e["rec_real"].as_f64().unwrap_or(0.0)));
            }
            "read" => {
                reads += 1;
                let h = holds.entry(hold.clone()).or_default();
                bind(h, &hold, node, e["vm"].as_str().unwrap_or("?"), disk, &mut collisions);
                h.uses.push(clocks.host(node, e["real"].as_f64().unwrap_or(0.0)));
            }
            "mismatch" => mismatches.push(e.clone()),
            _ => {}
        }
    }
    // Records on the disks that no log line tells of (the writer died before logging them).
    let mut disk_records = 0u64;
    let mut disk_only = 0u64;
    for img in &images {
        let Ok(bytes) = std::fs::read(img) else { continue };
        for block in bytes.chunks(BLOCK) {
            let Some(r) = record(block) else { continue };
            disk_records += 1;
            let (node, vm) = (r["node"].as_u64().unwrap_or(0), r["vm"].as_str().unwrap_or("?"));
            if !seen_writes.insert((node, vm.to_string(), r["seq"].as_u64().unwrap_or(0))) {
                continue;
            }
            disk_only += 1;
            let hold = r["hold"].as_str().unwrap_or("").to_string();
            let h = holds.entry(hold.clone()).or_default();
            bind(h, &hold, node, vm, base(r["disk"].as_str().unwrap_or("")), &mut collisions);
            if h.mode.is_empty() {
                h.mode = "EX".into();
            }
            h.uses.push(clocks.host(node, r["real"].as_f64().unwrap_or(0.0)));
        }
    }

    // Certain overlaps in time, per image.
    // Each hold's span: first and last use on the host's time line, with the uncertainty of
    // those two stamps.
    type Span<'a> = (&'a String, &'a Hold, f64, f64, f64, f64);
    let mut by_disk: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for (id, h) in &holds {
        let (Some(first), Some(last)) =
            (h.uses.iter().min_by(|a, b| a.0.total_cmp(&b.0)), h.uses.iter().max_by(|a, b| a.0.total_cmp(&b.0)))
        else {
            continue;
        };
        by_disk.entry(h.disk.as_str()).or_default().push((id, h, first.0, first.1, last.0, last.1));
    }
    let mut overlaps = Vec::new();
    for (disk, hs) in &by_disk {
        for (i, a) in hs.iter().enumerate() {
            for b in &hs[i + 1..] {
                if a.1.owner == b.1.owner || modes::compatible(&a.1.mode, &b.1.mode) {
                    continue;
                }
                // x is surely in use over [first + e, last - e]; y surely meets that span.
                let meets = |x: &Span, y: &Span| {
                    let (core0, core1) = (x.2 + x.3, x.4 - x.5);
                    core0 < core1 && y.2 + y.3 < core1 && y.4 - y.5 > core0
                };
                if meets(a, b) || meets(b, a) {
                    let show = |x: &Span| json!({ "hold": x.0, "node": x.1.node, "owner": x.1.owner, "mode": x.1.mode, "first": x.2, "last": x.4, "eps": x.3.max(x.5) });
                    overlaps.push(json!({ "disk": disk, "a": show(a), "b": show(b) }));
                }
            }
        }
    }

    // How long a disk stayed unusable after its owner was gone: from the moment the owner was
    // surely gone to the next grant of that disk to anyone (host time line, stamps widened
    // against the figure: the grant counted as late as it can have been).
    let acquires: Vec<&Value> = events.iter().filter(|e| e["ev"] == "acquire" && e["outcome"] == "ok").collect();
    let releases: HashMap<&str, f64> = events
        .iter()
        .filter(|e| e["ev"] == "release")
        .filter_map(|e| Some((e["hold"].as_str()?, e["sent"].as_f64()?)))
        .collect();
    let mut unusable: Vec<Value> = Vec::new();
    let gone = jsonl(&dir.join("gone.jsonl"));
    // Whole nodes gone (crashed, rebooted): a hold of that node granted before is over then,
    // whether or not its release was logged (its writer died with the node).
    let node_gone: Vec<(u64, f64)> = gone
        .iter()
        .filter(|g| g["pids"].is_null())
        .filter_map(|g| Some((g["node"].as_u64()?, g["at"].as_f64()?)))
        .collect();
    for g in &gone {
        let (Some(at), Some(node)) = (g["at"].as_f64(), g["node"].as_u64()) else { continue };
        let pids: Option<HashSet<u64>> = g["pids"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect());
        for a in &acquires {
            let hold = a["hold"].as_str().unwrap_or("");
            let answered = a["answered"].as_f64().unwrap_or(f64::INFINITY);
            let ended_with_node =
                node_gone.iter().any(|&(n, t)| a["node"].as_u64() == Some(n) && answered < t && t < at);
            let open = answered < at && releases.get(hold).is_none_or(|&r| r > at) && !ended_with_node;
            let mine = a["node"].as_u64() == Some(node)
                && pids.as_ref().is_none_or(|p| a["pid"].as_u64().is_some_and(|x| p.contains(&x)));
            if !(open && mine) {
                continue;
            }
            let disk = a["disk"].as_str().unwrap_or("");
            let next = acquires
                .iter()
                .filter(|b| b["disk"] == disk && b["answered"].as_f64().is_some_and(|t| t > at))
                .filter_map(|b| {
                    let (t, e) = clocks.host(b["node"].as_u64()?, b["answered"].as_f64()?);
                    Some(t + e)
                })
                .fold(f64::INFINITY, f64::min);
            if next.is_finite() {
                unusable.push(json!({ "kind": g["kind"], "node": node, "disk": base(disk), "seconds": next - at }));
            }
        }
    }
    let longest = unusable
        .iter()
        .max_by(|a, b| a["seconds"].as_f64().partial_cmp(&b["seconds"].as_f64()).unwrap_or(std::cmp::Ordering::Equal));

    let report = json!({
        "images": images.len(),
        "logs": logs.len(),
        "grants": grants,
        "holds": holds.len(),
        "writes_logged": writes,
        "reads_logged": reads,
        "records_on_disk": disk_records,
        "records_only_on_disk": disk_only,
        "requests_cut_by_daemon_death": io_kills,
        "acquires_cut_by_daemon_death": acquires_cut,
        "releases_cut_by_daemon_death": releases_cut,
        "clock_worst_offset_plus_uncertainty": clocks.measures.keys().map(|n| (format!("node{n}"), json!(clocks.eps(*n)))).collect::<serde_json::Map<_, _>>(),
        "mismatches": mismatches.len(),
        "time_overlaps": overlaps.len(),
        "overlaps": overlaps.len() + mismatches.len(),
        "owner_gone_cases": unusable.len(),
        "longest_unusable_after_owner_gone": longest.cloned().unwrap_or(Value::Null),
        "hold_id_collisions": collisions.len(),
        "mismatch_events": mismatches.iter().take(20).collect::<Vec<_>>(),
        "overlap_details": overlaps.iter().take(20).collect::<Vec<_>>(),
    });
    Ok(Verdict {
        report,
        time_overlaps: overlaps.len(),
        mismatches: mismatches.len(),
        collisions: collisions.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run directory with one empty image and the given writer logs (file name, events).
    fn rundir(tag: &str, logs: &[(&str, Vec<Value>)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oracle-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::create_dir_all(dir.join("images")).unwrap();
        std::fs::write(dir.join("images/d0.img"), vec![0u8; 4 * BLOCK]).unwrap();
        for (name, events) in logs {
            let text: String = events.iter().map(|e| format!("{e}\n")).collect();
            std::fs::write(dir.join("logs").join(format!("{name}.jsonl")), text).unwrap();
        }
        dir
    }

    /// A writer's EX hold of `disk` from `t0` to `t1` (host time; no clock measured, so every
    /// stamp gets the 0.5 s margin), one write a second.
    fn hold(node: u64, vm: &str, hold: &str, disk: &str, t0: f64, t1: f64) -> Vec<Value> {
        let mut v = vec![
            json!({ "ev": "acquire", "node": node, "vm": vm, "hold": hold, "disk": disk, "mode": "EX", "outcome": "ok", "answered": t0 }),
        ];
        let (mut t, mut seq) = (t0, 0);
        while t <= t1 {
            seq += 1;
            v.push(
                json!({ "ev": "write", "node": node, "vm": vm, "hold": hold, "disk": disk, "seq": seq, "rec_real": t }),
            );
            t += 1.0;
        }
        v
    }

    #[test]
    fn two_writers_of_one_image_at_one_time_are_an_overlap() {
        let a = hold(1, "w10-800-aaaa", "1-w10-800-aaaa-1", "/i/d0.img", 100.0, 110.0);
        let b = hold(2, "w20-800-bbbb", "2-w20-800-bbbb-1", "/i/d0.img", 105.0, 115.0);
        let v = check(&rundir("overlap", &[("a", a), ("b", b)])).unwrap();
        assert_eq!((v.time_overlaps, v.mismatches, v.collisions.len()), (1, 0, 0), "{}", v.report);
    }

    #[test]
    fn a_writer_rebooted_with_its_old_pid_is_another_writer() {
        // Node 1's writer w10 had pid 800 before a reboot and again after it; in between, node
        // 2's writer held the image. Holds one after the other: no overlap.
        let mut before = hold(1, "w10-800-aaaa", "1-w10-800-aaaa-1", "/i/d0.img", 100.0, 110.0);
        before.extend(hold(1, "w10-800-aaaa", "1-w10-800-aaaa-2", "/i/d1.img", 112.0, 114.0));
        let between = hold(2, "w20-900-bbbb", "2-w20-900-bbbb-1", "/i/d0.img", 120.0, 130.0);
        let after = hold(1, "w10-800-cccc", "1-w10-800-cccc-1", "/i/d0.img", 140.0, 150.0);
        let v = check(&rundir("reboot", &[("a", before), ("b", between), ("c", after)])).unwrap();
        assert_eq!((v.time_overlaps, v.collisions.len()), (0, 0), "{}", v.report);
    }

    #[test]
    fn one_hold_id_for_two_holds_is_refused_not_merged() {
        // Writers named without their boot (as before the names carried it): the same hold id
        // before and after a reboot. Merged, that hold would span both and seem to overlap
        // node 2's hold in between.
        let mut w10 = hold(1, "w10-800", "1-800-1", "/i/d1.img", 100.0, 110.0);
        w10.extend(hold(1, "w10-800", "1-800-1", "/i/d0.img", 140.0, 150.0));
        let w20 = hold(2, "w20-900", "2-900-1", "/i/d0.img", 120.0, 130.0);
        let v = check(&rundir("collision", &[("a", w10), ("b", w20)])).unwrap();
        assert_eq!(v.collisions, vec!["1-800-1".to_string()], "{}", v.report);
    }

    #[test]
    fn a_record_read_back_that_is_not_the_writers_own_is_a_mismatch() {
        let mut a = hold(1, "w10-800-aaaa", "1-w10-800-aaaa-1", "/i/d0.img", 100.0, 101.0);
        a.push(json!({ "ev": "mismatch", "node": 1, "vm": "w10-800-aaaa", "hold": "1-w10-800-aaaa-1", "disk": "/i/d0.img", "when": "readback" }));
        let v = check(&rundir("mismatch", &[("a", a)])).unwrap();
        assert_eq!((v.time_overlaps, v.mismatches), (0, 1), "{}", v.report);
    }
}
