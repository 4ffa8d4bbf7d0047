//! dlm_controld dies (kill -9) or hangs (SIGSTOP) on node 3 while its corosync runs on and
//! its VM holds a disk exclusively; node 1 asks for that disk every 100 ms meanwhile.
//!
//! What the DLM does (`enable_fencing=0`, as this tier runs): corosync reports node 3's
//! dlm_controld as having left its CPG groups ("procdown"), the totem ring does not change,
//! and node 1's dlm_controld recovers the lockspace without node 3 at once; node 1's DLM
//! grants the disk within a second while node 3's kernel still runs its lockspace and its VM
//! runs on. A stopped dlm_controld stays in its groups: nothing is recovered, node 1 waits.
//! What virtdlmd does about it (`crates/lockmgr/src/lockloss/controld.rs`): node 3's daemon sees its
//! dlm_controld gone or stopped and stops its VMs (lock loss, reason `controld_lost`); node
//! 1's daemon sees node 3 leave the lockspace's members and holds its grants back as after a
//! membership change. Checked: node 3's VM is gone before node 1 is told "granted" (guest
//! clocks put on the host's with the uncertainty of one exec round trip), and with a hung
//! dlm_controld node 1 is not granted at all.
//!
//! Break it: make `controld::Watch::check` return `None` and `LossGate::check_lockspace_members`
//! return at once (the build before this test): `a_killed_dlm_controld_...` fails with "node 1
//! was granted node 3's disk while node 3's VM still ran" and `a_hung_dlm_controld_...` with
//! "node 3's VM still ran when node 1 had asked for 15 s ..." (both checked against that build).

use cluster_tests::daemon::{Daemon, Vm};
use cluster_tests::{built_binary, Cluster};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A figure line: to stderr and, under `run.sh`, to `$VIRTDLM_RESULTS/controld.txt`, which
/// `run.sh` prints after the tests and stores with `VIRTDLM_LOCKLOSS_RECORD=1`
/// (`tests/bench/report.py store controld`, rendered into docs/LOCK-LOSS.md).
fn report(line: &str) {
    eprintln!("{line}");
    if let Some(dir) = std::env::var_os("VIRTDLM_RESULTS") {
        use std::io::Write;
        let path = std::path::Path::new(&dir).join("controld.txt");
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn host_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The guest's wall clock minus the host's, and the uncertainty of that (half an exec round
/// trip, plus a margin for drift during the test).
fn clock_offset(c: &Cluster, node: u32) -> (f64, f64) {
    let before = host_now();
    let out = c.exec(node, "date +%s.%N");
    let after = host_now();
    let t: f64 = out.text.trim().parse().unwrap_or_else(|_| panic!("date on node{node}: {:?}", out.text));
    (t - (before + after) / 2.0, (after - before) / 2.0 + 0.05)
}

fn alive(c: &Cluster, node: u32, pid: u32) -> bool {
    c.exec(node, &format!("[ -e /proc/{pid} ] && ! grep -q '^State:.*Z' /proc/{pid}/status && echo ALIVE; true"))
        .text
        .contains("ALIVE")
}

fn loss_client(c: &Cluster, d: &Daemon, step: &str) -> String {
    format!("{} {} '{step}'", c.guest_binary(&built_binary("loss-client", "VIRTDLM_LOSS_CLIENT")), d.socket())
}

/// What happened after dlm_controld on node 3 got `signal`.
struct Seen {
    /// Node 1's last answer (`outcome` `ok` = granted, with its guest stamp `answered`).
    node1: Value,
    /// Node 3's VM was still running when node 1's answer was seen.
    alive_at_grant: bool,
    /// When node 3 saw its VM gone (node 3's clock), if it did within the wait.
    dead_at: Option<f64>,
    /// When dlm_controld got the signal (host clock, the middle of the exec that sent it).
    signalled: f64,
    offsets: [(f64, f64); 2],
    log3: String,
    log1: String,
    dump1: String,
}

fn run(c: &Cluster, signal: &str, tag: &str, node1_waits: u32) -> Seen {
    let ls = format!("vd_{tag}");
    let d1 = Daemon::start(c, 1, tag, &ls);
    let d3 = Daemon::start(c, 3, tag, &ls);
    let disk = format!("/srv/virtdlm-tests/{tag}/a.img");
    let vm3 = Vm::start(c, 3, &format!("{tag}-a"));
    let vm1 = Vm::start(c, 1, &format!("{tag}-b"));
    let take3 = c.exec(3, &loss_client(c, &d3, &format!("acquire:{}:{}:EX={disk}", vm3.name, vm3.pid)));
    assert_eq!(
        take3.events().first().map(|v| v["outcome"].clone()),
        Some("ok".into()),
        "node 3 takes the disk: {}",
        take3.text
    );
    let take1 = c.exec(1, &loss_client(c, &d1, &format!("acquire:{}:{}:EX={disk}", vm1.name, vm1.pid)));
    assert_ne!(
        take1.events().first().map(|v| v["outcome"].clone()),
        Some("ok".into()),
        "node 1 is refused first: {}",
        take1.text
    );
    let offsets = [clock_offset(c, 1), clock_offset(c, 3)];

    let pid = vm3.pid;
    let watcher = c.spawn(
        3,
        &format!(
            r#"for i in $(seq 1 1200); do
  if ! [ -e /proc/{pid} ] || grep -q '^State:.*Z' /proc/{pid}/status 2>/dev/null; then echo "{{\"ev\":\"dead\",\"t\":$(date +%s.%N)}}"; exit 0; fi
  sleep 0.05
done"#
        ),
    );
    let asking =
        c.spawn(1, &loss_client(c, &d1, &format!("until-granted:{node1_waits}:{}:{}:EX={disk}", vm1.name, vm1.pid)));
    std::thread::sleep(Duration::from_millis(500));
    let before = host_now();
    let out = c.exec(3, &format!("kill -{signal} $(cat /run/dlm_controld/dlm_controld.pid)"));
    let signalled = (before + host_now()) / 2.0;
    assert_eq!(out.code, 0, "kill -{signal} dlm_controld on node3: {}", out.text);

    let node1 = asking.wait_for("node 1's answer", Duration::from_secs(u64::from(node1_waits) + 60), |v| {
        v["step"].as_str().is_some_and(|s| s.starts_with("until"))
    });
    let alive_at_grant = node1["outcome"] == "ok" && alive(c, 3, pid);
    let dead_at = match alive(c, 3, pid) && !alive_at_grant {
        // Still running after node 1 gave up: wait no longer than the watcher does.
        true => None,
        false => watcher
            .finish(Duration::from_secs(70))
            .1
            .into_iter()
            .find(|v| v["ev"] == "dead")
            .and_then(|v| v["t"].as_f64()),
    };
    let dump1 = c.exec(1, &format!("dlm_tool dump | grep -E '{ls}|procdown|corosync|ringid' | tail -40")).text;
    if signal == "STOP" {
        let _ = c.exec(3, "kill -CONT $(cat /run/dlm_controld/dlm_controld.pid)");
    }
    Seen { node1, alive_at_grant, dead_at, signalled, offsets, log3: d3.log(), log1: d1.log(), dump1 }
}

/// The cluster again as the next test expects it. After a kill, node 3 was removed from
/// corosync and its kernel keeps a lockspace no dlm_controld will take over (it refuses to
/// start beside one): node 3 is rebooted, as an operator would. After a stop, dlm_controld
/// goes on once continued; if it does not answer, the whole cluster is started again.
fn restore(c: &Cluster, killed: bool) {
    if killed {
        c.node_action("kill", 3);
        c.node_action("start-node", 3);
        return;
    }
    let answers = c.exec(3, "for i in $(seq 1 120); do dlm_tool status 2>/dev/null | grep -q '^cluster nodeid' && exit 0; sleep 0.25; done; exit 1");
    if answers.code != 0 {
        let script = std::env::var_os("VIRTDLM_CLUSTER").expect("VIRTDLM_CLUSTER (set by run.sh)");
        for args in [&["stop"][..], &["start", "3"][..]] {
            let st = std::process::Command::new(&script).args(args).status().expect("running cluster.sh");
            assert!(st.success(), "cluster.sh {args:?} failed");
        }
    }
}

fn context(s: &Seen) -> String {
    format!(
        "node 1's answer: {}\nnode 1's dlm_controld:\n{}\nnode 3's virtdlmd:\n{}\nnode 1's virtdlmd:\n{}",
        s.node1, s.dump1, s.log3, s.log1
    )
}

#[test]
fn a_killed_dlm_controld_stops_the_nodes_vms_before_the_others_get_their_disks() {
    let c = Cluster::get();
    let s = run(&c, "KILL", "ctldk", 90);
    restore(&c, true);
    let ctx = context(&s);
    eprintln!("controld killed: {ctx}");
    assert!(!s.alive_at_grant, "node 1 was granted node 3's disk while node 3's VM still ran:\n{ctx}");
    // The DLM without fencing lets node 1 have the disk once node 3's dlm_controld is gone.
    assert_eq!(s.node1["outcome"], "ok", "node 1 is granted the disk once node 3 stopped its VM:\n{ctx}");
    let dead = s.dead_at.unwrap_or_else(|| panic!("node 3's VM was not seen gone:\n{ctx}"));
    let ((o1, u1), (o3, u3)) = (s.offsets[0], s.offsets[1]);
    // On the host clock: as measured, and widened by each offset's uncertainty for the check.
    let (granted_at, dead_at) = (s.node1["answered"].as_f64().expect("answered") - o1, dead - o3);
    let (granted, dead) = (granted_at - u1, dead_at + u3);
    eprintln!(
        "controld killed: node 3's VM gone {:.2} s before node 1 was told granted (host time line, widened)",
        granted - dead
    );
    assert!(
        dead < granted,
        "node 3's VM ended at {dead:.3}, node 1 was told granted at {granted:.3} (host clock):\n{ctx}"
    );
    // Node 3 stops its VM on whichever comes first: its own dlm_controld seen gone, or its
    // corosync killed by node 1's dlm_controld (which removes a node whose dlm_controld left a
    // lockspace group while it stayed in the cluster: `kick_node_from_cluster` in cpg.c).
    assert!(s.log3.contains("LOCK LOSS"), "node 3 handled a lock loss:\n{ctx}");
    let at = |m: &str| s.log3.find(m).unwrap_or(usize::MAX);
    let first = match at("LOCK LOSS: dlm_controld on this node") < at("LOCK LOSS: this node left") {
        true => "its dlm_controld gone",
        false => "its corosync removed",
    };
    eprintln!("controld killed: node 3 stopped its VM on {first}");
    assert!(s.log1.contains("node(s) left the lockspace"), "node 1 held its grant for the lockspace change:\n{ctx}");
    report(&format!(
        "killed: node 3's VM gone +{:.2} s, node 1 granted +{:.2} s after the kill (host clock, each ±{:.2} s); \
         VM gone {:.2} s before the grant (widened); node 3 stopped it on {first}",
        dead_at - s.signalled,
        granted_at - s.signalled,
        u1.max(u3),
        granted - dead
    ));
}

#[test]
fn a_hung_dlm_controld_stops_the_nodes_vms_and_the_others_wait() {
    let c = Cluster::get();
    let s = run(&c, "STOP", "ctlds", 15);
    restore(&c, false);
    let ctx = context(&s);
    eprintln!("controld stopped: {ctx}");
    assert!(!s.alive_at_grant, "node 1 was granted node 3's disk while node 3's VM still ran:\n{ctx}");
    assert!(
        s.dead_at.is_some(),
        "node 3's VM still ran when node 1 had asked for 15 s after node 3's dlm_controld stopped:\n{ctx}"
    );
    assert!(s.log3.contains("is stopped (SIGSTOP)"), "node 3 names the reason:\n{ctx}");
    // dlm_controld's own handling: a stopped daemon is still in its groups, nothing is
    // recovered, and node 3's lock stays in the DLM (its release is deferred while lost).
    assert_ne!(s.node1["outcome"], "ok", "node 1 waits while node 3's dlm_controld is stopped:\n{ctx}");
    let (o3, u3) = s.offsets[1];
    report(&format!(
        "stopped: node 3's VM gone +{:.2} s after the stop (host clock, ±{u3:.2} s); node 1 not granted in 15 s of asking",
        s.dead_at.expect("checked above") - o3 - s.signalled
    ));
}
