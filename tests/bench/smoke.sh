#!/bin/bash
# Bench tier: a short run of the peer benchmark (tests/bench/peers.sh, a few iterations, no
# figures stored) that checks it still produces a row for every peer: nop, dlm.so + virtdlmd,
# lockd.so + virtlockd, sanlock.so + sanlock, and the scale figures of virtdlmd. It asserts
# that every operation ran without error and that the three real lock managers refused every
# conflicting VM; it asserts no timing. Prints "peer: …", "setup: …" and "N passed, N failed"
# (dlm.so + virtdlmd only). Needs root; about 1 minute
# (sanlock's lockspace join alone takes 21 s).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=$(mktemp -d /tmp/virt-dlm-bench-smoke.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
PASSED=0
FAILED=0
has() { jq -e "$1" "$2" >/dev/null; }   # has JQ_FILTER FILE: the filter holds for the figures
# Only dlm.so + virtdlmd's rows count in "N passed, N failed"; the peers' rows (nop, lockd,
# sanlock) and the harness's own steps are counted apart (and still fail the tier).
PEER_PASSED=0 PEER_FAILED=0 SETUP_PASSED=0 SETUP_FAILED=0
check() { # check [peer|setup] DESCRIPTION CMD...
    local kind=""; case $1 in peer|setup) kind=${1^^}_; shift;; esac
    local what=$1; shift
    if "$@"; then echo "PASS $what"; eval "${kind}PASSED=\$((${kind}PASSED + 1))"
    else echo "FAIL $what"; eval "${kind}FAILED=\$((${kind}FAILED + 1))"; fi
}

BENCH_OUT=$OUT/figures BENCH_K=3 BENCH_VMS=5 BENCH_ROUNDS=1 BENCH_SCALE=1 BENCH_SCALE_ITERATIONS=20 \
    tests/bench/peers.sh > "$OUT/run.log" 2>&1
rc=$?
cat "$OUT/run.log"
check setup "tests/bench/peers.sh exits 0" test "$rc" = 0
for peer in nop dlm lockd sanlock; do
    f=$OUT/figures/$peer.json
    k=peer; [ "$peer" = dlm ] && k=""
    check $k "$peer: figures written" test -s "$f"
    [ -s "$f" ] || continue
    check $k "$peer: no operation failed" has '.errors == 0' "$f"
    check $k "$peer: every operation timed 3 times" \
        has '[.ops[] | .n == 3] | all' "$f"
    check $k "$peer: 5 VMs started concurrently" has '.concurrent.vms == 5 and .concurrent.wall_ms > 0' "$f"
    if [ "$peer" != nop ]; then
        check $k "$peer: every conflicting VM was refused" has '.conflicts.tried == 3 and .conflicts.refused == 3' "$f"
    fi
done
check setup "the table has a column for each of the four peers" \
    grep -q '^| operation | nop (floor) | dlm.so + virtdlmd | lockd.so + virtlockd | sanlock.so + sanlock |' "$OUT/run.log"
check "scale: 10,000 locks held and re-adopted after a restart" \
    has '.held_locks == 10000 and .rss_held_kib > 0 and .restart_readopt_ms > 0' "$OUT/figures/scale.json"
echo "peer: $PEER_PASSED passed, $PEER_FAILED failed"
echo "setup: $SETUP_PASSED passed, $SETUP_FAILED failed"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ] && [ "$PEER_FAILED" = 0 ] && [ "$SETUP_FAILED" = 0 ]
