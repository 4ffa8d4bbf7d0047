//! The cluster-wide lock inventory over CPG, with virtdlmd on the kernel DLM in every guest:
//! a lock taken on one node shows on the others with its VM, a daemon started later sees
//! the locks that exist, a conflict names the VM and node that hold the disk, and a node
//! cut off from the others is shown as `left` until it comes back.
mod inventory_support;

use cluster_tests::Cluster;
use inventory_support::Node;
use serde_json::Value;
use std::time::{Duration, Instant};

const WEB: &str = "0c0ffee0-0000-4000-8000-000000000001";
const DB: &str = "0c0ffee0-0000-4000-8000-000000000002";
const OTHER: &str = "0c0ffee0-0000-4000-8000-000000000003";

/// Polls `node`'s `locks --json` until `pred` holds for the table; returns it and the time
/// it took (reported, never asserted).
fn poll(node: &Node, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> (Vec<Value>, Duration) {
    let t0 = Instant::now();
    loop {
        let locks = node.locks();
        if pred(&locks) {
            return (locks, t0.elapsed());
        }
        assert!(t0.elapsed() < timeout, "node{}: {what} not seen within {timeout:?}; table: {locks:#?}\nlog:\n{}", node.node, node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn entry<'a>(locks: &'a [Value], vm: &str) -> Option<&'a Value> {
    locks.iter().find(|l| l["vm_name"] == vm)
}

#[test]
fn locks_show_cluster_wide_late_joiners_see_them_and_conflicts_name_the_holder() {
    let c = Cluster::get();
    let mut n1 = Node::start(&c, 1);
    let n3 = Node::start(&c, 3);

    let disk = n1.disk("a.img");
    let granted = n1.acquire("web-1", WEB, &disk);
    assert_eq!(granted["result"], "ok", "acquire on node1: {granted}");

    let (locks, took) = poll(&n3, "web-1's lock", Duration::from_secs(30), |l| entry(l, "web-1").is_some());
    eprintln!("node1's lock seen on node3 {} ms after the grant returned (includes the exec round trips)", took.as_millis());
    let e = entry(&locks, "web-1").unwrap();
    assert_eq!(e["node_name"], "node1");
    assert_eq!(e["node_id"], 1);
    assert_eq!(e["mode"], "EX");
    assert_eq!(e["state"], "held");
    assert_eq!(e["vm_uuid"], WEB);
    assert_eq!(e["identity"], disk.as_str());

    // A daemon started after the lock was taken learns it from the re-sends on its join.
    let mut n2 = Node::start(&c, 2);
    let (locks, _) = poll(&n2, "the existing lock (late joiner)", Duration::from_secs(30), |l| entry(l, "web-1").is_some());
    assert_eq!(entry(&locks, "web-1").unwrap()["node_name"], "node1");

    // The same disk from node2: refused, and the message names the VM and node that hold it.
    let refused = n2.acquire("intruder", OTHER, &disk);
    assert_eq!(refused["result"], "error", "{refused}");
    assert_eq!(refused["code"], "conflict", "{refused}");
    let msg = refused["message"].as_str().unwrap();
    assert!(msg.contains("VM web-1") && msg.contains("on node node1") && msg.contains("exclusively"), "{msg}");

    // inspect on node3 names the remote holder; status shows the members and the verdict.
    let inspect = n3.json(&format!("inspect {disk}"));
    assert_eq!(inspect["free"], false);
    assert_eq!(inspect["holders"][0]["vm_name"], "web-1");
    let status = n3.json("status");
    assert_eq!(status["cluster"]["verdict"], "safe", "{status}");
    assert_eq!(status["cluster"]["members"].as_array().map(Vec::len), Some(3), "{status}");
    assert!(status.as_object().unwrap().contains_key("last_lock_loss"));

    // Filters work on the cluster-wide table.
    let on1 = n2.json("locks --node node1");
    assert!(on1.as_array().unwrap().iter().all(|l| l["node_name"] == "node1"));
    assert!(entry(on1.as_array().unwrap(), "web-1").is_some());
    assert!(n2.json("locks --node node3").as_array().unwrap().is_empty());
}

#[test]
fn node_cut_off_is_shown_as_left_until_it_comes_back() {
    let c = Cluster::get();
    let n1 = Node::start(&c, 1);
    let _n2 = Node::start(&c, 2);
    let mut n3 = Node::start(&c, 3);
    let disk = n3.disk("b.img");
    let granted = n3.acquire("db-3", DB, &disk);
    assert_eq!(granted["result"], "ok", "acquire on node3: {granted}");
    poll(&n1, "db-3's lock", Duration::from_secs(30), |l| entry(l, "db-3").is_some_and(|e| e["state"] == "held"));

    c.node_action("partition", 3);
    let cut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll(&n1, "db-3 marked left", Duration::from_secs(60), |l| entry(l, "db-3").is_some_and(|e| e["state"] == "left"))
    }));
    c.node_action("heal", 3);
    let (_, took) = cut.unwrap_or_else(|p| std::panic::resume_unwind(p));
    eprintln!("node3 shown as left on node1 {} ms after the partition", took.as_millis());
    let (locks, took) =
        poll(&n1, "db-3 held again after the heal", Duration::from_secs(90), |l| entry(l, "db-3").is_some_and(|e| e["state"] == "held"));
    eprintln!("node3's locks held again on node1 {} ms after the heal", took.as_millis());
    assert_eq!(entry(&locks, "db-3").unwrap()["node_name"], "node3");
}
