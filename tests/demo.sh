#!/bin/bash
# The README's demo: a real libvirtd 9.0 with lock_manager = "dlm" refuses a second VM on a
# disk that a running VM holds, and says who holds it. Runs on one machine (virtdlmd on its
# local backend), leaves nothing behind, never touches /etc (libvirtd runs in a private
# mount namespace: tests/libvirt/lib.sh).
#
# One machine plays two hosts that mount the same image share at different places
# (hosta/ and hostb/; virtdlmd's path_map tells it they are one share). That is the case
# virt-dlm exists for: QEMU's own image locks cannot see across hosts, virt-dlm's locks do.
# On one host with one path, QEMU's own lock would refuse the second VM before any lock
# plugin is asked.
set -uo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
T=$(mktemp -d /tmp/virt-dlm-demo.XXXXXX)
chmod 0755 "$T"
LV_PREFIX=demo-
PROFILE=${PROFILE:-release}
. tests/libvirt/lib.sh
trap 'echo; echo "== cleaning up"; lv_cleanup; echo "done: domains undefined, daemons stopped, $T removed"' EXIT

say() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

lv_preflight || exit 1
lv_build || { echo "build failed" >&2; exit 1; }
[ -x "$VIRTDLM" ] || { echo "no virtdlm CLI at $VIRTDLM" >&2; exit 1; }

mkdir -p "$T/hosta" "$T/hostb"
chmod 0755 "$T/hosta" "$T/hostb"
truncate -s 64M "$T/hosta/disk.img" "$T/hostb/disk.img"

say "virtdlmd (local backend): host b's mount of the share, hostb/, is the same share as hosta/"
NODE_NAME=demo-node start_virtdlmd <<EOC || exit 1
path_map = $T/hostb:$T/hosta
EOC
echo "virtdlmd pid $VIRTDLMD_PID, socket $T/virtdlmd.sock"

say "libvirtd with lock_manager = \"dlm\" (plugin $T/plugin/dlm.so)"
start_libvirtd >/dev/null || exit 1
echo "libvirtd pid $LIBVIRTD_PID"
disk_xml "$T/hosta/disk.img" vda | define_domain demo-a
disk_xml "$T/hostb/disk.img" vda | define_domain demo-b

say "VM a starts on hosta/disk.img"
run virsh -c "$LV_URI" start demo-a || exit 1

say "VM b, on the same disk (seen through hostb/), is refused"
if run virsh -c "$LV_URI" start demo-b; then
    echo "UNEXPECTED: demo-b started on a disk that demo-a holds" >&2
    exit 1
fi

say "the lock table"
run "$VIRTDLM" --admin-socket "$T/virtdlmd-admin.sock" locks

say "VM a stops; now VM b gets the disk"
run virsh -c "$LV_URI" destroy demo-a
run virsh -c "$LV_URI" start demo-b || exit 1
run "$VIRTDLM" --admin-socket "$T/virtdlmd-admin.sock" locks
