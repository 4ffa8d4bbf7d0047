#!/bin/bash
# Plugin ABI tier: the harness loads dlm.so exactly as libvirt does and drives every lifecycle
# against a virtdlmd (local backend) on temporary paths; then the same harness loads libvirt's
# own lockd.so (with a virtlockd of its own) to prove the harness against a plugin written
# elsewhere. Prints "N passed, N failed"; exits non-zero if anything failed or could not run.
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

fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }

# Adds the harness's own "N passed, N failed" line to the totals.
count() {
    local line p f
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -n 1)
    if [ -z "$line" ]; then fail "$2: the harness printed no result (crashed?)"; return; fi
    p=${line%% passed*}; f=${line#*, }; f=${f%% failed}
    PASSED=$((PASSED + p)); FAILED=$((FAILED + f))
}

wait_socket() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.1; done; return 1; }

# ---- build: the plugin on its own, so that the daemon's features never leak into dlm.so
if ! cargo build -q -p plugin; then fail "cargo build -p plugin"; echo "$PASSED passed, $FAILED failed"; exit 1; fi
install -m 0755 "${CARGO_TARGET_DIR:-target}"/debug/libdlm.so "$T/dlm.so"
if [ -z "${VIRTDLMD:-}" ]; then
    cargo build -q -p lockmgr --bin virtdlmd || fail "cargo build -p lockmgr --bin virtdlmd"
    VIRTDLMD=${CARGO_TARGET_DIR:-$TOP/target}/debug/virtdlmd
fi
gcc -O1 -Wall -Wextra -Werror -o "$T/harness" tests/abi/harness.c tests/abi/script.c -ldl || fail "gcc harness.c"

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
        fail "virtdlmd ($VIRTDLMD) did not create $T/virtdlmd.sock within 10 s; its log:"
        sed 's/^/    /' "$T/virtdlmd.log"
    fi
else
    fail "dlm.so cannot be run: no harness or no virtdlmd binary at $VIRTDLMD"
fi

# ---- lockd.so against a virtlockd of our own
# One virtlockd per host: take turns with the other scripts that start libvirt daemons
# (held on fd 9 until this script exits; virtlockd does not inherit it).
exec 9>/run/lock/virt-dlm-libvirtd.lock
if ! flock -n 9; then
    echo "waiting for another run that starts libvirt daemons to finish (/run/lock/virt-dlm-libvirtd.lock)"
    flock -w 1200 9 || fail "/run/lock/virt-dlm-libvirtd.lock is still held after 20 min"
fi
if [ ! -r "$LOCKD_SO" ]; then
    fail "$LOCKD_SO is missing (package libvirt-daemon); run tests/install-deps.sh"
elif [ -S "$VIRTLOCKD_SOCK" ] || pgrep -x virtlockd >/dev/null; then
    fail "a virtlockd is already running ($VIRTLOCKD_SOCK): the lockd comparison needs its own; stop it first"
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
        count "$T/lockd.out" lockd.so
    else
        fail "virtlockd did not start"
    fi
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]
