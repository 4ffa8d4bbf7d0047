//! A virtdlmd restarted on a node that is cut off from the cluster, while a VM whose lock it
//! must take back still runs there. The lockspace is stopped (no quorum), so taking the lock
//! back (`LKF_ORPHAN` adoption) and purging block in the kernel; lock-loss handling must
//! already run then, and stop that VM: the other nodes recover the lockspace without node 3
//! and may hand its disk to another VM.
//!
//! Break it: start lock-loss handling after `Registry::restore` again (virtdlmd blocked in the
//! adoption before it watched the membership, as it did): this test fails with "node 3's VM
//! still runs 120 s after its virtdlmd restarted cut off" (checked against that build).

use cluster_tests::daemon::{outcome_of, Daemon, Vm};
use cluster_tests::Cluster;
use std::time::{Duration, Instant};

fn alive(c: &Cluster, node: u32, pid: u32) -> bool {
    let out =
        c.exec(node, &format!("[ -e /proc/{pid} ] && ! grep -q '^State:.*Z' /proc/{pid}/status && echo ALIVE; true"));
    out.text.contains("ALIVE")
}

#[test]
fn a_daemon_restarted_while_cut_off_stops_the_vms_it_cannot_vouch_for() {
    let c = Cluster::get();
    // Node 1 is in the lockspace too, so cutting node 3 off stops it there (a lockspace no
    // other node joined would run on).
    let d1 = Daemon::start(&c, 1, "rcut", "vd_rcut");
    let mut d3 = Daemon::start(&c, 3, "rcut", "vd_rcut");
    let vm = Vm::start(&c, 3, "rcut-a");
    let disk = "/srv/virtdlm-tests/rcut/a.img";
    let take = format!("acquire:{}:EX={disk}", vm.id());
    assert_eq!(outcome_of(&d3.client(&[&take]), &take), "ok");

    // virtdlmd dies (the VM runs on, its lock an orphan in the DLM); node 3 is cut off; a
    // service manager starts virtdlmd again.
    d3.kill9();
    c.node_action("partition", 3);
    let cut_off = c.exec(3, "for i in $(seq 1 240); do corosync-quorumtool -s 2>/dev/null | grep -q 'Quorate: *No' && exit 0; sleep 0.25; done; exit 1");
    assert_eq!(cut_off.code, 0, "node 3 never saw its quorum lost: {}", cut_off.text);
    let restart = d3.spawn_restart();
    let t0 = Instant::now();
    while alive(&c, 3, vm.pid) && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let still = alive(&c, 3, vm.pid);
    let log = d3.log();

    // Leave the cluster as found: heal (dlm_controld on node 1 then removes node 3, a stateful
    // merge), and start the cluster again, as the inventory tests do.
    c.node_action("heal", 3);
    drop(restart);
    drop(d1);
    drop(d3);
    restart_cluster();
    assert!(!still, "node 3's VM still runs 120 s after its virtdlmd restarted cut off:\n{log}");
    assert!(log.contains("LOCK LOSS"), "the loss is logged:\n{log}");
}

fn restart_cluster() {
    let script = std::env::var_os("VIRTDLM_CLUSTER").expect("VIRTDLM_CLUSTER (set by run.sh)");
    for args in [&["stop"][..], &["start", "3"][..]] {
        let st = std::process::Command::new(&script).args(args).status().expect("running cluster.sh");
        assert!(st.success(), "cluster.sh {args:?} failed");
    }
}
