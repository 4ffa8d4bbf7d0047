//! dlm-bench: runs **inside** a cluster guest and measures what one VM's locks cost (used by
//! tests/cluster/bench.sh; a benchmark, not a test). Disks are named as virtdlmd names them
//! (lockmgr::naming), so the raw DLM requests and the daemon's touch the same resources.
//!
//!   dlm-bench hold LS DISK...             NL on each disk's resource (this node becomes its
//!                                         master when it is the first to lock it); prints
//!                                         {"ev":"ready"} and holds until killed
//!   dlm-bench raw-convert LS N DISK...    NL anchors kept; per sample: NL->EX (NOQUEUE|
//!                                         PERSISTENT) then EX->NL on every disk, one by one
//!   dlm-bench raw-full LS N DISK...       per sample a lock of its own per disk: new NL
//!                                         (EXPEDITE), ->EX, ->NL, unlock (what the dlm backend
//!                                         does when it has no NL anchor kept for the disk)
//!   dlm-bench daemon SOCKET N DISK...     per sample one acquire (all disks, EX) and one release
//!                                         through virtdlmd's control socket, each on a new
//!                                         connection as dlm.so does, for a VM whose "QEMU"
//!                                         is a `sleep` child
//!
//! Measuring modes print one JSON line: {"mode":..,"n":..,"disks":..,"median_us":..,"p99_us":..,
//! "mean_us":..,"max_us":.., "acquire_median_us":.., "acquire_p99_us":.., "release_median_us":..,
//! "release_p99_us":..} (the first four of acquire + release, then each half). A warm-up of N/10
//! samples is not counted.

use dlm::{LockFlags, LockMode, Lockspace, ResourceName};
use lockmgr::naming::Naming;
use proto::{self, Op, OwnerSpec, Resource, Response};
use serde_json::json;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

type Res<T> = Result<T, String>;

fn names(disks: &[String]) -> Res<Vec<ResourceName>> {
    let naming = Naming::default();
    disks
        .iter()
        .map(|d| {
            let r = Resource::Disk { path: d.clone(), readonly: false, shared: false };
            let named = naming.resolve(&r).map_err(|e| e.to_string())?.ok_or("a writable disk is always locked")?;
            ResourceName::new(&named.name.0).map_err(|e| e.to_string())
        })
        .collect()
}

fn join(ls: &str) -> Res<Lockspace> {
    Lockspace::create(ls).map_err(|e| format!("lockspace {ls}: {e}"))
}

/// Median and p99 (nearest rank) of `us`, sorted in place.
fn stats(us: &mut [f64]) -> (f64, f64) {
    us.sort_by(f64::total_cmp);
    let pct = |p: f64| us[((us.len() as f64 * p).ceil() as usize).clamp(1, us.len()) - 1];
    (pct(0.5).round(), pct(0.99).round())
}

/// Runs `acquire` then `release` N/10 times unmeasured, then N times; prints the summary line:
/// the pair, and each half on its own.
fn measure(
    mode: &str,
    n: usize,
    disks: usize,
    mut acquire: impl FnMut() -> Res<()>,
    mut release: impl FnMut() -> Res<()>,
) -> Res<()> {
    for _ in 0..n / 10 {
        acquire()?;
        release()?;
    }
    let (mut acq, mut rel, mut both) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t0 = Instant::now();
        acquire()?;
        let t1 = Instant::now();
        release()?;
        let t2 = Instant::now();
        acq.push((t1 - t0).as_secs_f64() * 1e6);
        rel.push((t2 - t1).as_secs_f64() * 1e6);
        both.push((t2 - t0).as_secs_f64() * 1e6);
    }
    let mean = (both.iter().sum::<f64>() / n as f64).round();
    let ((median, p99), (a50, a99), (r50, r99)) = (stats(&mut both), stats(&mut acq), stats(&mut rel));
    println!(
        "{}",
        json!({
            "mode": mode, "n": n, "disks": disks,
            "median_us": median, "p99_us": p99, "mean_us": mean, "max_us": both[n - 1].round(),
            "acquire_median_us": a50, "acquire_p99_us": a99, "release_median_us": r50, "release_p99_us": r99,
        })
    );
    Ok(())
}

fn call(socket: &Path, op: Op) -> Res<()> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    match proto::call(&mut s, op).map_err(|e| e.to_string())? {
        Response::Error(e) => Err(format!("virtdlmd refused: {}", e.message)),
        _ => Ok(()),
    }
}

fn run(args: &[String]) -> Res<()> {
    let usage =
        || "usage: dlm-bench hold LS DISK... | raw-convert|raw-full LS N DISK... | daemon SOCKET N DISK...".to_string();
    let (mode, rest) = args.split_first().ok_or_else(usage)?;
    let (target, rest) = rest.split_first().ok_or_else(usage)?;
    if mode == "hold" {
        let ls = join(target)?;
        let _held = names(rest)?
            .iter()
            .map(|r| ls.lock(r, LockMode::Nl, LockFlags::EXPEDITE, Some(Duration::from_secs(60))))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        println!("{}", json!({"ev": "ready", "pid": std::process::id()}));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let (n, disks) = rest.split_first().ok_or_else(usage)?;
    let n: usize = n.parse().map_err(|_| usage())?;
    let ex = LockFlags::NOQUEUE | LockFlags::PERSISTENT;
    let wait = Some(Duration::from_secs(60));
    match mode.as_str() {
        "raw-convert" => {
            let ls = join(target)?;
            let anchors = names(disks)?
                .iter()
                .map(|r| ls.lock(r, LockMode::Nl, LockFlags::EXPEDITE, wait))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            measure(
                mode,
                n,
                disks.len(),
                || anchors.iter().try_for_each(|a| a.convert_wait(LockMode::Ex, ex, None).map_err(|e| e.to_string())),
                || {
                    anchors.iter().try_for_each(|a| {
                        a.convert_wait(LockMode::Nl, LockFlags::NONE, None).map_err(|e| e.to_string())
                    })
                },
            )
        }
        "raw-full" => {
            let ls = join(target)?;
            let res = names(disks)?;
            let held = std::cell::RefCell::new(Vec::new());
            measure(
                mode,
                n,
                disks.len(),
                || {
                    for r in &res {
                        let l = ls.lock(r, LockMode::Nl, LockFlags::EXPEDITE, wait).map_err(|e| e.to_string())?;
                        l.convert_wait(LockMode::Ex, ex, None).map_err(|e| e.to_string())?;
                        held.borrow_mut().push(l);
                    }
                    Ok(())
                },
                || held.borrow_mut().drain(..).try_for_each(|l| l.release().map_err(|e| e.to_string())),
            )
        }
        "daemon" => {
            let socket = Path::new(target);
            // The VM's "QEMU": a process of its own (a VM's QEMU may not take its own locks).
            let mut qemu =
                std::process::Command::new("sleep").arg("100000").spawn().map_err(|e| format!("sleep: {e}"))?;
            let owner = OwnerSpec {
                uuid: "6d6c6d62-656e-4368-8000-000000000001".into(),
                name: "bench-vm".into(),
                pid: qemu.id(),
                id: 1,
                uri: Some("qemu:///system".into()),
                action: Default::default(),
            };
            let res: Vec<Resource> =
                disks.iter().map(|d| Resource::Disk { path: d.clone(), readonly: false, shared: false }).collect();
            let r = measure(
                mode,
                n,
                disks.len(),
                || call(socket, Op::Acquire { owner: owner.clone(), resources: res.clone(), state: None, wait_ms: 0 }),
                || call(socket, Op::Release { owner: owner.clone(), resources: res.clone() }),
            );
            let _ = qemu.kill();
            let _ = qemu.wait();
            r
        }
        _ => Err(usage()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        println!("{}", json!({"error": e}));
        std::process::exit(1);
    }
}
