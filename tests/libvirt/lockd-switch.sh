# Sourced by tests/libvirt/run.sh: docs/GUIDE.md "5. Moving from sanlock or lockd", its steps as
# written, on this host. A VM runs under Debian's lockd.so with a virtlockd of our own; then
# the guide's steps 2-5 switch libvirtd to virt-dlm. Needs the run.sh helpers (ok, refused,
# holds_disk, lacks) and domains vdlm-t-m (disk $A/mig.img) and vdlm-t-n (same disk, $B).

VIRTLOCKD_SOCK=/run/libvirt/virtlockd-sock   # fixed for root; one virtlockd per host
LOCKD_SO=/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/lockd.so
VIRTLOCKD_PID=

set_lock_manager() { # the one lock_manager line of the copy's qemu.conf (libvirt reads the first)
    sed -i "s/^lock_manager = .*/lock_manager = \"$1\"/" "$T/etc-libvirt/qemu.conf"
}

start_virtlockd() {
    printf 'log_outputs = "3:file:%s/virtlockd.log"\n' "$T" > "$T/virtlockd.conf"
    /usr/sbin/virtlockd -d -f "$T/virtlockd.conf" -p "$T/virtlockd.pid" 9>&- || return 1
    wait_for 10 test -S "$VIRTLOCKD_SOCK" -a -s "$T/virtlockd.pid" || return 1
    VIRTLOCKD_PID=$(cat "$T/virtlockd.pid")
    OUR_PIDS+=("$VIRTLOCKD_PID")
}

virtlockd_holds() { # a POSIX lock of virtlockd's on FILE's inode
    local ino; ino=$(stat -c %i "$1")
    awk -v p="$VIRTLOCKD_PID" -v i=":$ino\$" '$2 == "POSIX" && $5 == p && $6 ~ i { f = 1 } END { exit !f }' /proc/locks
}

test_lockd_switch() {
    echo "---- moving from lockd (GUIDE 5)"
    if [ ! -r "$LOCKD_SO" ]; then
        as setup fail "lockd: $LOCKD_SO is missing (package libvirt-daemon); run tests/install-deps.sh"; return
    fi
    if [ -S "$VIRTLOCKD_SOCK" ] || pgrep -x virtlockd >/dev/null; then
        as setup fail "lockd: a virtlockd is already running ($VIRTLOCKD_SOCK): this test needs its own; stop it first"; return
    fi
    # libvirtd on lockd: lockd.so next to dlm.so in the plugin dir, leases on the disks themselves
    stop_libvirtd
    ln -sf "$LOCKD_SO" "$T/plugin/lockd.so"
    echo 'auto_disk_leases = 1' >> "$T/etc-libvirt/qemu-lockd.conf"
    set_lock_manager lockd
    start_virtlockd || { as setup fail "lockd: virtlockd did not start"; return; }
    start_libvirtd || { as setup fail "lockd: libvirtd with lock_manager = \"lockd\" did not start"; return; }
    as peer ok "lockd: m starts under lockd" virsh_ start vdlm-t-m
    as peer ok "lockd: virtlockd holds m's disk (a POSIX lock of its pid in /proc/locks)" virtlockd_holds "$A/mig.img"
    ok "lockd: virt-dlm does not see a disk locked by lockd (mixing managers is unsafe)" lacks vdlm-t-m

    # the guide's steps 2-5; step 2 is `virsh destroy`: these guests have no OS to answer
    # the ACPI request that `virsh shutdown` sends
    as setup ok "step 2: destroy m" virsh_ destroy vdlm-t-m
    set_lock_manager dlm
    stop_libvirtd
    start_libvirtd || { as setup fail "step 3: libvirtd did not restart with lock_manager = \"dlm\""; return; }
    as setup pass "step 3: libvirtd restarted with lock_manager = \"dlm\" (pid $LIBVIRTD_PID)"
    stop_pid "$VIRTLOCKD_PID"
    as setup ok "step 4: virtlockd stopped" bash -c "! kill -0 $VIRTLOCKD_PID 2>/dev/null"
    ok "step 5: m starts under virt-dlm" virsh_ start vdlm-t-m
    ok "step 5: virtdlm locks lists m's disk" holds_disk vdlm-t-m "$A/mig.img"
    locks > "$T/lockd-switch-locks.txt" 2>&1
    sed 's/^/    /' "$T/lockd-switch-locks.txt"
    refused "step 5: n on m's disk refused, m named" "resource busy: .*$A/mig.img.* held exclusively by VM vdlm-t-m" \
        virsh_ start vdlm-t-n
}
