//! Benchmark of virtdlmd with the local backend (not a test): does a request that waits on
//! one resource delay other VMs' requests for unrelated disks?
//!
//! cargo build --release -p lockmgr --bins --examples
//! target/release/examples/stall [--dir /dev/shm] [--virtdlmd target/release/virtdlmd]
//!                               [--iterations 2000] [--stall-ms 1000] [--json OUT.json]
//!
//! VM `holder` takes disk S. VM `waiter` then asks for S over and over with `wait_ms`, so
//! that one of its requests is always waiting on S inside the daemon (each waits `--stall-ms`
//! and is refused). Meanwhile VM `bystander` acquires and releases 4 other disks
//! `--iterations` times; the same loop is timed first with no waiter. With one lock over the
//! whole table held while a request waits, the bystander's requests would take about
//! `--stall-ms` each; the two medians show whether they wait at all.
use proto::{self, FailureAction, Op, OwnerSpec, Resource, Response};
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/daemon.rs"]
mod daemon;
use daemon::call;

fn vm(name: &str, i: usize) -> (Child, OwnerSpec) {
    let child = Command::new("sleep").arg("3600").spawn().unwrap();
    let spec = OwnerSpec {
        uuid: format!("00000000-0000-4000-8000-{i:012}"),
        name: name.into(),
        pid: child.id(),
        id: 1,
        uri: None,
        action: FailureAction::Default,
    };
    (child, spec)
}

fn disk(dir: &Path, name: &str) -> Resource {
    let p = dir.join(name);
    std::fs::write(&p, b"").unwrap();
    Resource::Disk { path: p.to_str().unwrap().into(), readonly: false, shared: false }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The bystander's acquire + release of its 4 disks, `n` times, sorted.
fn bystander_loop(sock: &Path, spec: &OwnerSpec, disks: &[Resource], n: usize) -> Vec<Duration> {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            let r = call(sock, Op::Acquire { owner: spec.clone(), resources: disks.to_vec(), state: None, wait_ms: 0 });
            assert!(matches!(r, Response::Ok { .. }), "{r:?}");
            let r = call(sock, Op::Release { owner: spec.clone(), resources: disks.to_vec() });
            assert!(matches!(r, Response::State { state: None }), "{r:?}");
            t0.elapsed()
        })
        .collect();
    v.sort();
    v
}

fn main() {
    let setup = daemon::Setup::start("stall");
    let iterations: usize = setup.arg("--iterations").map(|v| v.parse().unwrap()).unwrap_or(2000);
    let stall_ms: u64 = setup.arg("--stall-ms").map(|v| v.parse().unwrap()).unwrap_or(1000);
    let json = setup.arg("--json");
    let daemon::Setup { dir, sock, mut daemon, .. } = setup;

    let stalled = disk(&dir, "stalled.img");
    let (mut holder, holder_spec) = vm("holder", 1);
    let r = call(&sock, Op::Acquire { owner: holder_spec, resources: vec![stalled.clone()], state: None, wait_ms: 0 });
    assert!(matches!(r, Response::Ok { .. }), "{r:?}");
    let (mut bystander, by_spec) = vm("bystander", 2);
    let disks: Vec<Resource> = (0..4).map(|i| disk(&dir, &format!("disk{i}.img"))).collect();

    let quiet = bystander_loop(&sock, &by_spec, &disks, iterations);

    // The waiter: one request always waiting on the held disk.
    let (mut waiter, waiter_spec) = vm("waiter", 3);
    let stop = Arc::new(AtomicBool::new(false));
    let waits = Arc::new(AtomicUsize::new(0));
    let shortest_wait = Arc::new(parking_lot::Mutex::new(Duration::MAX));
    let staller = {
        let (sock, stop, waits, shortest) = (sock.clone(), stop.clone(), waits.clone(), shortest_wait.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let t0 = Instant::now();
                let r = call(
                    &sock,
                    Op::Acquire {
                        owner: waiter_spec.clone(),
                        resources: vec![stalled.clone()],
                        state: None,
                        wait_ms: stall_ms,
                    },
                );
                assert!(matches!(&r, Response::Error(e) if e.code == proto::ErrorCode::Conflict), "{r:?}");
                let took = t0.elapsed();
                let mut s = shortest.lock();
                *s = (*s).min(took);
                waits.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // Let the first wait begin.
    std::thread::sleep(Duration::from_millis(20));
    let t0 = Instant::now();
    let stalling = bystander_loop(&sock, &by_spec, &disks, iterations);
    let stalled_for = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    staller.join().unwrap();
    let waits = waits.load(Ordering::SeqCst);
    let shortest = *shortest_wait.lock();

    let us = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
    println!("stalled requests: {waits} of {stall_ms} ms each (shortest {:.1} ms)", shortest.as_secs_f64() * 1e3);
    for (what, v) in [("no request waiting", &quiet), ("a request waiting", &stalling)] {
        println!(
            "bystander acquire+release, {what:<20} median {:>8.1} us   p99 {:>8.1} us   max {:>8.1} us   ({iterations} runs)",
            us(pct(v, 0.5)),
            us(pct(v, 0.99)),
            us(*v.last().unwrap())
        );
    }
    let figures = json!({
        "stall_ms": stall_ms,
        "stalled_requests": waits,
        "shortest_stall_ms": (shortest.as_secs_f64() * 1e4).round() / 10.0,
        "stalling_for_ms": stalled_for.as_millis() as u64,
        "bystander_quiet": {"median_us": us(pct(&quiet, 0.5)), "p99_us": us(pct(&quiet, 0.99)), "max_us": us(*quiet.last().unwrap()), "n": iterations},
        "bystander_stalled": {"median_us": us(pct(&stalling, 0.5)), "p99_us": us(pct(&stalling, 0.99)), "max_us": us(*stalling.last().unwrap()), "n": iterations},
    });
    if let Some(out) = json {
        std::fs::write(out, serde_json::to_string_pretty(&figures).unwrap()).unwrap();
    }
    for c in [&mut holder, &mut bystander, &mut waiter] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
