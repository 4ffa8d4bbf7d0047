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
//!   dlm-bench evac-daemon SOCKET VMS PAR DIR START_MS ID
//!                                         the evacuation case: VMS VMs (each a `sleep` child;
//!                                         VM numbers from ID on, so that nodes differ)
//!                                         acquire 4 disks each (DIR/vmI/diskJ.img, created
//!                                         here), one request per VM on a connection of its own,
//!                                         PAR at a time, from START_MS (Unix time in ms, so that
//!                                         every node starts together) until all are granted
//!   dlm-bench evac-raw LS VMS PAR DIR START_MS ID
//!                                         the same number of raw libdlm requests with the same
//!                                         parallelism: per "VM" a new lock per disk (NL, then
//!                                         ->EX NOQUEUE, what the dlm backend does for a disk it
//!                                         has no anchor for)
//!                                         Both print, with the wall time, where the guest's
//!                                         CPU went meanwhile (cluster_tests::cpu)
//!   dlm-bench adopt-fill SOCKET VMS PER_VM DIR
//!                                         VMS VMs of PER_VM disks each take their locks (one
//!                                         acquire per VM); prints {"ev":"ready",..} with the
//!                                         time taken and holds (its `sleep` children alive)
//!   dlm-bench adopt-restart SOCKET LOG CMD...
//!                                         starts CMD (a virtdlmd; output to LOG) and prints the
//!                                         time until its socket answers and the locks it holds
//!
//! Measuring modes print one JSON line: {"mode":..,"n":..,"disks":..,"median_us":..,"p99_us":..,
//! "mean_us":..,"max_us":.., "acquire_median_us":.., "acquire_p99_us":.., "release_median_us":..,
//! "release_p99_us":..} (the first four of acquire + release, then each half). A warm-up of N/10
//! samples is not counted.

use cluster_tests::cpu;
use dlm::{LockFlags, LockMode, Lockspace, ResourceName};
use lockmgr::naming::Naming;
use proto::{self, Op, OwnerSpec, Resource, Response};
use serde_json::json;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// A VM's "QEMU" (a process of its own: a VM's QEMU may not take its own locks) and its owner.
fn vm(i: usize) -> Res<(Child, OwnerSpec)> {
    let qemu = Command::new("sleep").arg("100000").spawn().map_err(|e| format!("sleep: {e}"))?;
    let owner = OwnerSpec {
        uuid: format!("6d6c6d62-656e-4368-8000-{:012x}", i + 1),
        name: format!("bench-vm{i}"),
        pid: qemu.id(),
        id: i as u32 + 1,
        uri: Some("qemu:///system".into()),
        action: Default::default(),
    };
    Ok((qemu, owner))
}

/// The disk files of VM `i` (created: libvirt's exist when it locks them).
fn vm_disks(dir: &str, i: usize, per_vm: usize) -> Res<Vec<String>> {
    let d = format!("{dir}/vm{i}");
    std::fs::create_dir_all(&d).map_err(|e| format!("{d}: {e}"))?;
    (1..=per_vm)
        .map(|j| {
            let p = format!("{d}/disk{j}.img");
            std::fs::File::create(&p).map_err(|e| format!("{p}: {e}"))?;
            Ok(p)
        })
        .collect()
}

fn acquire(socket: &Path, owner: &OwnerSpec, disks: &[String]) -> Res<()> {
    let resources = disks.iter().map(|d| Resource::Disk { path: d.clone(), readonly: false, shared: false }).collect();
    call(socket, Op::Acquire { owner: owner.clone(), resources, state: None, wait_ms: 0 })
}

fn status_locks(socket: &Path) -> Res<usize> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    match proto::call(&mut s, Op::Status).map_err(|e| e.to_string())? {
        Response::Status { status } => Ok(status.locks),
        other => Err(format!("status: {other:?}")),
    }
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

/// Waits until `start_ms`; how late the caller was ready (0 when it was in time).
fn wait_until(start_ms: u128) -> u128 {
    let now = now_ms();
    if now < start_ms {
        std::thread::sleep(Duration::from_millis((start_ms - now) as u64));
    }
    now.saturating_sub(start_ms)
}

/// Runs `job(i)` for i in 0..jobs on `par` threads; the wall time and each job's time (ms).
fn parallel(jobs: usize, par: usize, job: impl Fn(usize) -> Res<()> + Sync) -> Res<(f64, Vec<f64>)> {
    let next = AtomicUsize::new(0);
    let t0 = Instant::now();
    let per_job = std::thread::scope(|s| {
        let workers: Vec<_> = (0..par.clamp(1, jobs.max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut times = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= jobs {
                            return Ok(times);
                        }
                        let t = Instant::now();
                        job(i)?;
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().map_err(|_| "a worker panicked".to_string())?).collect::<Res<Vec<_>>>()
    })?;
    Ok((t0.elapsed().as_secs_f64() * 1e3, per_job.concat()))
}

/// The summary line of an evacuation run.
/// The summary line of an evacuation run; `cpu`: where the guest's CPU went meanwhile.
fn evac_line(
    mode: &str,
    vms: usize,
    par: usize,
    late_ms: u128,
    wall_ms: f64,
    mut each: Vec<f64>,
    cpu: serde_json::Value,
) {
    let (p50, p99) = stats(&mut each);
    println!(
        "{}",
        json!({"mode": mode, "vms": vms, "disks": 4, "parallelism": par, "late_ms": late_ms,
               "wall_ms": (wall_ms * 10.0).round() / 10.0, "each_median_ms": p50, "each_p99_ms": p99,
               "cpu": cpu})
    );
}

/// Processes listed in an evacuation line's CPU profile.
const CPU_TOP: usize = 8;

/// Locks kept until the end of a run, taken from several threads.
#[derive(Default)]
struct Held(std::sync::Mutex<Vec<dlm::Lock>>);

impl Held {
    fn push(&self, l: dlm::Lock) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(l);
    }
    fn take(&self) -> Vec<dlm::Lock> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn evac(mode: &str, target: &str, rest: &[String]) -> Res<()> {
    let [vms, par, dir, start, id] = rest else {
        return Err(format!("usage: dlm-bench {mode} SOCKET|LS VMS PAR DIR START_MS ID"));
    };
    let num = |s: &String| s.parse::<u128>().map_err(|_| format!("not a number: {s}"));
    let (vms, par, start, id) = (num(vms)? as usize, num(par)? as usize, num(start)?, num(id)? as usize);
    let disks = (0..vms).map(|i| vm_disks(dir, i, 4)).collect::<Res<Vec<_>>>()?;
    if mode == "evac-daemon" {
        let socket = Path::new(target);
        let (mut qemus, owners): (Vec<Child>, Vec<OwnerSpec>) =
            (0..vms).map(|i| vm(id + i)).collect::<Res<Vec<_>>>()?.into_iter().unzip();
        let late = wait_until(start);
        let before = cpu::snapshot();
        let r = parallel(vms, par, |i| acquire(socket, &owners[i], &disks[i]));
        let cpu = cpu::between(&before, &cpu::snapshot(), CPU_TOP);
        // Not measured: give the locks back for the next run.
        let released = (0..vms).try_for_each(|i| {
            let resources =
                disks[i].iter().map(|d| Resource::Disk { path: d.clone(), readonly: false, shared: false }).collect();
            call(socket, Op::Release { owner: owners[i].clone(), resources })
        });
        for q in &mut qemus {
            let _ = q.kill();
            let _ = q.wait();
        }
        let (wall, each) = r?;
        released?;
        evac_line(mode, vms, par, late, wall, each, cpu);
        return Ok(());
    }
    let ls = join(target)?;
    let res = disks.iter().map(|d| names(d)).collect::<Res<Vec<_>>>()?;
    let held = Held::default();
    let late = wait_until(start);
    let before = cpu::snapshot();
    let (wall, each) = parallel(vms, par, |i| {
        for r in &res[i] {
            let l = ls
                .lock(r, LockMode::Nl, LockFlags::EXPEDITE, Some(Duration::from_secs(60)))
                .map_err(|e| e.to_string())?;
            l.convert_wait(LockMode::Ex, LockFlags::NOQUEUE | LockFlags::PERSISTENT, None)
                .map_err(|e| e.to_string())?;
            held.push(l);
        }
        Ok(())
    })?;
    let cpu = cpu::between(&before, &cpu::snapshot(), CPU_TOP);
    held.take().into_iter().try_for_each(|l| l.release().map_err(|e| e.to_string()))?;
    evac_line(mode, vms, par, late, wall, each, cpu);
    Ok(())
}

fn adopt_fill(socket: &str, rest: &[String]) -> Res<()> {
    let [vms, per_vm, dir] = rest else {
        return Err("usage: dlm-bench adopt-fill SOCKET VMS PER_VM DIR".into());
    };
    let num = |s: &String| s.parse::<usize>().map_err(|_| format!("not a number: {s}"));
    let (vms, per_vm) = (num(vms)?, num(per_vm)?);
    let socket = Path::new(socket);
    let disks = (0..vms).map(|i| vm_disks(dir, i, per_vm)).collect::<Res<Vec<_>>>()?;
    let (_qemus, owners): (Vec<Child>, Vec<OwnerSpec>) =
        (0..vms).map(|i| vm(1000 + i)).collect::<Res<Vec<_>>>()?.into_iter().unzip();
    let t0 = Instant::now();
    for (owner, d) in owners.iter().zip(&disks) {
        acquire(socket, owner, d)?;
    }
    let took = t0.elapsed().as_secs_f64() * 1e3;
    let locks = status_locks(socket)?;
    println!("{}", json!({"ev": "ready", "vms": vms, "per_vm": per_vm, "locks": locks, "take_ms": took.round()}));
    // Holds the VMs' "QEMU" processes (the locks' owners) until killed.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn adopt_restart(socket: &str, rest: &[String]) -> Res<()> {
    let [log, cmd, args @ ..] = rest else {
        return Err("usage: dlm-bench adopt-restart SOCKET LOG CMD...".into());
    };
    let socket = Path::new(socket);
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| format!("{log}: {e}"))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(socket);
    let t0 = Instant::now();
    let daemon = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{cmd}: {e}"))?;
    while UnixStream::connect(socket).is_err() {
        if t0.elapsed() > Duration::from_secs(600) {
            return Err("virtdlmd did not serve within 600 s".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let locks = status_locks(socket)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    println!(
        "{}",
        json!({"ev": "restarted", "pid": daemon.id(), "locks": locks, "restart_ms": (ms * 10.0).round() / 10.0})
    );
    Ok(())
}

fn run(args: &[String]) -> Res<()> {
    let usage =
        || "usage: dlm-bench hold LS DISK... | raw-convert|raw-full LS N DISK... | daemon SOCKET N DISK...".to_string();
    let (mode, rest) = args.split_first().ok_or_else(usage)?;
    let (target, rest) = rest.split_first().ok_or_else(usage)?;
    match mode.as_str() {
        "evac-daemon" | "evac-raw" => return evac(mode, target, rest),
        "adopt-fill" => return adopt_fill(target, rest),
        "adopt-restart" => return adopt_restart(target, rest),
        _ => {}
    }
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
