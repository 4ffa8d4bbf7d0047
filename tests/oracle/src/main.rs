//! oracle-check: after a nemesis run, reads the shared disk images and every writer's event
//! log (tests/cluster/src/bin/disk-writer.rs) and reports any instant at which two holders in
//! incompatible modes used the same image. It trusts neither the daemon's code nor its reports:
//! it reads what the writers did to the disk and what they saw there.
//!
//! Usage: oracle-check RUNDIR
//!
//! RUNDIR holds `images/*.img` (the shared images, as the host has them), `logs/*.jsonl` (the
//! writers' event logs), `clocks.jsonl` (`{"node","off","unc"}`: each guest's wall clock minus
//! the host's, and that measure's uncertainty, measured through the harness during the run)
//! and `gone.jsonl` (`{"at","node","pids"|null,"kind"}`: host times at which owners were gone
//! for sure: kill -9 of an owner, a node killed). Writes `RUNDIR/oracle.json` and prints it;
//! exits 1 when it found an overlap, 2 when it cannot read its input.
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
use std::collections::{BTreeMap, HashMap, HashSet};
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

fn main() {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: oracle-check RUNDIR");
        std::process::exit(2);
    };
    let logs = files(&dir.join("logs"), "jsonl");
    let images = files(&dir.join("images"), "img");
    if logs.is_empty() || images.is_empty() {
        eprintln!("oracle-check: no logs/*.jsonl or images/*.img in {}", dir.display());
        std::process::exit(2);
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
    let mut seen_writes: HashSet<(u64, u64, u64)> = HashSet::new();
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
                let h = holds.entry(hold).or_default();
                h.mode = e["mode"].as_str().unwrap_or("?").to_string();
                (h.node, h.owner, h.disk) = (node, e["vm"].as_str().unwrap_or("?").to_string(), disk);
            }
            k @ ("acquire" | "release") if e["outcome"] == "io" => {
                io_kills += 1;
                *(if k == "acquire" { &mut acquires_cut } else { &mut releases_cut }) += 1;
            }
            "write" => {
                writes += 1;
                let key = (node, e["pid"].as_u64().unwrap_or(0), e["seq"].as_u64().unwrap_or(0));
                seen_writes.insert(key);
                let h = holds.entry(hold).or_default();
                (h.node, h.owner, h.disk) = (node, e["vm"].as_str().unwrap_or("?").to_string(), disk);
                if h.mode.is_empty() {
                    h.mode = "EX".into();
                }
                h.uses.push(clocks.host(node, e["rec_real"].as_f64().unwrap_or(0.0)));
            }
            "read" => {
                reads += 1;
                holds.entry(hold).or_default().uses.push(clocks.host(node, e["real"].as_f64().unwrap_or(0.0)));
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
            let key = (r["node"].as_u64().unwrap_or(0), r["pid"].as_u64().unwrap_or(0), r["seq"].as_u64().unwrap_or(0));
            if !seen_writes.insert(key) {
                continue;
            }
            disk_only += 1;
            let h = holds.entry(r["hold"].as_str().unwrap_or("").to_string()).or_default();
            (h.node, h.owner, h.disk) =
                (key.0, r["vm"].as_str().unwrap_or("?").to_string(), base(r["disk"].as_str().unwrap_or("")));
            if h.mode.is_empty() {
                h.mode = "EX".into();
            }
            h.uses.push(clocks.host(key.0, r["real"].as_f64().unwrap_or(0.0)));
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
    for g in jsonl(&dir.join("gone.jsonl")) {
        let (Some(at), Some(node)) = (g["at"].as_f64(), g["node"].as_u64()) else { continue };
        let pids: Option<HashSet<u64>> = g["pids"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect());
        for a in &acquires {
            let hold = a["hold"].as_str().unwrap_or("");
            let answered = a["answered"].as_f64().unwrap_or(f64::INFINITY);
            let open = answered < at && releases.get(hold).is_none_or(|&r| r > at);
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
        "mismatch_events": mismatches.iter().take(20).collect::<Vec<_>>(),
        "overlap_details": overlaps.iter().take(20).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    let _ = std::fs::write(dir.join("oracle.json"), &text);
    println!("{text}");
    if !overlaps.is_empty() || !mismatches.is_empty() {
        eprintln!(
            "oracle-check: {} overlaps in time, {} mismatches read on the disks",
            overlaps.len(),
            mismatches.len()
        );
        std::process::exit(1);
    }
}
