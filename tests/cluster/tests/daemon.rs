//! virtdlmd on the real kernel DLM: one daemon per guest (`--backend dlm`), real processes as
//! the VMs' QEMU, requests through the control socket (proto) from `daemon-client`.
//! Each test joins a lockspace of its own.

use cluster_tests::daemon::{event, outcome_of, Daemon, Vm};
use cluster_tests::Cluster;
use proto::mode::Mode;
use serde_json::Value;

/// A disk path both nodes name alike (it need not exist: the name is made from its text).
fn disk(test: &str, what: &str) -> String {
    format!("/srv/virtdlm-tests/{test}/{what}.img")
}

fn acquire(vm: &Vm, res: &str) -> String {
    format!("acquire:{}:{res}", vm.id())
}

fn release(vm: &Vm, res: &str) -> String {
    format!("release:{}:{res}", vm.id())
}

/// What a refusal of a disk held on node1 must tell a person on node2: the disk, who holds it
/// (the VM and node1, from the cluster inventory) or, before node1's grant reached node2's
/// inventory, that another node holds it and how to find it; and how to free it.
fn assert_remote_conflict_message(ev: &Value, path: &str) {
    let msg = ev["response"]["message"].as_str().unwrap_or_else(|| panic!("no message: {ev}"));
    assert!(msg.contains(&format!("disk {path}")), "names the disk: {msg}");
    let conflict = &ev["response"]["conflict"];
    assert_eq!(conflict["identity"], path, "{ev}");
    let holders = conflict["holders"].as_array().unwrap_or_else(|| panic!("no holders list: {ev}"));
    if let Some(h) = holders.first() {
        assert_eq!(h["node_name"], "node1", "the holder is on node1: {ev}");
        let vm = h["vm_name"].as_str().unwrap_or_default();
        assert!(msg.contains(&format!("by VM {vm} ")) && msg.contains("on node node1"), "names the holder: {msg}");
        assert!(msg.contains("stop that VM or detach the disk"), "says what to do: {msg}");
    } else {
        assert!(msg.contains("another node"), "says another node holds it: {msg}");
        assert!(
            msg.contains(&format!("virtdlm inspect {path}")) && msg.contains("stop it or detach the disk"),
            "says what to do: {msg}"
        );
    }
}

#[test]
fn every_mode_pair_across_nodes_is_granted_exactly_when_compatible() {
    let c = Cluster::get();
    let d1 = Daemon::start(&c, 1, "modes", "vd_modes");
    let d2 = Daemon::start(&c, 2, "modes", "vd_modes");
    let vm1 = Vm::start(&c, 1, "modes-a");
    let vm2 = Vm::start(&c, 2, "modes-b");

    let pairs: Vec<(Mode, Mode, String)> = Mode::ALL
        .iter()
        .flat_map(|&a| Mode::ALL.iter().map(move |&b| (a, b, disk("modes", &format!("{a}-{b}")))))
        .collect();
    let first: Vec<String> = pairs.iter().map(|(a, _, p)| acquire(&vm1, &format!("{a}={p}"))).collect();
    let ev = d1.client(&first.iter().map(String::as_str).collect::<Vec<_>>());
    for s in &first {
        assert_eq!(outcome_of(&ev, s), "ok", "node1 {s}: {}", event(&ev, s));
    }

    let second: Vec<String> = pairs.iter().map(|(_, b, p)| acquire(&vm2, &format!("{b}={p}"))).collect();
    let ev = d2.client(&second.iter().map(String::as_str).collect::<Vec<_>>());
    let mut refused = Vec::new();
    for ((a, b, path), s) in pairs.iter().zip(&second) {
        let e = event(&ev, s);
        if b.compatible(*a) {
            assert_eq!(outcome_of(&ev, s), "ok", "{b} on node2 beside {a} on node1 must be granted: {e}");
        } else {
            assert_eq!(outcome_of(&ev, s), "conflict", "{b} on node2 beside {a} on node1 must be refused: {e}");
            assert_remote_conflict_message(e, path);
            refused.push(format!("{b}={path}"));
        }
    }
    assert_eq!(refused.len(), 16 - 7, "the table has 7 compatible (held, wanted) pairs of 16");

    // All or nothing: a refused request that also named a free disk left that disk free.
    let free = disk("modes", "free");
    let both = acquire(&vm2, &format!("EX={free},{}", refused[0]));
    let ev = d2.client(&[&both]);
    assert_eq!(outcome_of(&ev, &both), "conflict", "{}", event(&ev, &both));
    let take_free = acquire(&vm1, &format!("EX={free}"));
    let ev = d1.client(&[&take_free]);
    assert_eq!(
        outcome_of(&ev, &take_free),
        "ok",
        "node2 kept nothing of its refused request: {}",
        event(&ev, &take_free)
    );

    // node1 lets go of everything (releasing is idempotent); then every refused disk is node2's.
    let all1: Vec<String> = pairs.iter().map(|(a, _, p)| format!("{a}={p}")).chain([format!("EX={free}")]).collect();
    let rel = release(&vm1, &all1.join(","));
    let ev = d1.client(&[&rel, &rel]);
    assert_eq!(outcome_of(&ev, &rel), "state");
    for v in ev.iter().filter(|v| v["step"] == rel.as_str()) {
        assert_eq!(v["response"]["state"], Value::Null, "node1 holds nothing after release: {v}");
    }
    let retry: Vec<String> = refused.iter().map(|r| acquire(&vm2, r)).collect();
    let ev = d2.client(&retry.iter().map(String::as_str).collect::<Vec<_>>());
    for s in &retry {
        assert_eq!(outcome_of(&ev, s), "ok", "node2 {s} after node1 released: {}", event(&ev, s));
    }
    // `locks` is cluster-wide: count node2's own entries.
    let ev = d2.client(&["locks"]);
    let locks = event(&ev, "locks")["response"]["locks"].as_array().cloned().unwrap_or_default();
    assert_eq!(locks.iter().filter(|l| l["node_name"] == "node2").count(), 16, "node2 holds all 16 disks: {ev:?}");
}

#[test]
fn a_killed_daemon_keeps_its_locks_through_the_restart() {
    let c = Cluster::get();
    let mut d1 = Daemon::start(&c, 1, "restart", "vd_restart");
    let d2 = Daemon::start(&c, 2, "restart", "vd_restart");
    let mut vm1 = Vm::start(&c, 1, "restart-a");
    let vm2 = Vm::start(&c, 2, "restart-b");
    let (ex, cw) = (disk("restart", "ex"), disk("restart", "cw"));

    let take = acquire(&vm1, &format!("EX={ex},CW={cw}"));
    assert_eq!(outcome_of(&d1.client(&[&take]), &take), "ok");
    let want_ex = acquire(&vm2, &format!("EX={ex}"));
    let want_cw_ex = acquire(&vm2, &format!("EX={cw}"));
    let ev = d2.client(&[&want_ex, &want_cw_ex]);
    assert_eq!(outcome_of(&ev, &want_ex), "conflict", "before the crash: {}", event(&ev, &want_ex));
    assert_eq!(outcome_of(&ev, &want_cw_ex), "conflict", "before the crash: {}", event(&ev, &want_cw_ex));

    // node2 keeps asking for the disk for the whole crash and restart of node1's daemon.
    let stop = "/tmp/vd_restart.stop";
    assert_eq!(c.exec(2, &format!("rm -f {stop}")).code, 0);
    let hammer_step = format!("hammer:{stop}:170:{}:EX={ex}", vm2.id());
    let hammer = d2.spawn_client(&[&hammer_step]);
    hammer.wait_for("hammer start", std::time::Duration::from_secs(60), |v| v["outcome"] == "started");
    d1.kill9();
    let ev = d2.client(&[&want_ex]);
    assert_eq!(outcome_of(&ev, &want_ex), "conflict", "while node1's daemon is down: {}", event(&ev, &want_ex));
    let restarting = d1.spawn_restart();
    d1.restarted(restarting);
    let ev = d2.client(&[&want_ex, &want_cw_ex]);
    assert_eq!(outcome_of(&ev, &want_ex), "conflict", "after the restart: {}", event(&ev, &want_ex));
    assert_eq!(outcome_of(&ev, &want_cw_ex), "conflict", "after the restart: {}", event(&ev, &want_cw_ex));
    assert_eq!(c.exec(2, &format!("touch {stop}")).code, 0);
    let (code, ev) = hammer.finish(std::time::Duration::from_secs(60));
    assert_eq!(code, 0);
    let done = ev
        .iter()
        .find(|v| v["step"] == hammer_step.as_str() && v["outcome"] == "done")
        .unwrap_or_else(|| panic!("the hammer did not finish: {ev:?}"));
    let counts = done["counts"].as_object().expect("counts");
    assert!(done["stopped"].as_bool() == Some(true), "the hammer ran to its limit instead: {done}");
    assert!(counts.keys().all(|k| k == "conflict"), "every attempt during the crash was refused: {done}");
    assert!(counts.get("conflict").and_then(Value::as_u64).unwrap_or(0) >= 3, "{done}");

    // The restarted daemon adopted both locks, in their modes, for the still-running VM.
    let log = d1.log();
    assert_eq!(log.matches("adopted after restart").count(), 2, "daemon log:\n{log}");
    let inq = format!("inquire:{}", vm1.id());
    let ev = d1.client(&[&inq, "locks"]);
    assert!(event(&ev, &inq)["response"]["state"].as_str().is_some_and(|s| s.starts_with("dlm1-2-")), "{ev:?}");
    let mut held: Vec<(String, String)> = event(&ev, "locks")["response"]["locks"]
        .as_array()
        .expect("locks")
        .iter()
        .filter(|l| l["node_name"] == "node1")
        .map(|l| (l["identity"].as_str().unwrap_or("").to_string(), l["mode"].as_str().unwrap_or("").to_string()))
        .collect();
    held.sort();
    assert_eq!(held, vec![(cw.clone(), "CW".to_string()), (ex.clone(), "EX".to_string())]);
    // Still CW: another shared writer fits beside it.
    let share = acquire(&vm2, &format!("CW={cw}"));
    assert_eq!(outcome_of(&d2.client(&[&share]), &share), "ok");

    // The VM goes: now node2 gets the disk.
    vm1.kill9();
    let until = format!("until-granted:30:{}:EX={ex}", vm2.id());
    let ev = d2.client(&[&until]);
    assert_eq!(outcome_of(&ev, &until), "ok", "after the owner died: {}", event(&ev, &until));
}

#[test]
fn owner_death_releases_its_locks_on_every_node() {
    let c = Cluster::get();
    let d1 = Daemon::start(&c, 1, "death", "vd_death");
    let d3 = Daemon::start(&c, 3, "death", "vd_death");
    let mut vm1 = Vm::start(&c, 1, "death-a");
    let vm3 = Vm::start(&c, 3, "death-b");
    let (ex, pr) = (disk("death", "ex"), disk("death", "pr"));

    let take = acquire(&vm1, &format!("EX={ex},PR={pr}"));
    assert_eq!(outcome_of(&d1.client(&[&take]), &take), "ok");
    let want = acquire(&vm3, &format!("EX={ex}"));
    let write_pr = acquire(&vm3, &format!("EX={pr}"));
    let ev = d3.client(&[&want, &write_pr]);
    assert_eq!(outcome_of(&ev, &want), "conflict", "{}", event(&ev, &want));
    assert_eq!(outcome_of(&ev, &write_pr), "conflict", "{}", event(&ev, &write_pr));

    vm1.kill9();
    let until = format!("until-granted:30:{}:EX={ex},EX={pr}", vm3.id());
    let ev = d3.client(&[&until]);
    assert_eq!(outcome_of(&ev, &until), "ok", "after node1's VM died: {}", event(&ev, &until));
    let log = d1.log();
    assert_eq!(log.matches("released: its QEMU process exited").count(), 2, "daemon log:\n{log}");
}

#[test]
fn a_restarted_daemon_frees_the_locks_of_a_vm_that_died_while_it_was_down() {
    let c = Cluster::get();
    let mut d1 = Daemon::start(&c, 1, "downtime", "vd_downtime");
    let d2 = Daemon::start(&c, 2, "downtime", "vd_downtime");
    let mut vm1 = Vm::start(&c, 1, "downtime-a");
    let vm2 = Vm::start(&c, 2, "downtime-b");
    let ex = disk("downtime", "ex");

    let take = acquire(&vm1, &format!("EX={ex}"));
    assert_eq!(outcome_of(&d1.client(&[&take]), &take), "ok");
    d1.kill9();
    vm1.kill9();
    // Nobody on node1 can release it now: the kernel keeps the orphan.
    let want = acquire(&vm2, &format!("EX={ex}"));
    let ev = d2.client(&[&want]);
    assert_eq!(outcome_of(&ev, &want), "conflict", "the orphan is still held: {}", event(&ev, &want));
    assert_remote_conflict_message(event(&ev, &want), &ex);

    d1.restart();
    let until = format!("until-granted:30:{}:EX={ex}", vm2.id());
    let ev = d2.client(&[&until]);
    assert_eq!(outcome_of(&ev, &until), "ok", "after node1's daemon restarted: {}", event(&ev, &until));
    let log = d1.log();
    assert!(log.contains("exited while virtdlmd was down"), "daemon log:\n{log}");
    // `locks` is cluster-wide (it lists node2's new grant too): node1 itself holds nothing.
    let ev = d1.client(&["locks"]);
    let locks = event(&ev, "locks")["response"]["locks"].as_array().cloned().unwrap_or_default();
    assert!(locks.iter().all(|l| l["node_name"] != "node1"), "{ev:?}");
}
