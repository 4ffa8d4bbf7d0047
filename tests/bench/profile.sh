#!/bin/bash
# Profile (not a test): syscalls per request, journal bytes per record and where the CPU goes in
# virtdlmd's request path (local backend, journal on tmpfs, logging at info): counts that do
# not move with the machine's load, beside docs/PERFORMANCE.md's times.
# Runs crates/lockmgr/examples/bench.rs's latency loop (one VM, acquire then release of 4
# disks, a new connection per request, as dlm.so makes) and attaches to the daemon meanwhile:
#   1. strace -f -c for PROFILE_SECS: syscalls by name (requests = accepted connections);
#   2. strace -f -y -e write for 2 s: the journal's writes, by record kind;
#   3. perf record -a with DWARF call graphs for PROFILE_SECS (if perf is installed): the
#      daemon's top entries by self time, and its own functions by inclusive time (what each
#      step of the request path costs, with everything it calls);
#   4. heaptrack (if installed): a virtdlmd holding 10,000 locks, its peak heap and where it is.
# Then tests/bench/report.py stores the counts in docs/bench/profile.json (compared with the
# stored ones first, as every bench) and regenerates docs/PERFORMANCE.md.
#   tests/bench/profile.sh          (make bench-profile) root; ~1 min
#   PROFILE_OUT=DIR                 raw output there (default a new /tmp directory, kept)
#   PROFILE_STORE=0                 do not store, only print the table
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
OUT=${PROFILE_OUT:-$(mktemp -d /tmp/virtdlm-profile.XXXXXX)}
SECS=${PROFILE_SECS:-5}
command -v strace >/dev/null || { echo "strace is missing (apt-get install strace)" >&2; exit 1; }
mkdir -p "$OUT"
cargo build -q --release --locked -p lockmgr --bin virtdlmd --example bench
# Long enough to outlast the attached tools; stopped below.
"$TARGET/release/examples/bench" --dir /dev/shm --virtdlmd "$TARGET/release/virtdlmd" --iterations 1000000 \
    >"$OUT/bench.out" 2>&1 &
BENCH=$!
DPID=
cleanup() {
    kill "$BENCH" 2>/dev/null || true
    if [ -n "$DPID" ]; then kill "$DPID" 2>/dev/null || true; fi
    pkill -P "$BENCH" -x sleep 2>/dev/null || true
    rm -rf "/dev/shm/virtdlm-bench-$BENCH"
}
trap cleanup EXIT
for _ in $(seq 100); do DPID=$(pgrep -P $BENCH -x virtdlmd || true); [ -n "$DPID" ] && break; sleep 0.1; done
[ -n "$DPID" ] || { echo "virtdlmd did not start" >&2; exit 1; }
sleep 1
{ echo '{'; echo " \"date\": \"$(date -u +%F)\","
  python3 tests/bench/provenance.py journal_fs=fs:/dev/shm log_level=info disk_path_components=4 | sed 's/^{//'
} >"$OUT/provenance.json"
timeout -s INT "$SECS" strace -f -c -o "$OUT/strace.txt" -p "$DPID" 2>/dev/null || true
timeout -s INT 2 strace -f -y -s 65536 -e trace=write -o "$OUT/journal-writes.txt" -p "$DPID" 2>/dev/null || true
if command -v perf >/dev/null; then
    # The whole machine, then the daemon's share: `perf record -p` follows only the threads
    # there are when it attaches, and the daemon starts a connection thread now and then.
    # DWARF unwinding: the release build keeps no frame pointers, and the inclusive times need
    # whole stacks. A lower rate keeps the data to tens of MB. The connection threads' loop
    # (Acceptors::run) is left out of the inclusive list: its inlined frames are counted twice
    # in some stacks (over 100%), and `dispatch` under it is the request.
    timeout -s INT "$SECS" perf record -q -a -F 999 --call-graph dwarf,16384 -o "$OUT/perf.data" >/dev/null 2>&1 || true
    perf report -i "$OUT/perf.data" --pid "$DPID" --percentage relative --no-children --stdio --sort dso,symbol -g none 2>/dev/null \
        | grep '^ *[0-9.]*%' | sed 's/[ -]*$//' | head -25 >"$OUT/perf-top.txt" || true
    perf report -i "$OUT/perf.data" --pid "$DPID" --percentage relative --children --stdio --sort symbol -g none 2>/dev/null \
        | grep '^ *[0-9.]*% *[0-9.]*%' | grep -E '\] ((lockmgr|proto)::|tracing_core::event::Event::dispatch)' | grep -v -e '(inlined)' -e 'Acceptors::run' | sed 's/[ -]*$//' \
        | head -16 >"$OUT/perf-children.txt" || true
fi
# 4. The heap (if heaptrack is installed): a virtdlmd of its own, under heaptrack, takes 10,000
#    locks (250 VMs x 40 disks, a request each, as the scale bench); its peak heap and the
#    sites that hold the most of it at the peak.
if command -v heaptrack >/dev/null; then
    kill "$BENCH" 2>/dev/null || true; wait "$BENCH" 2>/dev/null || true
    cargo build -q --release --locked -p cluster-tests --bin daemon-client
    H=/dev/shm/virtdlm-heap-$$; rm -rf "$H"; mkdir -p "$H"; printf 'backend = local\n' >"$H/virtdlmd.conf"
    RUST_LOG=info heaptrack -o "$OUT/heap" "$TARGET/release/virtdlmd" --config "$H/virtdlmd.conf" --socket "$H/s" \
        --admin-socket "$H/a" --journal "$H/journal" --node-name heap >"$OUT/heaptrack.out" 2>"$OUT/heap-virtdlmd.log" &
    for _ in $(seq 300); do [ -S "$H/s" ] && break; sleep 0.1; done
    OWNERS=()
    for i in $(seq 250); do
        sleep 3600 & OWNERS+=($!)
        printf 'acquire:vm%d:%d:' "$i" "$!"; for j in $(seq 40); do printf 'EX=/heap/vm%d/disk%d.img%s' "$i" "$j" "$([ "$j" = 40 ] || echo ,)"; done; echo
    done >"$H/steps"
    xargs -a "$H/steps" "$TARGET/release/daemon-client" "$H/s" >"$H/answers"
    echo "$(grep -c '"outcome":"ok"' "$H/answers") of 250 acquires granted" >"$OUT/heap-acquires.txt"
    pkill -TERM -f "virtdlmd --config $H/virtdlmd.conf" || true
    for _ in $(seq 100); do pgrep -f "heaptrack.*$H" >/dev/null || break; sleep 0.2; done
    kill "${OWNERS[@]}" 2>/dev/null || true
    heaptrack_print -f "$OUT"/heap.*st --print-peaks 1 --print-allocators 0 --print-temporary 0 --print-leaks 0 \
        --peak-limit 8 --sub-peak-limit 8 >"$OUT/heap-peaks.txt" 2>/dev/null || true
    rm -rf "$H"
fi
echo "== raw output in $OUT" >&2
if [ "${PROFILE_STORE:-1}" = 0 ]; then
    python3 -c 'import sys; sys.path.insert(0, "tests/bench"); import report; print(report.profile_table(report.profile_record(sys.argv[1])))' "$OUT"
else
    python3 tests/bench/report.py store profile "$OUT"
fi
