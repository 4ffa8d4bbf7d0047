//! The daemon's `dlm` backend (lockmgr::backend::dlm) on the real kernel DLM: NL anchor +
//! NOQUEUE|PERSISTENT conversion, release through NL, adoption and purge after a crash.

use cluster_tests::{outcome, Cluster};
use serde_json::Value;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

fn step<'a>(events: &'a [Value], step: &str) -> &'a Value {
    events.iter().find(|v| v["step"] == step).unwrap_or_else(|| panic!("no event for step {step}; events: {events:#?}"))
}

fn assert_step(events: &[Value], s: &str, expect: &str) {
    assert_eq!(outcome(step(events, s)), expect, "step {s}: {}", step(events, s));
}

#[test]
fn an_exclusive_grant_keeps_every_other_node_out_until_released() {
    let c = Cluster::get();
    let holder = c.spawn_probe(1, &["backend:b_excl", "acquire:disk:EX:nq", "waitfile:/tmp/b_excl.done", "drop:disk"]);
    let ev = holder.wait_step("backend:b_excl", LONG);
    assert_eq!(outcome(&ev), "ok");
    assert_eq!(ev["nodeid"], 1);
    assert_eq!(outcome(&holder.wait_step("acquire:disk:EX:nq", LONG)), "granted");
    for (node, mode) in [(2, "EX"), (3, "CR")] {
        let s = format!("acquire:disk:{mode}:nq");
        let ev = c.probe(node, &["backend:b_excl", &s]);
        assert_step(&ev, &s, "would_block");
    }
    // A bounded wait ends with the request cancelled, holding nothing.
    let ev = c.probe(2, &["backend:b_excl", "acquire:disk:PR:2"]);
    assert_step(&ev, "acquire:disk:PR:2", "timed_out");
    assert_eq!(c.exec(1, "touch /tmp/b_excl.done").code, 0);
    let (code, ev) = holder.finish(LONG);
    assert_eq!(code, 0);
    assert_step(&ev, "drop:disk", "released");
    let ev = c.probe(3, &["backend:b_excl", "acquire:disk:EX:nq", "drop:disk"]);
    assert_step(&ev, "acquire:disk:EX:nq", "granted");
    assert_step(&ev, "drop:disk", "released");
}

#[test]
fn shared_modes_coexist_across_nodes() {
    let c = Cluster::get();
    let holder =
        c.spawn_probe(1, &["backend:b_shared", "acquire:ro:PR:nq", "acquire:sh:CW:nq", "waitfile:/tmp/b_shared.done"]);
    assert_eq!(outcome(&holder.wait_step("acquire:sh:CW:nq", LONG)), "granted");
    let ev = c.probe(
        2,
        &["backend:b_shared", "acquire:ro:PR:nq", "acquire:sh:CW:nq", "acquire:ro:CW:nq", "drop:ro", "drop:sh"],
    );
    assert_step(&ev, "acquire:ro:PR:nq", "granted");
    assert_step(&ev, "acquire:sh:CW:nq", "granted");
    assert_step(&ev, "acquire:ro:CW:nq", "would_block");
    assert_step(&ev, "drop:ro", "released");
    assert_eq!(c.exec(1, "touch /tmp/b_shared.done").code, 0);
    assert_eq!(holder.finish(LONG).0, 0);
}

#[test]
fn a_crashed_daemons_grant_is_adopted_or_purged_by_the_next() {
    let c = Cluster::get();
    let first = c.spawn_probe(1, &["backend:b_crash", "acquire:disk:EX:nq", "acquire:other:EX:nq", "hold"]);
    assert_eq!(outcome(&first.wait_step("acquire:other:EX:nq", LONG)), "granted");
    first.kill9();
    let _ = first.finish(LONG);
    let ev = c.probe(2, &["backend:b_crash", "acquire:disk:EX:nq", "acquire:other:CR:nq"]);
    assert_step(&ev, "acquire:disk:EX:nq", "would_block");
    assert_step(&ev, "acquire:other:CR:nq", "would_block");

    // The next daemon adopts "disk" (same mode only), then purges what it did not claim.
    let ev = c.probe(1, &["backend:b_crash", "adopt-grant:disk:PR", "adopt-grant:disk:EX", "purge-orphans"]);
    assert_step(&ev, "adopt-grant:disk:PR", "orphan_mode_mismatch");
    assert_step(&ev, "adopt-grant:disk:EX", "granted");
    assert_step(&ev, "purge-orphans", "ok");
    // That probe exited holding "disk" PERSISTENT: an orphan again. "other" was purged.
    let ev = c.probe(2, &["backend:b_crash", "acquire:disk:EX:nq", "acquire:other:EX:nq", "drop:other"]);
    assert_step(&ev, "acquire:disk:EX:nq", "would_block");
    assert_step(&ev, "acquire:other:EX:nq", "granted");
    let ev = c.probe(1, &["backend:b_crash", "adopt-grant:disk:EX", "drop:disk"]);
    assert_step(&ev, "adopt-grant:disk:EX", "granted");
    assert_step(&ev, "drop:disk", "released");
    let ev = c.probe(2, &["backend:b_crash", "acquire:disk:EX:nq", "drop:disk"]);
    assert_step(&ev, "acquire:disk:EX:nq", "granted");
}
