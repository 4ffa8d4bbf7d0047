//! Benchmark of virtdlmd with the local backend (not a test; figures go to docs/PERFORMANCE.md).
//!
//! cargo build --release -p lockmgr --bins --examples
//! target/release/examples/bench [--dir /dev/shm] [--virtdlmd target/release/virtdlmd] [--iterations 2000]
//!                                [--json OUT.json]
//!
//! 1. acquire + release latency of one VM with 4 disks (a fresh connection per request, as
//!    the plugin makes), median and p99;
//! 2. virtdlmd's RSS idle and with 10,000 held locks (250 VMs x 40 disks);
//! 3. kill -9 of virtdlmd and restart: time until all 10,000 are taken back and it serves.
//!
//! `--json` also writes the figures there (tests/bench/peers.sh stores them in docs/bench/).
use proto::{self, FailureAction, Op, OwnerSpec, Resource, Response};
use serde_json::json;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[path = "common/daemon.rs"]
mod daemon;
use daemon::call;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap()
}

fn vm(i: usize) -> (Child, OwnerSpec) {
    let child = Command::new("sleep").arg("3600").spawn().unwrap();
    let spec = OwnerSpec {
        uuid: format!("00000000-0000-4000-8000-{i:012}"),
        name: format!("bench-{i}"),
        pid: child.id(),
        id: 1,
        uri: None,
        action: FailureAction::Default,
    };
    (child, spec)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let setup = daemon::Setup::start("bench");
    let iterations: usize = setup.arg("--iterations").map(|v| v.parse().unwrap()).unwrap_or(2000);
    let json = setup.arg("--json");
    let daemon::Setup { virtdlmd, dir, sock, mut daemon, .. } = setup;
    let dpid = daemon.id();
    let idle_rss = rss_kib(dpid);
    println!("idle RSS: {idle_rss} KiB");
    let us = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
    let mut figures = serde_json::Map::new();

    // 1. Latency.
    let disks: Vec<Resource> = (0..4)
        .map(|i| {
            let p = dir.join(format!("disk{i}.img"));
            std::fs::write(&p, b"").unwrap();
            Resource::Disk { path: p.to_str().unwrap().into(), readonly: false, shared: false }
        })
        .collect();
    let (mut child, spec) = vm(0);
    assert!(matches!(call(&sock, Op::Register { owner: spec.clone(), resources: disks.clone() }), Response::Ok { .. }));
    let (mut acq, mut rel, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..iterations {
        let t0 = Instant::now();
        let r = call(&sock, Op::Acquire { owner: spec.clone(), resources: disks.clone(), state: None, wait_ms: 0 });
        let t1 = Instant::now();
        assert!(matches!(r, Response::Ok { .. }), "{r:?}");
        let r = call(&sock, Op::Release { owner: spec.clone(), resources: disks.clone() });
        let t2 = Instant::now();
        assert!(matches!(r, Response::State { state: None }), "{r:?}");
        acq.push(t1 - t0);
        rel.push(t2 - t1);
        both.push(t2 - t0);
    }
    for (what, v) in [("acquire (4 disks)", &mut acq), ("release (4 disks)", &mut rel), ("acquire+release", &mut both)]
    {
        v.sort();
        println!(
            "{what:<20} median {:>8.1} us   p99 {:>8.1} us   ({iterations} runs)",
            pct(v, 0.5).as_secs_f64() * 1e6,
            pct(v, 0.99).as_secs_f64() * 1e6
        );
    }
    figures.insert(
        "acquire_4_disks".into(),
        json!({"median_us": us(pct(&acq, 0.5)), "p99_us": us(pct(&acq, 0.99)), "n": iterations}),
    );
    figures.insert(
        "release_4_disks".into(),
        json!({"median_us": us(pct(&rel, 0.5)), "p99_us": us(pct(&rel, 0.99)), "n": iterations}),
    );
    let _ = child.kill();
    let _ = child.wait();

    // 2. Memory with 10,000 held locks.
    let (vms, per_vm) = (250, 40);
    let (children, specs): (Vec<Child>, Vec<OwnerSpec>) = (0..vms).map(|i| vm(i + 1)).unzip();
    let t0 = Instant::now();
    for (i, spec) in specs.into_iter().enumerate() {
        let res: Vec<Resource> = (0..per_vm)
            .map(|j| Resource::Disk { path: format!("/bench/vm{i}/disk{j}.img"), readonly: false, shared: false })
            .collect();
        let r = call(&sock, Op::Acquire { owner: spec, resources: res, state: None, wait_ms: 0 });
        assert!(matches!(r, Response::Ok { .. }), "{r:?}");
    }
    let took = t0.elapsed();
    let locks = match call(&sock, Op::Status) {
        Response::Status { status } => status.locks as u64,
        other => panic!("{other:?}"),
    };
    let journal = std::fs::metadata(dir.join("journal")).unwrap().len();
    println!("held locks: {locks} ({vms} VMs x {per_vm} disks, taken in {:.2} s)", took.as_secs_f64());
    let held_rss = rss_kib(dpid);
    println!("RSS with {locks} locks: {held_rss} KiB; journal {} KiB", journal / 1024);

    // Restart with all of them held: time to take them back.
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let t0 = Instant::now();
    let mut daemon = daemon::spawn(&virtdlmd, &dir, "warn", Duration::from_millis(5));
    let locks = match call(&sock, Op::Status) {
        Response::Status { status } => status.locks as u64,
        other => panic!("{other:?}"),
    };
    let restart = t0.elapsed();
    let restarted_rss = rss_kib(daemon.id());
    println!(
        "kill -9 + restart: {locks} locks taken back, serving after {:.0} ms; RSS {restarted_rss} KiB",
        restart.as_secs_f64() * 1e3
    );
    figures.insert("rss_idle_kib".into(), json!(idle_rss));
    figures.insert("held_locks".into(), json!(locks));
    figures.insert("owners".into(), json!(vms + 1));
    figures.insert("rss_held_kib".into(), json!(held_rss));
    figures.insert("journal_kib".into(), json!(journal / 1024));
    figures.insert("take_all_ms".into(), json!((took.as_secs_f64() * 1e4).round() / 10.0));
    figures.insert("restart_readopt_ms".into(), json!((restart.as_secs_f64() * 1e4).round() / 10.0));
    figures.insert("rss_after_restart_kib".into(), json!(restarted_rss));
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&figures).unwrap() + "\n").expect("write --json");
    }

    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
