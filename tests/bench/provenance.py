#!/usr/bin/env python3
"""Prints, as one JSON object, what a stored figure must carry besides the figure itself:
the commit measured, whether the work tree differed from it, the machine and its load, and the
bench settings given as KEY=VALUE arguments (journal_fs, log_level, ...).

  tests/bench/provenance.py journal_fs=tmpfs log_level=info
  {"commit": "0123456789ab", "dirty": false, "machine": {...}, "load": "1.00 0.90 0.80",
   "settings": {"journal_fs": "tmpfs", "log_level": "info"}}

Every writer of docs/bench/*.json and docs/results/*.json records these fields;
tests/figures.py check reads them (docs/TESTING.md, "Figures").
"""
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def git(*args):
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_gib():
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // (1024 * 1024)
    except OSError:
        pass
    return None


def loadavg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return None


def fs_type(path):
    """The filesystem type of path (tmpfs, ext4, ...), as stat -f reports it."""
    try:
        return subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(settings):
    commit = git("rev-parse", "--short=12", "HEAD")
    # Tracked files only: the figures being written are themselves untracked or modified.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs") if commit else None
    return {
        "commit": commit,
        "dirty": bool(dirty) if commit else None,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "mem_gib": mem_gib(),
                    "kernel": platform.release()},
        "load": loadavg(),
        "settings": settings,
    }


def main(argv):
    settings = {}
    for a in argv:
        if "=" not in a:
            print(__doc__, file=sys.stderr)
            return 2
        k, v = a.split("=", 1)
        # A path as value: its filesystem type is what matters (tmpfs or a disk).
        settings[k] = fs_type(v[len("fs:"):]) if v.startswith("fs:") else v
    print(json.dumps(provenance(settings), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
