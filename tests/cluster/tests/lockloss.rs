//! Lock loss on the real cluster, in cycles on one running cluster (no cluster restart):
//!
//! - partition: node 3 is cut off (its link taken down) while its VMs hold locks. Its virtdlmd
//!   must stop them within the configured bound, and nodes 1 and 2 must get those locks only
//!   after that. On the heal, dlm_controld on nodes 1 and 2 removes node 3 from corosync (a
//!   "stateful merge": they recovered the lockspace without it), and node 3's dlm_controld
//!   exits. Node 3's virtdlmd — never restarted — releases the lockspace dlm_controld left
//!   stopped; the test then starts corosync and dlm_controld on node 3 again (what a node
//!   manager does), and virtdlmd joins again by itself and serves: a free disk is granted, a
//!   disk node 1 holds is refused naming its holder.
//! - crash: a whole node (its UML guest) is killed while its VMs hold locks; the others get
//!   those locks once the DLM recovered (`enable_fencing=0`), the node boots again and rejoins.
//!
//! Every grant and end goes into one history replayed by `cluster_tests::checker`, which fails
//! if two incompatible holders ever overlapped. Grants are stamped in the guests and put on the
//! host's time line with each guest's clock offset, measured every cycle (`Clocks`: UML guest
//! clocks drift from the host's), every hold widened by the offset's uncertainty. A crashed
//! node's events are all collected before it
//! is killed (each request's answer is read back through the host before the kill), and its
//! holds end at the host's clock once its processes are gone — an upper bound of their death.
//! After every cycle, `virtdlm locks` on every node must list exactly the holds the history
//! has open: nothing stale, nothing missing.
//!
//! Each partition also scrapes node 3's Prometheus metrics (`metrics_listen`, read inside the
//! guest) before the cut and after its VMs were stopped: the verdict leaves `safe`, the
//! lock-loss event and its VMs' outcomes are counted, and the locks show as lost.
//!
//! Cycles: `VIRTDLM_LOSS_CYCLES` partitions (default 3) and `VIRTDLM_CRASH_CYCLES` crashes
//! (default 3, of node 1, 2, 3, ... in turn), interleaved.

use cluster_tests::checker::{self, Event};
use cluster_tests::{Cluster, Output};
use proto::mode::Mode;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DIR: &str = "/run/virtdlmd-loss";
/// fence_pause_timeout_ms + fence_grace_ms + fence_kill_wait_ms below.
const BOUND_MS: u64 = 3000;
const LOCKSPACE: &str = "vl_loss";
const CONFIG: &str = "lockspace = vl_loss\\nwatchdog = none\\nfence_grace_ms = 1000\\nfence_kill_wait_ms = 1000\\nfence_pause_timeout_ms = 1000\\nmetrics_listen = 127.0.0.1:9665\\n";

/// A figure line: to stderr (shown when the test fails or with --nocapture) and, under
/// `run.sh`, to `$VIRTDLM_RESULTS/lockloss.txt`, which `run.sh` prints after the tests.
fn report(line: &str) {
    eprintln!("{line}");
    if let Some(dir) = std::env::var_os("VIRTDLM_RESULTS") {
        use std::io::Write;
        let path = std::path::Path::new(&dir).join("lockloss.txt");
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn host_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn built(name: &str) -> String {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps").join(name).to_string_lossy().into_owned()
}

struct Bins {
    daemon: String,
    client: String,
    cli: String,
    stack: String,
}

fn start_daemons(c: &Cluster, b: &Bins, nodes: &[u32]) {
    let mut running = Vec::new();
    for &node in nodes {
        running.push(c.spawn(
            node,
            &format!(
                r#"set -u; d={DIR}; rm -rf $d; mkdir -p $d; printf '{CONFIG}' > $d/conf
start() {{
  RUST_LOG=info {daemon} --config $d/conf --backend dlm --socket $d/ctl.sock --admin-socket $d/admin.sock \
    --journal $d/journal --node-name node{node} >>$d/log 2>&1 </dev/null &
  pid=$!; echo $pid > $d/pid
}}
start
for i in $(seq 1 1200); do
  if grep -q 'serving on' $d/log && grep -Eq 'verdict=safe|to=safe' $d/log; then echo '{{"ev":"daemon"}}'; exit 0; fi
  if ! kill -0 $pid 2>/dev/null; then
    # Right after dlm_controld starts (a node booted again), joining a lockspace may be
    # refused for a moment (EUNATCH); a service manager would start the daemon again.
    grep -q 'os error 49' $d/log && [ $i -lt 300 ] && {{ sleep 0.5; start; continue; }}
    echo "virtdlmd exited:"; cat $d/log; exit 1
  fi
  sleep 0.1
done
echo "virtdlmd not serving with a safe membership after 120 s:"; cat $d/log; exit 1"#,
                daemon = b.daemon
            ),
        ));
    }
    for r in running {
        let (code, ev) = r.finish(Duration::from_secs(180));
        assert_eq!(code, 0, "virtdlmd start: {ev:?}");
    }
}

/// A VM's QEMU stand-in on `node`; with `stubborn` it ignores SIGTERM (only SIGKILL stops it).
fn start_vm(c: &Cluster, node: u32, stubborn: bool) -> u32 {
    let cmd = if stubborn {
        r#"sh -c "trap '' TERM; exec sleep 100000" </dev/null >/dev/null 2>&1 & echo $!"#
    } else {
        "sleep 100000 </dev/null >/dev/null 2>&1 & echo $!"
    };
    let out = c.exec(node, cmd);
    out.text.trim().parse().unwrap_or_else(|_| panic!("owner pid on node{node}: {:?}", out.text))
}

fn client(c: &Cluster, b: &Bins, node: u32, socket: &str, steps: &[String]) -> Vec<Value> {
    let mut cmd = format!("{} {DIR}/{socket}", b.client);
    for s in steps {
        cmd.push_str(&format!(" '{s}'"));
    }
    let out: Output = c.exec(node, &cmd);
    assert_eq!(out.code, 0, "loss-client on node{node}: {}", out.text);
    out.events()
}

/// Node `node`'s metrics, scraped inside the guest (`metrics_listen` is on its localhost).
fn scrape(c: &Cluster, node: u32) -> String {
    let out = c.exec(node, "curl -sS --fail --max-time 10 http://127.0.0.1:9665/metrics");
    assert_eq!(out.code, 0, "scraping node{node}'s metrics: {}", out.text);
    out.text
}

/// The value of one sample (its name with its labels, as printed) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The lines of a scrape that show the membership and lock loss (for the report): the
/// current verdict, whether it is safe, whether the locks are lost, and the non-zero counts.
fn loss_lines(text: &str) -> String {
    let shown = |l: &&str| {
        l.starts_with("virtdlm_membership_safe ")
            || l.starts_with("virtdlm_locks_lost ")
            || (l.starts_with("virtdlm_membership_verdict{") && l.ends_with(" 1"))
            || (l.starts_with("virtdlm_lock_loss_") && !l.ends_with(" 0"))
    };
    text.lines().filter(shown).collect::<Vec<_>>().join("; ")
}

fn one(events: &[Value]) -> &Value {
    assert_eq!(events.len(), 1, "{events:?}");
    &events[0]
}

fn status(c: &Cluster, b: &Bins, node: u32) -> Value {
    one(&client(c, b, node, "admin.sock", &["status".into()]))["response"]["status"].clone()
}

/// Each guest's wall clock against the host's. A UML guest's CLOCK_REALTIME is the host's at
/// its boot plus its own running time, so it drifts from the host's (by ~0.1 s over minutes,
/// measured). Guest stamps are put on the host's time line with the offset measured by one
/// exec round trip, and widened by its uncertainty (half the round trip) plus a margin for
/// drift within a cycle: a grant counts from earlier, an end from later, never the other way.
#[derive(Clone, Copy)]
struct Clocks {
    /// Per node (index 1..=3): (guest minus host in s, uncertainty in s).
    off: [(f64, f64); 4],
}

/// Drift within one cycle (about a minute) stays far below this.
const DRIFT_MARGIN: f64 = 0.05;

impl Clocks {
    fn measure(c: &Cluster, b: &Bins) -> Clocks {
        let mut off = [(0.0, 0.0); 4];
        for node in 1..=3 {
            let before = host_now();
            let ev = client(c, b, node, "ctl.sock", &["clock".into()]);
            let after = host_now();
            let t = one(&ev)["realtime"].as_f64().expect("realtime");
            let (mid, half) = ((before + after) / 2.0, (after - before) / 2.0);
            off[node as usize] = (t - mid, half + DRIFT_MARGIN);
            // Far off would mean a broken clock, not drift: every margin here would be wrong.
            assert!((t - mid).abs() < 2.0, "node{node} clock {t} is {:.3} s off the host's", t - mid);
        }
        Clocks { off }
    }

    /// A guest stamp of a grant on the host's time line (earliest it can have been).
    fn grant(&self, node: u32, t: f64) -> f64 {
        let (o, u) = self.off[node as usize];
        t - o - u
    }

    /// A guest stamp of an end on the host's time line (latest it can have been).
    fn end(&self, node: u32, t: f64) -> f64 {
        let (o, u) = self.off[node as usize];
        t - o + u
    }

    fn describe(&self) -> String {
        (1..=3).map(|n| format!("node{n} {:+.3}±{:.3}", self.off[n].0, self.off[n].1)).collect::<Vec<_>>().join(", ")
    }
}

fn disk(cycle: &str, what: &str) -> String {
    format!("/srv/virtdlm-loss/{cycle}/{what}.img")
}

/// Polls every 250 ms until `check` gives `Ok`, for at most `secs`; panics with its last error.
fn eventually<T>(what: &str, secs: u64, mut check: impl FnMut() -> Result<T, String>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= end => panic!("{what}: not after {secs} s: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// `virtdlm locks` on every node lists exactly the holds the history has open (no stale lock
/// of a stopped or crashed VM, nothing missing); waits for the inventory to settle.
fn assert_inventory(c: &Cluster, b: &Bins, history: &[Event]) {
    let holds = checker::replay(history).unwrap_or_else(|e| panic!("broken history: {e}"));
    let want: BTreeSet<(String, u32, String, String)> = holds
        .iter()
        .filter(|h| h.to.is_none())
        .map(|h| (h.resource.clone(), h.node, h.holder.clone(), h.mode.to_string()))
        .collect();
    for node in 1..=3 {
        eventually(&format!("node{node}'s `virtdlm locks` matching the history"), 20, || {
            let out = c.exec(node, &format!("{} --admin-socket {DIR}/admin.sock locks --json", b.cli));
            let list: Vec<Value> = serde_json::from_str(&out.text).map_err(|e| format!("{e}: {}", out.text))?;
            let got: BTreeSet<(String, u32, String, String)> = list
                .iter()
                .map(|l| {
                    let f = |k: &str| l[k].as_str().unwrap_or("?").to_string();
                    (f("identity"), l["node_id"].as_u64().unwrap_or(0) as u32, f("vm_name"), f("mode"))
                })
                .collect();
            if got == want {
                Ok(())
            } else {
                Err(format!(
                    "stale: {:?}; missing: {:?}",
                    got.difference(&want).collect::<Vec<_>>(),
                    want.difference(&got).collect::<Vec<_>>()
                ))
            }
        });
    }
}

/// An exclusive grant of `disk` to a fresh VM on `node`, recorded in the history.
fn grant_fresh(c: &Cluster, b: &Bins, k: &Clocks, node: u32, vm: &str, disk: &str, history: &mut Vec<Event>) -> u32 {
    let mode = Mode::Ex;
    let pid = start_vm(c, node, false);
    let ev = client(c, b, node, "ctl.sock", &[format!("acquire:{vm}:{pid}:{mode}={disk}")]);
    history.push(Event::Grant {
        node,
        holder: vm.into(),
        resource: disk.into(),
        mode,
        at: k.grant(node, granted_at(one(&ev))),
    });
    pid
}

/// `node` is refused `disk` (held by `holder` on `holder_node`), and the refusal names them.
fn assert_refused_naming(c: &Cluster, b: &Bins, node: u32, disk: &str, holder: &str, holder_node: u32) {
    let pid = start_vm(c, node, false);
    let ev = client(c, b, node, "ctl.sock", &[format!("acquire:refused-{node}-{pid}:{pid}:EX={disk}")]);
    let ev = one(&ev);
    assert_eq!(ev["outcome"], "conflict", "{ev}");
    let holders = ev["response"]["conflict"]["holders"].as_array().cloned().unwrap_or_default();
    assert!(
        holders.iter().any(|h| h["vm_name"] == holder && h["node_id"] == holder_node),
        "the refusal must name {holder} on node{holder_node}: {ev}"
    );
    c.exec(node, &format!("kill -9 {pid}"));
}

fn granted_at(ev: &Value) -> f64 {
    assert_eq!(ev["outcome"], "ok", "{ev}");
    ev["answered"].as_f64().expect("answered")
}

/// One partition cycle; returns (time node 3 took to stop its VMs in ms, margin between that
/// and the first survivor grant in s).
fn partition_cycle(c: &Cluster, b: &Bins, n: u32, history: &mut Vec<Event>) -> (u64, f64) {
    let k = Clocks::measure(c, b);
    report(&format!("partition {n}: guest clocks against the host: {}", k.describe()));
    let tag = format!("p{n}");
    let (d1, d2) = (disk(&tag, "excl"), disk(&tag, "shared"));
    // Node 3: a VM that ignores SIGTERM holding an exclusive disk, and one holding a shared one.
    let (p3a, p3b) = (start_vm(c, 3, true), start_vm(c, 3, false));
    let (p1, p2) = (start_vm(c, 1, false), start_vm(c, 2, false));
    let (a3, b3, v1, v2) = (format!("{tag}-vm3a"), format!("{tag}-vm3b"), format!("{tag}-vm1"), format!("{tag}-vm2"));
    let ev =
        client(c, b, 3, "ctl.sock", &[format!("acquire:{a3}:{p3a}:EX={d1}"), format!("acquire:{b3}:{p3b}:CW={d2}")]);
    history.push(Event::Grant {
        node: 3,
        holder: a3.clone(),
        resource: d1.clone(),
        mode: Mode::Ex,
        at: k.grant(3, granted_at(&ev[0])),
    });
    history.push(Event::Grant {
        node: 3,
        holder: b3.clone(),
        resource: d2.clone(),
        mode: Mode::Cw,
        at: k.grant(3, granted_at(&ev[1])),
    });
    // While node 3 is in the cluster, the others are refused.
    let ev = client(c, b, 1, "ctl.sock", &[format!("acquire:{v1}:{p1}:EX={d1}")]);
    assert_eq!(one(&ev)["outcome"], "conflict", "{ev:?}");
    let ev = client(c, b, 2, "ctl.sock", &[format!("acquire:{v2}:{p2}:PR={d2}")]);
    assert_eq!(one(&ev)["outcome"], "conflict", "{ev:?}");

    // Cut node 3 off; nodes 1 and 2 ask for its disks until they get them.
    let w1 = c.spawn(1, &format!("{} {DIR}/ctl.sock 'until-granted:120:{v1}:{p1}:EX={d1}'", b.client));
    let w2 = c.spawn(2, &format!("{} {DIR}/ctl.sock 'until-granted:120:{v2}:{p2}:PR={d2}'", b.client));
    std::thread::sleep(Duration::from_millis(500));
    let before = scrape(c, 3);
    assert_eq!(sample(&before, "virtdlm_membership_verdict{verdict=\"safe\"}"), Some(1.0), "{before}");
    assert_eq!(sample(&before, "virtdlm_locks_lost"), Some(0.0), "{before}");
    let quorum_lost = "virtdlm_lock_loss_events_total{reason=\"quorum_lost\"}";
    let losses = sample(&before, quorum_lost).unwrap_or_else(|| panic!("no {quorum_lost}: {before}"));
    report(&format!("partition {n}: node 3's metrics before the cut: {}", loss_lines(&before)));
    // Node 3's own locks by mode, and node 3's as node 1's inventory knows them.
    assert!(sample(&before, "virtdlm_locks{mode=\"EX\"}").is_some_and(|v| v >= 1.0), "{before}");
    assert!(sample(&before, "virtdlm_locks{mode=\"CW\"}").is_some_and(|v| v >= 1.0), "{before}");
    let on1 = scrape(c, 1);
    let inventory = "virtdlm_inventory_locks{node=\"node3\",mode=\"EX\"}";
    assert!(sample(&on1, inventory).is_some_and(|v| v >= 1.0), "{inventory}: {on1}");
    let cut = host_now();
    c.node_action("partition", 3);
    let g1 = w1.wait_for("grant of the exclusive disk", Duration::from_secs(150), |v| {
        v["step"].as_str().is_some_and(|s| s.starts_with("until"))
    });
    let g2 = w2.wait_for("grant of the shared disk", Duration::from_secs(150), |v| {
        v["step"].as_str().is_some_and(|s| s.starts_with("until"))
    });
    let (t1, t2) = (k.grant(1, granted_at(&g1)), k.grant(2, granted_at(&g2)));

    // Node 3's daemon (reachable through the harness, not the network) reports the loss.
    let st = status(c, b, 3);
    let loss = &st["lock_loss"];
    assert_eq!(loss["lost"], true, "{st}");
    let last = &loss["last"];
    assert_eq!(last["reason"]["kind"], "quorum_lost", "{st}");
    let vms = last["vms"].as_array().expect("vms");
    let outcome = |name: &str| {
        vms.iter().find(|v| v["vm_name"] == name).map(|v| v["outcome"].as_str().unwrap_or("?").to_string())
    };
    assert_eq!(outcome(&a3).as_deref(), Some("killed"), "the VM ignoring SIGTERM gets SIGKILL: {st}");
    assert_eq!(outcome(&b3).as_deref(), Some("terminated"), "{st}");
    let elapsed_ms = last["elapsed_ms"].as_u64().expect("elapsed_ms");
    assert!(
        elapsed_ms <= BOUND_MS,
        "VMs stopped {elapsed_ms} ms after the membership change, bound {BOUND_MS} ms: {st}"
    );
    let trigger = k.end(3, last["at"].as_f64().expect("at"));
    let killed = trigger + elapsed_ms as f64 / 1000.0;
    // Its metrics show the loss: the verdict left `safe`, the event and its VMs are counted.
    let after = scrape(c, 3);
    report(&format!("partition {n}: node 3's metrics after its VMs were stopped: {}", loss_lines(&after)));
    assert_eq!(sample(&after, "virtdlm_membership_safe"), Some(0.0), "{after}");
    assert_eq!(sample(&after, "virtdlm_membership_verdict{verdict=\"safe\"}"), Some(0.0), "{after}");
    assert!(
        ["inquorate", "lost", "settling", "no-quorum-yet", "not-joined"]
            .iter()
            .any(|v| sample(&after, &format!("virtdlm_membership_verdict{{verdict=\"{v}\"}}")) == Some(1.0)),
        "one verdict other than safe is current: {after}"
    );
    assert_eq!(sample(&after, "virtdlm_locks_lost"), Some(1.0), "{after}");
    assert_eq!(sample(&after, quorum_lost), Some(losses + 1.0), "one more quorum loss: {after}");
    for outcome in ["killed", "terminated"] {
        let name = format!("virtdlm_lock_loss_vms_total{{outcome=\"{outcome}\"}}");
        let was = sample(&before, &name).unwrap_or_else(|| panic!("no {name}: {before}"));
        assert!(sample(&after, &name).is_some_and(|v| v > was), "{name} was {was}: {after}");
    }
    let gone = c.exec(3, &format!("for p in {p3a} {p3b}; do [ -e /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status && echo ALIVE $p; done; true"));
    assert!(!gone.text.contains("ALIVE"), "node 3's VMs still run: {}", gone.text);
    // Every VM of node 3 holding a lock was stopped, those of earlier cycles too.
    let holds = checker::replay(history).unwrap_or_else(|e| panic!("broken history: {e}"));
    for h in holds.iter().filter(|h| h.node == 3 && h.to.is_none()) {
        assert!(
            matches!(outcome(&h.holder).as_deref(), Some("killed" | "terminated")),
            "{} holds {} on node 3: {st}",
            h.holder,
            h.resource
        );
        history.push(Event::End { node: 3, holder: h.holder.clone(), resource: h.resource.clone(), at: killed });
    }
    history.push(Event::Grant { node: 1, holder: v1.clone(), resource: d1.clone(), mode: Mode::Ex, at: t1 });
    history.push(Event::Grant { node: 2, holder: v2.clone(), resource: d2.clone(), mode: Mode::Pr, at: t2 });
    report(&format!(
        "partition {n}: cut {cut:.3}; node3 noticed {trigger:.3} (+{:.2} s), its VMs stopped {killed:.3} ({elapsed_ms} ms, bound {BOUND_MS} ms); \
         node1 granted {t1:.3} (+{:.2} s after the stop), node2 granted {t2:.3} (+{:.2} s)",
        trigger - cut,
        t1 - killed,
        t2 - killed
    ));
    assert!(
        killed < t1 && killed < t2,
        "a survivor got a lock before node 3's VMs were stopped: killed {killed}, grants {t1} {t2}"
    );

    // Node 3 refuses grants while its locks are lost.
    let p3c = start_vm(c, 3, false);
    let ev = client(c, b, 3, "ctl.sock", &[format!("acquire:{tag}-vm3c:{p3c}:EX={}", disk(&tag, "other"))]);
    assert_eq!(one(&ev)["outcome"], "backend", "{ev:?}");

    // Heal. dlm_controld on nodes 1 and 2 removes node 3 from corosync (stateful merge); node
    // 3's dlm_controld exits with its corosync, and its virtdlmd releases the lockspace left
    // stopped, so that the node holds no DLM state.
    let healed = host_now();
    c.node_action("heal", 3);
    let gone = c.exec(
        3,
        // Asked, not looked up with pgrep: dead daemons stay listed as zombies of the guest's PID 1.
        &format!(
            "for i in $(seq 1 240); do corosync-cmapctl -g totem.cluster_name >/dev/null 2>&1 || dlm_tool status 2>/dev/null | grep -q '^cluster nodeid' || \
             [ -e /sys/kernel/dlm/{LOCKSPACE} ] || {{ echo CLEAN; exit 0; }}; sleep 0.25; done; \
             corosync-cmapctl -g totem.cluster_name; dlm_tool status; ls /sys/kernel/dlm; exit 1"
        ),
    );
    assert_eq!(
        gone.code,
        0,
        "after the heal node 3 must be removed from corosync and hold no lockspace: {}\n{}",
        gone.text,
        c.exec(3, &format!("cat {DIR}/log")).text
    );
    let clean = host_now();
    let st = status(c, b, 3);
    assert_eq!(st["lock_loss"]["lost"], true, "node 3 must not grant before it rejoined: {st}");
    assert_eq!(st["locks"], 0, "{st}");
    // The disks move on between nodes 1 and 2 meanwhile: nothing of node 3 is left there.
    let ev = client(c, b, 2, "ctl.sock", &[format!("acquire:{v2}:{p2}:EX={d1}")]);
    assert_eq!(one(&ev)["outcome"], "conflict", "node 1 holds it: {ev:?}");
    let ev = client(c, b, 1, "ctl.sock", &[format!("release:{v1}:{p1}:EX={d1}")]);
    history.push(Event::End {
        node: 1,
        holder: v1.clone(),
        resource: d1.clone(),
        at: k.end(1, one(&ev)["answered"].as_f64().unwrap()),
    });
    let ev = client(c, b, 2, "ctl.sock", &[format!("release:{v2}:{p2}:PR={d2}"), format!("acquire:{v2}:{p2}:EX={d1}")]);
    history.push(Event::End {
        node: 2,
        holder: v2.clone(),
        resource: d2.clone(),
        at: k.end(2, ev[0]["answered"].as_f64().unwrap()),
    });
    history.push(Event::Grant {
        node: 2,
        holder: v2.clone(),
        resource: d1.clone(),
        mode: Mode::Ex,
        at: k.grant(2, granted_at(&ev[1])),
    });
    let ev = client(c, b, 1, "ctl.sock", &[format!("acquire:{v1}:{p1}:EX={d2}")]);
    history.push(Event::Grant {
        node: 1,
        holder: v1.clone(),
        resource: d2.clone(),
        mode: Mode::Ex,
        at: k.grant(1, granted_at(one(&ev))),
    });

    // corosync and dlm_controld start again on node 3 (as a node manager would); virtdlmd,
    // still the same process, reconnects, joins the lockspace again and grants again.
    let out = c.exec(3, &format!("{} 3", b.stack));
    assert_eq!(out.code, 0, "restarting corosync and dlm_controld on node 3: {}", out.text);
    let restarted = host_now();
    eventually("node 3's virtdlmd serving again", 60, || {
        let st = status(c, b, 3);
        if st["lock_loss"]["lost"] == false && st["cluster"]["verdict"] == "safe" {
            Ok(())
        } else {
            Err(format!("{st}"))
        }
    });
    let serving = host_now();
    let log = c.exec(3, &format!("grep -c 'serving on' {DIR}/log")).text;
    assert_eq!(log.trim(), "1", "virtdlmd on node 3 must not have restarted");
    // A free disk is granted to node 3; a disk node 2 holds is refused, naming its holder.
    grant_fresh(c, b, &k, 3, &format!("{tag}-vm3d"), &disk(&tag, "free"), history);
    assert_refused_naming(c, b, 3, &d1, &v2, 2);
    assert_inventory(c, b, history);
    let q = c.exec(1, "corosync-quorumtool -s");
    assert!(q.text.lines().any(|l| l.starts_with("Nodes:") && l.contains('3')), "node 3 is a member again: {}", q.text);
    report(&format!(
        "partition {n}: healed {healed:.3}; node 3 clean (removed, lockspace released) +{:.2} s; stack restarted +{:.2} s; \
         node 3 serving again {:.2} s after its stack",
        clean - healed,
        restarted - healed,
        serving - restarted
    ));
    (elapsed_ms, t1.min(t2) - killed)
}

/// One crash cycle: `victim` (a whole guest) dies while its VM holds an exclusive and a shared
/// disk that the two other nodes wait for; they get them only after it died. The victim boots
/// again and rejoins. Returns the times from its death to the two grants, in s.
fn crash_cycle(c: &Cluster, b: &Bins, n: u32, victim: u32, history: &mut Vec<Event>) -> (f64, f64) {
    let k = Clocks::measure(c, b);
    report(&format!("crash {n}: guest clocks against the host: {}", k.describe()));
    let tag = format!("k{n}");
    let (d1, d2) = (disk(&tag, "excl"), disk(&tag, "shared"));
    let (s1, s2) = match victim {
        1 => (2, 3),
        2 => (1, 3),
        _ => (1, 2),
    };
    let vk = format!("{tag}-vm{victim}");
    let pk = start_vm(c, victim, false);
    // Every event of the victim is read back before it dies.
    let ev =
        client(c, b, victim, "ctl.sock", &[format!("acquire:{vk}:{pk}:EX={d1}"), format!("acquire:{vk}:{pk}:CW={d2}")]);
    history.push(Event::Grant {
        node: victim,
        holder: vk.clone(),
        resource: d1.clone(),
        mode: Mode::Ex,
        at: k.grant(victim, granted_at(&ev[0])),
    });
    history.push(Event::Grant {
        node: victim,
        holder: vk.clone(),
        resource: d2.clone(),
        mode: Mode::Cw,
        at: k.grant(victim, granted_at(&ev[1])),
    });
    let (v1, v2) = (format!("{tag}-vm{s1}"), format!("{tag}-vm{s2}"));
    let (p1, p2) = (start_vm(c, s1, false), start_vm(c, s2, false));
    let w1 = c.spawn(s1, &format!("{} {DIR}/ctl.sock 'until-granted:150:{v1}:{p1}:EX={d1}'", b.client));
    let w2 = c.spawn(s2, &format!("{} {DIR}/ctl.sock 'until-granted:150:{v2}:{p2}:PR={d2}'", b.client));
    std::thread::sleep(Duration::from_millis(500));
    c.node_action("kill", victim);
    // Its processes are gone now: every hold on the victim ends here at the latest.
    let dead = host_now();
    let holds = checker::replay(history).unwrap_or_else(|e| panic!("broken history: {e}"));
    for h in holds.iter().filter(|h| h.node == victim && h.to.is_none()) {
        history.push(Event::End { node: victim, holder: h.holder.clone(), resource: h.resource.clone(), at: dead });
    }
    let is_until = |v: &Value| v["step"].as_str().is_some_and(|s| s.starts_with("until"));
    let g1 = w1.wait_for("grant of the crashed node's exclusive disk", Duration::from_secs(170), is_until);
    let g2 = w2.wait_for("grant of the crashed node's shared disk", Duration::from_secs(170), is_until);
    let (t1, t2) = (k.grant(s1, granted_at(&g1)), k.grant(s2, granted_at(&g2)));
    history.push(Event::Grant { node: s1, holder: v1.clone(), resource: d1.clone(), mode: Mode::Ex, at: t1 });
    history.push(Event::Grant { node: s2, holder: v2.clone(), resource: d2.clone(), mode: Mode::Pr, at: t2 });
    assert!(t1 > dead && t2 > dead, "a survivor got a lock before node{victim} died: dead {dead}, grants {t1} {t2}");

    // The victim boots again (fresh corosync, dlm_controld, empty /run) and rejoins.
    c.node_action("start-node", victim);
    start_daemons(c, b, &[victim]);
    // The rebooted guest's clock starts from the host's again.
    let k = Clocks::measure(c, b);
    grant_fresh(c, b, &k, victim, &format!("{tag}-vm{victim}b"), &disk(&tag, "free"), history);
    assert_refused_naming(c, b, victim, &d1, &v1, s1);
    assert_inventory(c, b, history);
    report(&format!(
        "crash {n}: node{victim} killed {dead:.3}; node{s1} granted +{:.2} s, node{s2} granted +{:.2} s",
        t1 - dead,
        t2 - dead
    ));
    (t1 - dead, t2 - dead)
}

#[test]
fn cut_off_and_crashed_nodes_stop_their_vms_before_the_others_take_their_disks() {
    let c = Cluster::get();
    let b = Bins {
        daemon: c.guest_binary(&built("virtdlmd")),
        client: c.guest_binary(&built("loss-client")),
        cli: c.guest_binary(&built("virtdlm")),
        stack: format!("{}/guest/cluster-stack.sh", env!("CARGO_MANIFEST_DIR")),
    };
    let count = |var: &str| std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(3u32);
    let (partitions, crashes) = (count("VIRTDLM_LOSS_CYCLES"), count("VIRTDLM_CRASH_CYCLES"));
    start_daemons(&c, &b, &[1, 2, 3]);
    let mut history = Vec::new();
    let (mut stops, mut crash_grants) = (Vec::new(), Vec::new());
    for n in 1..=partitions.max(crashes) {
        if n <= partitions {
            stops.push(partition_cycle(&c, &b, n, &mut history));
        }
        if n <= crashes {
            crash_grants.push(crash_cycle(&c, &b, n, (n - 1) % 3 + 1, &mut history));
        }
    }
    // The daemons stop (SIGTERM, nothing released: their lockspace is this test's own).
    for node in 1..=3 {
        c.exec(node, &format!("kill $(cat {DIR}/pid) 2>/dev/null; true"));
    }
    let holds = checker::check(&history).unwrap_or_else(|e| panic!("incompatible holders overlapped: {e}"));
    let grants = history.iter().filter(|e| matches!(e, Event::Grant { .. })).count();
    let ends = history.len() - grants;
    report(&format!(
        "lock loss: {partitions} partitions, {crashes} crashes, no cluster restart; {grants} grants, {ends} ends (releases, \
         stops, deaths), {holds} holds checked, 0 overlaps"
    ));
    report(&format!("partitions: (node 3's VMs stopped in ms, first survivor grant after that in s): {stops:?}"));
    report(&format!("crashes: (node death to the two survivors' grants, s): {crash_grants:?}"));
}
