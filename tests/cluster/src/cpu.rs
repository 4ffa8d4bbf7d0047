//! Where a guest's CPU went during a measured interval, by process: the CPU time of every
//! process (all its threads, kernel threads included) from `/proc/<pid>/stat`, and the whole
//! CPU's busy share from `/proc/stat`. A profile at process granularity, which works in a UML
//! guest where `perf` does not: it says whether the interval was CPU-bound and whose work
//! filled it (the bench's clients, virtdlmd, corosync, the kernel's DLM threads).

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// CPU times at one instant, in clock ticks.
pub struct Snapshot {
    /// (pid, comm) -> utime + stime.
    procs: BTreeMap<(u32, String), u64>,
    busy: u64,
    idle: u64,
}

/// The CPU times of every process now (a process that exits meanwhile is skipped).
pub fn snapshot() -> Snapshot {
    let mut procs = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        if let Some((comm, ticks)) = parse_stat(&stat) {
            procs.insert((pid, comm), ticks);
        }
    }
    let (busy, idle) = std::fs::read_to_string("/proc/stat").ok().and_then(|s| parse_cpu_line(&s)).unwrap_or((0, 0));
    Snapshot { procs, busy, idle }
}

/// (comm, utime + stime) of a `/proc/<pid>/stat` line. The comm is in parentheses and may hold
/// spaces or parentheses itself: the fields follow the last `)`.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // Fields 14 and 15 of proc(5) (utime, stime); fields[0] is field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// (busy, idle) ticks of all CPUs from `/proc/stat`'s first line; iowait counts as idle.
fn parse_cpu_line(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, idle))
}

/// A process's name without what varies between instances: a kernel worker's `/N` suffix, and
/// the content hash the test harness appends to the binaries it runs in the guests
/// (`virtdlmd-24284d`).
fn plain_name(comm: &str) -> String {
    if comm.starts_with("kworker") {
        return comm.split('/').next().unwrap_or(comm).to_string();
    }
    match comm.rsplit_once('-') {
        Some((base, hash)) if hash.len() >= 5 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => base.to_string(),
        _ => comm.to_string(),
    }
}

/// What happened between `a` and `b`: the busy share of the CPU and the `top` processes by
/// CPU time (ms), grouped by name (a kernel worker's `/N` suffix dropped, so that its
/// instances add up).
pub fn between(a: &Snapshot, b: &Snapshot, top: usize) -> Value {
    // SAFETY: sysconf reads a constant of the C library; no memory is touched.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ms = |ticks: u64| (ticks as f64 * 1000.0 / hz).round();
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    for ((pid, comm), t) in &b.procs {
        let before = a.procs.get(&(*pid, comm.clone())).copied().unwrap_or(0);
        let name = plain_name(comm);
        *by_name.entry(name).or_default() += t.saturating_sub(before);
    }
    let mut rows: Vec<(String, u64)> = by_name.into_iter().filter(|(_, t)| *t > 0).collect();
    rows.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    let busy = b.busy.saturating_sub(a.busy);
    let idle = b.idle.saturating_sub(a.idle);
    let busy_pct = if busy + idle == 0 { 0.0 } else { (busy as f64 * 1000.0 / (busy + idle) as f64).round() / 10.0 };
    json!({
        "busy_pct": busy_pct,
        "busy_ms": ms(busy),
        "tick_ms": (1000.0 / hz).round(),
        "by_process_ms": rows.into_iter().take(top).map(|(name, t)| json!({"name": name, "ms": ms(t)})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_comm_with_spaces_and_parentheses() {
        let line = "42 (a (b) c) S 1 1 1 0 -1 4194560 10 0 0 0 7 3 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat(line), Some(("a (b) c".into(), 10)));
    }

    #[test]
    fn names_lose_what_varies_between_instances() {
        assert_eq!(plain_name("virtdlmd-24284d"), "virtdlmd");
        assert_eq!(plain_name("dlm-bench-49385"), "dlm-bench");
        assert_eq!(plain_name("kworker/u2:1"), "kworker");
        assert_eq!(plain_name("command-loop.sh"), "command-loop.sh");
        assert_eq!(plain_name("corosync"), "corosync");
    }

    #[test]
    fn busy_and_idle_of_the_cpu_line() {
        assert_eq!(parse_cpu_line("cpu  10 1 5 80 4 0 2 0 0 0\ncpu0 ..."), Some((18, 84)));
    }

    #[test]
    fn the_interval_is_split_by_name() {
        let snap = |v: &[(u32, &str, u64)], busy, idle| Snapshot {
            procs: v.iter().map(|(p, c, t)| ((*p, c.to_string()), *t)).collect(),
            busy,
            idle,
        };
        let a = snap(&[(1, "virtdlmd", 100), (2, "kworker/0:1", 5)], 1000, 1000);
        let b = snap(
            &[(1, "virtdlmd", 150), (2, "kworker/0:1", 6), (3, "kworker/u2:0", 4), (4, "corosync", 20)],
            1090,
            1010,
        );
        let v = between(&a, &b, 2);
        assert_eq!(v["busy_pct"], 90.0);
        let rows = v["by_process_ms"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["name"], "virtdlmd");
        assert_eq!(rows[1]["name"], "corosync");
    }
}
