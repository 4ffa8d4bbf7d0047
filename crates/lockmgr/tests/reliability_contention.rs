//! Contention: 16 VMs race for one disk, each on its own persistent connection to a real
//! virtdlmd (local backend), round after round. In exclusive mode exactly one wins each round
//! and every loser is told who holds the disk; in mixed modes the winners and losers are
//! checked against a model of the mode table written here, independently of `mode.rs`.
//!
//! Run by tests/reliability/run.sh (it prints its figures); see docs/RELIABILITY.md.
mod support;

use proto::{ErrorCode, Response};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;
use support::*;

const CLIENTS: usize = 16;
const EX_ROUNDS: usize = 10_000;
const MIXED_ROUNDS: usize = 3_000;
const NOBODY: usize = usize::MAX;

/// What one client of the mixed test brings back: (round, pids named in its refusal) for
/// each round it lost, and how many lock-table checks it made.
type ClientResult = (Vec<(usize, Vec<u32>)>, usize);

/// The libvirt disk flavours, as (readonly, shareable).
const FLAVOURS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// The model: may a disk of flavour `a` be used while another VM uses it as `b`? Written
/// from the documented table (docs/GUIDE.md, section 3): an exclusive writer shares with nobody;
/// shareable writers share with each other and with shareable readers; read-only users
/// share with read-only users; a shareable reader shares with all but the exclusive writer.
fn model_coexist(a: (bool, bool), b: (bool, bool)) -> bool {
    let exclusive = |f: (bool, bool)| f == (false, false);
    let shared_writer = |f: (bool, bool)| f == (false, true);
    let protected_reader = |f: (bool, bool)| f == (true, false);
    let shared_reader = |f: (bool, bool)| f == (true, true);
    if exclusive(a) || exclusive(b) {
        return false;
    }
    if shared_reader(a) || shared_reader(b) {
        return true;
    }
    (shared_writer(a) && shared_writer(b)) || (protected_reader(a) && protected_reader(b))
}

#[test]
#[ignore = "reliability tier (tests/reliability/run.sh): 10,000 rounds, prints its figures"]
fn sixteen_vms_race_for_one_disk_exclusively() {
    let dir = shm_dir("race-ex");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let vms: Vec<Vm> = (0..CLIENTS).map(|i| Vm::spawn(&format!("race-{i}"))).collect();
    let img = disk(&dir, "one.img", false, false);
    let winner: Arc<Vec<AtomicUsize>> = Arc::new((0..EX_ROUNDS).map(|_| AtomicUsize::new(NOBODY)).collect());
    let wins = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let t0 = Instant::now();
    let threads: Vec<_> = vms
        .iter()
        .enumerate()
        .map(|(i, vm)| {
            let (spec, img, sock) = (vm.spec.clone(), img.clone(), d.socket.clone());
            let (winner, wins, barrier) = (winner.clone(), wins.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut c = Conn::open(&sock).unwrap();
                // (round, pid of the holder named in our refusal)
                let mut told = Vec::with_capacity(EX_ROUNDS);
                for round in 0..EX_ROUNDS {
                    barrier.wait();
                    let won = match c.acquire(&spec, std::slice::from_ref(&img)).unwrap() {
                        Response::Ok { .. } => {
                            let prev = winner[round].swap(i, Ordering::SeqCst);
                            assert_eq!(
                                prev, NOBODY,
                                "round {round}: clients {prev} and {i} were both granted the disk"
                            );
                            wins.fetch_add(1, Ordering::Relaxed);
                            true
                        }
                        Response::Error(e) if e.code == ErrorCode::Conflict => {
                            let c = e.conflict.expect("a refusal names the conflict");
                            assert_eq!(c.holders.len(), 1, "round {round}: holders {:?}", c.holders);
                            told.push((round, c.holders[0].pid));
                            false
                        }
                        other => panic!("round {round}: client {i}: unexpected answer {other:?}"),
                    };
                    barrier.wait();
                    if won {
                        assert_eq!(
                            c.release(&spec, std::slice::from_ref(&img)).unwrap(),
                            Response::State { state: None }
                        );
                    }
                }
                told
            })
        })
        .collect();
    let told: Vec<Vec<(usize, u32)>> = threads.into_iter().map(|t| t.join().expect("client thread")).collect();
    let elapsed = t0.elapsed();

    let mut rounds_without = 0;
    for (round, w) in winner.iter().enumerate() {
        let w = w.load(Ordering::SeqCst);
        if w == NOBODY {
            rounds_without += 1;
            continue;
        }
        // Every loser of the round was told the winner holds the disk.
        for (i, t) in told.iter().enumerate() {
            if i != w {
                let named = t.iter().find(|(r, _)| *r == round).map(|(_, pid)| *pid);
                assert_eq!(
                    named,
                    Some(vms[w].spec.pid),
                    "round {round}: client {i} was not told the winner {w} holds the disk"
                );
            }
        }
    }
    let mut per_client = [0usize; CLIENTS];
    for w in winner.iter() {
        if let Some(n) = per_client.get_mut(w.load(Ordering::SeqCst)) {
            *n += 1;
        }
    }
    assert_eq!(rounds_without, 0, "rounds in which nobody got the free disk");
    assert_eq!(wins.load(Ordering::SeqCst), EX_ROUNDS);
    assert!(d.locks().is_empty(), "left over: {:?}", d.locks());
    let requests = EX_ROUNDS * (CLIENTS + 1);
    println!(
        "FIGURE contention-ex: {CLIENTS} clients x {EX_ROUNDS} rounds, exactly one winner every round; {requests} requests in {:.1} s ({:.0} req/s, {:.2} ms/round); wins per client min {} max {}",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / EX_ROUNDS as f64,
        per_client.iter().min().unwrap(),
        per_client.iter().max().unwrap(),
    );
}

#[test]
#[ignore = "reliability tier (tests/reliability/run.sh): randomised rounds, prints its figures"]
fn mixed_modes_follow_the_model() {
    let seed = seed();
    println!("seed {seed} (VDLM_SEED={seed} replays the flavours)");
    let dir = shm_dir("race-mixed");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let vms: Vec<Vm> = (0..CLIENTS).map(|i| Vm::spawn(&format!("mix-{i}"))).collect();
    let pids: Arc<Vec<u32>> = Arc::new(vms.iter().map(|v| v.spec.pid).collect());
    // flavour[round][client]
    let mut rng = Rng::new(seed);
    let flavour: Arc<Vec<Vec<(bool, bool)>>> =
        Arc::new((0..MIXED_ROUNDS).map(|_| (0..CLIENTS).map(|_| FLAVOURS[rng.below(4) as usize]).collect()).collect());
    let granted: Arc<Vec<Vec<AtomicUsize>>> =
        Arc::new((0..MIXED_ROUNDS).map(|_| (0..CLIENTS).map(|_| AtomicUsize::new(0)).collect()).collect());
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let t0 = Instant::now();
    let threads: Vec<_> = vms
        .iter()
        .enumerate()
        .map(|(i, vm)| {
            let (spec, sock, dir) = (vm.spec.clone(), d.socket.clone(), dir.clone());
            let (flavour, granted, barrier, pids) = (flavour.clone(), granted.clone(), barrier.clone(), pids.clone());
            std::thread::spawn(move || {
                let mut c = Conn::open(&sock).unwrap();
                // (round, holders named in our refusal: pid)
                let mut told: Vec<(usize, Vec<u32>)> = Vec::new();
                let mut table_checks = 0;
                for round in 0..MIXED_ROUNDS {
                    let (ro, sh) = flavour[round][i];
                    let img = disk(&dir, "one.img", ro, sh);
                    barrier.wait();
                    let won = match c.acquire(&spec, std::slice::from_ref(&img)).unwrap() {
                        Response::Ok { .. } => {
                            granted[round][i].store(1, Ordering::SeqCst);
                            true
                        }
                        Response::Error(e) if e.code == ErrorCode::Conflict => {
                            let h = e.conflict.expect("a refusal names the conflict").holders;
                            told.push((round, h.iter().map(|l| l.pid).collect()));
                            false
                        }
                        other => panic!("round {round}: client {i}: unexpected answer {other:?}"),
                    };
                    barrier.wait();
                    // Now and then, before anyone lets go: the daemon's table is the winners.
                    if round % 50 == 0 {
                        if i == 0 {
                            let Response::Locks { locks } = c.call(proto::Op::Locks).unwrap() else { panic!("locks") };
                            let mut held: Vec<u32> = locks.iter().map(|l| l.pid).collect();
                            let mut want: Vec<u32> = (0..CLIENTS)
                                .filter(|j| granted[round][*j].load(Ordering::SeqCst) == 1)
                                .map(|j| pids[j])
                                .collect();
                            held.sort();
                            want.sort();
                            assert_eq!(held, want, "round {round}: lock table differs from what the clients were told");
                            table_checks += 1;
                        }
                        barrier.wait();
                    }
                    if won {
                        assert_eq!(
                            c.release(&spec, std::slice::from_ref(&img)).unwrap(),
                            Response::State { state: None }
                        );
                    }
                }
                (told, table_checks)
            })
        })
        .collect();
    let results: Vec<ClientResult> = threads.into_iter().map(|t| t.join().expect("client thread")).collect();
    let elapsed = t0.elapsed();

    let mut winners_hist = [0usize; CLIENTS + 1];
    for round in 0..MIXED_ROUNDS {
        let won: Vec<usize> = (0..CLIENTS).filter(|j| granted[round][*j].load(Ordering::SeqCst) == 1).collect();
        winners_hist[won.len()] += 1;
        let f = &flavour[round];
        // Safety: the winners may all coexist.
        for a in &won {
            for b in &won {
                assert!(
                    a == b || model_coexist(f[*a], f[*b]),
                    "round {round}: {:?} and {:?} granted together",
                    f[*a],
                    f[*b]
                );
            }
        }
        // Liveness: a loser was refused because a winner's use excludes its own, and the
        // holders it was told of are winners of the round, the first one (the one its message
        // names) in its way.
        assert!(!won.is_empty(), "round {round}: nobody got the free disk");
        for (j, (told, _)) in results.iter().enumerate() {
            if won.contains(&j) {
                continue;
            }
            assert!(
                won.iter().any(|w| !model_coexist(f[j], f[*w])),
                "round {round}: client {j} ({:?}) refused though every winner coexists with it",
                f[j]
            );
            let named = &told.iter().find(|(r, _)| *r == round).expect("refusal recorded").1;
            assert!(!named.is_empty(), "round {round}: refusal names no holder");
            for pid in named {
                let k = pids.iter().position(|p| p == pid).expect("holder is one of ours");
                assert!(won.contains(&k), "round {round}: refusal names client {k}, which holds nothing");
            }
            // The message names the first holder: it must be one in the way.
            assert!(
                !model_coexist(f[j], f[pids.iter().position(|p| *p == named[0]).unwrap()]),
                "round {round}: refusal of client {j} names first a holder not in its way"
            );
        }
    }
    assert!(d.locks().is_empty(), "left over: {:?}", d.locks());
    let table_checks: usize = results.iter().map(|r| r.1).sum();
    let hist: Vec<String> =
        winners_hist.iter().enumerate().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k}:{n}")).collect();
    println!(
        "FIGURE contention-mixed: {CLIENTS} clients x {MIXED_ROUNDS} rounds of random flavours (seed {seed}) in {:.1} s; every outcome as the model says; winners per round (count:rounds) {}; lock table checked {table_checks} times",
        elapsed.as_secs_f64(),
        hist.join(" "),
    );
}

#[test]
fn the_model_agrees_with_the_mode_table() {
    // The model above and mode.rs are written apart; they must say the same for all 16 pairs,
    // or the contention tests check against the wrong thing.
    use proto::mode::Mode;
    for a in FLAVOURS {
        for b in FLAVOURS {
            let (ma, mb) = (Mode::for_disk(a.0, a.1), Mode::for_disk(b.0, b.1));
            assert_eq!(model_coexist(a, b), ma.compatible(mb), "{a:?} ({ma}) with {b:?} ({mb})");
        }
    }
}
