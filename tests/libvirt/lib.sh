# Shared by tests/libvirt/run.sh and tests/demo.sh: a real libvirtd 9.0 with lock_manager =
# "dlm", started in a private mount namespace so that /etc is never touched, plus a virtdlmd
# on the local backend. Everything lives under $T; everything started is stopped by pid.
#
# Method: /etc/libvirt is copied to $T/etc-libvirt, `lock_manager = "dlm"` is appended to the
# copy's qemu.conf and our qemu-dlm.conf added; `unshare --mount` bind-mounts the copy over
# /etc/libvirt and execs libvirtd with LIBVIRT_LOCK_MANAGER_PLUGIN_DIR pointing at dlm.so.
# /run/libvirt stays shared, so plain `virsh -c qemu:///system` works from outside.
#
# Needs: T (work dir), TOP (source tree). Optional: VIRTDLMD, VIRTDLM (binaries to use).

LV_URI=qemu:///system
LV_PREFIX=${LV_PREFIX:-vdlm-}
OUR_PIDS=()
LIBVIRTD_PID=
VIRTDLMD_PID=

virsh_() { virsh -q -c "$LV_URI" "$@"; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

stop_pid() {
    local p=$1 sig=${2:-TERM}
    alive "$p" || return 0
    kill "-$sig" "$p" 2>/dev/null
    for _ in $(seq 100); do alive "$p" || return 0; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
}

wait_for() { # wait_for SECONDS CMD...: polls CMD every 0.1 s
    local n=$(($1 * 10)); shift
    for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}

# Runs of this tier and the demo take turns (host-wide lock on fd 9, held until the script
# exits; the daemons started below do not inherit it). Then refuses to run next to any other
# libvirtd: the sockets under /run/libvirt are shared.
LV_LOCK=/run/lock/virt-dlm-libvirtd.lock
lv_preflight() {
    local why=""
    exec 9>"$LV_LOCK"
    if ! flock -n 9; then
        echo "waiting for another libvirt tier or demo run to finish ($LV_LOCK)" >&2
        flock -w 1200 9 || { echo "cannot run: $LV_LOCK is still held after 20 min" >&2; return 1; }
    fi
    pgrep -x libvirtd >/dev/null && why="a libvirtd is already running (pid $(pgrep -x libvirtd | tr '\n' ' '))"
    [ -x /usr/sbin/libvirtd ] || why="libvirtd is not installed (run tests/install-deps.sh)"
    [ -x /usr/bin/qemu-system-x86_64 ] || why="qemu-system-x86_64 is not installed (run tests/install-deps.sh)"
    command -v unshare >/dev/null || why="unshare (util-linux) is missing"
    [ "$(id -u)" = 0 ] || why="this needs root (libvirtd, mount namespaces)"
    if [ -n "$why" ]; then echo "cannot run: $why" >&2; return 1; fi
}

# Builds dlm.so (cargo names it libvirtdlm_plugin.so), virtdlmd and virtdlm.
# PROFILE=release uses (and builds) release binaries; default debug.
lv_build() {
    local profile=${PROFILE:-debug} flag="" out=${CARGO_TARGET_DIR:-$TOP/target}
    [ "$profile" = release ] && flag=--release
    ( cd "$TOP" && cargo build -q $flag -p plugin ) || return 1
    mkdir -p "$T/plugin"
    install -m 0755 "$out/$profile/libvirtdlm_plugin.so" "$T/plugin/dlm.so"   # new inode, never in place
    if [ -z "${VIRTDLMD:-}" ]; then
        ( cd "$TOP" && cargo build -q $flag -p lockmgr -p cli --bin virtdlmd --bin virtdlm ) || return 1
        VIRTDLMD=$out/$profile/virtdlmd
    fi
    VIRTDLM=${VIRTDLM:-$(dirname "$VIRTDLMD")/virtdlm}
}

# The daemon's lock table, through the read-only admin socket.
locks() { "$VIRTDLM" --admin-socket "$T/virtdlmd-admin.sock" "$@" locks; }

# virtdlmd on the local backend; extra virtdlmd.conf lines on stdin.
start_virtdlmd() {
    cat > "$T/virtdlmd.conf"
    cat >> "$T/virtdlmd.conf" <<EOC
backend = local
socket = $T/virtdlmd.sock
admin_socket = $T/virtdlmd-admin.sock
journal = $T/journal
node_name = ${NODE_NAME:-$(hostname)}
EOC
    RUST_LOG=${RUST_LOG:-info} "$VIRTDLMD" -c "$T/virtdlmd.conf" >>"$T/virtdlmd.log" 2>&1 9>&- &
    VIRTDLMD_PID=$!
    OUR_PIDS+=("$VIRTDLMD_PID")
    if ! wait_for 10 test -S "$T/virtdlmd.sock"; then
        echo "virtdlmd did not create $T/virtdlmd.sock; its log:" >&2
        sed 's/^/    /' "$T/virtdlmd.log" >&2
        return 1
    fi
}

start_virtlogd() {
    # libvirtd's default stdio_handler is virtlogd: reuse a live one, else start our own
    alive "$(cat /run/virtlogd.pid 2>/dev/null)" && return 0
    alive "$(cat "$T/virtlogd.pid" 2>/dev/null)" && return 0
    /usr/sbin/virtlogd --daemon --pid-file "$T/virtlogd.pid" 9>&- || return 1
    wait_for 5 test -s "$T/virtlogd.pid" || return 1
    OUR_PIDS+=("$(cat "$T/virtlogd.pid")")
}

lv_prepare_etc() {
    rm -rf "$T/etc-libvirt"
    cp -a /etc/libvirt "$T/etc-libvirt"
    # domains defined by the tests land in the copy, never in the real /etc/libvirt/qemu
    find "$T/etc-libvirt/qemu" -maxdepth 1 -name '*.xml' -delete 2>/dev/null
    printf '\n# virt-dlm tests\nlock_manager = "dlm"\n' >> "$T/etc-libvirt/qemu.conf"
    cat > "$T/etc-libvirt/qemu-dlm.conf" <<EOC
socket = "$T/virtdlmd.sock"
timeout_ms = 10000
EOC
}

start_libvirtd() {
    start_virtlogd || { echo "virtlogd did not start" >&2; return 1; }
    [ -d "$T/etc-libvirt" ] || lv_prepare_etc
    rm -f "$T/libvirtd.pid"
    unshare --mount --propagation private sh -c "
        mount --bind '$T/etc-libvirt' /etc/libvirt &&
        exec env LIBVIRT_LOCK_MANAGER_PLUGIN_DIR='$T/plugin' \
            LIBVIRT_LOG_FILTERS='1:locking 3:*' LIBVIRT_LOG_OUTPUTS='1:file:$T/libvirtd.log' \
            /usr/sbin/libvirtd --daemon --pid-file '$T/libvirtd.pid'" 9>&- || return 1
    wait_for 20 test -s "$T/libvirtd.pid" || { echo "libvirtd wrote no pid file" >&2; return 1; }
    LIBVIRTD_PID=$(cat "$T/libvirtd.pid")
    OUR_PIDS+=("$LIBVIRTD_PID")
    if ! wait_for 30 virsh_ version; then
        echo "libvirtd (pid $LIBVIRTD_PID) does not answer; last log lines:" >&2
        tail -n 20 "$T/libvirtd.log" >&2
        return 1
    fi
}

stop_libvirtd() {
    stop_pid "$LIBVIRTD_PID"
    LIBVIRTD_PID=
}

# define_domain NAME, with the disk lines on stdin (written between <devices> tags)
define_domain() {
    local name=$1
    {
        cat <<EOX
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='scsi' model='virtio-scsi'/>
EOX
        cat
        cat <<EOX
  </devices>
</domain>
EOX
    } > "$T/$name.xml"
    virsh_ define "$T/$name.xml" >/dev/null
}

disk_xml() { # disk_xml PATH TARGET [readonly] [shareable]
    local extra=""
    for f in "${@:3}"; do extra+="<$f/>"; done
    echo "    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$1'/><target dev='$2' bus='virtio'/>$extra</disk>"
}

qemu_pid() { cat "/run/libvirt/qemu/$1.pid" 2>/dev/null; }

lv_cleanup() {
    local d
    if alive "$LIBVIRTD_PID"; then
        for d in $(virsh_ list --all --name 2>/dev/null | grep "^$LV_PREFIX"); do
            virsh_ destroy "$d" >/dev/null 2>&1
            virsh_ undefine "$d" >/dev/null 2>&1
        done
    fi
    # QEMUs of ours that outlived libvirtd (the restart test) are ours to stop too
    for f in /run/libvirt/qemu/"$LV_PREFIX"*.pid; do
        [ -e "$f" ] && stop_pid "$(cat "$f")" KILL
    done
    local i
    for ((i = ${#OUR_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${OUR_PIDS[$i]}"; done
    rm -f /var/log/libvirt/qemu/"$LV_PREFIX"*.log /run/libvirt/qemu/"$LV_PREFIX"*
    rm -rf "$T"
}
