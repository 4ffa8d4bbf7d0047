#!/bin/bash
# Real libvirtd tier: libvirtd 9.0 (Debian's) with lock_manager = "dlm" in a private mount
# namespace (see lib.sh), virtdlmd on the local backend, qemu TCG domains without an OS on
# sparse raw images. Prints "N passed, N failed"; always cleans up; non-zero on any failure.
#   VIRTDLMD=/path/to/virtdlmd VIRTDLM=/path/to/virtdlm tests/libvirt/run.sh
#
# QEMU's own image locking (OFD locks on the image file) would refuse a second VM on the same
# file before libvirt ever asks the lock plugin at resume, hiding whether *our* lock refused.
# libvirt 9.0 offers no per-disk way to turn it off (file.locking is not in the disk XML, and
# -blockdev nodes cannot be changed with -set). So the tier does what virt-dlm exists for:
# the "second host" sees the share under another mount point. hostb/X.img is a different
# file from hosta/X.img (QEMU's locks cannot relate them, as they cannot across hosts), and
# virtdlmd's path_map (hostb -> hosta) makes them the same disk for virt-dlm. Hotplug needs
# no such help (libvirt asks the plugin before QEMU opens the image) and is also tested on
# one and the same path.
set -uo pipefail
cd "$(dirname "$0")/../.."
TOP=$PWD
T=$(mktemp -d /tmp/virt-dlm-lv.XXXXXX)
chmod 0755 "$T"                    # QEMU runs as libvirt-qemu and must reach the images
LV_PREFIX=vdlm-t-
. tests/libvirt/lib.sh
. tests/libvirt/lockd-switch.sh
. tests/libvirt/migrate.sh
. tests/libvirt/metrics.sh
. tests/libvirt/chains.sh
PASSED=0
FAILED=0
trap 'dst_cleanup; lv_cleanup' EXIT

pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }
# Checks of a peer (lockd) and setup steps are counted apart from virt-dlm's own: the tier's
# "N passed, N failed" line counts virt-dlm assertions only; any failure still fails the tier.
PEER_PASSED=0 PEER_FAILED=0 SETUP_PASSED=0 SETUP_FAILED=0
# as peer|setup CMD...: runs a check (ok, refused, pass, fail) and moves what it counted.
as() {
    local kind=${1^^} p=$PASSED f=$FAILED; shift
    "$@"; local rc=$?
    eval "${kind}_PASSED=\$((${kind}_PASSED + PASSED - p)); ${kind}_FAILED=\$((${kind}_FAILED + FAILED - f))"
    PASSED=$p FAILED=$f
    return $rc
}
finish() {
    echo "peer: $PEER_PASSED passed, $PEER_FAILED failed"
    echo "setup: $SETUP_PASSED passed, $SETUP_FAILED failed"
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ] && [ "$PEER_FAILED" -eq 0 ] && [ "$SETUP_FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]; exit $?
}

# ok NAME CMD...: CMD must succeed
ok() {
    local name=$1 out; shift
    if out=$("$@" 2>&1); then pass "$name"; else fail "$name: $(echo "$out" | tr '\n' ' ')"; fi
}
# refused NAME PATTERN CMD...: CMD must fail and its output contain PATTERN (extended regexp)
refused() {
    local name=$1 pat=$2 out; shift 2
    if out=$("$@" 2>&1); then
        fail "$name: succeeded but should have been refused"
    elif echo "$out" | grep -Eq -- "$pat"; then
        pass "$name: $(echo "$out" | grep -E -- "$pat" | head -n 1 | sed 's/^error: //')"
    else
        fail "$name: refused, but without /$pat/: $(echo "$out" | tr '\n' ' ')"
    fi
}
state_is() { [ "$(virsh_ domstate "$1" 2>/dev/null | head -n 1)" = "$2" ]; }
holds() { locks --json | grep -q "\"vm_name\": \"$1\""; }   # VM $1 has a lock in the table
lacks() { ! holds "$1"; }
no_locks() { ! locks --json | grep -q '"vm_name"'; }
holds_disk() { locks --json | tr -d '\n ' | grep -q "\"identity\":\"$2\"[^}]*\"vm_name\":\"$1\""; }

lv_preflight || { as setup fail "preflight: see above"; finish; }
lv_build || { as setup fail "build of dlm.so / virtdlmd"; finish; }
[ -x "$VIRTDLM" ] || { as setup fail "no virtdlm CLI at $VIRTDLM (needed to read the lock table)"; finish; }

A=$T/hosta B=$T/hostb
mkdir -p "$A" "$B" "$T/leases"
chmod 0755 "$A" "$B" "$T/leases"
for f in a sh base hot own-c own-d mig; do truncate -s 16M "$A/$f.img" "$B/$f.img"; done

METRICS_PORT=$(metrics_port) || { as setup fail "no free port for metrics_listen in 29665..29764"; finish; }
start_virtdlmd <<EOC || { as setup fail "virtdlmd did not start"; finish; }
path_map = $B:$A
metrics_listen = 127.0.0.1:$METRICS_PORT
metrics_textfile = $T/virtdlm.prom
EOC
start_libvirtd || { as setup fail "libvirtd with dlm.so did not start"; finish; }
pass "libvirtd $(virsh_ version | sed -n 's/.*Running hypervisor: //p' | head -n 1) started with dlm.so (pid $LIBVIRTD_PID)"

lease_xml() { echo "<lease><lockspace>space</lockspace><key>$1</key><target path='$T/leases/$1'/></lease>"; }
{ lease_xml vm-a; disk_xml "$A/a.img" vda; disk_xml "$A/sh.img" vdb shareable; disk_xml "$A/base.img" vdc readonly; } \
    | define_domain vdlm-t-a
disk_xml "$B/a.img" vda | define_domain vdlm-t-b
disk_xml "$A/own-c.img" vda | define_domain vdlm-t-c
disk_xml "$A/own-d.img" vda | define_domain vdlm-t-d
disk_xml "$A/mig.img" vda | define_domain vdlm-t-m
disk_xml "$B/mig.img" vda | define_domain vdlm-t-n

# ---- start, and a second VM on the same disk
ok "start a (lease, exclusive, shareable and read-only disks)" virsh_ start vdlm-t-a
ok "a is running" state_is vdlm-t-a running
ok "a's locks are in virtdlmd's table" holds_disk vdlm-t-a "$A/a.img"
refused "b (same disk, other mount point) refused at start, holder named" \
    "resource busy: .*$A/a.img.* held exclusively by VM vdlm-t-a" virsh_ start vdlm-t-b
ok "b stayed shut off" state_is vdlm-t-b "shut off"

# ---- the metrics while a holds its locks and b was refused (docs/GUIDE.md)
test_metrics "$METRICS_PORT"

# ---- suspend releases, resume re-acquires
ok "suspend a" virsh_ suspend vdlm-t-a
ok "a's locks are gone while it is paused" lacks vdlm-t-a
ok "b starts while a is paused" virsh_ start vdlm-t-b
refused "resume a refused while b holds the disk, b named" "resource busy: .*held exclusively by VM vdlm-t-b" \
    virsh_ resume vdlm-t-a
ok "a stays paused" state_is vdlm-t-a paused
ok "destroy b" virsh_ destroy vdlm-t-b
ok "resume a once b is gone" virsh_ resume vdlm-t-a
ok "a holds its disk again" holds_disk vdlm-t-a "$A/a.img"

# ---- hotplug: disk and lease, on the same path and across mount points
ok "start c" virsh_ start vdlm-t-c
ok "start d" virsh_ start vdlm-t-d
# Hotplugged disks go on a SCSI bus: their unplug completes without a guest OS (a PCI
# unplug would wait forever for the missing guest's ACPI answer, and keep the lock).
ok "attach-disk hot.img to a" virsh_ attach-disk vdlm-t-a "$A/hot.img" sdd --targetbus scsi --live
refused "attach-disk of a's hot.img (same path) to c refused" "resource busy: .*held exclusively by VM vdlm-t-a" \
    virsh_ attach-disk vdlm-t-c "$A/hot.img" sdd --targetbus scsi --live
ok "detach-disk hot.img from a" virsh_ detach-disk vdlm-t-a sdd --live
ok "attach-disk hot.img (other mount point) to c after a let go" \
    virsh_ attach-disk vdlm-t-c "$B/hot.img" sdd --targetbus scsi --live
ok "detach-disk hot.img from c" virsh_ detach-disk vdlm-t-c sdd --live
lease_xml hot > "$T/lease-hot.xml"
ok "attach <lease> to a" virsh_ attach-device vdlm-t-a "$T/lease-hot.xml" --live
refused "attach the same <lease> to c refused" "resource busy: .*lease .*hot.* held exclusively by VM vdlm-t-a" \
    virsh_ attach-device vdlm-t-c "$T/lease-hot.xml" --live
ok "detach <lease> from a" virsh_ detach-device vdlm-t-a "$T/lease-hot.xml" --live
ok "attach <lease> to c after a let go" virsh_ attach-device vdlm-t-c "$T/lease-hot.xml" --live
ok "detach <lease> from c" virsh_ detach-device vdlm-t-c "$T/lease-hot.xml" --live

# ---- read-only and shareable disks: c asks while a holds sh.img shareable, base.img read-only, a.img exclusive
combo() { # combo FILE FLAGS... -> disk XML for c's sdd
    local f=$1 extra=""; shift
    for x in "$@"; do extra+="<$x/>"; done
    echo "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$f'/><target dev='sdd' bus='scsi'/>$extra</disk>" > "$T/combo.xml"
}
try_combo() { # try_combo granted|refused WHAT FILE FLAGS...
    local want=$1 what=$2; shift 2
    combo "$@"
    if [ "$want" = granted ]; then
        # The detach is asserted too: a disk left attached would hold its lock into the next
        # combination and make its outcome mean something else.
        local before=$FAILED
        ok "c: $what granted" virsh_ attach-device vdlm-t-c "$T/combo.xml" --live
        [ "$FAILED" = "$before" ] && ok "c: $what detached" virsh_ detach-device vdlm-t-c "$T/combo.xml" --live
    else
        refused "c: $what refused" "resource busy" virsh_ attach-device vdlm-t-c "$T/combo.xml" --live
    fi
}
try_combo granted "shareable on a's shareable disk" "$B/sh.img" shareable
try_combo granted "read-only+shareable on a's shareable disk" "$B/sh.img" readonly shareable
try_combo refused "exclusive on a's shareable disk" "$B/sh.img"
try_combo refused "read-only on a's shareable disk (PR vs CW)" "$B/sh.img" readonly
try_combo granted "read-only on a's read-only disk" "$B/base.img" readonly
try_combo granted "read-only+shareable on a's read-only disk" "$B/base.img" readonly shareable
try_combo refused "exclusive on a's read-only disk" "$B/base.img"
try_combo refused "shareable on a's read-only disk" "$B/base.img" shareable
try_combo refused "read-only on a's exclusive disk" "$B/a.img" readonly
try_combo refused "read-only+shareable on a's exclusive disk" "$B/a.img" readonly shareable
try_combo refused "shareable on a's exclusive disk" "$B/a.img" shareable

# ---- libvirtd restart with VMs running: nothing changes
table() { locks --json | grep -E '"(identity|mode|vm_name|pid|since)"' | sort; }
before=$(table)
stop_libvirtd
ok "a's QEMU survives libvirtd stopping" kill -0 "$(qemu_pid vdlm-t-a)"
start_libvirtd || { as setup fail "libvirtd did not come back"; finish; }
ok "a is still running after libvirtd restart" state_is vdlm-t-a running
after=$(table)
if [ "$before" = "$after" ] && [ -n "$before" ]; then pass "lock table unchanged by the restart ($(echo "$after" | grep -c vm_name) locks)"
else fail "lock table changed by the restart: $(diff <(echo "$before") <(echo "$after") | tr '\n' ' ')"; fi
refused "b still refused after the restart" "held exclusively by VM vdlm-t-a" virsh_ start vdlm-t-b
ok "suspend a after the restart" virsh_ suspend vdlm-t-a
ok "resume a after the restart" virsh_ resume vdlm-t-a

# ---- destroy and kill -9 release without any plugin call
ok "destroy c" virsh_ destroy vdlm-t-c
ok "c's locks are released on destroy" lacks vdlm-t-c
qpid=$(qemu_pid vdlm-t-a)
ok "kill -9 a's QEMU (pid $qpid)" kill -9 "$qpid"
ok "libvirt sees a shut off" wait_for 20 state_is vdlm-t-a "shut off"
ok "a's locks are released after kill -9" wait_for 5 lacks vdlm-t-a
ok "b starts on the disk a held" virsh_ start vdlm-t-b
refused "a now refused, b named" "held exclusively by VM vdlm-t-b" virsh_ start vdlm-t-a
ok "destroy b" virsh_ destroy vdlm-t-b
ok "destroy d" virsh_ destroy vdlm-t-d
ok "no lock left in virtdlmd" no_locks

# ---- the operator's guide, docs/GUIDE.md 5 and 6
test_lockd_switch
test_migration
ok "no lock left in virtdlmd after the guide's steps" no_locks

# ---- backing chains (docs/GUIDE.md, "Backing chains")
test_chains
test_chain_ops
test_chain_commit

finish
