//! The DLM wrapper (the `dlm` crate) on the real kernel DLM of the test cluster.
//! Each test uses its own lockspace, so a failed test leaves nothing in the next one's way.

use cluster_tests::{outcome, Cluster};
use serde_json::Value;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

/// The event of step `step` in a finished probe's output.
fn step<'a>(events: &'a [Value], step: &str) -> &'a Value {
    events.iter().find(|v| v["step"] == step).unwrap_or_else(|| panic!("no event for step {step}; events: {events:#?}"))
}

fn assert_step(events: &[Value], s: &str, expect: &str) {
    assert_eq!(outcome(step(events, s)), expect, "step {s}: {}", step(events, s));
}

#[test]
fn ex_on_node1_makes_noqueue_ex_on_nodes_2_and_3_would_block() {
    let c = Cluster::get();
    let holder = c.spawn_probe(1, &["create:t_nq", "lock:a:res:EX:-", "waitfile:/tmp/t_nq.done", "release:a"]);
    assert_eq!(outcome(&holder.wait_step("lock:a:res:EX:-", LONG)), "granted");
    for node in [2, 3] {
        let ev = c.probe(node, &["create:t_nq", "lock:a:res:EX:nq"]);
        assert_step(&ev, "lock:a:res:EX:nq", "would_block");
    }
    assert_eq!(c.exec(1, "touch /tmp/t_nq.done").code, 0);
    let (code, ev) = holder.finish(LONG);
    assert_eq!(code, 0);
    assert_step(&ev, "release:a", "released");
    // Released: the other nodes get it now.
    let ev = c.probe(2, &["create:t_nq", "lock:a:res:EX:nq", "release:a"]);
    assert_step(&ev, "lock:a:res:EX:nq", "granted");
    assert_step(&ev, "release:a", "released");
}

#[test]
fn queued_request_is_granted_after_release() {
    let c = Cluster::get();
    let holder =
        c.spawn_probe(1, &["create:t_queue", "lock:a:res:EX:-", "waitfile:/tmp/t_queue.done", "basts:a", "release:a"]);
    assert_eq!(outcome(&holder.wait_step("lock:a:res:EX:-", LONG)), "granted");
    let waiter = c.spawn_probe(2, &["create:t_queue", "request:a:res:PR:-", "wait:a:3", "wait:a:60", "release:a"]);
    assert_eq!(outcome(&waiter.wait_step("request:a:res:PR:-", LONG)), "issued");
    // Still queued while node1 holds EX.
    assert_eq!(outcome(&waiter.wait_step("wait:a:3", LONG)), "timed_out");
    assert_eq!(c.exec(1, "touch /tmp/t_queue.done").code, 0);
    assert_eq!(outcome(&waiter.wait_step("wait:a:60", LONG)), "granted");
    let (code, ev) = waiter.finish(LONG);
    assert_eq!(code, 0);
    assert_step(&ev, "release:a", "released");
    let (code, ev) = holder.finish(LONG);
    assert_eq!(code, 0);
    // The holder was told that somebody waits for it.
    assert!(step(&ev, "basts:a")["count"].as_u64().unwrap() >= 1, "{}", step(&ev, "basts:a"));
    assert_step(&ev, "release:a", "released");
}

#[test]
fn compatible_modes_coexist_and_conflicting_modes_do_not() {
    let c = Cluster::get();
    // node1 holds one resource in each mode.
    let holder = c.spawn_probe(
        1,
        &[
            "create:t_modes",
            "lock:cr:m_cr:CR:-",
            "lock:cw:m_cw:CW:-",
            "lock:pr:m_pr:PR:-",
            "lock:ex:m_ex:EX:-",
            "waitfile:/tmp/t_modes.done",
        ],
    );
    for s in ["lock:cr:m_cr:CR:-", "lock:cw:m_cw:CW:-", "lock:pr:m_pr:PR:-", "lock:ex:m_ex:EX:-"] {
        assert_eq!(outcome(&holder.wait_step(s, LONG)), "granted", "{s}");
    }
    // (held, requested, expected) on node 2 with NOQUEUE.
    let cases = [
        ("pr", "PR", "granted"),
        ("cr", "CW", "granted"),
        ("cw", "CR", "granted"),
        ("cw", "CW", "granted"),
        ("pr", "CR", "granted"),
        ("pr", "CW", "would_block"),
        ("cw", "PR", "would_block"),
        ("ex", "CR", "would_block"),
        ("ex", "CW", "would_block"),
        ("ex", "PR", "would_block"),
        ("ex", "EX", "would_block"),
        ("cr", "EX", "would_block"),
        ("cw", "EX", "would_block"),
        ("pr", "EX", "would_block"),
    ];
    let mut steps = vec!["create:t_modes".to_string()];
    for (i, (held, req, expect)) in cases.iter().enumerate() {
        steps.push(format!("lock:s{i}:m_{held}:{req}:nq"));
        if *expect == "granted" {
            steps.push(format!("release:s{i}"));
        }
    }
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let ev = c.probe(2, &steps);
    for (i, (held, req, expect)) in cases.iter().enumerate() {
        assert_step(&ev, &format!("lock:s{i}:m_{held}:{req}:nq"), expect);
    }
    // The third node sees the same.
    let ev = c.probe(3, &["create:t_modes", "lock:a:m_pr:PR:nq", "release:a", "lock:b:m_pr:CW:nq"]);
    assert_step(&ev, "lock:a:m_pr:PR:nq", "granted");
    assert_step(&ev, "lock:b:m_pr:CW:nq", "would_block");
    assert_eq!(c.exec(1, "touch /tmp/t_modes.done").code, 0);
    assert_eq!(holder.finish(LONG).0, 0);
}

#[test]
fn persistent_lock_outlives_its_killed_holder_until_adopted_or_purged() {
    let c = Cluster::get();
    let holder = c.spawn_probe(1, &["create:t_orphan", "lock:a:disk:EX:pers", "hold"]);
    assert_eq!(outcome(&holder.wait_step("lock:a:disk:EX:pers", LONG)), "granted");
    holder.kill9();
    let _ = holder.finish(LONG);

    // The orphan still blocks every other node.
    for node in [2, 3] {
        let ev = c.probe(node, &["create:t_orphan", "lock:a:disk:EX:nq"]);
        assert_step(&ev, "lock:a:disk:EX:nq", "would_block");
    }

    // A new process on node 1 adopts it in the same mode only; adopted PERSISTENT, it is an
    // orphan again once that process exits.
    let ev = c.probe(1, &["open:t_orphan", "adopt:a:disk:PR", "adopt:b:disk:EX"]);
    assert_step(&ev, "open:t_orphan", "ok");
    assert_step(&ev, "adopt:a:disk:PR", "orphan_mode_mismatch");
    assert_step(&ev, "adopt:b:disk:EX", "granted");
    let ev = c.probe(2, &["create:t_orphan", "lock:a:disk:EX:nq"]);
    assert_step(&ev, "lock:a:disk:EX:nq", "would_block");

    // Purging this node's orphans frees it: nothing left to adopt, the other nodes get it.
    let ev = c.probe(1, &["open:t_orphan", "purge", "adopt:a:disk:EX"]);
    assert_step(&ev, "purge", "ok");
    assert_eq!(step(&ev, "purge")["nodeid"], 1);
    assert_step(&ev, "adopt:a:disk:EX", "no_orphan");
    let ev = c.probe(2, &["create:t_orphan", "lock:a:disk:EX:nq", "release:a"]);
    assert_step(&ev, "lock:a:disk:EX:nq", "granted");
    assert_step(&ev, "release:a", "released");
}

#[test]
fn a_cancelled_request_ends_without_the_lock() {
    let c = Cluster::get();
    let holder = c.spawn_probe(1, &["create:t_cancel", "lock:a:res:EX:-", "waitfile:/tmp/t_cancel.done", "release:a"]);
    assert_eq!(outcome(&holder.wait_step("lock:a:res:EX:-", LONG)), "granted");
    let ev =
        c.probe(2, &["create:t_cancel", "request:a:res:EX:-", "wait:a:2", "cancel:a", "wait:a:30", "lock:b:res:CR:nq"]);
    assert_step(&ev, "wait:a:2", "timed_out");
    assert_step(&ev, "cancel:a", "ok");
    assert_step(&ev, "wait:a:30", "cancelled");
    assert_step(&ev, "lock:b:res:CR:nq", "would_block");
    assert_eq!(c.exec(1, "touch /tmp/t_cancel.done").code, 0);
    assert_eq!(holder.finish(LONG).0, 0);
}

#[test]
fn bad_input_and_unsafe_calls_get_typed_errors() {
    let c = Cluster::get();
    let long = "r".repeat(65);
    let too_long = format!("lock:a:{long}:EX:nq");
    let ev = c.probe(
        1,
        &[
            "create:",
            "create:t_bad",
            &too_long,
            "lock:x:res:EX:-",
            "unlock:x",
            "release:x",
            "convert:x:PR:-",
            "release-ls",
            "lock:y:res:EX:nq",
        ],
    );
    assert_step(&ev, "create:", "invalid_lockspace_name");
    assert_step(&ev, "create:t_bad", "ok");
    assert_step(&ev, &too_long, "invalid_resource_name");
    assert_step(&ev, "lock:x:res:EX:-", "granted");
    // EX is never unlocked directly (libdlm would publish garbage as the value block).
    assert_step(&ev, "unlock:x", "unsafe_unlock");
    assert_step(&ev, "release:x", "released");
    assert_step(&ev, "convert:x:PR:-", "ended");
    assert_step(&ev, "release-ls", "released");
    assert_step(&ev, "lock:y:res:EX:nq", "released");
}

#[test]
fn releasing_a_lockspace_that_still_has_locks_reports_busy_until_forced() {
    let c = Cluster::get();
    // libdlm returns 0 even when the kernel refuses the removal; the wrapper reports Busy.
    let ev = c.probe(
        1,
        &["create:t_busy", "lock:a:res:EX:pers", "release-ls", "open:t_busy", "adopt:b:res:EX", "release-ls:force"],
    );
    assert_step(&ev, "lock:a:res:EX:pers", "granted");
    assert_step(&ev, "release-ls", "busy");
    // The lockspace stayed, and the lock in it (now an orphan) too.
    assert_step(&ev, "open:t_busy", "ok");
    assert_step(&ev, "adopt:b:res:EX", "granted");
    assert_step(&ev, "release-ls:force", "released");
    let ev = c.probe(1, &["open:t_busy"]);
    assert_step(&ev, "open:t_busy", "sys");
    let ev = c.probe(2, &["create:t_busy", "lock:a:res:EX:nq", "release:a", "release-ls"]);
    assert_step(&ev, "lock:a:res:EX:nq", "granted");
    assert_step(&ev, "release-ls", "released");
}

/// A lockspace joined again numbers its locks afresh: the first lock of the new one gets the
/// lock id the first lock of the released one had. So a bare DLM lock id kept across a
/// lockspace's release (a deferred or retried release after `retire`) could name another
/// VM's lock; the daemon's grant ids carry the lockspace's generation for that reason
/// (lockmgr::backend::dlm, `grant_ids_of_a_retired_lockspace_never_name_a_new_lock`).
#[test]
fn a_lockspace_joined_again_reuses_the_lock_ids_of_the_released_one() {
    let c = Cluster::get();
    let ev = c.probe(
        1,
        &[
            "create:t_lkid",
            "lock:a:one:EX:-",
            "release:a",
            "release-ls",
            "create:t_lkid",
            "lock:b:two:EX:-",
            "release:b",
            "release-ls",
        ],
    );
    let lkid = |s: &str| {
        ev.iter()
            .find(|v| v["step"] == s)
            .and_then(|v| v["lkid"].as_u64())
            .unwrap_or_else(|| panic!("no lkid for {s}: {ev:#?}"))
    };
    assert_step(&ev, "lock:a:one:EX:-", "granted");
    assert_step(&ev, "lock:b:two:EX:-", "granted");
    assert_eq!(lkid("lock:a:one:EX:-"), lkid("lock:b:two:EX:-"), "lock ids are per lockspace and start again");
}
