#!/bin/bash
# Debian package tier: builds virt-dlm_*.deb (deploy/build-deb.sh), installs it on this machine
# with dpkg, checks every file is where libvirt and systemd look for it, runs the INSTALLED
# virtdlmd (with the unit's capability bounding set and no_new_privs) and a real libvirtd
# that loads the INSTALLED dlm.so from libvirt's own lock-driver directory (no
# LIBVIRT_LOCK_MANAGER_PLUGIN_DIR), starts VMs through it, then purges the package and checks
# nothing is left behind. libvirtd runs in a mount namespace of its own: a copy of /etc/libvirt
# (lock_manager = "dlm") and a private /run/libvirt, so it neither sees nor disturbs another
# libvirtd on this machine; virsh reaches it through nsenter.
# Prints "N passed, N failed"; non-zero on any failure. Refuses to run (and fails) when
# virt-dlm is already installed: this tier owns the package for its duration.
set -uo pipefail
cd "$(dirname "$0")/../.."
TOP=$PWD
T=$(mktemp -d /tmp/virt-dlm-deb.XXXXXX)
chmod 0755 "$T"
LV_PREFIX=vdlm-deb-
. tests/libvirt/lib.sh
PASSED=0
FAILED=0
INSTALLED=
LOCKDIR=/usr/lib/x86_64-linux-gnu/libvirt/lock-driver
UNIT=/usr/lib/systemd/system/virtdlmd.service
# The unit's CapabilityBoundingSet, for setpriv.
UNIT_CAPS=$(sed -n 's/^CapabilityBoundingSet=//p' deploy/virtdlmd.service | tr 'A-Z' 'a-z' | sed 's/cap_/+/g; s/ /,/g')

pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }
finish() { echo "$PASSED passed, $FAILED failed"; [ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]; exit $?; }
ok() {
    local name=$1 out; shift
    if out=$("$@" 2>&1); then pass "$name"; else fail "$name: $(echo "$out" | tr '\n' ' ' | cut -c1-400)"; fi
}
cleanup() {
    lv_cleanup
    if [ -n "$INSTALLED" ]; then dpkg --purge virt-dlm >/dev/null 2>&1; fi
}
trap cleanup EXIT

# What the package may touch, before and after: the purge must restore it exactly.
snapshot() {
    find /etc /usr/sbin /usr/bin "$LOCKDIR" /usr/lib/systemd/system /usr/share/doc/virt-dlm /usr/lib/ocf/resource.d \
        /var/lib/systemd/deb-systemd-helper-enabled /run/virt-dlm -xdev 2>/dev/null \
        | grep -v '^/etc/ld.so.cache$' | sort
}

# ---- preflight
why=""
[ "$(id -u)" = 0 ] || why="this needs root (dpkg -i, libvirtd)"
command -v dpkg-deb >/dev/null || why="dpkg-deb missing"
command -v dpkg-shlibdeps >/dev/null || why="dpkg-shlibdeps missing (install dpkg-dev: tests/install-deps.sh)"
command -v systemd-analyze >/dev/null || why="systemd-analyze missing (install systemd: tests/install-deps.sh)"
command -v setpriv >/dev/null || why="setpriv (util-linux) missing"
dpkg-query -W -f='${Status}' virt-dlm 2>/dev/null | grep -Eq ' (installed|config-files|half-)' &&
    why="virt-dlm is already installed here; remove it first (dpkg --purge virt-dlm)"
[ -e /run/virt-dlm ] && why="/run/virt-dlm exists: a virtdlmd with the default paths may be running"
if [ -n "$why" ]; then fail "preflight: cannot run: $why"; finish; fi
[ -x /usr/sbin/libvirtd ] && [ -x /usr/bin/qemu-system-x86_64 ] && command -v nsenter >/dev/null ||
    { fail "preflight: cannot run: libvirtd, qemu-system-x86_64 or nsenter missing (tests/install-deps.sh)"; finish; }
# Take turns with the libvirt tier and the demo (their libvirtd must not meet ours: they check
# for any running libvirtd). The lock is on fd 9, held until this script exits.
exec 9>"$LV_LOCK"
if ! flock -n 9; then
    echo "waiting for a libvirt tier or demo run to finish ($LV_LOCK)"
    flock -w 1200 9 || { fail "preflight: cannot run: $LV_LOCK still held after 20 min"; finish; }
fi
BEFORE=$(snapshot)

# ---- build and inspect the package
if DEB=$(deploy/build-deb.sh 2>"$T/build.log") && [ -f "$DEB" ]; then
    pass "deploy/build-deb.sh built $(basename "$DEB") ($(du -k "$DEB" | cut -f1) KiB)"
else
    fail "deploy/build-deb.sh: $(tail -n 15 "$T/build.log" | tr '\n' ' ')"; finish
fi
DEPENDS=$(dpkg-deb -f "$DEB" Depends)
# Every library the packaged ELF files link directly (DT_NEEDED) comes from a package in Depends
# (or from one every Debian system has: Priority required); indirect ones are their Depends' job.
deps_ok() {
    local lib pkg bad=0 f
    mkdir -p "$T/root"
    dpkg-deb -x "$DEB" "$T/root"
    for f in "$T/root/usr/sbin/virtdlmd" "$T/root/usr/bin/virtdlm" "$T/root$LOCKDIR/dlm.so"; do
        while read -r lib path; do
            pkg=$( (dpkg -S "$path" || dpkg -S "/usr$path" || dpkg -S "$(realpath "$path")") 2>/dev/null | head -n 1)
            pkg=${pkg%%:*}
            [ -n "$pkg" ] || { echo "no package ships $path ($lib)"; bad=1; continue; }
            grep -Eq "(^|, )$pkg( |,|$)" <<<"$DEPENDS" && continue
            [ "$(dpkg-query -W -f='${Priority}' "$pkg")" = required ] && continue
            echo "$(basename "$f") needs $lib from $pkg, not in Depends: $DEPENDS"; bad=1
        done < <(ldd "$f" | awk -v needed=" $(objdump -p "$f" | awk '/NEEDED/{printf "%s ", $2}')" \
                     '$2 == "=>" && $3 ~ /^\// && index(needed, " " $1 " ") {print $1, $3}')
    done
    grep -q libdlm3 <<<"$DEPENDS" || { echo "Depends lacks libdlm3"; bad=1; }
    return $bad
}
ok "Depends covers every library the binaries need: $DEPENDS" deps_ok
mkdir -p "$T/control"
dpkg-deb -e "$DEB" "$T/control"
conffiles_ok() {
    diff <(sort "$T/control/conffiles") <(printf '%s\n' /etc/libvirt/qemu-dlm.conf /etc/virt-dlm/virtdlmd.conf)
}
ok "conffiles are exactly /etc/virt-dlm/virtdlmd.conf and /etc/libvirt/qemu-dlm.conf" conffiles_ok
plugin_clean() { ! dpkg-deb --fsys-tarfile "$DEB" | tar -xOf - ".$LOCKDIR/dlm.so" > "$T/dlm.so.pkg" ||
                 ! ldd "$T/dlm.so.pkg" | grep -E 'libdlm|libcpg|libquorum|libcmap|libcfg'; }
ok "the packaged dlm.so links no cluster library (libvirtd loads it)" plugin_clean
# Nothing in the package bears the system libdlm's file name (cargo builds dlm.so as
# libvirtdlm_plugin.so; the package renames it).
no_libdlm_name() { ! dpkg-deb -c "$DEB" | grep -E '/libdlm[^/]*\.so'; }
ok "the package ships no file named like the system libdlm (libdlm*.so)" no_libdlm_name

# ---- install
if out=$(dpkg -i "$DEB" 2>&1); then
    INSTALLED=1; pass "dpkg -i $(basename "$DEB")"
else
    INSTALLED=1; fail "dpkg -i: $(echo "$out" | tr '\n' ' ')"; finish
fi
ok "/usr/sbin/virtdlmd and /usr/bin/virtdlm are executable" test -x /usr/sbin/virtdlmd -a -x /usr/bin/virtdlm
ok "dlm.so is in $LOCKDIR, next to Debian's lockd.so" test -f "$LOCKDIR/dlm.so" -a -f "$LOCKDIR/lockd.so"
ok "that directory is the one libvirt.so.0 is built to search" \
    grep -aq "$LOCKDIR" /usr/lib/x86_64-linux-gnu/libvirt.so.0
conffiles_registered() {
    local c; c=$(dpkg-query -W -f='${Conffiles}\n' virt-dlm)
    grep -q '/etc/virt-dlm/virtdlmd.conf' <<<"$c" && grep -q '/etc/libvirt/qemu-dlm.conf' <<<"$c"
}
ok "dpkg registered both conffiles" conffiles_registered
ok "virtdlmd --check-config accepts the installed /etc/virt-dlm/virtdlmd.conf" \
    /usr/sbin/virtdlmd --config /etc/virt-dlm/virtdlmd.conf --check-config
verify_unit() { local o; o=$(systemd-analyze verify "$UNIT" 2>&1) && [ -z "$o" ] || { echo "$o"; return 1; }; }
ok "systemd-analyze verify $UNIT: no complaint" verify_unit
not_enabled() { ! find /etc/systemd/system -name virtdlmd.service | grep -q .; }
ok "the unit is installed disabled (Pacemaker or the admin starts it)" not_enabled
ok "virtdlm --help runs" /usr/bin/virtdlm --help
OCF_AGENT=/usr/lib/ocf/resource.d/virt-dlm/virtdlmd
ok "the OCF agent is installed as ocf:virt-dlm:virtdlmd ($OCF_AGENT)" test -x "$OCF_AGENT"
agent_meta() {
    command -v crm_resource >/dev/null || { echo "crm_resource missing (pacemaker-cli-utils: tests/install-deps.sh)"; return 1; }
    crm_resource --show-metadata ocf:virt-dlm:virtdlmd | grep -q '<resource-agent name="virtdlmd"'
}
ok "Pacemaker reads its meta-data (crm_resource --show-metadata ocf:virt-dlm:virtdlmd)" agent_meta
ok "the agent's validate-all accepts the installed binaries and configuration" \
    env OCF_ROOT=/usr/lib/ocf "$OCF_AGENT" validate-all

# ---- the installed daemon, confined like the unit, on its default paths
# RuntimeDirectory= would make /run/virt-dlm; virtdlmd makes it itself when missing.
setpriv --no-new-privs --bounding-set "-all,$UNIT_CAPS" -- /usr/sbin/virtdlmd >"$T/virtdlmd.log" 2>&1 9>&- &
VIRTDLMD_PID=$!
OUR_PIDS+=("$VIRTDLMD_PID")
if wait_for 10 test -S /run/virt-dlm/virtdlmd.sock; then
    pass "installed virtdlmd serves on /run/virt-dlm/virtdlmd.sock (bounding set: $UNIT_CAPS; no_new_privs)"
else
    fail "installed virtdlmd did not create /run/virt-dlm/virtdlmd.sock: $(tr '\n' ' ' < "$T/virtdlmd.log")"; finish
fi
ok "virtdlm status reaches it on the default admin socket" /usr/bin/virtdlm status
VIRTDLM=/usr/bin/virtdlm
syslocks() { /usr/bin/virtdlm locks --json; }
# virsh inside libvirtd's mount namespace (its private /run/libvirt)
virsh_() { nsenter -t "$LIBVIRTD_PID" -m virsh -q -c "$LV_URI" "$@"; }

# ---- a real libvirtd loading the installed plugin from the system directory
lv_prepare_etc() {
    rm -rf "$T/etc-libvirt"
    cp -a /etc/libvirt "$T/etc-libvirt"          # now holds the package's qemu-dlm.conf
    find "$T/etc-libvirt/qemu" -maxdepth 1 -name '*.xml' -delete 2>/dev/null
    # QEMU's output to a file: the private /run/libvirt has no virtlogd socket
    printf '\n# virt-dlm package tier\nlock_manager = "dlm"\nstdio_handler = "file"\n' >> "$T/etc-libvirt/qemu.conf"
}
lv_prepare_etc
ok "the copy of /etc/libvirt has the package's qemu-dlm.conf (all defaults)" \
    cmp "$T/etc-libvirt/qemu-dlm.conf" "$TOP/deploy/qemu-dlm.conf"
unshare --mount --propagation private sh -c "
    mount --bind '$T/etc-libvirt' /etc/libvirt &&
    mount -t tmpfs -o mode=0755 virt-dlm-deb /run/libvirt &&
    exec env -u LIBVIRT_LOCK_MANAGER_PLUGIN_DIR \
        LIBVIRT_LOG_FILTERS='1:locking 3:*' LIBVIRT_LOG_OUTPUTS='1:file:$T/libvirtd.log' \
        /usr/sbin/libvirtd --daemon --pid-file '$T/libvirtd.pid'" 9>&-
if wait_for 20 test -s "$T/libvirtd.pid" && LIBVIRTD_PID=$(cat "$T/libvirtd.pid") &&
   OUR_PIDS+=("$LIBVIRTD_PID") && wait_for 30 virsh_ version >/dev/null; then
    pass "libvirtd started with lock_manager = \"dlm\" (pid $LIBVIRTD_PID)"
else
    fail "libvirtd did not start: $(tail -n 10 "$T/libvirtd.log" 2>/dev/null | tr '\n' ' ')"; finish
fi
loaded_from_system() { grep -E "Module load dlm from $LOCKDIR/dlm.so" "$T/libvirtd.log"; }
ok "libvirtd's log: dlm.so loaded from $LOCKDIR" loaded_from_system
drv_init_ran() { grep -E "virLockManagerPluginNew.*name=dlm|drvInit|Module load dlm" "$T/libvirtd.log" >/dev/null &&
                 ! grep -Ei "Failed to initialize lock manager|Missing plugin initialization" "$T/libvirtd.log"; }
ok "the plugin initialised (no lock-manager error in libvirtd's log)" drv_init_ran

mkdir -p "$T/img" "$T/leases"
chmod 0755 "$T/img" "$T/leases"
truncate -s 16M "$T/img/a.img" "$T/img/b.img"
lease() { echo "<lease><lockspace>deb</lockspace><key>$1</key><target path='$T/leases/$1'/></lease>"; }
{ lease shared-key; disk_xml "$T/img/a.img" vda; } | define_domain vdlm-deb-a
{ lease shared-key; disk_xml "$T/img/b.img" vda; } | define_domain vdlm-deb-b
ok "VM a starts (disk + lease) through the installed plugin" virsh_ start vdlm-deb-a
holds_a() { syslocks | tr -d '\n ' | grep -q "\"identity\":\"$T/img/a.img\"[^}]*\"vm_name\":\"vdlm-deb-a\""; }
ok "the installed virtdlmd holds a's disk (virtdlm locks)" holds_a
refused_b() {
    local out
    if out=$(virsh_ start vdlm-deb-b 2>&1); then echo "b started although a holds the lease"; return 1; fi
    grep -q "held exclusively by VM vdlm-deb-a" <<<"$out" || { echo "$out"; return 1; }
    echo "$out" > "$T/refusal"
}
ok "VM b (same lease) is refused, holder named" refused_b
[ -s "$T/refusal" ] && sed 's/^/    /' "$T/refusal"
ok "virsh destroy a" virsh_ destroy vdlm-deb-a
released() { wait_for 5 sh -c "! /usr/bin/virtdlm locks --json | grep -q vdlm-deb-a"; }
ok "a's locks are released when its QEMU exits" released
ok "then b starts" virsh_ start vdlm-deb-b
ok "virsh destroy b" virsh_ destroy vdlm-deb-b
logged() { grep -q "vdlm-deb-a" "$T/virtdlmd.log"; }
ok "the installed virtdlmd logged a's lock changes" logged

# ---- stop, purge, and compare with the machine before
lv_cleanup_keep() {
    local d
    for d in vdlm-deb-a vdlm-deb-b; do virsh_ destroy "$d" >/dev/null 2>&1; virsh_ undefine "$d" >/dev/null 2>&1; done
    stop_pid "$LIBVIRTD_PID"; LIBVIRTD_PID=
    stop_pid "$VIRTDLMD_PID"; VIRTDLMD_PID=
}
lv_cleanup_keep
if out=$(dpkg --purge virt-dlm 2>&1); then INSTALLED=; pass "dpkg --purge virt-dlm"; else fail "dpkg --purge: $out"; fi
gone() { ! dpkg-query -W -f='${Status}' virt-dlm 2>/dev/null | grep -Eq ' (installed|config-files|half-)'; }
ok "dpkg no longer knows virt-dlm" gone
same() { diff <(echo "$BEFORE") <(snapshot); }
ok "nothing left behind (/etc, binaries, lock-driver dir, units, /run/virt-dlm as before)" same
finish
