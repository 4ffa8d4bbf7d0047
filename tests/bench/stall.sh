#!/bin/bash
# Benchmark (not a test): does one VM's request waiting on a held disk delay other VMs'
# requests for unrelated disks? Runs crates/lockmgr/examples/stall.rs (local backend, journal
# on /dev/shm as under /run, logging at info): VM waiter keeps one request waiting (wait_ms)
# on a disk VM holder holds, while VM bystander's acquire + release of 4 other disks is timed,
# and the same loop without the waiter first. Then tests/bench/report.py stores the figures
# in docs/bench/stall.json (compared with the stored ones first, as every bench) and
# regenerates docs/PERFORMANCE.md.
#   tests/bench/stall.sh            (make bench-stall) ~10 s
#   STALL_OUT=DIR                   raw output there (default a new /tmp directory, kept)
#   STALL_STORE=0                   do not store, only print the table
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
OUT=${STALL_OUT:-$(mktemp -d /tmp/virtdlm-stall.XXXXXX)}
mkdir -p "$OUT"
cargo build -q --release --locked -p lockmgr --bin virtdlmd --example stall
{ echo '{'; echo " \"date\": \"$(date -u +%F)\","
  python3 tests/bench/provenance.py journal_fs=fs:/dev/shm log_level=info | sed 's/^{//'
} >"$OUT/provenance.json"
"$TARGET/release/examples/stall" --dir /dev/shm --virtdlmd "$TARGET/release/virtdlmd" --json "$OUT/stall.json" \
    | tee "$OUT/stall.out"
echo "== raw output in $OUT" >&2
if [ "${STALL_STORE:-1}" = 0 ]; then
    python3 -c 'import sys; sys.path.insert(0, "tests/bench"); import report; print(report.stall_table(report.stall_record(sys.argv[1])))' "$OUT"
else
    python3 tests/bench/report.py store stall "$OUT"
fi
