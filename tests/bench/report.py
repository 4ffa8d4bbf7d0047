#!/usr/bin/env python3
"""Benchmark figures: compare, store, and render them into docs/PERFORMANCE.md.

  report.py store peers DIR     figures of tests/bench/peers.sh (DIR/{env,nop,dlm,lockd,sanlock,scale}.json)
  report.py store cluster FILE  figures of tests/cluster/bench.sh
  report.py store profile DIR   counts of tests/bench/profile.sh (DIR/{strace.txt,journal-writes.txt,
                                perf-top.txt,provenance.json})
  report.py store stall DIR     figures of tests/bench/stall.sh (DIR/{stall.json,provenance.json})
  report.py store lockloss FILE [PROV]
                                the `lockloss:` lines of the cluster tier's lock-loss test
                                ($VIRTDLM_RESULTS/lockloss.txt; run.sh stores them with
                                VIRTDLM_LOCKLOSS_RECORD=1), with PROV (tests/bench/provenance.py's
                                JSON, taken in the checkout that ran) or this checkout's provenance
  report.py store controld FILE [PROV]
                                the lines of the cluster tier's dlm_controld test
                                ($VIRTDLM_RESULTS/controld.txt), stored the same way
  report.py show DIR            print the peer tables of a results directory, store nothing
  report.py show cluster FILE   print the cluster table of a figures file, store nothing
  report.py strace-counts FILE...
                                the `strace -c` summaries as JSON, [{syscall: [calls, errors]}, ...]
                                (tests/cluster/bench.sh stores them)
  report.py render              regenerate the generated sections of docs/PERFORMANCE.md,
                                docs/LOCK-LOSS.md and docs/RELIABILITY.md from docs/bench/*.json
  report.py render --check      exit 1 if a generated section differs from what its data gives

`store` compares the new figures with the stored ones (docs/bench/KIND.json) and prints one line
per checked figure; a figure more than 20% worse is printed as a REGRESSION line and the exit
status is 1. Then the new figures are stored and the document regenerated, unless there was a
regression: the stored figures stay (BENCH_ACCEPT=1 stores them anyway, e.g. after a deliberate
change). Only the sections between the BEGIN/END markers of the documents are rewritten.
"""
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / "docs" / "bench"
DOC = ROOT / "docs" / "PERFORMANCE.md"
LOCKLOSS = ROOT / "docs" / "LOCK-LOSS.md"
RELIABILITY = ROOT / "docs" / "RELIABILITY.md"
THRESHOLD = 0.20
PEERS = [
    ("nop", "nop (floor)"),
    ("dlm", "dlm.so + virtdlmd"),
    ("lockd", "lockd.so + virtlockd"),
    ("sanlock", "sanlock.so + sanlock"),
]
OPS = [
    ("start", "start: register (child, {n} disks)"),
    ("resume", "resume: acquire {n} disks"),
    ("pause", "pause: release {n} disks"),
    ("attach", "hotplug: acquire 1 disk"),
    ("detach", "hot-unplug: release 1 disk"),
    ("free", "kill -9 of QEMU until its disk is free"),
]


def load(path):
    with open(path) as f:
        return json.load(f)


def fmt_us(us):
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1e3:
        return f"{us / 1e3:.2f} ms"
    return f"{us:.1f} µs"


def fmt_ratio(a, b):
    if not b:
        return "–"
    r = a / b
    if r < 0.01:
        return f"1/{1 / r:,.0f}"
    if r >= 100:
        return f"{r:,.0f}×"
    if r >= 10:
        return f"{r:.0f}×"
    return f"{r:.2f}×"


# ---------------------------------------------------------------- peers

def peers_record(d):
    d = Path(d)
    rec = {"env": load(d / "env.json"), "peers": {}}
    if (d / "env-after.json").exists():
        rec["env"].update(load(d / "env-after.json"))
    for key, _ in PEERS:
        if (d / f"{key}.json").exists():
            rec["peers"][key] = load(d / f"{key}.json")
    if (d / "scale.json").exists():
        rec["scale"] = load(d / "scale.json")
    prov = rec["env"].pop("provenance", None)
    if prov:
        rec.update(commit=prov["commit"], dirty=prov["dirty"], settings=prov["settings"])
    return rec


def provenance_line(rec):
    """The commit measured and the bench settings, as stored with the figures."""
    if rec.get("commit"):
        out = f"Commit measured: {rec['commit']}" + (" (work tree modified" + (f": {rec['dirty_note']}" if rec.get(
            "dirty_note") else "") + ")" if rec.get("dirty") else "")
    else:
        out = f"Commit measured: {rec.get('commit_note', 'not recorded')}"
    settings = rec.get("settings")
    if settings:
        out += "; settings: " + ", ".join(f"{k} {v}" for k, v in sorted(settings.items()))
    else:
        out += "; settings: not recorded"
    return out + "."


def peers_tables(rec):
    env, peers = rec["env"], rec["peers"]
    have = [(k, t) for k, t in PEERS if k in peers]
    others = [(k, t) for k, t in have if k != "dlm"]
    dlm = peers.get("dlm")
    n = env["disks"]
    out = [
        f"Measured {env['date'][:10]} on {env['cpu']} ({env['cores']} cores, {env['mem_gib']} GiB), "
        f"kernel {env['kernel']}, load {env['load_before']} before and {env.get('load_after', '?')} after; "
        f"{env['packages']}. {env['iterations']} iterations per peer; median (p99) per operation. "
        + provenance_line(rec),
        "",
        "| operation | " + " | ".join(t for _, t in have) + "".join(f" | dlm / {k}" for k, _ in others if dlm) + " |",
        "|---" + "|---:" * (len(have) + (len(others) if dlm else 0)) + "|",
    ]
    for op, title in OPS:
        row = [title.format(n=n)]
        for k, _ in have:
            s = peers[k]["ops"][op]
            row.append(f"{fmt_us(s['median_us'])} ({fmt_us(s['p99_us'])})" if s["n"] else "–")
        if dlm:
            row += [fmt_ratio(dlm["ops"][op]["median_us"], peers[k]["ops"][op]["median_us"]) for k, _ in others]
        out.append("| " + " | ".join(row) + " |")
    row = ["init (libvirtd start: load and configure the plugin)"]
    row += [fmt_us(peers[k]["init_us"]) for k, _ in have]
    if dlm:
        row += [fmt_ratio(dlm["init_us"], peers[k]["init_us"]) for k, _ in others]
    out.append("| " + " | ".join(row) + " |")
    c0 = next(iter(peers.values()))["concurrent"]
    row = [f"{c0['vms']} VMs x {c0['disks']} disks started at once: wall time"]
    row += [f"{peers[k]['concurrent']['wall_ms']:.0f} ms" for k, _ in have]
    if dlm:
        row += [fmt_ratio(dlm["concurrent"]["wall_ms"], peers[k]["concurrent"]["wall_ms"]) for k, _ in others]
    out.append("| " + " | ".join(row) + " |")
    row = ["the same: disk locks taken per second (start + resume per VM)"]
    row += [f"{peers[k]['concurrent']['disk_locks_per_s']:,.0f}/s" for k, _ in have]
    if dlm:
        row += [fmt_ratio(dlm["concurrent"]["disk_locks_per_s"], peers[k]["concurrent"]["disk_locks_per_s"])
                for k, _ in others]
    out.append("| " + " | ".join(row) + " |")
    row = ["second VM on a held disk refused"]
    row += [f"{peers[k]['conflicts']['refused']} of {peers[k]['conflicts']['tried']}" for k, _ in have]
    if dlm:
        row += [""] * len(others)
    out.append("| " + " | ".join(row) + " |")
    out.append("")
    out.append("Ratios are virt-dlm's figure over the peer's (medians). For times, below 1× means "
               "virt-dlm is faster than that peer; for locks per second, above 1× does.")
    return "\n".join(out)


def scale_table(rec):
    s = rec.get("scale")
    if not s:
        return "(no scale run stored)"
    mib = lambda kib: f"{kib / 1024:.1f} MiB"
    return "\n".join([
        f"Same run ({rec['env']['date'][:10]}), virtdlmd with the local backend, journal on tmpfs.",
        "",
        "| what | figure |",
        "|---|---:|",
        f"| acquire, 4 disks, one client request: median (p99) | {fmt_us(s['acquire_4_disks']['median_us'])} "
        f"({fmt_us(s['acquire_4_disks']['p99_us'])}) |",
        f"| release, 4 disks: median (p99) | {fmt_us(s['release_4_disks']['median_us'])} "
        f"({fmt_us(s['release_4_disks']['p99_us'])}) |",
        f"| RSS idle | {mib(s['rss_idle_kib'])} |",
        f"| RSS with {s['held_locks']:,} held locks ({s['owners']} owners) | {mib(s['rss_held_kib'])} |",
        f"| journal with {s['held_locks']:,} locks | {mib(s['journal_kib'])} |",
        f"| {s['held_locks']:,} locks taken (250 acquires of 40 disks) | {s['take_all_ms']:.0f} ms |",
        f"| kill -9 of virtdlmd, restart, all {s['held_locks']:,} re-adopted, serving | "
        f"{s['restart_readopt_ms']:.0f} ms |",
        f"| RSS after that restart | {mib(s['rss_after_restart_kib'])} |",
    ])


def peers_checks(rec):
    """(name, value, higher_is_worse) of the figures a re-run is checked against."""
    peers, checks = rec["peers"], []
    dlm, lockd = peers.get("dlm"), peers.get("lockd")
    if dlm and lockd:
        # lockd's time-to-free is bimodal (see PERFORMANCE.md): virt-dlm's own figure is checked
        for op, _ in OPS[:-1]:
            if lockd["ops"][op]["median_us"]:
                checks.append((f"{op} median, dlm / lockd", dlm["ops"][op]["median_us"] / lockd["ops"][op]["median_us"], True))
        checks.append(("concurrent disk locks/s, dlm / lockd",
                       dlm["concurrent"]["disk_locks_per_s"] / lockd["concurrent"]["disk_locks_per_s"], False))
    if dlm:
        checks.append(("kill -9 of QEMU until its disk is free, dlm median (µs)", dlm["ops"]["free"]["median_us"], True))
    s = rec.get("scale")
    if s:
        checks.append(("RSS with 10,000 locks (KiB)", s["rss_held_kib"], True))
        checks.append(("restart and re-adopt (ms)", s["restart_readopt_ms"], True))
    return checks


# ---------------------------------------------------------------- cluster

CLUSTER_MODES = {
    "daemon": "virtdlmd, dlm backend: one VM's acquire, then release (a request each)",
    "raw-full": "libdlm: new NL, ->EX, ->NL, unlock per disk (a new lock each time)",
    "raw-convert": "libdlm: NL->EX->NL per disk (NL anchors kept, the floor)",
    "daemon-nocluster": "virtdlmd without the cluster inventory (cluster = false): acquire + release",
    "daemon-local": "virtdlmd with the local backend (no DLM): acquire + release",
}
MASTERS = {"local": "node 1 (local)", "remote": "node 2 (remote)", "none": "– (no DLM)"}


def cluster_table(rec):
    m = rec["machine"]
    out = [
        f"Measured {rec['date'][:10]} on {m['cpu']} ({m['cores']} cores, {m['mem_gib']} GiB, load {m['load']}), "
        f"{rec['guests']}, kernel {m['kernel']} on the host; {rec['samples']} samples per row after "
        f"{rec['samples'] // 10} unmeasured, {rec['disks']} disks. " + provenance_line(rec),
        "",
        "| what (4 disks, from node 1) | resources mastered on | acquire + release: median (p99) | "
        "acquire: median (p99) | release: median (p99) | median / libdlm floor (NL->EX->NL) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    half = lambda r, h: (f"{fmt_us(r[h + '_median_us'])} ({fmt_us(r[h + '_p99_us'])})"
                         if h + "_median_us" in r else "–")
    for r in rec["rows"]:
        node = MASTERS[r["master"]]
        floor = next(x for x in rec["rows"] if x["master"] == r["master"].replace("none", "local")
                     and x["mode"] == "raw-convert")
        out.append(f"| {CLUSTER_MODES[r['mode']]} | {node} | {fmt_us(r['median_us'])} ({fmt_us(r['p99_us'])}) | "
                   f"{half(r, 'acquire')} | {half(r, 'release')} | {fmt_ratio(r['median_us'], floor['median_us'])} |")
    return "\n".join(out)


def evac_table(rec):
    e = rec.get("evacuation")
    if not e:
        return "(not in the stored run: measured since the bench had it)"
    rows = {(r["mode"], r["node"]): r for r in e["rows"]}
    nodes = sorted({r["node"] for r in e["rows"]})
    r0 = e["rows"][0]
    out = [
        f"Same run as the table above ({rec['date'][:10]}, host load {rec['machine']['load']}). On each of the "
        f"{len(nodes)} nodes at once: {r0['vms']} VMs x {r0['disks']} disks, {r0['parallelism']} requests in flight "
        "per node; the wall time is from the common start to the node's last grant.",
        "",
        "| node | virtdlmd: all VMs granted | one VM's acquire: median (p99) | libdlm, the same number of new "
        "locks: all granted | one VM's 4 locks: median (p99) | virtdlmd / libdlm |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ms = lambda v: fmt_us(v * 1e3)
    for n in nodes:
        d, r = rows[("evac-daemon", n)], rows[("evac-raw", n)]
        out.append(f"| node {n} | {ms(d['wall_ms'])} | {ms(d['each_median_ms'])} ({ms(d['each_p99_ms'])}) | "
                   f"{ms(r['wall_ms'])} | {ms(r['each_median_ms'])} ({ms(r['each_p99_ms'])}) | "
                   f"{fmt_ratio(d['wall_ms'], r['wall_ms'])} |")
    d, r = evac_walls(e)
    out.append(f"| **all 3: the last grant** | **{ms(d)}** | | **{ms(r)}** | | **{fmt_ratio(d, r)}** |")
    out += evac_cpu_table(rows, nodes)
    return "\n".join(out)


def evac_cpu_table(rows, nodes):
    """Where each node's CPU went during each run (cluster_tests::cpu), when the run has it."""
    if not all("cpu" in rows[(m, n)] for m in ("evac-daemon", "evac-raw") for n in nodes):
        return ["", "(where the guests' CPU went: not in the stored run, measured since the bench had it)"]
    tick = rows[("evac-daemon", nodes[0])]["cpu"]["tick_ms"]
    out = ["", "Where each guest's one CPU went during each run (its CPU's busy share over the run, and the CPU "
           f"time of the processes that used the most, all their threads; counted in clock ticks of {tick:.0f} ms "
           "by the guest's kernel):", "",
           "| node | run | wall time | CPU busy | CPU time by process (ms) |", "|---|---|---:|---:|---|"]
    for n in nodes:
        for m, label in (("evac-daemon", "virtdlmd"), ("evac-raw", "libdlm")):
            c = rows[(m, n)]["cpu"]
            procs = ", ".join(f"`{p['name']}` {p['ms']:.0f}" for p in c["by_process_ms"])
            out.append(f"| node {n} | {label} | {fmt_us(rows[(m, n)]['wall_ms'] * 1e3)} | {c['busy_pct']:.0f}% | {procs} |")
    return out


def cluster_stall_table(rec):
    """The stall case on the DLM backend: node 1's bystander with and without a request waiting
    for a disk node 2 holds."""
    st = rec.get("stall")
    if not st:
        return "(not in the stored run: measured since the bench had it)"
    w = st["waiter"]
    out = [f"Same run ({rec['date'][:10]}). Node 2's VM holds a disk; node 1's VM asks for it with `wait_ms` = "
           f"{w['wait_ms']} over and over, so that one of its requests always waits in the DLM's queue for node 2 "
           f"({w['requests']} requests while the bystander ran and after, every one refused after its wait: the "
           f"shortest {w['shortest_ms']:g} ms). Node 1's bystander VM takes and gives back 4 other disks (mastered "
           "on node 1), a request each, before and while the request waits:", "",
           "| bystander: acquire + release of 4 other disks | median | p99 | max | samples |",
           "|---|---:|---:|---:|---:|"]
    for what, r in (("no request waiting", st["quiet"]), ("a request waiting for node 2's disk", st["stalled"])):
        out.append(f"| {what} | {fmt_us(r['median_us'])} | {fmt_us(r['p99_us'])} | {fmt_us(r['max_us'])} | {r['n']} |")
    return "\n".join(out)


def evac_walls(e):
    """The slowest node's wall time, virtdlmd and raw libdlm (ms)."""
    return (max(r["wall_ms"] for r in e["rows"] if r["mode"] == "evac-daemon"),
            max(r["wall_ms"] for r in e["rows"] if r["mode"] == "evac-raw"))


def cluster_syscalls(sc):
    """Syscalls per request (an acquire or a release of 4 disks) of the floor and of virtdlmd:
    ({name: per request}, total per request) each."""
    a, b = sc["floor_samples"]
    # Each run adds a tenth of its samples as warm-up; a sample is an acquire and a release.
    requests = 2 * ((b + b // 10) - (a + a // 10))
    fa, fb = sc["floor_a"], sc["floor_b"]
    floor = {k: (fb[k][0] - fa.get(k, (0, 0))[0]) / requests for k in fb}
    d = sc["daemon"]
    served = d["accept4"][0] - d["accept4"][1]
    daemon = {k: c / served for k, (c, _) in d.items()}
    return (floor, sum(floor.values())), (daemon, sum(daemon.values())), served


def syscalls_table(rec):
    sc = rec.get("syscalls")
    if not sc:
        return "(not in the stored run: measured since the bench had it)"
    (floor, ft), (daemon, dt), served = cluster_syscalls(sc)
    # A syscall in UML; answered in user space (the vDSO) on real hardware.
    nt = lambda per: per.get("clock_gettime", 0)
    top = lambda per: ", ".join(f"`{k}` {v:.2g}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.05)
    return "\n".join([
        f"Same run ({rec['date'][:10]}), counted by `strace -c` in node 1, resources mastered there. The floor (`strace -f`): "
        f"the difference of two runs of {sc['floor_samples'][0]} and {sc['floor_samples'][1]} samples (set-up "
        f"cancels out); virtdlmd: {served} requests served while attached to its "
        f"{sc['daemon_threads_attached']} threads ({sc['daemon_threads_started_during']} started or ended meanwhile, "
        "not counted).",
        "",
        "| syscalls per request: one acquire or one release of 4 disks | per request | without `clock_gettime` "
        "| the syscalls, per request |",
        "|---|---:|---:|---|",
        f"| libdlm floor: 4 conversions (NL->EX, or EX->NL), each waited for | {ft:.1f} | {ft - nt(floor):.1f} | "
        f"{top(floor)} |",
        f"| virtdlmd, dlm backend, cluster inventory on (the whole daemon, all its threads) | {dt:.1f} | "
        f"{dt - nt(daemon):.1f} | {top(daemon)} |",
        f"| virtdlmd / floor | {fmt_ratio(dt, ft)} | {fmt_ratio(dt - nt(daemon), ft - nt(floor))} | |",
    ])


def adopt_table(rec):
    a = rec.get("adoption")
    if not a:
        return "(not in the stored run: measured since the bench had it)"
    mib = lambda kib: f"{kib / 1024:.1f} MiB"
    return "\n".join([
        f"Same run ({rec['date'][:10]}), node 1's virtdlmd (dlm backend, cluster inventory on, journal in the "
        "guest's /run).",
        "",
        "| what | figure |",
        "|---|---:|",
        f"| locks taken ({a['vms']} acquires of {a['per_vm']} disks, one after another) | {a['locks']:,} in "
        f"{fmt_us(a['take_ms'] * 1e3)} ({fmt_us(a['take_ms'] * 1e3 / a['locks'])} per lock) |",
        f"| RSS with {a['locks']:,} held locks | {mib(a['rss_held_kib'])} |",
        f"| journal with {a['locks']:,} locks | {mib(a['journal_bytes'] / 1024)} |",
        f"| kill -9 of virtdlmd with no lock held, restart, serving (the fixed cost) | "
        f"{fmt_us(a['restart_empty_ms'] * 1e3)} |",
        f"| kill -9 of virtdlmd, restart, all {a['locks_after_restart']:,} orphans re-adopted, serving | "
        f"{fmt_us(a['restart_ms'] * 1e3)} |",
        f"| the same, over the fixed cost, per lock | "
        f"{fmt_us((a['restart_ms'] - a['restart_empty_ms']) * 1e3 / a['locks'])} |",
        f"| RSS after that restart | {mib(a['rss_after_restart_kib'])} |",
    ])


def cluster_all(rec):
    return "\n\n".join([cluster_table(rec), evac_table(rec), syscalls_table(rec), adopt_table(rec)])


def cluster_checks(rec):
    checks = []
    if rec.get("evacuation"):
        d, r = evac_walls(rec["evacuation"])
        checks.append(("evacuation: virtdlmd / libdlm, slowest node", d / r, True))
    if rec.get("syscalls"):
        checks.append(("syscalls per request, virtdlmd on the dlm backend", cluster_syscalls(rec["syscalls"])[1][1], True))
    if rec.get("adoption"):
        checks.append(("dlm backend: RSS with held locks (KiB)", rec["adoption"]["rss_held_kib"], True))
    if rec.get("stall"):
        checks.append(("stall: bystander median with a request waiting / without",
                       rec["stall"]["stalled"]["median_us"] / rec["stall"]["quiet"]["median_us"], True))
    for master in ("local", "remote"):
        rows = {r["mode"]: r for r in rec["rows"] if r["master"] == master}
        if "daemon" in rows and "raw-convert" in rows:
            checks.append((f"virtdlmd / libdlm floor, {master} master",
                           rows["daemon"]["median_us"] / rows["raw-convert"]["median_us"], True))
    return checks


# ---------------------------------------------------------------- fencing

FENCING_FAILURES = {"kill": "killed", "partition": "link cut"}


def stored_on(rec):
    """When, where and from which commit a result was measured (after "measured"). The load is
    provenance.py's (top level) or, in the fencing results, the machine's."""
    m = rec["machine"]
    load_ = rec.get("load") or m.get("load", "?")
    load_ = " ".join(load_) if isinstance(load_, list) else load_
    return (f"{rec['date'][:10]} on {m.get('cpu', 'cpu not recorded')} ({m['cores']} cores, host load "
            f"{load_} when stored). {provenance_line(rec)}")


def fencing_table(rec):
    out = [
        f"Measured {stored_on(rec)}",
        "",
        "| scenario | nodes | failure | failure to power-off (host clock) | failure to grant | clock uncertainty |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in rec["rows"]:
        off = r["powered_off_host"] - r["failure_host"]
        out.append(f"| `{r['scenario']}` | {r['nodes']} | {FENCING_FAILURES.get(r['failure'], r['failure'])} | "
                   f"{off:.2f} s | {r['failure_to_grant_s']:.2f} s | ±{r['clock_uncertainty']:.2f} s |")
    return "\n".join(out)


def watchdog_table(rec, file):
    """One stored watchdog-fencing result (sbd.json or watchdog.json) as table rows."""
    out = [
        f"`{file}`: measured {stored_on(rec)}",
        "",
        "| scenario | failure | failure to watchdog reset (host clock) | failure to grant | clock uncertainty |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rec["rows"]:
        reset = r["watchdog_reset_host"] - r["failure_host"]
        out.append(f"| `{r['scenario']}` | {r['failure']} | {reset:.2f} s | {r['failure_to_grant_s']:.2f} s | "
                   f"±{r['clock_uncertainty']:.2f} s |")
    return "\n".join(out)


# ---------------------------------------------------------------- reliability

def reliability_run(rec):
    """The stored run of the reliability tier (RELIABILITY_BENCH_OUT of tests/reliability/run.sh):
    when and where, and every figure its tests printed."""
    m = rec["machine"]
    out = [
        f"Measured {rec['date'][:10]} on {m.get('cpu', 'cpu not recorded')} ({m['cores']} cores, host load "
        f"{rec.get('load', '?')} when stored) by `tests/reliability/run.sh`: {rec['result']} in "
        f"{rec['wall_s']} s. {provenance_line(rec)} Every figure the tests printed:",
        "",
    ]
    out += [f"- {f}" for f in rec["figures"] if not f.startswith("hostile-latency ")]
    out.append("- hostile-latency: the table under \"Latency of a well-behaved client under attack\"")
    return "\n".join(out)


def reliability_floods(rec):
    """The hostile-client phases of the stored reliability run: a well-behaved client's
    latencies under each flood."""
    out = [
        f"From the stored run of {rec['date'][:10]} (commit {rec.get('commit') or 'not recorded'}, host load "
        f"{rec.get('load', '?')}; 150 samples per cell unless said):",
        "",
        "| phase | acquire+release p50 / p99 / max | connect+status p50 / p99 / max |",
        "|---|---|---|",
    ]

    def cell(text):
        v = dict(re.findall(r"(n=|p50|p99|max) ?([0-9.]+)", text))
        return f"{v['p50']} / {v['p99']} / {v['max']} ms" + ("" if v.get("n=") == "150" else f" (n = {v.get('n=')})")

    for f in rec["figures"]:
        m_ = re.match(r"hostile-latency \[(.*)\]: (.*)", f)
        if not m_:
            continue
        phase, rest = m_.groups()
        if rest.startswith("status "):
            out.append(f"| {phase} | – | status: {cell(rest)} |")
        else:
            ar, cs = rest.split("; connect+status ")
            out.append(f"| {phase} | {cell(ar)} | {cell(cs)} |")
    out.append("")
    for f in rec["figures"]:
        if f.startswith("hostile-loris: "):
            out.append(f"Slow loris: {f.removeprefix('hostile-loris: ')}.")
    if rec.get("rlimit"):
        out.append(f"Open files: {rec['rlimit']}.")
    return "\n".join(out)


# ---------------------------------------------------------------- document


# ---------------------------------------------------------------- profile

# What makes each syscall of a request, for the profile table (by syscall name).
SYSCALL_GROUPS = [
    ("naming", ["readlink", "readlinkat", "statx", "newfstatat", "fstat"],
     "naming the disks, and one statx: the journal file's identity check"),
    ("opens and closes", ["openat", "close"],
     "the journal (opened by path for each append), the fds opened to name disks, the connection"),
    ("writes", ["write"], "one log line per disk, one journal append"),
    ("journal", ["flock", "lseek", "fdatasync", "fsync", "rename"], "the append: flock, seek to the end, flush"),
    ("connection", ["accept4", "recvfrom", "sendto", "getsockopt", "ppoll", "ioctl"],
     "accept, peer credentials, request, answer, the client's close"),
    ("async runtime", ["epoll_wait", "epoll_ctl", "futex"], "handing the connection to another thread"),
    ("thread starts", ["clone3", "clone", "mmap", "munmap", "mprotect", "madvise", "sigaltstack", "rt_sigprocmask",
                       "set_robust_list", "rseq", "exit", "sched_getaffinity", "prctl"],
     "a connection thread started when every waiting one is busy"),
]


def strace_calls(text):
    """{syscall: (calls, errors)} of a `strace -c` summary."""
    calls = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) < 5 or not f[0][0].isdigit() or f[-1] == "total":
            continue
        calls[f[-1]] = (int(f[3]), int(f[4]) if len(f) == 6 else 0)
    return calls


def profile_record(d):
    """Syscalls per request (from strace -c; requests = accepted connections), journal bytes
    per record (from strace -y -e write), the perf top entries, and the provenance."""
    d = Path(d)
    calls = strace_calls((d / "strace.txt").read_text())
    requests = calls["accept4"][0] - calls["accept4"][1]
    per = {k: round(c / requests, 2) for k, (c, _) in calls.items() if c / requests >= 0.05}
    failed = {k: round(e / requests, 2) for k, (_, e) in calls.items() if e / requests >= 0.05}
    journal = {}
    for line in (d / "journal-writes.txt").read_text(errors="replace").splitlines():
        m = re.search(r"= (\d+)$", line)
        if "journal>" not in line or not m:
            continue
        for kind in ("grant", "release"):
            k = line.count('\\"r\\":\\"%s\\"' % kind)
            if k:
                b, c = journal.get(kind, (0, 0))
                journal[kind] = (b + int(m.group(1)), c + k)
    rec = load(d / "provenance.json")
    rec.update(
        date=rec.pop("date", None),
        requests=requests,
        disks=4,
        syscalls_per_request=per,
        failed_per_request=failed,
        syscalls_total_per_request=round(sum(c for c, _ in calls.values()) / requests, 1),
        journal_bytes_per_record={k: round(b / c) for k, (b, c) in journal.items()},
        perf_top=[l.rstrip() for l in (d / "perf-top.txt").read_text().splitlines()[:12]]
        if (d / "perf-top.txt").exists() else [],
        perf_children=[l.rstrip() for l in (d / "perf-children.txt").read_text().splitlines()]
        if (d / "perf-children.txt").exists() else [],
    )
    if (d / "heap-peaks.txt").exists():
        rec["heap"] = heap_record((d / "heap-peaks.txt").read_text())
        rec["heap"]["acquires"] = (d / "heap-acquires.txt").read_text().strip()
    return rec


def heap_size(text):
    """Bytes of heaptrack's "6.18M", "802.83K", "640B"."""
    m = re.match(r"([0-9.]+)([KMG]?)B?$", text)
    return round(float(m[1]) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m[2]])


def demangle(sym):
    """A legacy-mangled Rust path as heaptrack prints it, without its hash."""
    for a, b in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","), ("$RF$", "&"), ("$u7b$", "{"),
                 ("$u7d$", "}"), ("$LP$", "("), ("$RP$", ")"), ("..", "::")):
        sym = sym.replace(a, b)
    return re.sub(r"::h[0-9a-f]{16}$", "", sym.lstrip("_"))


def heap_record(text):
    """heaptrack_print --print-peaks: the peak heap and RSS, and the sites of virtdlmd's code
    holding the most at the peak (the innermost lockmgr frame of each call stack), summed by site."""
    peak = re.search(r"peak heap memory consumption: (\S+)", text)
    rss = re.search(r"peak RSS \(including heaptrack overhead\): (\S+)", text)
    sites = {}
    blocks = re.split(r"\n(?=\S+ consumed over \d+ calls from:)", text)
    for b in blocks:
        m = re.match(r"(\S+) consumed over (\d+) calls from:\n(.*)", b, re.S)
        if not m:
            continue
        frames = re.findall(r"^    (\S.*)\n      at (\S+)", m[3], re.M)
        site = next((f"{demangle(f)} ({at})" for f, at in frames if "lockmgr" in f and at.startswith("crates/")), None)
        if site:
            bytes_, calls = sites.get(site, (0, 0))
            sites[site] = (bytes_ + heap_size(m[1]), calls + int(m[2]))
    top = sorted(sites.items(), key=lambda kv: -kv[1][0])[:10]
    return {"peak_heap_bytes": heap_size(peak[1]) if peak else None,
            "peak_rss_with_heaptrack_bytes": heap_size(rss[1]) if rss else None,
            "top": [{"site": k, "bytes": b, "allocations": c} for k, (b, c) in top]}


def measured_line(rec):
    """When and on what a host-side bench (profile, stall) ran, with the load provenance.py read."""
    return f"Measured {rec['date']} on {rec['machine']['cpu']} ({rec['machine']['cores']} cores), load {rec['load']}"


def profile_table(rec):
    per, failed = rec["syscalls_per_request"], rec["failed_per_request"]
    out = [
        f"{measured_line(rec)}; {rec['requests']} requests counted. {provenance_line(rec)}",
        "",
        f"| syscalls per request ({rec['disks']} disks) | per request | what makes them |",
        "|---|---:|---|",
    ]
    seen = set()
    for title, names, why in SYSCALL_GROUPS:
        have = [n for n in names if n in per]
        seen.update(have)
        if not have:
            continue
        parts = ", ".join(f"`{n}` {per[n]:g}" + (f" ({failed[n]:g} failing)" if n in failed else "") for n in have)
        out.append(f"| {title}: {parts} | {sum(per[n] for n in have):.1f} | {why} |")
    rest = [n for n in per if n not in seen]
    if rest:
        out.append(f"| other: {', '.join(f'`{n}` {per[n]:g}' for n in rest)} | {sum(per[n] for n in rest):.1f} | |")
    out.append(f"| **total** | **{rec['syscalls_total_per_request']:.1f}** | |")
    jb = rec["journal_bytes_per_record"]
    out += ["", "Journal: " + ", ".join(f"{b} bytes per {k} record" for k, b in sorted(jb.items()))
            + " (one write and one `fdatasync` per request, whatever the number of disks)."]
    if rec["perf_top"]:
        out += ["", "Top of `perf report --no-children --sort dso,symbol` (self time, the daemon only):", "",
                "```", *rec["perf_top"], "```"]
    if rec.get("perf_children"):
        out += ["", "virtdlmd's own functions (and the logging of its events, `tracing_core::event::Event::dispatch`) "
                "by inclusive time (`perf report --children`: each with everything it calls; the share of all the "
                "daemon's samples, its idle threads and the runtime included; the first column is inclusive, the "
                "second self):", "",
                "```", *rec["perf_children"], "```"]
    h = rec.get("heap")
    if h:
        mb = lambda b: f"{b / 1e6:.2f} MB"
        out += ["", f"The heap with 10,000 locks (heaptrack, a virtdlmd of its own, 250 VMs x 40 disks, "
                    f"{h['acquires']}): peak {mb(h['peak_heap_bytes'])}; the sites of virtdlmd's code holding the "
                    "most of it at the peak (the innermost of its frames in each call stack):", "",
                "| held at the peak | allocations | where |", "|---:|---:|---|"]
        out += [f"| {mb(t['bytes'])} | {t['allocations']:,} | `{t['site']}` |" for t in h["top"]]
    return "\n".join(out)


def profile_checks(rec):
    checks = [("syscalls per request (4 disks)", rec["syscalls_total_per_request"], True)]
    if rec.get("heap", {}).get("peak_heap_bytes"):
        checks.append(("peak heap with 10,000 locks (bytes)", rec["heap"]["peak_heap_bytes"], True))
    return checks


# ---------------------------------------------------------------- stalled resource

def stall_record(d):
    """The figures of crates/lockmgr/examples/stall.rs (DIR/stall.json), with the provenance."""
    d = Path(d)
    rec = load(d / "provenance.json")
    rec.update(date=rec.pop("date", None), **load(d / "stall.json"))
    return rec


def stall_table(rec):
    q, s = rec["bystander_quiet"], rec["bystander_stalled"]
    out = [
        f"{measured_line(rec)}. {provenance_line(rec)}",
        "",
        f"While the bystander's loop ran, VM waiter's requests for the held disk waited "
        f"{rec['stall_ms']} ms each ({rec['stalled_requests']} of them, the shortest "
        f"{rec['shortest_stall_ms']:g} ms; the loop took {rec['stalling_for_ms']} ms).",
        "",
        "| bystander: acquire + release of 4 other disks | median | p99 | max | runs |",
        "|---|---:|---:|---:|---:|",
    ]
    for what, r in [("no request waiting", q), ("a request waiting on a held disk", s)]:
        out.append(f"| {what} | {r['median_us']:g} µs | {r['p99_us']:g} µs | {r['max_us']:g} µs | {r['n']} |")
    return "\n".join(out)


def stall_checks(rec):
    return [("bystander median with a request waiting / without",
             rec["bystander_stalled"]["median_us"] / rec["bystander_quiet"]["median_us"], True)]


# ---------------------------------------------------------------- the goals of the request path

def goals_table(recs):
    """Issue's goals against the stored figures: each row's figure and whether it is met,
    computed here, so the table moves with every bench that stores a result."""
    peers, cluster, stall, profile = (recs.get(k) for k in ("peers.json", "cluster.json", "stall.json", "profile.json"))
    rows = []
    peers_at = (peers.get("commit") or "?")[:7] if peers else "?"

    def row(goal, figure, met, source):
        verdict = "counted (no target)" if met is None else "**yes**" if met else "**no**"
        rows.append(f"| {goal} | {figure} | {verdict} | {source} |")

    if cluster:
        ratios = {}
        for master in ("local", "remote"):
            d = next((r for r in cluster["rows"] if r["mode"] == "daemon" and r["master"] == master), None)
            f = next((r for r in cluster["rows"] if r["mode"] == "raw-convert" and r["master"] == master), None)
            if d and f:
                ratios[master] = d["median_us"] / f["median_us"]
        row("DLM backend: one VM's acquire + release of 4 disks ≤ 1.3× the libdlm floor, resources mastered "
            "locally and remotely, inventory on",
            ", ".join(f"{m} master {v:.1f}×" for m, v in ratios.items()),
            all(v <= 1.3 for v in ratios.values()) and len(ratios) == 2, f"cluster table, {cluster['commit'][:7]}")
    if peers and "dlm" in peers["peers"] and "lockd" in peers["peers"]:
        d, l = peers["peers"]["dlm"]["ops"], peers["peers"]["lockd"]["ops"]
        r = {op: d[op]["median_us"] / l[op]["median_us"] for op in ("resume", "pause")}
        row("Local backend: resume and pause ≤ 0.3× lockd's",
            f"resume {r['resume']:.2f}×, pause {r['pause']:.2f}×", all(v <= 0.3 for v in r.values()),
            f"peers table, {peers_at}")
        free = d["free"]["median_us"]
        row("Local backend: kill -9 of QEMU until its disk is free < 1 ms", fmt_us(free), free < 1000,
            f"peers table, {peers_at}")
    if cluster and cluster.get("evacuation"):
        dw, rw = evac_walls(cluster["evacuation"])
        figure = f"{dw / rw:.2f}× ({fmt_us(dw * 1e3)} against {fmt_us(rw * 1e3)})"
        slowest = max((r for r in cluster["evacuation"]["rows"] if r["mode"] == "evac-daemon"),
                      key=lambda r: r["wall_ms"])
        if "cpu" in slowest:
            c = slowest["cpu"]
            figure += (f"; node {slowest['node']}'s CPU {c['busy_pct']:.0f}% busy during it: "
                       + ", ".join(f"`{p['name']}` {p['ms']:.0f} ms" for p in c["by_process_ms"][:3]))
        row("100 VMs × 4 disks at once on each of 3 nodes ≤ 1.5× the same raw libdlm requests (slowest node)",
            figure, dw / rw <= 1.5, f"evacuation table, {cluster['commit'][:7]}")
    if stall:
        q, w = stall["bystander_quiet"], stall["bystander_stalled"]
        # "Delays no other VM": none of the bystander's requests waited for the stalled one,
        # i.e. the slowest took well under the stall (a tenth of it); its median may move by
        # what the waiter's own retries cost on the shared cores.
        row("A request waiting on a held disk delays no other VM's request (local backend)",
            f"slowest bystander request {fmt_us(w['max_us'])} while one waited {stall['stall_ms']} ms; "
            f"bystander median {fmt_us(q['median_us'])} quiet, {fmt_us(w['median_us'])} with it "
            f"({w['median_us'] / q['median_us']:.2f}×)", w["max_us"] < stall["stall_ms"] * 100,
            f"stall table, {stall['commit'][:7]}")
    if cluster and cluster.get("stall"):
        st = cluster["stall"]
        q, w, wait = st["quiet"], st["stalled"], st["waiter"]["wait_ms"]
        # The same criterion: the slowest bystander pair well under the wait.
        row("The same on the DLM backend: a request waiting for a disk another node holds",
            f"slowest bystander acquire + release {fmt_us(w['max_us'])} while one waited {wait} ms; "
            f"median {fmt_us(q['median_us'])} quiet, {fmt_us(w['median_us'])} with it "
            f"({w['median_us'] / q['median_us']:.2f}×)", w["max_us"] < wait * 100,
            f"cluster stall table, {cluster['commit'][:7]}")
    if profile:
        jb = profile["journal_bytes_per_record"]
        fig = f"local backend {profile['syscalls_total_per_request']:.1f} per request"
        if cluster and cluster.get("syscalls"):
            (_, ft), (_, dt), _ = cluster_syscalls(cluster["syscalls"])
            fig += f"; in a guest, dlm backend {dt:.1f} against the floor's {ft:.1f}"
        row("Syscalls per request (4 disks), daemon and libdlm floor; journal bytes per grant",
            f"{fig}; journal {jb['grant']} bytes per grant, {jb['release']} per release", None,
            f"profile table, {profile['commit'][:7]}" + (f"; syscall table, {cluster['commit'][:7]}" if cluster else ""))
    if peers and peers.get("scale"):
        sc = peers["scale"]
        row("10,000 locks ≤ 20 MiB RSS (local backend)", f"{sc['rss_held_kib'] / 1024:.1f} MiB",
            sc["rss_held_kib"] <= 20 * 1024, f"scale table, {peers_at}")
        row("Re-adoption of 10,000 locks after kill -9 ≤ 100 ms (local backend)", f"{sc['restart_readopt_ms']:.0f} ms",
            sc["restart_readopt_ms"] <= 100, f"scale table, {peers_at}")
    if cluster and cluster.get("adoption"):
        a = cluster["adoption"]
        row("The same on the DLM backend (10,000 orphans)",
            f"{fmt_us(a['restart_ms'] * 1e3)}, RSS {a['rss_held_kib'] / 1024:.1f} MiB with the locks", None,
            f"adoption table, {cluster['commit'][:7]}")
    return "\n".join(["| goal | stored figure | met? | from (commit measured) |", "|---|---|---|---|", *rows])


# (document, section, stored file, renderer): a section may appear in several documents, always
# rendered from the same file by the same function, so that they cannot disagree.
# ---------------------------------------------------------------- lock loss (cluster tier)

def lockloss_record(src, prov=None):
    """The figures tests/cluster/tests/lockloss.rs printed (lockloss.txt), parsed, with the lines
    themselves and the provenance of the run (a file of tests/bench/provenance.py's JSON) or, without
    one, of this checkout."""
    import datetime
    from provenance import provenance
    settings = {"test": "tests/cluster/tests/lockloss.rs", "build": "debug"}
    prov = json.loads(Path(prov).read_text()) if prov else provenance(settings)
    lines = [l.rstrip("\n") for l in open(src) if l.strip()]
    num = r"([0-9.]+)"
    parts, heals, crashes, summary = [], {}, [], None
    for l in lines:
        m = re.match(rf"partition (\d+): cut {num}; node3 noticed {num} \(\+{num} s\), its VMs stopped {num} "
                     rf"\((\d+) ms, bound (\d+) ms\); node1 granted {num} .*?, node2 granted {num}", l)
        if m:
            cut, stopped = float(m[2]), float(m[5])
            parts.append({"cycle": int(m[1]), "cut_to_notice_s": float(m[4]), "notice_to_stopped_ms": int(m[6]),
                          "bound_ms": int(m[7]),
                          "stopped_to_first_grant_s": round(min(float(m[8]), float(m[9])) - stopped, 3),
                          "cut_to_first_grant_s": round(min(float(m[8]), float(m[9])) - cut, 3)})
        m = re.match(rf"partition (\d+): healed {num}; node 3 clean .*? \+{num} s; stack restarted \+{num} s; "
                     rf"node 3 serving again {num} s after its stack", l)
        if m:
            heals[int(m[1])] = {"heal_to_clean_s": float(m[3]), "heal_to_stack_s": float(m[4]),
                                "stack_to_serving_s": float(m[5])}
        m = re.match(rf"crash (\d+): (node\d) killed {num}; (node\d) granted \+{num} s, (node\d) granted \+{num} s", l)
        if m:
            crashes.append({"cycle": int(m[1]), "killed": m[2], "death_to_grants_s": [float(m[5]), float(m[7])]})
        if l.startswith("lock loss: "):
            summary = l.removeprefix("lock loss: ")
    for p_ in parts:
        p_.update(heals.get(p_["cycle"], {}))
    if not parts and not crashes:
        sys.exit(f"{src}: no partition or crash lines")
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **prov,
            "summary": summary, "partitions": parts, "crashes": crashes, "lines": lines}


def lockloss_table(rec):
    out = [
        f"Measured {stored_on(rec)} By the cluster tier's `lockloss.rs`, on the host clock (each guest's "
        f"offset measured per cycle). The run: {rec.get('summary') or 'no summary line'}.",
        "",
        "| partition | cut → node 3 notices | notice → its VMs stopped (bound) | stopped → first survivor grant "
        "| heal → node 3 clean | heal → its stack back | then → serving |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p_ in rec["partitions"]:
        out.append(f"| {p_['cycle']} | {p_['cut_to_notice_s']:.2f} s | {p_['notice_to_stopped_ms']} ms "
                   f"({p_['bound_ms']} ms) | +{p_['stopped_to_first_grant_s']:.2f} s | "
                   f"{p_.get('heal_to_clean_s', float('nan')):.2f} s | {p_.get('heal_to_stack_s', float('nan')):.2f} s | "
                   f"{p_.get('stack_to_serving_s', float('nan')):.2f} s |")
    if rec["crashes"]:
        out += ["", "| crash | node killed | death → the two survivors' grants |", "|---:|---|---:|"]
        for c in rec["crashes"]:
            out.append(f"| {c['cycle']} | {c['killed']} | " + ", ".join(f"{t:.2f} s" for t in c["death_to_grants_s"]) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------- dlm_controld death and hang (cluster tier)

def controld_record(src, prov=None):
    """The figures tests/cluster/tests/controld.rs printed (controld.txt), parsed, with the lines
    themselves and the provenance of the run (as lockloss_record)."""
    import datetime
    from provenance import provenance
    settings = {"test": "tests/cluster/tests/controld.rs", "build": "debug"}
    prov = json.loads(Path(prov).read_text()) if prov else provenance(settings)
    lines = [l.rstrip("\n") for l in open(src) if l.strip()]
    num = r"(-?[0-9.]+)"
    rec = {}
    for l in lines:
        m = re.match(rf"killed: node 3's VM gone \+{num} s, node 1 granted \+{num} s after the kill "
                     rf"\(host clock, each ±{num} s\); VM gone {num} s before the grant \(widened\); "
                     rf"node 3 stopped it on (.*)$", l)
        if m:
            rec["killed"] = {"kill_to_vm_gone_s": float(m[1]), "kill_to_grant_s": float(m[2]),
                             "uncertainty_s": float(m[3]), "gone_before_grant_s": float(m[4]), "stopped_on": m[5]}
        m = re.match(rf"stopped: node 3's VM gone \+{num} s after the stop \(host clock, ±{num} s\); "
                     rf"node 1 not granted in (\d+) s of asking", l)
        if m:
            rec["stopped"] = {"stop_to_vm_gone_s": float(m[1]), "uncertainty_s": float(m[2]),
                              "node1_refused_s": int(m[3])}
    if not rec:
        sys.exit(f"{src}: no killed or stopped line")
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **prov, **rec, "lines": lines}


def controld_table(rec):
    out = [
        f"Measured {stored_on(rec)} By the cluster tier's `controld.rs` (`enable_fencing=0`), on the host "
        "clock (each guest's offset measured before the signal, to within ± "
        f"{max(v.get('uncertainty_s', 0) for v in (rec.get('killed', {}), rec.get('stopped', {}))):.2f} s; the "
        "VM-before-grant margin is the one the test checks, widened by that uncertainty).",
        "",
        "| dlm_controld on node 3 | signal → node 3's VM gone | signal → node 1 granted | VM gone before the grant "
        "| node 3 stopped its VM on |",
        "|---|---:|---:|---:|---|",
    ]
    if "killed" in rec:
        k = rec["killed"]
        out.append(f"| killed (`kill -9`) | {k['kill_to_vm_gone_s']:.2f} s | {k['kill_to_grant_s']:.2f} s "
                   f"| at least {k['gone_before_grant_s']:.2f} s | {k['stopped_on']} |")
    if "stopped" in rec:
        t = rec["stopped"]
        out.append(f"| stopped (`SIGSTOP`) | {t['stop_to_vm_gone_s']:.2f} s | not granted "
                   f"({t['node1_refused_s']} s of asking) | — | its dlm_controld stopped |")
    return "\n".join(out)


SECTIONS = [
    (DOC, "peers", "peers.json", peers_tables),
    (DOC, "scale", "peers.json", scale_table),
    (DOC, "cluster", "cluster.json", cluster_table),
    (DOC, "cluster-evacuation", "cluster.json", evac_table),
    (DOC, "cluster-stall", "cluster.json", cluster_stall_table),
    (DOC, "cluster-syscalls", "cluster.json", syscalls_table),
    (DOC, "cluster-adoption", "cluster.json", adopt_table),
    (DOC, "profile", "profile.json", profile_table),
    (DOC, "stall", "stall.json", stall_table),
    (DOC, "goals", "peers.json, cluster.json, stall.json, profile.json", goals_table),
    (LOCKLOSS, "fencing", "fencing.json", fencing_table),
    (LOCKLOSS, "sbd", "sbd.json", lambda rec: watchdog_table(rec, "sbd.json")),
    (LOCKLOSS, "watchdog", "watchdog.json", lambda rec: watchdog_table(rec, "watchdog.json")),
    (LOCKLOSS, "lockloss", "lockloss.json", lockloss_table),
    (LOCKLOSS, "controld", "controld.json", controld_table),
    (RELIABILITY, "reliability-run", "reliability.json", reliability_run),
    (RELIABILITY, "floods", "reliability.json", reliability_floods),
]


def render(check=False):
    """Rewrites every generated section; with check, only reports the sections that differ."""
    texts, stale = {}, []
    for doc, name, file, fn in SECTIONS:
        text = texts.setdefault(doc, doc.read_text())
        if "," in file:   # a section drawn from several stored files: they go in by name
            names = [f.strip() for f in file.split(",")]
            body = fn({f: load(STORE / f) for f in names if (STORE / f).exists()})
        else:
            path = STORE / file
            body = fn(load(path)) if path.exists() else f"(no figures stored yet in docs/bench/{file})"
        begin = f"<!-- BEGIN {name}: generated by tests/bench/report.py from docs/bench/{file}; do not edit -->"
        end = f"<!-- END {name} -->"
        pat = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        if not pat.search(text):
            sys.exit(f"{doc}: no generated section '{name}' (markers missing)")
        new = pat.sub(lambda _: f"{begin}\n{body}\n{end}", text)
        if new != text:
            stale.append(f"{doc.relative_to(ROOT)}: section '{name}' differs from docs/bench/{file}")
        texts[doc] = new
    if check:
        for line in stale:
            print(line)
        return 1 if stale else 0
    for doc, text in texts.items():
        doc.write_text(text)
    return 0


def compare(old, new):
    """Prints one line per figure; returns the number of regressions."""
    old = {name: (v, hw) for name, v, hw in old}
    bad = 0
    for name, v, worse_up in new:
        if name not in old or not old[name][0]:
            print(f"new figure    {name}: {v:.3g}")
            continue
        prev = old[name][0]
        change = (v - prev) / prev if worse_up else (prev - v) / prev
        tag = "REGRESSION" if change > THRESHOLD else "ok        "
        if tag.startswith("REGRESSION"):
            bad += 1
        print(f"{tag}    {name}: {prev:.3g} -> {v:.3g} ({'worse' if change > 0 else 'better'} by {abs(change):.0%})")
    return bad


def store(kind, src, prov=None):
    if kind == "peers":
        rec, checks = peers_record(src), peers_checks
    elif kind == "cluster":
        rec, checks = load(src), cluster_checks
    elif kind == "profile":
        rec, checks = profile_record(src), profile_checks
    elif kind == "stall":
        rec, checks = stall_record(src), stall_checks
    elif kind == "lockloss":
        # Reported, not compared: the times follow the token timeout and the hold, not the code's speed.
        rec, checks = lockloss_record(src, prov), (lambda rec: [])
    elif kind == "controld":
        # Reported, not compared, as lockloss: they follow dlm_controld's handling and the watch's period.
        rec, checks = controld_record(src, prov), (lambda rec: [])
    else:
        sys.exit(f"unknown kind {kind} (peers, cluster, profile, stall, lockloss, controld)")
    dest = STORE / f"{kind}.json"
    bad = 0
    if dest.exists():
        print(f"== compared with {dest.relative_to(ROOT)} (a figure more than {THRESHOLD:.0%} worse is a REGRESSION)")
        bad = compare(checks(load(dest)), checks(rec))
    else:
        print(f"== no stored figures in {dest.relative_to(ROOT)}: nothing to compare with")
    if bad and os.environ.get("BENCH_ACCEPT") != "1":
        print(f"{bad} REGRESSION(s): figures not stored (BENCH_ACCEPT=1 stores them anyway)")
        print(SHOW[kind](rec))
        return 1
    STORE.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(rec, indent=1) + "\n")
    render()
    print(f"== stored {dest.relative_to(ROOT)}; regenerated {DOC.relative_to(ROOT)}")
    print()
    print(SHOW[kind](rec))
    return 1 if bad else 0


SHOW = {
    "peers": lambda rec: peers_tables(rec) + "\n\n" + scale_table(rec),
    "cluster": cluster_all,
    "profile": profile_table,
    "stall": stall_table,
    "lockloss": lockloss_table,
    "controld": controld_table,
}


def main(argv):
    if len(argv) == 3 and argv[0] == "store":
        return store(argv[1], argv[2])
    if len(argv) == 4 and argv[0] == "store" and argv[1] in ("lockloss", "controld"):
        return store(argv[1], argv[2], argv[3])
    if len(argv) == 3 and argv[:2] == ["show", "cluster"]:
        print(cluster_all(load(argv[2])))
        return 0
    if len(argv) == 2 and argv[0] == "show":
        rec = peers_record(argv[1])
        print(peers_tables(rec))
        if "scale" in rec:
            print("\n" + scale_table(rec))
        return 0
    if argv and argv[0] == "strace-counts":
        print(json.dumps([strace_calls(Path(f).read_text()) for f in argv[1:]]))
        return 0
    if argv == ["render"]:
        return render()
    if argv == ["render", "--check"]:
        return render(check=True)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
