#!/bin/bash
# Benchmark (not a test): virt-dlm beside libvirt's other lock managers, in one run on one
# host, through the same driver (tests/bench/peerbench.c, libvirt's lock-driver ABI):
#   nop      the floor: a plugin that locks nothing (libvirt's built-in default)
#   dlm      dlm.so + virtdlmd, local backend, journal on tmpfs as under /run
#   lockd    Debian's lockd.so + virtlockd, default (direct) mode: auto_disk_leases = 1
#   sanlock  Debian's sanlock.so + a sanlock daemon (-w 0: no watchdog daemon), disk leases
#            created by libvirt in a lease directory on the disk filesystem
# Each peer is set up here, per its documentation, and stopped (by pid) before the next one.
# Then the scale figures of virtdlmd (crates/lockmgr/examples/bench.rs: 10,000 held locks,
# RSS, kill -9 and restart). Finally tests/bench/report.py compares the figures with those
# stored in docs/bench/peers.json, prints a REGRESSION line for every figure more than 20%
# worse, stores the new figures and regenerates docs/PERFORMANCE.md; the exit status is 1
# on a regression (the stored figures then stay as they were; BENCH_ACCEPT=1 stores anyway).
#
#   tests/bench/peers.sh                       (make bench-peers) needs root; ~5 min
#   BENCH_K=100 BENCH_VMS=100 BENCH_DISKS=4 BENCH_ROUNDS=5   iterations, concurrent VMs,
#                                              disks per VM, concurrent rounds (1 unmeasured)
#   BENCH_OUT=DIR tests/bench/peers.sh         only write the figures to DIR (no compare,
#                                              no store, no scale run unless BENCH_SCALE=1)
#   BENCH_PEERS="nop dlm"                      a subset
# Only one virtlockd and one sanlock daemon can run per host (fixed socket paths): the script
# takes /run/lock/virt-dlm-libvirtd.lock, as every script that starts libvirt daemons does,
# and refuses to run next to a virtlockd or sanlock daemon it did not start.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
K=${BENCH_K:-100}
VMS=${BENCH_VMS:-100}
N=${BENCH_DISKS:-4}
ROUNDS=${BENCH_ROUNDS:-5}
PEERS=${BENCH_PEERS:-nop dlm lockd sanlock}
if [ -n "${BENCH_OUT:-}" ]; then SCALE=${BENCH_SCALE:-0}; else SCALE=${BENCH_SCALE:-1}; fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
LOCK_DRIVERS=/usr/lib/x86_64-linux-gnu/libvirt/lock-driver
VIRTLOCKD_SOCK=/run/libvirt/virtlockd-sock   # fixed for root
FAILED=()
PIDS=()

die() { echo "bench-peers FAILED: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
stop_pid() {
    alive "$1" || return 0
    kill -TERM "$1" 2>/dev/null
    for _ in $(seq 100); do alive "$1" || return 0; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null
}
wait_for() { local n=$(($1 * 10)); shift; for _ in $(seq "$n"); do "$@" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

[ "$(id -u)" = 0 ] || die "needs root (virtlockd and sanlock serve root's fixed sockets)"
for f in "$LOCK_DRIVERS/lockd.so" "$LOCK_DRIVERS/sanlock.so" /usr/sbin/virtlockd /usr/sbin/sanlock; do
    [ -e "$f" ] || die "$f is missing: run tests/install-deps.sh (libvirt-daemon, libvirt-sanlock, sanlock)"
done

exec 9>/run/lock/virt-dlm-libvirtd.lock
if ! flock -n 9; then
    log "waiting for another run that starts libvirt daemons to finish (/run/lock/virt-dlm-libvirtd.lock)"
    flock -w 1200 9 || die "/run/lock/virt-dlm-libvirtd.lock is still held after 20 min"
fi
# (-r: not counting zombies, which this host's PID 1 may reap late)
if pgrep -x -r R,S,D,T virtlockd >/dev/null || [ -S "$VIRTLOCKD_SOCK" ]; then
    die "a virtlockd is already running ($VIRTLOCKD_SOCK): the lockd peer needs its own; stop it first"
fi
pgrep -x -r R,S,D,T sanlock >/dev/null && die "a sanlock daemon is already running: the sanlock peer needs its own; stop it first"

log "building (release): dlm.so, virtdlmd, the scale example, the C driver"
cargo build -q --release --locked -p plugin || die "cargo build -p plugin"
cargo build -q --release --locked -p lockmgr --bin virtdlmd || die "cargo build -p lockmgr --bin virtdlmd"
if [ "$SCALE" = 1 ]; then
    cargo build -q --release --locked -p lockmgr --example bench || die "cargo build -p lockmgr --example bench"
fi
# Disk leases must be reachable by the sanlock user and on a filesystem with O_DIRECT (not tmpfs).
T=$(mktemp -d /var/tmp/virt-dlm-peers.XXXXXX) || die "mktemp"
chmod 0755 "$T"
RUNDIR=/run/virt-dlm-peers.$$
mkdir -p "$RUNDIR"
# The journal lives under /run, tmpfs on a systemd host, where its fdatasync costs nothing.
# Where /run is a disk filesystem (some containers and test machines), each grant and release
# would also time a disk flush that deployments do not pay: the journal then goes to /dev/shm.
JOURNAL_DIR=$RUNDIR
if [ "$(stat -f -c %T /run)" != tmpfs ]; then
    JOURNAL_DIR=/dev/shm/virt-dlm-peers.$$
    mkdir -p "$JOURNAL_DIR"
    log "/run is not tmpfs here ($(stat -f -c %T /run)): virtdlmd's journal goes to $JOURNAL_DIR"
fi
cleanup() {
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    rm -rf "$T" "$RUNDIR" "$JOURNAL_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
gcc -O2 -Wall -Wextra -Werror -o "$T/peerbench" tests/bench/peerbench.c -ldl || die "gcc peerbench.c"
gcc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$T/nop.so" tests/bench/nop.c || die "gcc nop.c"
gcc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$T/rlimit-shim.so" tests/bench/rlimit-shim.c -ldl || die "gcc rlimit-shim.c"
RES=${BENCH_OUT:-$T/results}
mkdir -p "$RES"

{
    echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo " \"cpu\": \"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)\", \"cores\": $(nproc),"
    echo " \"mem_gib\": $(free -g | awk '/^Mem:/{print $2}'), \"kernel\": \"$(uname -r)\","
    echo " \"load_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
    echo " \"packages\": \"$(dpkg-query -W -f='${Package} ${Version}, ' libvirt-daemon libvirt-sanlock sanlock 2>/dev/null | sed 's/, $//')\","
    echo " \"iterations\": $K, \"vms\": $VMS, \"disks\": $N, \"rounds\": $ROUNDS,"
    # The commit measured, the machine, its load and the settings a figure depends on
    # (a change of settings needs a "settings:" note in the commit that stores it: docs/TESTING.md).
    echo " \"provenance\": $(python3 tests/bench/provenance.py journal_fs="fs:$JOURNAL_DIR" \
        scale_journal_fs=fs:/dev/shm log_level=info)}"
} > "$RES/env.json"

# Runs the driver against one plugin; records a failure but goes on with the next peer.
bench() { # label plugin conf [peerbench options]
    local label=$1 so=$2 conf=$3; shift 3
    mkdir -p "$T/disks-$label"
    log "$label: $K iterations of $N disks, then $VMS VMs x $N disks concurrently"
    "$T/peerbench" -p "$so" -c "$conf" -d "$T/disks-$label" -l "$label" -k "$K" -n "$N" -V "$VMS" \
        -r "$ROUNDS" -o "$RES/$label.json" "$@" || FAILED+=("$label: the driver failed (see above)")
}

peer_nop() {
    : > "$T/qemu-nop.conf"
    bench nop "$T/nop.so" "$T/qemu-nop.conf" -x
}

peer_dlm() {
    local sock=$RUNDIR/virtdlmd.sock pid
    printf 'socket = "%s"\ntimeout_ms = 30000\n' "$sock" > "$T/qemu-dlm.conf"
    RUST_LOG=info "$TARGET/release/virtdlmd" --backend local --socket "$sock" --admin-socket "$RUNDIR/admin.sock" \
        --journal "$JOURNAL_DIR/journal" --node-name bench >"$T/virtdlmd.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    if wait_for 10 test -S "$sock"; then
        bench dlm "$TARGET/release/libvirtdlm_plugin.so" "$T/qemu-dlm.conf"
    else
        FAILED+=("dlm: virtdlmd did not start: $(tail -3 "$T/virtdlmd.log")")
    fi
    stop_pid "$pid"
}

peer_lockd() {
    local pid
    printf 'log_outputs = "3:file:%s/virtlockd.log"\n' "$T" > "$T/virtlockd.conf"
    echo 'auto_disk_leases = 1' > "$T/qemu-lockd.conf"
    /usr/sbin/virtlockd -d -f "$T/virtlockd.conf" -p "$T/virtlockd.pid"
    if wait_for 10 test -S "$VIRTLOCKD_SOCK" -a -s "$T/virtlockd.pid"; then
        pid=$(cat "$T/virtlockd.pid")
        PIDS+=("$pid")
        bench lockd "$LOCK_DRIVERS/lockd.so" "$T/qemu-lockd.conf"
        stop_pid "$pid"
        wait_for 5 test ! -S "$VIRTLOCKD_SOCK"
    else
        FAILED+=("lockd: virtlockd did not start")
    fi
}

# sanlock's lockspace for libvirt's automatic disk leases (host id 1).
sanlock_spec() { echo "__LIBVIRT__DISKS__:1:$T/sanlock-leases/__LIBVIRT__DISKS__:0"; }
peer_sanlock() {
    local pid opts=(-w 0) env=()
    # sanlock raises RLIMIT_MEMLOCK to infinity and mlocks itself; where root may not (a
    # container without CAP_SYS_RESOURCE) it would exit at once.
    if ! (ulimit -l unlimited) 2>/dev/null; then
        log "sanlock: this host refuses an unlimited RLIMIT_MEMLOCK: -l 0 and tests/bench/rlimit-shim.c"
        opts+=(-l 0)
        env=(LD_PRELOAD="$T/rlimit-shim.so")
    fi
    mkdir -p "$T/sanlock-leases"
    chown sanlock:sanlock "$T/sanlock-leases"
    # Debian's daemon runs as user sanlock: libvirt must chown the lease files it creates.
    cat > "$T/qemu-sanlock.conf" <<EOC
auto_disk_leases = 1
disk_lease_dir = "$T/sanlock-leases"
host_id = 1
require_lease_for_disks = 0
user = "sanlock"
group = "sanlock"
EOC
    # An earlier daemon's pid file stays behind (none runs: checked above).
    rm -f /run/sanlock/sanlock.pid
    env "${env[@]}" /usr/sbin/sanlock daemon "${opts[@]}" || { FAILED+=("sanlock: the daemon did not start"); return; }
    sanlock_up() { [ -S /run/sanlock/sanlock.sock ] && pid=$(cat /run/sanlock/sanlock.pid) && alive "$pid"; }
    if wait_for 30 sanlock_up; then
        PIDS+=("$pid")
        log "sanlock: daemon pid $pid; libvirt's init joins the lockspace (about 2 x io_timeout + 1 s)"
        bench sanlock "$LOCK_DRIVERS/sanlock.so" "$T/qemu-sanlock.conf"
        sanlock client rem_lockspace -s "$(sanlock_spec)" >/dev/null 2>&1
        sanlock client shutdown >/dev/null 2>&1
        wait_for 10 bash -c "! kill -0 $pid"
        stop_pid "$pid"
    else
        FAILED+=("sanlock: the daemon did not start within 30 s (see /var/log/sanlock.log)")
        sanlock client shutdown >/dev/null 2>&1   # in case it came up late
    fi
}

for p in $PEERS; do
    case $p in
        nop|dlm|lockd|sanlock) "peer_$p" ;;
        *) die "unknown peer $p (nop dlm lockd sanlock)" ;;
    esac
done

if [ "$SCALE" = 1 ]; then
    log "scale: virtdlmd with 10,000 held locks, kill -9 and restart"
    "$TARGET/release/examples/bench" --dir /dev/shm --virtdlmd "$TARGET/release/virtdlmd" --iterations "${BENCH_SCALE_ITERATIONS:-500}" \
        --json "$RES/scale.json" >&2 || FAILED+=("scale: crates/lockmgr/examples/bench failed")
fi
echo "{\"load_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" > "$RES/env-after.json"

echo
for f in "${FAILED[@]}"; do echo "FAILED $f"; done
if [ -n "${BENCH_OUT:-}" ]; then
    python3 tests/bench/report.py show "$RES"
    [ ${#FAILED[@]} -eq 0 ]
    exit
fi
[ ${#FAILED[@]} -eq 0 ] || die "${#FAILED[@]} peer(s) failed; nothing stored"
python3 tests/bench/report.py store peers "$RES"
