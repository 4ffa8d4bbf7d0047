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
# Then four more measurements (functions evacuation, stall, syscalls and adoption below):
# - the evacuation case: BENCH_EVAC_VMS (default 100) VMs x 4 disks started at once on each of
#   the 3 nodes (a virtdlmd on each), BENCH_EVAC_PAR (default 100: all) acquires in flight per
#   node, each on its own connection, time until all are granted; beside the same number of raw
#   libdlm requests (a new lock per disk: NL, then ->EX NOQUEUE) with the same parallelism;
# - the stall case: node 2's VM holds a disk, node 1's VM asks for it with wait_ms
#   (BENCH_STALL_WAIT_MS, 1000) over and over (tests/cluster/stall-waiter.py), and node 1's
#   daemon row is timed again before and while one of its requests waits;
# - syscalls counted with strace -f -c in node 1 (the host's strace, seen through the guest's
#   read-only root): the libdlm floor's NL->EX->NL loop (the difference of two runs of
#   BENCH_SC_A and BENCH_SC_B samples, so that the set-up cancels out) and node 1's virtdlmd
#   (each of its threads) serving BENCH_SC_N acquire + release pairs (requests = accepted
#   connections);
# - adoption: BENCH_ADOPT_VMS (250) VMs x BENCH_ADOPT_DISKS (40) locks through node 1's
#   virtdlmd (after a first kill -9 and restart with none held: the restart's fixed cost), its
#   RSS, then kill -9 and a restart: the time until it serves with every lock re-adopted from
#   the DLM's orphans, and its RSS then.
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
EVAC_VMS=${BENCH_EVAC_VMS:-100}
EVAC_PAR=${BENCH_EVAC_PAR:-$EVAC_VMS}
STALL_WAIT_MS=${BENCH_STALL_WAIT_MS:-1000}
SC_A=${BENCH_SC_A:-100} SC_B=${BENCH_SC_B:-300} SC_N=${BENCH_SC_N:-200}
ADOPT_VMS=${BENCH_ADOPT_VMS:-250} ADOPT_DISKS=${BENCH_ADOPT_DISKS:-40}
EXTRA=$CL_BASE/bench-extra
OUT=${BENCH_OUT:-$CL_BASE/cluster-bench.json}
LS=vd_bench
DIR=/run/virtdlm-bench
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release

die() { echo "bench FAILED: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespace, taps, UML hostfs root)"
cd "$ROOT" || die "no $ROOT"

echo "== building (release)" >&2
cargo build --release --locked -p lockmgr --bin virtdlmd -p cluster-tests --bin dlm-bench --bin daemon-client >&2 ||
  die "cargo build --release failed"
"$CL" prepare >&2 || die "cannot prepare the guests"
trap '"$CL" stop >/dev/null 2>&1' EXIT
echo "== starting 3 nodes" >&2
"$CL" start 3 >&2 || die "the cluster did not start (logs in $CL_BASE)"
BENCH=$("$CL" bin "$TARGET/dlm-bench") || die "cluster.sh bin dlm-bench"
DAEMON=$("$CL" bin "$TARGET/virtdlmd") || die "cluster.sh bin virtdlmd"
CLIENT=$("$CL" bin "$TARGET/daemon-client") || die "cluster.sh bin daemon-client"
WAITER=$("$CL" bin "$HERE/stall-waiter.py") || die "cluster.sh bin stall-waiter.py"
x() { "$CL" exec "$@"; }

disks() { for i in 1 2 3 4; do printf ' /srv/virtdlm-bench/%s/disk%d.img' "$1" "$i"; done; }
LOCAL=$(disks local)
REMOTE=$(disks remote)
# The disk files exist, as libvirt's do when it locks them (a missing one is named the slow way).
for n in 1 2; do x $n "mkdir -p /srv/virtdlm-bench/local /srv/virtdlm-bench/remote && touch $LOCAL $REMOTE" >&2; done

# Background program in a guest; returns once its output (in $DIR/$2.out) shows $3.
background() {
  local node=$1 name=$2 ready=$3; shift 3
  x "$node" "mkdir -p $DIR; $* >$DIR/$name.out 2>&1 </dev/null & echo \$! >$DIR/$name.pid
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

# ---- the evacuation case: every node starts EVAC_VMS VMs at once (and then as many raw requests)
evacuation() {
  local n kind target start pids out
  echo "== evacuation: $EVAC_VMS VMs x 4 disks at once on each of 3 nodes, $EVAC_PAR in flight per node" >&2
  for n in 2 3; do
    x $n "mkdir -p $DIR && printf 'lockspace = $LS\n' > $DIR/virtdlmd.conf" >&2
    background $n virtdlmd 'serving on' RUST_LOG=info "$DAEMON" --config $DIR/virtdlmd.conf --backend dlm \
      --socket $DIR/ctl.sock --admin-socket $DIR/admin.sock --journal $DIR/journal --node-name node$n
  done
  for kind in daemon raw; do
    target=$LS; [ $kind = daemon ] && target=$DIR/ctl.sock
    # A common start (Unix ms; the guests run on the host's clock) after every node has made its
    # VMs and disk files; a node that was not ready by then says how late it was (late_ms).
    start=$(( $(date +%s%3N) + 20000 ))
    pids=()
    for n in 1 2 3; do
      # Disks are named by path, cluster-wide: each node's VMs have disks (and numbers) of their own.
      x $n "$BENCH evac-$kind $target $EVAC_VMS $EVAC_PAR /srv/virtdlm-evac/$kind/node$n $start $((n * 10000))" \
        >"$EXTRA/evac-$kind-$n.out" 2>&1 &
      pids+=($!)
    done
    wait "${pids[@]}"
    for n in 1 2 3; do
      out=$(grep '^{' "$EXTRA/evac-$kind-$n.out" | tail -1)
      case $out in *'"wall_ms"'*) ;; *) die "evac-$kind on node$n: $(cat "$EXTRA/evac-$kind-$n.out")";; esac
      [ "$(jq .late_ms <<<"$out")" = 0 ] || die "evac-$kind: node$n was not ready at the common start: $out"
      jq -c --argjson node $n '. + {node: $node}' <<<"$out"
    done
  done | jq -s '{rows: .}' >"$EXTRA/evacuation.json" || die "evacuation figures"
}

# ---- a request waiting on a disk another node holds, and the others (after the evacuation:
# node 2's virtdlmd runs). Node 2's VM holds a disk; node 1's VM asks for it over and over with
# `wait_ms`, so that one of its requests always waits in the DLM's queue for node 2; node 1's
# "daemon" row (4 other disks, mastered on node 1) is timed before and while it waits. A lock
# over node 1's whole table held while a request waits would show as the bystander's requests
# taking about the wait each.
stall() {
  local held=/srv/virtdlm-stall/held.img quiet stalled waiter
  echo "== stall: node 2 holds a disk, node 1's VM waits for it ($STALL_WAIT_MS ms a request); $N samples of another VM before and meanwhile" >&2
  x 2 "sleep 3600 </dev/null >/dev/null 2>&1 & echo \$! >$DIR/stall-holder.pid
       $CLIENT $DIR/ctl.sock acquire:stall-holder:\$(cat $DIR/stall-holder.pid):EX=$held" | grep -q '"outcome":"ok"' ||
    die "stall: node 2's VM could not take $held"
  quiet=$(x 1 "$BENCH daemon $DIR/ctl.sock $N $LOCAL" | grep '^{' | tail -1)
  case $quiet in *'"median_us"'*) ;; *) die "stall: the bystander alone: ${quiet:-no output}";; esac
  x 1 "rm -f $DIR/stall-stop; python3 $WAITER $DIR/ctl.sock $held $STALL_WAIT_MS $DIR/stall-stop >$DIR/stall-waiter.out 2>&1 </dev/null &" >&2
  # Its first request is waiting by the time the bystander starts.
  sleep 1
  stalled=$(x 1 "$BENCH daemon $DIR/ctl.sock $N $LOCAL" | grep '^{' | tail -1)
  case $stalled in *'"median_us"'*) ;; *) die "stall: the bystander with a request waiting: ${stalled:-no output}";; esac
  x 1 "touch $DIR/stall-stop" >&2
  for _ in $(seq 1 $(( STALL_WAIT_MS / 100 + 50 ))); do
    waiter=$(x 1 "grep '^{' $DIR/stall-waiter.out | tail -1")
    [ -n "$waiter" ] && break
    sleep 0.1
  done
  case $waiter in *'"requests"'*) ;; *) die "stall: the waiter: $(x 1 "cat $DIR/stall-waiter.out")";; esac
  [ "$(jq '.answers | keys == ["conflict"]' <<<"$waiter")" = true ] ||
    die "stall: the waiter's requests were not all refused after waiting (the disk was not held?): $waiter"
  x 2 "kill \$(cat $DIR/stall-holder.pid)" >&2
  jq -n --argjson q "$quiet" --argjson s "$stalled" --argjson w "$waiter" \
    '{quiet: $q, stalled: $s, waiter: $w}' >"$EXTRA/stall.json" || die "stall figures"
}

# ---- syscalls per request counted in node 1: the libdlm floor and virtdlmd on the dlm backend
syscalls() {
  local k pid threads
  echo "== syscalls: strace -c in node 1 (floor: $SC_A and $SC_B samples; virtdlmd: $SC_N pairs)" >&2
  x 1 "command -v strace" >/dev/null || die "no strace in the guests (the host's root is theirs: apt-get install strace)"
  for k in $SC_A $SC_B; do
    x 1 "strace -f -c -o $DIR/sc-floor-$k.txt $BENCH raw-convert $LS $k $LOCAL >/dev/null && cat $DIR/sc-floor-$k.txt" \
      >"$EXTRA/sc-floor-$k.txt" || die "strace of the libdlm floor ($k samples)"
  done
  pid=$(x 1 "cat $DIR/virtdlmd.pid") || die "no pid of node 1's virtdlmd"
  # Its threads are attached one by one, not with -f: followed into the children it spawns
  # (dlm_tool status, now and then), strace leaves a child stopped for good in UML and the daemon
  # waits for it. A warm-up first, so that the runtime's threads exist; a thread started later
  # would not be counted: how many appeared is stored with the counts.
  x 1 "$BENCH daemon $DIR/ctl.sock 20 $LOCAL >/dev/null && ls /proc/$pid/task >$DIR/sc-tids
       strace -c -o $DIR/sc-daemon.txt \$(sed 's/^/-p /' $DIR/sc-tids) & s=\$!; sleep 2
       $BENCH daemon $DIR/ctl.sock $SC_N $LOCAL >/dev/null; r=\$?; sleep 0.5; kill -INT \$s; wait \$s
       ls /proc/$pid/task | sort - $DIR/sc-tids $DIR/sc-tids | uniq -u | wc -l >$DIR/sc-new-threads
       [ \$r = 0 ] && cat $DIR/sc-daemon.txt" >"$EXTRA/sc-daemon.txt" || die "strace of virtdlmd"
  threads=$(x 1 "wc -l <$DIR/sc-tids; cat $DIR/sc-new-threads" | tr '\n' ' ')
  python3 "$ROOT/tests/bench/report.py" strace-counts "$EXTRA/sc-floor-$SC_A.txt" "$EXTRA/sc-floor-$SC_B.txt" \
    "$EXTRA/sc-daemon.txt" | jq --argjson a $SC_A --argjson b $SC_B --argjson n $SC_N \
    --argjson attached "${threads%% *}" --argjson new "$(echo ${threads#* })" \
    '{floor_samples: [$a, $b], daemon_pairs: $n, floor_a: .[0], floor_b: .[1], daemon: .[2],
      daemon_threads_attached: $attached, daemon_threads_started_during: $new}' \
    >"$EXTRA/syscalls.json" || die "syscall counts"
}

# ---- adoption: node 1's virtdlmd holds ADOPT_VMS x ADOPT_DISKS locks, is killed -9 and restarted
# kill -9 of node 1's virtdlmd (pid $1) and a restart; prints adopt-restart's JSON line.
restart_node1() {
  local out
  x 1 "kill -9 $1; while [ -e /proc/$1 ]; do sleep 0.01; done" >&2
  out=$(x 1 "RUST_LOG=info $BENCH adopt-restart $DIR/ctl.sock $DIR/virtdlmd.out $DAEMON --config $DIR/virtdlmd.conf \
    --backend dlm --socket $DIR/ctl.sock --admin-socket $DIR/admin.sock --journal $DIR/journal --node-name node1" |
    grep '^{' | tail -1)
  case $out in *'"restart_ms"'*) echo "$out";; *) die "restart of virtdlmd: ${out:-no output}";; esac
}

adoption() {
  local pid i out empty rss_held rss_after journal restarted
  echo "== adoption: $ADOPT_VMS VMs x $ADOPT_DISKS disks through node 1's virtdlmd, kill -9, restart" >&2
  # First with no lock held (its NL anchors are not PERSISTENT: they go with it): the restart's
  # fixed cost (joining the lockspace and the CPG group, the journal), to be told from adoption's.
  empty=$(restart_node1 "$(x 1 "cat $DIR/virtdlmd.pid")") || exit 1
  pid=$(jq .pid <<<"$empty")
  x 1 "$BENCH adopt-fill $DIR/ctl.sock $ADOPT_VMS $ADOPT_DISKS /srv/virtdlm-adopt >$DIR/adopt-fill.out 2>&1 </dev/null &" >&2
  for i in $(seq 1 3600); do
    out=$(x 1 "grep '^{' $DIR/adopt-fill.out | tail -1")
    case $out in *'"ready"'*|*'"error"'*) break;; esac
    sleep 1
  done
  case $out in *'"ready"'*) ;; *) die "adopt-fill: ${out:-no answer in an hour}";; esac
  rss_held=$(x 1 "awk '/^VmRSS/{print \$2}' /proc/$pid/status")
  journal=$(x 1 "stat -c %s $DIR/journal")
  restarted=$(restart_node1 "$pid") || exit 1
  rss_after=$(x 1 "awk '/^VmRSS/{print \$2}' /proc/$(jq .pid <<<"$restarted")/status")
  jq -n --argjson fill "$out" --argjson r "$restarted" --argjson e "$empty" --argjson held "$rss_held" \
    --argjson after "$rss_after" --argjson journal "$journal" \
    '{vms: $fill.vms, per_vm: $fill.per_vm, locks: $fill.locks, take_ms: $fill.take_ms, rss_held_kib: $held,
      journal_bytes: $journal, restart_empty_ms: $e.restart_ms, restart_ms: $r.restart_ms,
      locks_after_restart: $r.locks, rss_after_restart_kib: $after}' \
    >"$EXTRA/adoption.json" || die "adoption figures"
  [ "$(jq .locks_after_restart "$EXTRA/adoption.json")" = "$(jq .locks "$EXTRA/adoption.json")" ] ||
    die "the restarted virtdlmd holds $(jq .locks_after_restart "$EXTRA/adoption.json") locks, not $(jq .locks "$EXTRA/adoption.json")"
}

rm -rf "$EXTRA" && mkdir -p "$EXTRA" || die "cannot make $EXTRA"
evacuation
stall
syscalls
adoption

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mkdir -p "$(dirname "$OUT")"
for r in "${RESULTS[@]}"; do jq -c --arg w "${r%% *}" '. + {master: $w}' <<<"${r#* }"; done |
  jq -s --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg cpu "${cpu:-unknown}" --argjson cores "$(nproc)" \
    --argjson mem "$(free -g | awk '/^Mem:/{print $2}')" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
    --arg kernel "$(uname -r)" --arg vm "${CL_VM:-uml}" --argjson n "$N" \
    --argjson prov "$(python3 "$ROOT/tests/bench/provenance.py" "journal_fs=tmpfs (guest /run)" log_level=info)" \
    '{date: $date, commit: $prov.commit, dirty: $prov.dirty, settings: $prov.settings,
      machine: {cpu: $cpu, cores: $cores, mem_gib: $mem, load: $load, kernel: $kernel},
      guests: "3 \($vm) guests", samples: $n, disks: 4, rows: .}' |
  jq --slurpfile evac "$EXTRA/evacuation.json" --slurpfile sc "$EXTRA/syscalls.json" \
    --slurpfile adopt "$EXTRA/adoption.json" --slurpfile stall "$EXTRA/stall.json" \
    '. + {evacuation: $evac[0], syscalls: $sc[0], adoption: $adopt[0], stall: $stall[0]}' \
    > "$OUT.new" && mv "$OUT.new" "$OUT" ||
  die "cannot write $OUT"
echo "== figures written to $OUT" >&2

echo
if [ -n "${BENCH_OUT:-}" ]; then python3 "$ROOT/tests/bench/report.py" show cluster "$OUT"; exit 0; fi
python3 "$ROOT/tests/bench/report.py" store cluster "$OUT"
