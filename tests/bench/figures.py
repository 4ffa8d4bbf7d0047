#!/usr/bin/env python3
"""Checks that every figure in docs/ comes from a stored raw result, and says which are stale.

  tests/bench/figures.py check      (run by make lint and the unit tier of tests/run-all.sh)

Reads docs/bench/manifest.json (docs/TESTING.md, "Figures"). Fails (exit 1) when:
  - a result file under docs/bench/ or docs/results/ matches no manifest entry, or an entry
    matches no file;
  - a result carries no commit measured and no commit_note saying it was not recorded;
  - a commit changed a result's settings (journal filesystem, log level, ...) without a line
    starting with "settings:" in its message;
  - a document lacks the "Not measured since <commit>" mark of an unmeasured entry, or the
    mark of an estimate (its "mark", which starts with "unmeasured estimate");
  - a generated section differs from what its data renders (tests/bench/report.py render
    --check, tests/cluster/nemesis-doc.sh --check).
  - a record kept as history (its manifest entry has "history": a dated run too long to
    repeat with every change, e.g. a soak) is quoted in a document without its commit.
Warns (exit 0) for every stale figure: a commit after the one measured changed a path the
figure measures; FIGURES_STALE=fail makes stale figures fail too. Results whose commit is not
recorded, and unmeasured figures, are listed the same way. Estimates (approximate run times
and costs given for planning, marked as unmeasured estimates with the reason in their
document) are listed as such, never as stale: nothing measured them. Without git history (an export, or
a shallow clone missing the commit) staleness is reported as not checked, never as an error.
"""
import fnmatch
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "docs" / "bench" / "manifest.json"

errors, warnings = [], []


def git(*args):
    try:
        r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    except OSError:
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def have_git():
    return git("rev-parse", "--verify", "HEAD") is not None


def resolve(commit):
    return git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")


def result_files():
    files = []
    for d in ("docs/bench", "docs/results"):
        for p in sorted((ROOT / d).glob("*.json")):
            if p != MANIFEST:
                files.append(str(p.relative_to(ROOT)))
    return files


def stored_commit(rec):
    c = rec.get("commit") or rec.get("env", {}).get("commit")
    if c:
        return c, False
    note = rec.get("commit_note")
    m = re.search(r"commit ([0-9a-f]{7,40})", note or "")
    return (m.group(1) if m else None), bool(note)


def staleness(label, commit, measures, how, prefix=""):
    """Appends a warning if a commit after `commit` changed a path in `measures` (or if that
    cannot be told); a figure already listed for another reason gets its prefix on the line."""
    if not have_git():
        warnings.append(f"not checked  {label}: {prefix}no git history here")
        return
    full = resolve(commit)
    if not full:
        shallow = git("rev-parse", "--is-shallow-repository") == "true"
        warnings.append(f"not checked  {label}: {prefix}commit {commit} is not in this clone's history"
                        + (" (a shallow clone: git fetch --unshallow)" if shallow else ""))
        return
    later = git("rev-list", "--count", f"{full}..HEAD", "--", *measures)
    if later and int(later) > 0:
        last = git("log", "-1", "--format=%h %ad %s", "--date=short", f"{full}..HEAD", "--", *measures)
        warnings.append(f"stale        {label}: {prefix}{how} {commit}; {later} later commit(s) changed what it "
                        f"measures, the last {last[:90]}")
    elif prefix:
        warnings.append(f"no raw data  {label}: {prefix}{how} {commit}, nothing it measures changed since")


def settings_of(text):
    try:
        rec = json.loads(text)
    except (TypeError, ValueError):
        return None
    return rec.get("settings") or (rec.get("env", {}).get("provenance") or {}).get("settings")


def check_settings(path, rec):
    """A change of bench settings needs a "settings:" note in the commit that stores it."""
    if not have_git():
        return
    now = settings_of(json.dumps(rec))
    head = git("show", f"HEAD:{path}")
    if head is not None and (ROOT / path).read_text() != head + "\n" and (ROOT / path).read_text() != head:
        before = settings_of(head)
        if now and before and now != before:
            warnings.append(f"settings     {path}: settings changed from {before} to {now} (not committed yet): "
                            "the commit storing it needs a line 'settings: <what changed and why>'")
    last = git("log", "-1", "--format=%H", "--", path)
    if not last or not git("rev-parse", "--verify", "--quiet", f"{last}^"):
        return
    after, before = settings_of(git("show", f"{last}:{path}")), settings_of(git("show", f"{last}^:{path}"))
    if after and before and after != before:
        msg = git("log", "-1", "--format=%B", last) or ""
        if not re.search(r"^settings:", msg, re.M):
            errors.append(f"settings     {path}: commit {last[:10]} changed the bench settings from {before} to "
                          f"{after} without a line 'settings: ...' in its message")


def check_history(path, entry, commit):
    """A dated record kept as history (too long to measure again with every change, e.g. a
    soak): never stale, but each document quoting it must give the commit it was measured at,
    so that no reader takes it for a figure of the current code."""
    h = entry["history"]
    if not commit:
        errors.append(f"no commit    {path}: a history record needs the commit it measured")
        return
    short = commit[:7]
    for shown in entry.get("shown_in", []):
        doc = ROOT / shown.split(" (")[0]
        if not doc.exists() or short not in doc.read_text():
            errors.append(f"history      {path}: {shown.split(' (')[0]} quotes it without its commit {short} "
                          "(a history record is shown with the commit it measured)")
    warnings.append(f"history      {path}: measured at {short} on {h.get('date', '?')}, kept as history: "
                    f"{h.get('why', '')}")


def check():
    manifest = json.loads(MANIFEST.read_text())
    entries = manifest["results"]
    files = result_files()
    for f in files:
        if not any(fnmatch.fnmatch(f, pat) for pat in entries):
            errors.append(f"no entry     {f}: not in docs/bench/manifest.json (what does it measure?)")
    for pat, entry in entries.items():
        # A file named by an entry of its own belongs to that entry, not to a pattern.
        matched = [f for f in files if fnmatch.fnmatch(f, pat) and (f == pat or f not in entries)]
        if not matched:
            errors.append(f"missing      {pat}: in docs/bench/manifest.json but no such result file")
        for f in matched:
            try:
                rec = json.loads((ROOT / f).read_text())
            except ValueError as e:
                errors.append(f"unreadable   {f}: {e}")
                continue
            commit, note = stored_commit(rec)
            if "history" in entry:
                check_history(f, entry, commit)
            elif commit and not note:
                staleness(f, commit, entry["measures"], "measured at")
            elif commit and note:
                staleness(f, commit, entry["measures"], "stored by", "commit measured not recorded; ")
            else:
                errors.append(f"no commit    {f}: no commit measured and no commit_note")
            check_settings(f, rec)
    for u in manifest.get("unmeasured", []):
        doc = ROOT / u["doc"]
        mark = f"not measured since {u['since']}"
        if not doc.exists() or mark.lower() not in re.sub(r"\s+", " ", doc.read_text()).lower():
            errors.append(f"unmarked     {u['doc']}: no '{mark}' beside its figures ({u['what']})")
        else:
            staleness(f"{u['doc']} ({u['what'][:60]}...)", u["since"], u["measures"], "written at",
                      "no raw data, marked 'not measured since'; ")
    estimates = manifest.get("estimates", [])
    for u in estimates:
        doc = ROOT / u["doc"]
        mark = u["mark"]
        if not mark.lower().startswith("unmeasured estimate"):
            errors.append(f"estimate     {u['doc']}: its mark must start with 'unmeasured estimate': {mark!r}")
        elif not doc.exists() or re.sub(r"\s+", " ", mark).lower() not in re.sub(r"\s+", " ", doc.read_text()).lower():
            errors.append(f"unmarked     {u['doc']}: no '{mark}' beside its estimates ({u['what']})")
        else:
            warnings.append(f"estimate     {u['doc']} ({u['what'][:60]}...): {u['reason']}")
    for cmd in (["python3", "tests/bench/report.py", "render", "--check"],
                ["bash", "tests/cluster/nemesis-doc.sh", "--check"]):
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            errors.append(f"generated    {' '.join(cmd[1:])}: {(r.stdout + r.stderr).strip()}")

    stale = [w for w in warnings if w.startswith("stale")]
    for w in warnings:
        kind = "info " if w.startswith(("estimate", "history")) else "warn "
        print(("FAIL " if os.environ.get("FIGURES_STALE") == "fail" and w.startswith("stale") else kind) + w)
    for e in errors:
        print("FAIL " + e)
    print(f"figures: {len(files)} result file(s), {len(manifest.get('unmeasured', []))} unmeasured figure group(s), "
          f"{len(estimates)} estimate group(s); "
          f"{len(stale)} stale (warnings), {len(errors)} error(s)")
    if errors or (stale and os.environ.get("FIGURES_STALE") == "fail"):
        return 1
    return 0


def main(argv):
    if argv == ["check"]:
        return check()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
