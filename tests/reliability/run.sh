#!/bin/bash
# Reliability tier: crashes, contention, a failing journal filesystem and hostile clients,
# against real virtdlmd processes on the local backend (crates/lockmgr/tests/reliability_*.rs).
# The tests are #[ignore]d in the unit tier (they are long, need root, and print figures);
# this runs them one at a time, shows their figures, and ends with "N passed, N failed".
# Needs root (tmpfs and bind mounts, clients as other uids through setpriv). About a minute
# on an idle 2-core machine. VDLM_SEED=<n> replays the randomised tests.
# RELIABILITY_BENCH_OUT=<file> stores the run's figures there as JSON, with the commit measured,
# the machine and its load (docs/bench/reliability.json holds the stored run; tests/bench/report.py
# render shows it in docs/RELIABILITY.md).
#   tests/reliability/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
LOG=${CARGO_TARGET_DIR:-$PWD/target}/tier-logs
mkdir -p "$LOG"
OUT=$LOG/reliability-cargo.log

if [ "$(id -u)" != 0 ]; then
    echo "the reliability tier needs root (mounts, setpriv to other uids, RLIMIT_NOFILE); run it as root"
    echo "0 passed, 1 failed"
    exit 1
fi
for tool in mount umount setpriv; do
    if ! command -v $tool >/dev/null; then
        echo "the reliability tier needs $tool (util-linux / mount)"
        echo "0 passed, 1 failed"
        exit 1
    fi
done

t0=$SECONDS
cargo test -p lockmgr --locked --no-fail-fast \
    --test reliability_contention --test reliability_crash --test reliability_journal --test reliability_hostile \
    -- --include-ignored --nocapture --test-threads=1 2>&1 | tee "$OUT"
rc=${PIPESTATUS[0]}

echo
echo "---- figures ($((SECONDS - t0)) s)"
grep -oE 'FIGURE .*' "$OUT" | sed 's/^FIGURE //'
awk '/^test result:/{for(i=1;i<=NF;i++){if($i=="passed;")p+=$(i-1); if($i=="failed;")f+=$(i-1)}}
     END{if (p+f == 0) f=1; printf "reliability: %d passed, %d failed\n", p, f}' "$OUT" | tee "$LOG/reliability-result"
if [ -n "${RELIABILITY_BENCH_OUT:-}" ]; then
    # The provenance first: the load is the one at the end of the run.
    python3 - "$OUT" "$RELIABILITY_BENCH_OUT" "$((SECONDS - t0))" "$(cat "$LOG/reliability-result")" \
        "$(python3 tests/bench/provenance.py journal_fs=fs:/dev/shm log_level=info build=debug)" <<'PY'
import datetime, json, re, sys
log, out, wall, result, prov = sys.argv[1:]
lines = open(log, errors="replace").read().splitlines()
rec = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **json.loads(prov),
       "wall_s": int(wall), "result": result.removeprefix("reliability: "),
       "figures": [m.group(1) for l in lines for m in [re.search(r"FIGURE (.*)", l)] if m],
       "rlimit": next((m.group(1) for l in lines for m in [re.search(r"RLIMIT_NOFILE: (.*)", l)] if m), None)}
open(out, "w").write(json.dumps(rec, indent=1) + "\n")
print(f"figures stored in {out}")
PY
fi
grep -q ' 0 failed$' "$LOG/reliability-result" && [ "$rc" = 0 ]
