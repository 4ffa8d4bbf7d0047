#!/bin/bash
# Plugin ABI tier: the harness loads dlm.so exactly as libvirt does and drives every lifecycle
# against a virtdlmd (local backend) on temporary paths; then the same harness loads libvirt's
# own lockd.so (with a virtlockd of its own) to prove the harness against a plugin written
# elsewhere. Prints "peer: …" (lockd.so), "setup: …" and "N passed, N failed" (dlm.so only); exits non-zero if anything failed or could not run.
#   VIRTDLMD=/path/to/virtdlmd tests/abi/run.sh    use that daemon instead of building one
set -uo pipefail
cd "$(dirname "$0")/../.."
TOP=$PWD
LOCKD_SO=/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/lockd.so
VIRTLOCKD_SOCK=/run/libvirt/virtlockd-sock   # fixed for root; one virtlockd per host
T=$(mktemp -d /tmp/virt-dlm-abi.XXXXXX)
PASSED=0
FAILED=0
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null && for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    rm -rf "$T"
}
trap cleanup EXIT

# The "N passed, N failed" line counts dlm.so's assertions only; lockd.so's run (a peer, for
# comparison) and setup failures (build, daemons) are counted apart, and still fail the tier.
PEER_PASSED=0 PEER_FAILED=0 SETUP_FAILED=0
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }
setup_fail() { echo "FAIL (setup) $*"; SETUP_FAILED=$((SETUP_FAILED + 1)); }
result() {
    echo "peer: $PEER_PASSED passed, $PEER_FAILED failed"
    echo "setup: 0 passed, $SETUP_FAILED failed"
    echo "$PASSED passed, $FAILED failed"
}

# Adds the harness's own "N passed, N failed" line to the totals (PEER for a peer's run).
count() {
    local line p f
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -n 1)
    if [ -z "$line" ]; then
        if [ "${3:-}" = peer ]; then PEER_FAILED=$((PEER_FAILED + 1)); echo "FAIL $2: the harness printed no result (crashed?)"
        else fail "$2: the harness printed no result (crashed?)"; fi
        return
    fi
    p=${line%% passed*}; f=${line#*, }; f=${f%% failed}
    if [ "${3:-}" = peer ]; then PEER_PASSED=$((PEER_PASSED + p)); PEER_FAILED=$((PEER_FAILED + f))
    else PASSED=$((PASSED + p)); FAILED=$((FAILED + f)); fi
}

wait_socket() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.1; done; return 1; }

# ---- build: dlm.so (cargo names it libvirtdlm_plugin.so), installed under its real name
if ! cargo build -q -p plugin; then setup_fail "cargo build -p plugin"; result; exit 1; fi
install -m 0755 "${CARGO_TARGET_DIR:-target}"/debug/libvirtdlm_plugin.so "$T/dlm.so"
if [ -z "${VIRTDLMD:-}" ]; then
    cargo build -q -p lockmgr --bin virtdlmd || setup_fail "cargo build -p lockmgr --bin virtdlmd"
    VIRTDLMD=${CARGO_TARGET_DIR:-$TOP/target}/debug/virtdlmd
fi
gcc -O1 -Wall -Wextra -Werror -o "$T/harness" tests/abi/harness.c tests/abi/script.c -ldl || setup_fail "gcc harness.c"

mkdir -p "$T/dlm-disks/leases" "$T/lockd-disks/leases"
for d in dlm-disks lockd-disks; do
    for f in rw shared base hot; do truncate -s 1M "$T/$d/$f.img"; done
done
echo 'socket = not-a-quoted-path' > "$T/bad.conf"

# ---- dlm.so against virtdlmd (local backend)
if [ -x "$T/harness" ] && [ -x "$VIRTDLMD" ]; then
    cat > "$T/qemu-dlm.conf" <<EOC
socket = "$T/virtdlmd.sock"
timeout_ms = 5000
EOC
    RUST_LOG=info "$VIRTDLMD" --backend local --socket "$T/virtdlmd.sock" --admin-socket "$T/admin.sock" \
        --journal "$T/journal" --node-name abi-node >"$T/virtdlmd.log" 2>&1 &
    PIDS+=($!)
    if wait_socket "$T/virtdlmd.sock"; then
        echo "== dlm.so (virtdlmd pid ${PIDS[-1]}, local backend)"
        timeout 120 "$T/harness" -p "$T/dlm.so" -c "$T/qemu-dlm.conf" -b "$T/bad.conf" -d "$T/dlm-disks" -k dlm \
            | tee "$T/dlm.out"
        count "$T/dlm.out" dlm.so
    else
        setup_fail "virtdlmd ($VIRTDLMD) did not create $T/virtdlmd.sock within 10 s; its log:"
        sed 's/^/    /' "$T/virtdlmd.log"
    fi
else
    setup_fail "dlm.so cannot be run: no harness or no virtdlmd binary at $VIRTDLMD"
fi

# ---- lockd.so against a virtlockd of our own
# One virtlockd per host: take turns with the other scripts that start libvirt daemons
# (held on fd 9 until this script exits; virtlockd does not inherit it).
exec 9>/run/lock/virt-dlm-libvirtd.lock
if ! flock -n 9; then
    echo "waiting for another run that starts libvirt daemons to finish (/run/lock/virt-dlm-libvirtd.lock)"
    flock -w 1200 9 || setup_fail "/run/lock/virt-dlm-libvirtd.lock is still held after 20 min"
fi
if [ ! -r "$LOCKD_SO" ]; then
    setup_fail "$LOCKD_SO is missing (package libvirt-daemon); run tests/install-deps.sh"
elif [ -S "$VIRTLOCKD_SOCK" ] || pgrep -x virtlockd >/dev/null; then
    setup_fail "a virtlockd is already running ($VIRTLOCKD_SOCK): the lockd comparison needs its own; stop it first"
else
    cat > "$T/virtlockd.conf" <<EOC
log_outputs = "3:file:$T/virtlockd.log"
EOC
    echo 'auto_disk_leases = 1' > "$T/qemu-lockd.conf"
    /usr/sbin/virtlockd -d -f "$T/virtlockd.conf" -p "$T/virtlockd.pid" 9>&-
    if wait_socket "$VIRTLOCKD_SOCK" && [ -s "$T/virtlockd.pid" ]; then
        PIDS+=("$(cat "$T/virtlockd.pid")")
        echo "== lockd.so (virtlockd pid ${PIDS[-1]})"
        timeout 120 "$T/harness" -p "$LOCKD_SO" -c "$T/qemu-lockd.conf" -b "$T/bad.conf" -d "$T/lockd-disks" -k lockd \
            | tee "$T/lockd.out"
        count "$T/lockd.out" lockd.so peer
    else
        setup_fail "virtlockd did not start"
    fi
fi

result
[ "$FAILED" -eq 0 ] && [ "$PEER_FAILED" -eq 0 ] && [ "$SETUP_FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]
