//! The libvirt plugin on the kernel DLM: nodes 1 and 2 each run virtdlmd --backend dlm, and
//! on each the ABI harness (tests/abi, scripted mode) loads the built dlm.so exactly as
//! libvirtd does and drives the VM lifecycles against its own node's daemon. VM a runs on
//! node 1, VM b wants the same disks on node 2.

use cluster_tests::daemon::Daemon;
use cluster_tests::{built_binary, Cluster, Running};
use proto::mode::Mode;
use serde_json::Value;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(180);
/// Where each guest keeps the plugin's configuration and the steps' wait files.
const DIR: &str = "/run/virtdlm-plugin";

/// A disk path both nodes name alike (it need not exist: the name is made from its text).
fn disk(what: &str) -> String {
    format!("/srv/virtdlm-tests/plugin/{what}.img")
}

/// Writes the plugin's qemu-dlm.conf in `node` (pointing at that node's daemon) and returns
/// the harness command line for `steps`.
fn harness_cmd(c: &Cluster, d: &Daemon, steps: &[String]) -> String {
    let conf = format!("{DIR}/qemu-dlm.conf");
    let setup = format!(
        "rm -rf {DIR} && mkdir -p {DIR} && printf 'socket = \"%s\"\\ntimeout_ms = 60000\\n' {} > {conf}",
        d.socket()
    );
    let out = c.exec(d.node, &setup);
    assert_eq!(out.code, 0, "writing {conf} on node{}: {}", d.node, out.text);
    let harness = c.guest_binary(&built_binary("abi-harness", "VIRTDLM_ABI_HARNESS"));
    let plugin = c.guest_binary(&built_binary("libvirtdlm_plugin.so", "VIRTDLM_PLUGIN"));
    let mut cmd = format!("{harness} -p {plugin} -c {conf} -s");
    for s in steps {
        assert!(!s.contains('\''), "step {s:?} must not contain a quote");
        cmd.push_str(&format!(" '{s}'"));
    }
    cmd
}

/// The event of step number `i` (1-based, as the harness counts).
fn step(r: &Running, i: usize) -> Value {
    r.wait_for(&format!("step {i}"), LONG, |v| v["i"] == i)
}

fn granted(ev: &Value) -> bool {
    ev["rc"] == 0
}

fn go(c: &Cluster, node: u32, name: &str) {
    assert_eq!(c.exec(node, &format!("touch {DIR}/{name}")).code, 0, "touch {name} on node{node}");
}

/// libvirt's disk flags for a DLM mode: the harness's MODE= prefix.
fn libvirt_flags(m: Mode) -> &'static str {
    match m {
        Mode::Ex => "rw",
        Mode::Cw => "sh",
        Mode::Pr => "ro",
        Mode::Cr => "rosh",
    }
}

#[test]
fn the_plugin_keeps_a_disk_to_one_node_through_every_libvirt_lifecycle() {
    let c = Cluster::get();
    let d1 = Daemon::start(&c, 1, "plugin", "vd_plugin");
    let d2 = Daemon::start(&c, 2, "plugin", "vd_plugin");
    let (rw, sh, ro) = (disk("rw"), disk("shared"), disk("base"));
    let res_a = format!("rw={rw},sh={sh},ro={ro}");

    // VM a on node 1: the forked "QEMU" registers, then libvirtd's resume acquires.
    let a_steps: Vec<String> = vec![
        format!("start:a:{res_a}"),
        format!("resume:a:{res_a}"),
        format!("waitfile:{DIR}/go-a1"),
        format!("pause:a:{res_a}"), // suspend: libvirt releases twice
        format!("pause:a:{res_a}"),
        format!("waitfile:{DIR}/go-a2"),
        format!("resume:a:{res_a}"),
        format!("waitfile:{DIR}/go-a3"),
        "kill:a".into(),
    ];
    let a = c.spawn(1, &harness_cmd(&c, &d1, &a_steps));
    assert!(granted(&step(&a, 1)), "VM a registers on node1");
    let ev = step(&a, 2);
    assert!(granted(&ev), "VM a resumes on node1 with its three disks: {ev}");

    // VM b on node 2 wants a's disks: every libvirt disk kind against every kind a holds.
    let a_holds = [(&rw, Mode::Ex), (&sh, Mode::Cw), (&ro, Mode::Pr)];
    let mut trials = vec![];
    for (path, held) in a_holds {
        for want in Mode::ALL {
            trials.push((format!("try:b:{}={path}", libvirt_flags(want)), want.compatible(held)));
        }
    }
    let mut b_steps: Vec<String> = vec![format!("start:b:rw={rw}"), format!("resume:b:rw={rw}")];
    b_steps.extend(trials.iter().map(|(s, _)| s.clone()));
    let after_trials = b_steps.len();
    b_steps.extend([
        format!("waitfile:{DIR}/go-b1"),
        format!("resume:b:rw={rw}"),
        format!("pause:b:rw={rw}"),
        format!("pause:b:rw={rw}"),
        format!("waitfile:{DIR}/go-b2"),
        format!("resume:b:rw={rw}"),
        format!("waitfile:{DIR}/go-b3"),
        format!("until-resume:b:60:rw={rw}"),
        format!("pause:b:rw={rw}"),
    ]);
    let b = c.spawn(2, &harness_cmd(&c, &d2, &b_steps));
    assert!(granted(&step(&b, 1)), "VM b registers on node2 (register only takes nothing)");
    let ev = step(&b, 2);
    assert!(!granted(&ev), "VM b's resume on a's disk is refused: {ev}");
    let msg = ev["error"].as_str().unwrap_or_default();
    // The holder's node by name once the cluster inventory has a's grant, else "another node".
    let names_node = msg.contains("on node node1") || msg.contains("another node");
    assert!(msg.contains(&format!("disk {rw}")) && names_node, "names the disk and the other node: {msg}");
    for (k, (s, want)) in trials.iter().enumerate() {
        let ev = step(&b, 3 + k);
        assert_eq!(granted(&ev), *want, "{s} on node2 while a holds it on node1: {ev}");
    }

    // a suspends (two releases): b may resume, then suspends too.
    go(&c, 1, "go-a1");
    for i in [4, 5] {
        let ev = step(&a, i);
        assert!(granted(&ev), "VM a suspend, release {}: {ev}", i - 3);
    }
    go(&c, 2, "go-b1");
    for (i, what) in [(after_trials + 2, "resume"), (after_trials + 3, "suspend"), (after_trials + 4, "second release")]
    {
        let ev = step(&b, i);
        assert!(granted(&ev), "VM b {what} on node2 while a is paused: {ev}");
    }

    // a resumes with its saved state; b is refused again.
    go(&c, 1, "go-a2");
    let ev = step(&a, 7);
    assert!(granted(&ev), "VM a resumes with its saved state: {ev}");
    go(&c, 2, "go-b2");
    let ev = step(&b, after_trials + 6);
    assert!(!granted(&ev), "VM b refused once a runs again: {ev}");

    // kill -9 of a's QEMU, no plugin call: node1's daemon lets go and b gets the disk.
    go(&c, 1, "go-a3");
    assert!(granted(&step(&a, 9)), "kill -9 of VM a's QEMU");
    let (code, _) = a.finish(LONG);
    assert_eq!(code, 0, "the harness on node1 ended cleanly");
    go(&c, 2, "go-b3");
    let ev = step(&b, after_trials + 8);
    assert!(granted(&ev), "VM b resumes once a's QEMU was killed: {ev}\nnode1 daemon log:\n{}", d1.log());
    let ev = step(&b, after_trials + 9);
    assert!(granted(&ev), "VM b suspends: {ev}");
    let (code, _) = b.finish(LONG);
    assert_eq!(code, 0, "the harness on node2 ended cleanly");
}
