//! `virtdlm release --vm` on one node for a VM whose locks are on another, with virtdlmd on
//! the kernel DLM in every guest: the owning node's daemon answers (refused while the VM runs,
//! released with --force), and the disk's DLM lock is really gone: a VM on a third node can
//! then take it.
mod inventory_support;

use cluster_tests::Cluster;
use inventory_support::Node;
use serde_json::Value;
use std::time::{Duration, Instant};

/// This file's own lockspace and group: the test leaves a lock behind in the DLM.
const LOCKSPACE: &str = "rells";
const GROUP: &str = "virtdlm-rel";
const APP: &str = "0c0ffee0-0000-4000-8000-0000000000a2";
const THIRD: &str = "0c0ffee0-0000-4000-8000-0000000000a3";
const FOURTH: &str = "0c0ffee0-0000-4000-8000-0000000000a4";

/// The JSON object on the output's last line that parses (stderr lines come first or last).
fn json_line(text: &str) -> Value {
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .unwrap_or_else(|| panic!("no JSON in {text:?}"))
}

fn count(node: &Node, vm: &str) -> usize {
    node.locks().iter().filter(|l| l["vm_name"] == vm).count()
}

#[test]
fn a_release_on_another_node_is_answered_by_the_owning_node() {
    let c = Cluster::get();
    let n1 = Node::start_in(&c, 1, LOCKSPACE, GROUP);
    let mut n2 = Node::start_in(&c, 2, LOCKSPACE, GROUP);
    let mut n3 = Node::start_in(&c, 3, LOCKSPACE, GROUP);
    let disk = n2.disk("a.img");
    let granted = n2.acquire("app-2", APP, &disk);
    assert_eq!(granted["result"], "ok", "acquire on node2: {granted}");
    let t0 = Instant::now();
    while count(&n1, "app-2") != 1 {
        assert!(t0.elapsed() < Duration::from_secs(30), "node1 never saw app-2's lock: {:#?}", n1.locks());
        std::thread::sleep(Duration::from_millis(100));
    }

    // Refused on node2's own rule: its QEMU (the stand-in) runs.
    let out = n1.virtdlm("release --vm app-2 --json");
    assert_eq!(out.code, 1, "release of a running VM on another node: {}", out.text);
    let e = json_line(&out.text);
    assert_eq!(e["error"]["kind"], "busy", "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("still runs on node node2"), "{e}");
    assert_eq!(count(&n2, "app-2"), 1, "a refused release releases nothing");
    let refused = n3.acquire("third", THIRD, &disk);
    assert_eq!(refused["code"], "conflict", "the disk is still locked in the DLM: {refused}");

    // Forced: node2 releases; the entry goes from every table and the DLM lock is free.
    let released = n1.json("release --vm app-2 --force");
    assert_eq!(released["node_id"], 2, "{released}");
    assert_eq!(released["locks"].as_array().map(Vec::len), Some(1), "{released}");
    assert_eq!(released["locks"][0]["identity"], disk.as_str(), "{released}");
    let t0 = Instant::now();
    while [&n1, &n2, &n3].iter().any(|n| count(n, "app-2") != 0) {
        assert!(t0.elapsed() < Duration::from_secs(30), "app-2's lock still listed after the forced release");
        std::thread::sleep(Duration::from_millis(100));
    }
    let taken = n3.acquire("fourth", FOURTH, &disk);
    assert_eq!(taken["result"], "ok", "node3 takes the disk node2 released: {taken}");
    assert!(n2.log().contains("release of a VM's locks requested by node node1"), "node2 logs who asked");
}
