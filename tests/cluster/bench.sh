#!/bin/bash
# Benchmark (not a test): what one VM's locks cost on the kernel DLM. Boots a 3-node test
# cluster, runs virtdlmd --backend dlm on node 1 and measures, from node 1, one VM's acquire +
# release of 4 disks through the daemon's control socket (as dlm.so sends them), beside the raw
# libdlm requests on the same 4 resources: a lock of its own per disk (new NL, ->EX, ->NL,
# unlock: a first acquire) and bare NL->EX->NL conversions of kept NL anchors (the floor, and
# what the dlm backend does for a disk it has locked before).
# Each twice: with the resources mastered on node 1 (it locked them first) and on node 2.
# Plus the same daemon requests to two more virtdlmd on node 1: one on the dlm backend but
# without the cluster inventory (cluster = false, a lockspace of its own, mastered on node 1),
# and one with the local backend (no DLM): what the inventory and the daemon itself cost.
# Tears the cluster down and prints a markdown table (median and p99 of acquire + release and
# of each half, over N samples); then
# tests/bench/report.py compares the figures with those stored in docs/bench/cluster.json
# (REGRESSION lines and exit 1 when a ratio to the libdlm floor got worse by more than 20%),
# stores them and regenerates docs/PERFORMANCE.md (see there).
#
#   tests/cluster/bench.sh                 BENCH_N samples per row (default 300)
#   BENCH_OUT=/tmp/c.json tests/cluster/bench.sh    only write the figures there (no compare, no store)
# Settings: CL_NS, CL_BASE, CL_NET, CL_VM as for run.sh (see cluster.sh).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CL=$HERE/cluster.sh
export CL_NS=${CL_NS:-virtdlmbench} CL_BASE=${CL_BASE:-/tmp/virtdlm-bench} CL_NET=${CL_NET:-10.99.1}
N=${BENCH_N:-300}
OUT=${BENCH_OUT:-$CL_BASE/cluster-bench.json}
LS=vd_bench
DIR=/run/virtdlm-bench
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release

die() { echo "bench FAILED: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespace, taps, UML hostfs root)"
cd "$ROOT" || die "no $ROOT"

echo "== building (release)" >&2
cargo build --release --locked -p lockmgr --bin virtdlmd -p cluster-tests --bin dlm-bench >&2 || die "cargo build --release failed"
"$CL" prepare >&2 || die "cannot prepare the guests"
trap '"$CL" stop >/dev/null 2>&1' EXIT
echo "== starting 3 nodes" >&2
"$CL" start 3 >&2 || die "the cluster did not start (logs in $CL_BASE)"
BENCH=$("$CL" bin "$TARGET/dlm-bench") || die "cluster.sh bin dlm-bench"
DAEMON=$("$CL" bin "$TARGET/virtdlmd") || die "cluster.sh bin virtdlmd"
x() { "$CL" exec "$@"; }

disks() { for i in 1 2 3 4; do printf ' /srv/virtdlm-bench/%s/disk%d.img' "$1" "$i"; done; }
LOCAL=$(disks local)
REMOTE=$(disks remote)
# The disk files exist, as libvirt's do when it locks them (a missing one is named the slow way).
for n in 1 2; do x $n "mkdir -p /srv/virtdlm-bench/local /srv/virtdlm-bench/remote && touch $LOCAL $REMOTE" >&2; done

# Background program in a guest; returns once its output (in $DIR/$2.out) shows $3.
background() {
  local node=$1 name=$2 ready=$3; shift 3
  x "$node" "mkdir -p $DIR; $* >$DIR/$name.out 2>&1 </dev/null &
    for i in \$(seq 1 1200); do grep -q '$ready' $DIR/$name.out && exit 0; sleep 0.1; done
    cat $DIR/$name.out; exit 1" >&2 || die "$name on node$node did not get ready"
}

echo "== virtdlmd on node 1; NL holders make node 1 master of the 'local' disks, node 2 of the 'remote' ones" >&2
x 1 "mkdir -p $DIR && printf 'lockspace = $LS\n' > $DIR/virtdlmd.conf" >&2
background 1 virtdlmd 'serving on' RUST_LOG=info "$DAEMON" --config $DIR/virtdlmd.conf --backend dlm \
  --socket $DIR/ctl.sock --admin-socket $DIR/admin.sock --journal $DIR/journal --node-name node1
x 1 "printf 'lockspace = ${LS}2\ncluster = false\n' > $DIR/nocluster.conf" >&2
background 1 virtdlmd-nocluster 'serving on' RUST_LOG=info "$DAEMON" --config $DIR/nocluster.conf --backend dlm \
  --socket $DIR/nocluster.sock --admin-socket $DIR/nocluster-admin.sock --journal $DIR/nocluster-journal --node-name node1
background 1 virtdlmd-local 'serving on' RUST_LOG=info "$DAEMON" --backend local \
  --socket $DIR/local.sock --admin-socket $DIR/local-admin.sock --journal $DIR/local-journal --node-name node1
background 1 hold-local '"ready"' "$BENCH" hold $LS "$LOCAL"
background 2 hold-remote '"ready"' "$BENCH" hold $LS "$REMOTE"

RESULTS=()
for where in local remote; do
  set="$LOCAL"; [ $where = remote ] && set="$REMOTE"
  for mode in daemon raw-full raw-convert; do
    target=$LS; [ $mode = daemon ] && target=$DIR/ctl.sock
    echo "== $mode, $where master, $N samples" >&2
    line=$(x 1 "$BENCH $mode $target $N $set" | grep '^{' | tail -1)
    case $line in *'"median_us"'*) ;; *) die "$mode ($where): ${line:-no output}";; esac
    RESULTS+=("$where $line")
  done
done

echo "== daemon without the cluster inventory, local master, $N samples" >&2
line=$(x 1 "$BENCH daemon $DIR/nocluster.sock $N $LOCAL" | grep '^{' | tail -1)
case $line in *'"median_us"'*) ;; *) die "daemon (cluster = false): ${line:-no output}";; esac
RESULTS+=("local ${line/\"mode\":\"daemon\"/\"mode\":\"daemon-nocluster\"}")
echo "== daemon, local backend (no DLM), $N samples" >&2
line=$(x 1 "$BENCH daemon $DIR/local.sock $N $LOCAL" | grep '^{' | tail -1)
case $line in *'"median_us"'*) ;; *) die "daemon (local backend): ${line:-no output}";; esac
RESULTS+=("none ${line/\"mode\":\"daemon\"/\"mode\":\"daemon-local\"}")

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mkdir -p "$(dirname "$OUT")"
for r in "${RESULTS[@]}"; do jq -c --arg w "${r%% *}" '. + {master: $w}' <<<"${r#* }"; done |
  jq -s --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg cpu "${cpu:-unknown}" --argjson cores "$(nproc)" \
    --argjson mem "$(free -g | awk '/^Mem:/{print $2}')" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
    --arg kernel "$(uname -r)" --arg vm "${CL_VM:-uml}" --argjson n "$N" \
    --argjson prov "$(python3 "$ROOT/tests/bench/provenance.py" "journal_fs=tmpfs (guest /run)" log_level=info)" \
    '{date: $date, commit: $prov.commit, dirty: $prov.dirty, settings: $prov.settings,
      machine: {cpu: $cpu, cores: $cores, mem_gib: $mem, load: $load, kernel: $kernel},
      guests: "3 \($vm) guests", samples: $n, disks: 4, rows: .}' > "$OUT.new" && mv "$OUT.new" "$OUT" ||
  die "cannot write $OUT"
echo "== figures written to $OUT" >&2

echo
if [ -n "${BENCH_OUT:-}" ]; then python3 "$ROOT/tests/bench/report.py" show cluster "$OUT"; exit 0; fi
python3 "$ROOT/tests/bench/report.py" store cluster "$OUT"
