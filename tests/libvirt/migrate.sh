# Sourced by tests/libvirt/run.sh: docs/GUIDE.md "6. Live migration" for real. libvirt refuses to
# migrate to its own host, so a second libvirtd plays the destination host: its own mount and
# UTS namespaces with private /etc/libvirt, /run/libvirt, /var/lib/libvirt and
# /var/log/libvirt, its own hostname and host_uuid, listening on TCP 127.0.0.1:$DST_PORT.
# Both libvirtds load dlm.so and talk to the one virtdlmd (local backend): one lock table,
# which is what the DLM is to every libvirtd of a cluster. The images are under $T (/tmp),
# the same path on both "hosts": shared storage. Needs the run.sh helpers and domain
# vdlm-t-m running on the source (the first libvirtd) with disk $A/mig.img.

DST=$T/dst
DST_PORT=16519
DST_URI=qemu+tcp://127.0.0.1:$DST_PORT/system
DST_PID=
MIG_URI=tcp://127.0.0.1:49252

vdst() { virsh -q -c "$DST_URI" "$@"; }
dst_qemu_pid() { cat "$DST/run/qemu/$1.pid" 2>/dev/null; }

start_dst_libvirtd() {
    mkdir -p "$DST/run" "$DST/log/qemu"
    cp -a /var/lib/libvirt "$DST/lib"
    rm -rf "$DST/etc" && cp -a "$T/etc-libvirt" "$DST/etc"
    rm -f "$DST/etc/qemu/"*.xml
    cat >> "$DST/etc/libvirtd.conf" <<EOC
listen_tls = 0
listen_tcp = 1
listen_addr = "127.0.0.1"
tcp_port = "$DST_PORT"
auth_tcp = "none"
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
EOC
    # No virtlogd in this /run/libvirt, no cgroups shared with the source's; the incoming
    # migration goes to 127.0.0.1, named by `virsh migrate --migrateuri` (libvirt refuses a
# loopback migration_host or migration_address, and the source cannot resolve the
# destination's hostname).
    cat >> "$DST/etc/qemu.conf" <<EOC
stdio_handler = "file"
cgroup_controllers = [ ]
migration_port_min = 49252
migration_port_max = 49260
EOC
    unshare --mount --uts --propagation private sh -c "
        hostname vdlm-dst &&
        mount --bind '$DST/etc' /etc/libvirt &&
        mount --bind '$DST/run' /run/libvirt &&
        mount --bind '$DST/lib' /var/lib/libvirt &&
        mount --bind '$DST/log' /var/log/libvirt &&
        exec env LIBVIRT_LOCK_MANAGER_PLUGIN_DIR='$T/plugin' \
            LIBVIRT_LOG_FILTERS='1:locking 3:*' LIBVIRT_LOG_OUTPUTS='1:file:$DST/libvirtd.log' \
            /usr/sbin/libvirtd --listen --daemon --pid-file '$DST/libvirtd.pid'" 9>&- || return 1
    wait_for 20 test -s "$DST/libvirtd.pid" || { echo "destination libvirtd wrote no pid file" >&2; return 1; }
    DST_PID=$(cat "$DST/libvirtd.pid")
    OUR_PIDS+=("$DST_PID")
    if ! wait_for 30 vdst version; then
        echo "destination libvirtd (pid $DST_PID) does not answer; last log lines:" >&2
        tail -n 20 "$DST/libvirtd.log" >&2
        return 1
    fi
}

dst_cleanup() {
    local f
    alive "$DST_PID" && for d in $(vdst list --all --name 2>/dev/null | grep "^$LV_PREFIX"); do
        vdst destroy "$d" >/dev/null 2>&1
    done
    for f in "$DST"/run/qemu/"$LV_PREFIX"*.pid; do
        [ -e "$f" ] && stop_pid "$(cat "$f")" KILL
    done
    stop_pid "$DST_PID"
}

# Samples the lock table until $T/mig.done exists; one line per sample: the number of
# exclusive locks on $1 and their holders' pids.
sample_holders() {
    while [ ! -e "$T/mig.done" ]; do
        locks --json 2>/dev/null | tr -d '\n ' | grep -o "{[^}]*\"identity\":\"$1\"[^}]*}" \
            | grep '"mode":"EX"' | grep -o '"pid":[0-9]*' | tr '\n' ' '
        echo
        sleep 0.05
    done
}

test_migration() {
    echo "---- live migration (GUIDE 6)"
    start_dst_libvirtd || { fail "migration: the destination libvirtd did not start"; return; }
    pass "migration: destination libvirtd (pid $DST_PID, hostname vdlm-dst) listens on $DST_URI"
    local src dst from
    src=$(qemu_pid vdlm-t-m)
    ok "migration: m's disk is held by the source's QEMU (pid $src)" holds_pid "$A/mig.img" "$src"
    from=$(wc -l < "$T/virtdlmd.log")
    rm -f "$T/mig.done"
    sample_holders "$A/mig.img" > "$T/mig.samples" &
    local sampler=$!
    # --unsafe: libvirt sees a local file system under the image (it is one, shared by the
    # two "hosts" here) and would refuse; on real hosts the shared storage is recognised.
    ok "migration: virsh migrate --live --unsafe vdlm-t-m $DST_URI --migrateuri $MIG_URI" \
        virsh_ migrate --live --unsafe vdlm-t-m "$DST_URI" --migrateuri "$MIG_URI"
    touch "$T/mig.done"; wait "$sampler"
    dst=$(dst_qemu_pid vdlm-t-m)
    ok "migration: m runs on the destination" test "$(vdst domstate vdlm-t-m 2>/dev/null | head -n 1)" = running
    ok "migration: m is shut off on the source" state_is vdlm-t-m "shut off"
    ok "migration: m's disk is held by the destination's QEMU (pid ${dst:-none})" holds_pid "$A/mig.img" "$dst"
    locks > "$T/migrate-locks.txt" 2>&1
    sed 's/^/    /' "$T/migrate-locks.txt"
    local two
    two=$(grep -c ':[0-9]* "pid":' "$T/mig.samples")
    if [ "$two" -eq 0 ] && [ -s "$T/mig.samples" ]; then
        pass "migration: never two exclusive holders ($(wc -l < "$T/mig.samples") samples of the table during the migration)"
    else
        fail "migration: two exclusive holders in $two of the samples: $(grep ':[0-9]* "pid":' "$T/mig.samples" | head -n 3 | tr '\n' ' ')"
    fi
    # virtdlmd logs every lock change: the source's release comes before the destination's grant
    tail -n +"$((from + 1))" "$T/virtdlmd.log" | grep 'vm=vdlm-t-m' \
        | grep -E ' (granted|released|owner registered) ' > "$T/mig.changes"
    sed 's/^/    /' "$T/mig.changes"
    if awk '/released/ && /mig.img/ { r = NR } /granted/ && /mig.img/ { g = NR } END { exit !(r && g && r < g) }' "$T/mig.changes"; then
        pass "migration: virtdlmd released m's disk for the source before granting it to the destination"
    else
        fail "migration: virtdlmd's log does not show release-then-grant of m's disk"
    fi
    refused "migration: n on the source, on m's disk, still refused, m named" \
        "resource busy: .*$A/mig.img.* held exclusively by VM vdlm-t-m" virsh_ start vdlm-t-n
    ok "migration: destroy m on the destination" vdst destroy vdlm-t-m
    ok "migration: m's lock is released" wait_for 5 lacks vdlm-t-m
}

holds_pid() { # holds_pid DISK PID: PID holds DISK in virtdlmd's table
    [ -n "$2" ] && locks --json | tr -d '\n ' | grep -q "\"identity\":\"$1\"[^}]*\"pid\":$2[,}]"
}
