//! Crashes under load, with a real virtdlmd (local backend) and real processes as QEMUs:
//! - `kill -9` of virtdlmd at random points while clients acquire and release: after each
//!   restart the journal, the daemon and what the clients were told agree;
//! - `kill -9` of owners while they and others acquire and release: their locks go, none
//!   leaks, and the time each took is printed.
//!
//! Run by tests/reliability/run.sh (it prints its figures); see docs/RELIABILITY.md.
mod support;

use lockmgr::journal;
use proto::{ErrorCode, Resource, Response};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const DAEMON_KILLS: usize = 60;
const CLIENTS: usize = 8;
const DISKS: usize = 4;

/// What a client was last told about one disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    Held,
    Free,
    /// Asked, never answered (the daemon died): either outcome is right.
    InFlight,
}

/// Who holds which disk: identity -> pids.
type Table = BTreeMap<String, BTreeSet<u32>>;

fn journal_table(bytes: &[u8]) -> (Table, Option<(u64, String)>) {
    let (state, damage) = journal::parse(bytes);
    let mut t = Table::new();
    for (key, o) in &state.owners {
        for l in o.locks.values() {
            t.entry(l.identity.clone()).or_default().insert(key.pid);
        }
    }
    (t, damage)
}

fn daemon_table(d: &Daemon) -> Table {
    let mut t = Table::new();
    for l in d.locks() {
        t.entry(l.identity).or_default().insert(l.pid);
    }
    t
}

/// Hammers the daemon with acquire/release of random disks until the connection dies;
/// returns what it was told last about each disk.
fn client(
    sock: std::path::PathBuf,
    spec: proto::OwnerSpec,
    disks: Vec<(String, Resource)>,
    mut told: Vec<Told>,
    seed: u64,
) -> (Vec<Told>, usize) {
    let mut rng = Rng::new(seed);
    let Ok(mut c) = Conn::open(&sock) else { return (told, 0) };
    let mut answered = 0;
    loop {
        let k = rng.below(DISKS as u64) as usize;
        let res = std::slice::from_ref(&disks[k].1);
        let holding = told[k] == Told::Held;
        told[k] = Told::InFlight;
        let r = if holding { c.release(&spec, res) } else { c.acquire(&spec, res) };
        let Ok(r) = r else { return (told, answered) };
        answered += 1;
        told[k] = match r {
            Response::Ok { .. } => Told::Held,
            Response::State { .. } => Told::Free,
            Response::Error(e) if e.code == ErrorCode::Conflict => Told::Free,
            other => panic!("unexpected answer {other:?}"),
        };
    }
}

#[test]
#[ignore = "reliability tier (tests/reliability/run.sh): 60 daemon crashes, prints its figures"]
fn kill9_of_the_daemon_under_load_keeps_journal_daemon_and_clients_in_agreement() {
    let seed = seed();
    println!("seed {seed} (VDLM_SEED={seed} replays the kill points and the clients' choices)");
    let mut rng = Rng::new(seed);
    let dir = shm_dir("crash");
    // A small compaction threshold, so that kills also land in compactions.
    let mut d = Daemon::new(&dir, "journal_compact_bytes = 4096");
    d.start(&[]);
    let vms: Vec<Vm> = (0..CLIENTS).map(|i| Vm::spawn(&format!("crash-{i}"))).collect();
    let disks: Vec<(String, Resource)> = (0..DISKS)
        .map(|k| {
            let r = disk(&dir, &format!("d{k}.img"), false, false);
            let Resource::Disk { path, .. } = &r else { unreachable!() };
            (std::fs::canonicalize(path).unwrap().display().to_string(), r)
        })
        .collect();
    let mut told: Vec<Vec<Told>> = vec![vec![Told::Free; DISKS]; CLIENTS];
    let (mut answered, mut in_flight_at_kill, mut in_flight_granted, mut torn, mut held_at_kill) = (0, 0, 0, 0, 0);
    let mut restarts = Vec::new();
    for round in 0..DAEMON_KILLS {
        let threads: Vec<_> = vms
            .iter()
            .enumerate()
            .map(|(i, vm)| {
                let (sock, spec, disks, t, s) =
                    (d.socket.clone(), vm.spec.clone(), disks.clone(), told[i].clone(), rng.next());
                std::thread::spawn(move || client(sock, spec, disks, t, s))
            })
            .collect();
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(60_000)));
        d.kill9();
        for (i, t) in threads.into_iter().enumerate() {
            let (t, n) = t.join().expect("client thread");
            told[i] = t;
            answered += n;
        }

        // The journal's truth, read before any restart touches it.
        let bytes = std::fs::read(&d.journal).unwrap();
        let (jt, damage) = journal_table(&bytes);
        if let Some((off, why)) = &damage {
            // Only a record cut short by the kill (never acknowledged) may be damaged.
            assert!(why.contains("torn"), "round {round}: journal damaged at {off} by a kill: {why}");
            torn += 1;
        }
        for (disk, holders) in &jt {
            assert!(holders.len() <= 1, "round {round}: journal has {disk} held by {holders:?}");
        }
        for (i, vm) in vms.iter().enumerate() {
            for (k, (id, _)) in disks.iter().enumerate() {
                let in_journal = jt.get(id).is_some_and(|h| h.contains(&vm.spec.pid));
                match told[i][k] {
                    Told::Held => {
                        assert!(in_journal, "round {round}: client {i} was granted {id}, the journal lost it")
                    }
                    Told::Free => assert!(
                        !in_journal,
                        "round {round}: client {i} was told {id} is not its, the journal says it is"
                    ),
                    Told::InFlight => in_flight_at_kill += 1,
                }
            }
        }
        held_at_kill += jt.values().map(BTreeSet::len).sum::<usize>();

        let t0 = Instant::now();
        d.start(if damage.is_some() { &["--recover-journal"] } else { &[] });
        restarts.push(t0.elapsed());
        let dt = daemon_table(&d);
        assert_eq!(dt, jt, "round {round}: after the restart the daemon's table differs from the journal");
        // What the clients believe from now on: the daemon's view (in-flight ones resolved).
        for (i, vm) in vms.iter().enumerate() {
            for (k, (id, _)) in disks.iter().enumerate() {
                let held = dt.get(id).is_some_and(|h| h.contains(&vm.spec.pid));
                if told[i][k] == Told::InFlight && held {
                    in_flight_granted += 1;
                }
                told[i][k] = if held { Told::Held } else { Told::Free };
            }
        }
    }
    // Still a working daemon: everything can be let go, and nothing is left behind.
    for (i, vm) in vms.iter().enumerate() {
        let mine: Vec<Resource> =
            (0..DISKS).filter(|k| told[i][*k] == Told::Held).map(|k| disks[k].1.clone()).collect();
        assert!(matches!(vm.release(&d, &mine), Response::State { state: None }));
    }
    assert!(d.locks().is_empty(), "left over: {:?}", d.locks());
    println!(
        "FIGURE crash-daemon: {DAEMON_KILLS} kill -9 of virtdlmd under load ({CLIENTS} clients, {DISKS} disks, EX); {answered} answered requests; \
         at the kills {held_at_kill} locks held in all, {in_flight_at_kill} requests unanswered ({in_flight_granted} of them found granted after the restart); \
         torn journal tails {torn}; journal = daemon = clients after every restart; restart until serving: {}",
        summary(restarts)
    );
}

#[test]
#[ignore = "reliability tier (tests/reliability/run.sh): prints the release times"]
fn kill9_of_owners_under_load_frees_their_locks() {
    const OWNERS: usize = 24;
    const POOL: usize = 6;
    let seed = seed();
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let dir = shm_dir("ownerkill");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let mut vms: Vec<Vm> = (0..OWNERS).map(|i| Vm::spawn(&format!("victim-{i}"))).collect();
    // Half the pool exclusive, half shareable: owners also share locks when they die.
    let pool: Vec<Resource> = (0..POOL).map(|k| disk(&dir, &format!("p{k}.img"), false, k % 2 == 1)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = vms
        .iter()
        .map(|vm| {
            let (sock, spec, pool, stop, mut r) =
                (d.socket.clone(), vm.spec.clone(), pool.clone(), stop.clone(), Rng::new(rng.next()));
            std::thread::spawn(move || {
                let mut c = Conn::open(&sock).unwrap();
                let (mut grants, mut gone) = (0usize, false);
                while !stop.load(Ordering::Relaxed) && !gone {
                    let res =
                        vec![pool[r.below(POOL as u64) as usize].clone(), pool[r.below(POOL as u64) as usize].clone()];
                    match c.acquire(&spec, &res).unwrap() {
                        Response::Ok { .. } => grants += 1,
                        Response::Error(e) if e.code == ErrorCode::Conflict => {}
                        Response::Error(e) if e.code == ErrorCode::OwnerGone => gone = true,
                        other => panic!("unexpected answer {other:?}"),
                    }
                    if r.below(2) == 0 {
                        let _ = c.release(&spec, &res).unwrap();
                    }
                }
                grants
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut c = Conn::open(&d.socket).unwrap();
    let mut times = Vec::new();
    let mut holding_when_killed = 0;
    for vm in vms.iter_mut() {
        std::thread::sleep(Duration::from_millis(5 + rng.below(30)));
        let pid = vm.spec.pid;
        let Response::Locks { locks } = c.call(proto::Op::Locks).unwrap() else { panic!() };
        holding_when_killed += locks.iter().filter(|l| l.pid == pid).count();
        let t0 = Instant::now();
        vm.kill9();
        loop {
            let Response::Locks { locks } = c.call(proto::Op::Locks).unwrap() else { panic!() };
            if !locks.iter().any(|l| l.pid == pid) {
                break;
            }
            assert!(t0.elapsed() < PATIENCE, "the locks of killed pid {pid} were not released: {locks:?}\n{}", d.log());
            std::thread::sleep(Duration::from_micros(200));
        }
        times.push(t0.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let grants: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    // No lock leaked: nothing is held, and every disk can be taken exclusively again.
    assert!(d.locks().is_empty(), "leaked: {:?}", d.locks());
    let survivor = Vm::spawn("survivor");
    let exclusive: Vec<Resource> = (0..POOL).map(|k| disk(&dir, &format!("p{k}.img"), false, false)).collect();
    expect_ok(survivor.acquire(&d, &exclusive));
    println!(
        "FIGURE crash-owner: {OWNERS} owners killed with kill -9 one after another under load ({grants} grants made meanwhile, {holding_when_killed} locks held by them when killed); \
         none leaked; kill -9 until its locks left the table: {}",
        summary(times)
    );

    // All at once: a host losing many VMs together.
    let mut batch: Vec<Vm> = (0..OWNERS).map(|i| Vm::spawn(&format!("batch-{i}"))).collect();
    for (i, vm) in batch.iter().enumerate() {
        expect_ok(vm.acquire(&d, &[disk(&dir, &format!("b{i}.img"), false, false)]));
    }
    let t0 = Instant::now();
    for vm in batch.iter_mut() {
        let _ = vm.child.kill();
    }
    while !d.locks().iter().all(|l| l.vm_name == "survivor") {
        assert!(t0.elapsed() < PATIENCE, "the killed batch's locks were not released: {:?}", d.locks());
        std::thread::sleep(Duration::from_micros(200));
    }
    let all = t0.elapsed();
    for vm in batch.iter_mut() {
        vm.kill9();
    }
    println!("FIGURE crash-owner-batch: {OWNERS} owners with one lock each killed together; all their locks released {:.1} ms after the first kill", all.as_secs_f64() * 1e3);
}
