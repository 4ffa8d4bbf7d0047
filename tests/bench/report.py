#!/usr/bin/env python3
"""Benchmark figures: compare, store, and render them into docs/PERFORMANCE.md.

  report.py store peers DIR     figures of tests/bench/peers.sh (DIR/{env,nop,dlm,lockd,sanlock,scale}.json)
  report.py store cluster FILE  figures of tests/cluster/bench.sh
  report.py store profile DIR   counts of tests/bench/profile.sh (DIR/{strace.txt,journal-writes.txt,
                                perf-top.txt,provenance.json})
  report.py store lockloss FILE [PROV]
                                the `lockloss:` lines of the cluster tier's lock-loss test
                                ($VIRTDLM_RESULTS/lockloss.txt; run.sh stores them with
                                VIRTDLM_LOCKLOSS_RECORD=1), with PROV (tests/bench/provenance.py's
                                JSON, taken in the checkout that ran) or this checkout's provenance
  report.py show DIR            print the peer tables of a results directory, store nothing
  report.py show cluster FILE   print the cluster table of a figures file, store nothing
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


def cluster_checks(rec):
    checks = []
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
    ("connection", ["accept4", "recvfrom", "sendto", "getsockopt", "ppoll"],
     "accept (one more returns EAGAIN), peer credentials, request, answer"),
    ("async runtime", ["epoll_wait", "epoll_ctl", "futex"], "waking the thread that serves the connection"),
]


def profile_record(d):
    """Syscalls per request (from strace -c; requests = accepted connections), journal bytes
    per record (from strace -y -e write), the perf top entries, and the provenance."""
    d = Path(d)
    calls = {}
    for line in (d / "strace.txt").read_text().splitlines():
        f = line.split()
        if len(f) < 5 or not f[0][0].isdigit() or f[-1] == "total":
            continue
        n_calls, errors = int(f[3]), (int(f[4]) if len(f) == 6 else 0)
        calls[f[-1]] = (n_calls, errors)
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
    )
    return rec


def profile_table(rec):
    per, failed = rec["syscalls_per_request"], rec["failed_per_request"]
    out = [
        f"Measured {rec['date']} on {rec['machine']['cpu']} ({rec['machine']['cores']} cores), "
        f"load {rec['load']}; {rec['requests']} requests counted. {provenance_line(rec)}",
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
    return "\n".join(out)


def profile_checks(rec):
    return [("syscalls per request (4 disks)", rec["syscalls_total_per_request"], True)]


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


SECTIONS = [
    (DOC, "peers", "peers.json", peers_tables),
    (DOC, "scale", "peers.json", scale_table),
    (DOC, "cluster", "cluster.json", cluster_table),
    (DOC, "profile", "profile.json", profile_table),
    (LOCKLOSS, "fencing", "fencing.json", fencing_table),
    (LOCKLOSS, "sbd", "sbd.json", lambda rec: watchdog_table(rec, "sbd.json")),
    (LOCKLOSS, "watchdog", "watchdog.json", lambda rec: watchdog_table(rec, "watchdog.json")),
    (LOCKLOSS, "lockloss", "lockloss.json", lockloss_table),
    (RELIABILITY, "reliability-run", "reliability.json", reliability_run),
    (RELIABILITY, "floods", "reliability.json", reliability_floods),
]


def render(check=False):
    """Rewrites every generated section; with check, only reports the sections that differ."""
    texts, stale = {}, []
    for doc, name, file, fn in SECTIONS:
        text = texts.setdefault(doc, doc.read_text())
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
    elif kind == "lockloss":
        # Reported, not compared: the times follow the token timeout and the hold, not the code's speed.
        rec, checks = lockloss_record(src, prov), (lambda rec: [])
    else:
        sys.exit(f"unknown kind {kind} (peers, cluster, profile, lockloss)")
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
    "cluster": cluster_table,
    "profile": profile_table,
    "lockloss": lockloss_table,
}


def main(argv):
    if len(argv) == 3 and argv[0] == "store":
        return store(argv[1], argv[2])
    if len(argv) == 4 and argv[:2] == ["store", "lockloss"]:
        return store("lockloss", argv[2], argv[3])
    if len(argv) == 3 and argv[:2] == ["show", "cluster"]:
        print(cluster_table(load(argv[2])))
        return 0
    if len(argv) == 2 and argv[0] == "show":
        rec = peers_record(argv[1])
        print(peers_tables(rec))
        if "scale" in rec:
            print("\n" + scale_table(rec))
        return 0
    if argv == ["render"]:
        return render()
    if argv == ["render", "--check"]:
        return render(check=True)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
