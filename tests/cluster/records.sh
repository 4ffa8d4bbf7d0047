#!/bin/bash
# Measures again, in one command, the nemesis records that no CI run stores (docs/TESTING.md,
# "Figures"; docs/RELIABILITY.md, "Last runs"):
#   - the seed replays: tests/cluster/run.sh nemesis with VIRTDLM_NEMESIS_SEED set to the seed of
#     each docs/results/nemesis-seed-<seed>.json; each must pass (no overlap, no mismatch);
#   - the broken daemon (docs/results/broken-daemon-nemesis.json): the nemesis on a virtdlmd
#     built by tests/cluster/broken-virtdlmd.sh; the run must FAIL with the oracle's overlap
#     message, which is this record's success (a check that cannot fail proves nothing).
# Each run writes its record through VIRTDLM_NEMESIS_RECORD (commit, machine, load, settings:
# tests/cluster/tests/nemesis.rs) and its log to docs/results/evidence/<record>.log; then
# tests/cluster/nemesis-doc.sh renders docs/RELIABILITY.md's "Last runs".
#   tests/cluster/records.sh            (make nemesis-records; root, about 25 minutes)
#   RECORDS="seed broken" (default), "seed" or "broken" chooses which.
# The cluster environment is run.sh's (CL_NS, CL_BASE, CL_NET may be set). Exit 1 if a replay
# failed or the broken daemon was not caught.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
EV=docs/results/evidence
mkdir -p "$EV"
failed=0
say() { echo "records: $*"; }

replay() {
    local rec=$1 seed out
    seed=$(jq -r .seed "$rec") || { say "FAIL $rec: no seed in it"; failed=1; return; }
    out=$EV/$(basename "$rec" .json).log
    say "replaying seed $seed -> $rec (log $out)"
    if VIRTDLM_NEMESIS_SEED=$seed VIRTDLM_NEMESIS_RECORD=$ROOT/$rec tests/cluster/run.sh nemesis >"$out" 2>&1; then
        say "PASS seed $seed: $(jq -r '"\(.rounds) rounds, \(.grants) grants, overlaps \(.overlaps), mismatches \(.mismatches)"' "$rec")"
    else
        say "FAIL seed $seed: the replay failed: $(grep -E 'FAIL|panicked|overlap' "$out" | head -n 3 | tr '\n' ' ')"
        git checkout -q -- "$rec" 2>/dev/null
        failed=1
    fi
}

broken() {
    local rec=docs/results/broken-daemon-nemesis.json out=$EV/broken-daemon-nemesis.log bin tmp
    say "building the broken daemon (tests/cluster/broken-virtdlmd.sh)"
    bin=$(tests/cluster/broken-virtdlmd.sh) || { say "FAIL the broken daemon does not build"; failed=1; return; }
    tmp=$(mktemp /var/tmp/broken-record.XXXXXX.json)
    say "the nemesis on the broken daemon -> $rec (log $out)"
    if VIRTDLMD=$bin VIRTDLM_NEMESIS_ROUNDS=${BROKEN_ROUNDS:-6} VIRTDLM_NEMESIS_RECORD=$tmp tests/cluster/run.sh nemesis >"$out" 2>&1; then
        say "FAIL the nemesis passed on a daemon that grants without asking the DLM: the oracle caught nothing"
        failed=1
    elif grep -q "the oracle found incompatible writers on one image" "$out" && [ "$(jq -r .overlaps "$tmp" 2>/dev/null)" -gt 0 ] 2>/dev/null; then
        cp "$tmp" "$rec"
        say "PASS caught: $(grep -m1 "^oracle-check:" "$out")"
    else
        say "FAIL the run failed, but not with the oracle's overlap message: $(grep -E 'FAIL|panicked' "$out" | head -n 3 | tr '\n' ' ')"
        failed=1
    fi
    rm -f "$tmp"
}

for what in ${RECORDS:-seed broken}; do
    case $what in
        seed) for r in docs/results/nemesis-seed-*.json; do replay "$r"; done ;;
        broken) broken ;;
        *) say "unknown record kind $what (seed, broken)"; exit 2 ;;
    esac
done
bash tests/cluster/nemesis-doc.sh >/dev/null || { say "FAIL tests/cluster/nemesis-doc.sh"; failed=1; }
[ "$failed" = 0 ] && say "done: check with python3 tests/bench/figures.py check, then commit docs/results" ||
    say "some records failed (above); their files were left as they were"
exit "$failed"
