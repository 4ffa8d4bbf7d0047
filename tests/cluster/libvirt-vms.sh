#!/bin/bash
# Real VMs on the real DLM: in each guest of a running 3-node cluster (tests/cluster/cluster.sh),
# a real libvirtd 9.0 with lock_manager = "dlm" (dlm.so) and a virtdlmd on the DLM backend (the
# cluster inventory on), QEMU TCG domains without an OS (a one-instruction boot sector: the vCPU
# halts) on raw images in /shared, one host directory every guest mounts writable: shared storage.
# Run by tests/cluster/run.sh in its cluster, after the cargo tests; or by hand against a cluster
# started with cluster.sh (same CL_NS, CL_BASE, CL_NET), with virtdlmd, virtdlm and dlm.so built.
#
# Checks (virsh as an operator types it, in the guests):
#   start on node1, refused on node2 naming VM and node; destroy and handover to node2;
#   hotplug/unplug of a disk and of a <lease> across nodes; libvirtd restart on the holder's node
#   (lock table unchanged, still refused elsewhere); kill -9 of QEMU (freed, the other node
#   starts); live migration node1 -> node2 (each its own virtdlmd), sampled every 50 ms from the
#   inventory on node3: never two exclusive holders, the source's release before the
#   destination's grant; a qcow2 base image across nodes: held PR by overlay VMs on node1 and
#   node2, a VM on the base itself refused on either node naming the overlays and their VMs,
#   free again once they are gone; node3 cut off with <on_lockfailure> pause and poweroff:
#   libvirt pauses one and powers the other off, node1 is granted their disks only after that.
# Setup steps (starting libvirtd and virtdlmd, defining domains, destroying a VM between checks,
# cutting node3 off, bringing it back) print "setup: PASS/FAIL ..." and are counted apart, on a
# "setup: N passed, N failed" line (tests/run-all.sh and tests/cluster/run.sh add them up apart
# from virt-dlm's); a failed one ends the run. Prints "PASS ..."/"FAIL ..." per virt-dlm check,
# then the setup line, then "N passed, N failed" (virt-dlm's checks); non-zero on any failure.
# Leaves the cluster as it found it: three quorate nodes (node3's stack is restarted after the
# partition) and no libvirtd, QEMU or virtdlmd of its own.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CL=$HERE/cluster.sh
NODE_SH=$HERE/guest/libvirt-node.sh
export CL_NS=${CL_NS:-virtdlmcl} CL_BASE=${CL_BASE:-/tmp/virtdlm-cluster} CL_NET=${CL_NET:-10.99.0}
export CL_EXEC_TIMEOUT=${CL_EXEC_TIMEOUT:-600}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
SH=$CL_BASE/shared                     # /shared in the guests
OUT=${VIRTDLM_RESULTS:-$CL_BASE}/libvirt-vms
PASSED=0 FAILED=0 SETUP_PASSED=0 SETUP_FAILED=0
T0=$(date +%s)

pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }
finish() {
  echo "== libvirt VMs on the DLM took $(( $(date +%s) - T0 )) s"
  echo "setup: $SETUP_PASSED passed, $SETUP_FAILED failed"
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ] && [ "$SETUP_FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]; exit $?
}
setup_pass() { echo "setup: PASS $*"; SETUP_PASSED=$((SETUP_PASSED + 1)); }
# A failed setup step ends the run: the checks after it would test nothing.
setup_failed() { echo "setup: FAIL $*"; SETUP_FAILED=$((SETUP_FAILED + 1)); finish; }
# step NAME CMD...: a setup step (its output dropped); counted, and the run ends if it fails.
step() { local name=$1; shift; if "$@" >/dev/null; then setup_pass "$name"; else setup_failed "$name"; fi; }

gx() { local n=$1; shift; "$CL" exec "$n" "$*"; }        # a shell command in guest $1
vsh() { local n=$1; shift; gx "$n" "virsh -q -c qemu:///system $*"; }
locks_json() { gx "$1" "$VIRTDLM --admin-socket /run/vms/admin.sock --json locks"; }
status_json() { gx "$1" "$VIRTDLM --admin-socket /run/vms/admin.sock --json status"; }
state() { vsh "$1" domstate "$2" 2>/dev/null | head -n 1; }
state_is() { [ "$(state "$1" "$2")" = "$3" ]; }
wait_state() { # wait_state NODE VM STATE SECONDS
  local i
  for i in $(seq "$4"); do state_is "$1" "$2" "$3" && return 0; sleep 1; done
  return 1
}
qemu_pid() { gx "$1" "cat /run/libvirt/qemu/$2.pid"; }
# holder NODE DISK: "VM@NODE" of each exclusive lock on DISK in NODE's view (its inventory).
holder() { locks_json "$1" | jq -r --arg d "$2" '.[] | select(.identity == $d and .mode == "EX") | "\(.vm_name)@\(.node_name)"' 2>/dev/null; }

# ok NAME CMD...: CMD must succeed
ok() {
  local name=$1 out; shift
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name: $(echo "$out" | tr '\n' ' ' | cut -c1-400)"; fi
}
# refused NAME PATTERN CMD...: CMD must fail, its output matching PATTERN (extended regexp)
refused() {
  local name=$1 pat=$2 out; shift 2
  if out=$("$@" 2>&1); then
    fail "$name: succeeded but should have been refused"
  elif echo "$out" | grep -Eq -- "$pat"; then
    pass "$name: $(echo "$out" | grep -E -- "$pat" | head -n 1 | sed 's/^error: //' | cut -c1-300)"
  else
    fail "$name: refused, but without /$pat/: $(echo "$out" | tr '\n' ' ' | cut -c1-400)"
  fi
}

# Guest clock minus host clock, in s, and its uncertainty (half the round trip): UML guest
# clocks drift from the host's, so times logged in two guests are compared on the host's.
# The best of three tries (the shortest round trip).
offset() {
  local h0 g h1 best="" try
  for _ in 1 2 3; do
    h0=$(date +%s.%N); g=$(gx "$1" 'date +%s.%N'); h1=$(date +%s.%N)
    try="$(echo "$g - ($h0 + $h1) / 2" | bc -l) $(echo "($h1 - $h0) / 2" | bc -l)"
    if [ -z "$best" ] || [ "$(echo "${try#* } < ${best#* }" | bc -l)" = 1 ]; then best=$try; fi
  done
  echo "$best"
}
# Epoch seconds of an RFC 3339 log stamp.
epoch() { date -d "$1" +%s.%N; }

# A domain on /shared: define_xml NAME UUID-SUFFIX ON_LOCKFAILURE DISK [LEASE-KEY [FORMAT]]
define_xml() {
  local name=$1 id=$2 onf=$3 disk=$4 lease=${5:-} format=${6:-raw}
  {
    cat <<EOX
<domain type='qemu'>
  <name>$name</name>
  <uuid>5ee0c0de-0000-4000-8000-0000000000$id</uuid>
  <memory unit='MiB'>16</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <on_crash>destroy</on_crash>
  <on_lockfailure>$onf</on_lockfailure>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='scsi' model='virtio-scsi'/>
EOX
    [ -n "$lease" ] && echo "    <lease><lockspace>vms</lockspace><key>$lease</key><target path='/shared/leases/$lease'/></lease>"
    echo "    <disk type='file' device='disk'><driver name='qemu' type='$format'/><source file='/shared/$disk'/><target dev='vda' bus='virtio'/></disk>"
    echo "  </devices>"
    echo "</domain>"
  } > "$SH/$name.xml"
}
# An 8 MiB raw image whose boot sector is `cli; hlt`: the VM boots and its vCPU halts, so
# QEMU TCG idles instead of spinning in the BIOS.
image() {
  truncate -s 8M "$SH/$1"
  printf '\xfa\xf4\xeb\xfd' | dd of="$SH/$1" conv=notrunc status=none
  printf '\x55\xaa' | dd of="$SH/$1" bs=1 seek=510 conv=notrunc status=none
  chmod 0666 "$SH/$1"
}

# ---- setup
[ -d "$SH" ] || setup_failed "no $SH: the cluster was started without shared storage (cluster.sh start)"
[ "$(cat "$CL_BASE/nodes" 2>/dev/null)" = 3 ] || setup_failed "needs a running 3-node cluster in $CL_BASE"
for f in virtdlmd virtdlm libvirtdlm_plugin.so; do [ -f "$BIN/$f" ] || setup_failed "$BIN/$f is not built"; done
VIRTDLMD=$("$CL" bin "$BIN/virtdlmd") && VIRTDLM=$("$CL" bin "$BIN/virtdlm") && PLUGIN=$("$CL" bin "$BIN/libvirtdlm_plugin.so") ||
  setup_failed "cluster.sh bin"
setup_pass "preflight: $SH shared, 3 nodes, virtdlmd, virtdlm and dlm.so built and in the guests"
rm -rf "$OUT"; mkdir -p "$OUT" "$SH/leases"; chmod 0777 "$SH" "$SH/leases"
for f in a b hot mig p q base; do image "$f.img"; done
# Two qcow2 overlays over base.img (raw; relative backing name, as qemu-img writes it).
for o in o1 o2; do
  python3 "$ROOT/tests/libvirt/mkqcow2.py" "$SH/$o.qcow2" 8 base.img raw && chmod 0666 "$SH/$o.qcow2" ||
    setup_failed "could not write $o.qcow2"
done
define_xml vmx-a 01 poweroff a.img vm-a
define_xml vmx-b 02 poweroff b.img
define_xml vmx-m 03 poweroff mig.img
define_xml vmx-p 04 pause p.img
define_xml vmx-q 05 poweroff q.img
define_xml vmx-o1 06 poweroff o1.qcow2 "" qcow2
define_xml vmx-o2 07 poweroff o2.qcow2 "" qcow2
define_xml vmx-base 08 poweroff base.img
echo "<lease><lockspace>vms</lockspace><key>hot</key><target path='/shared/leases/hot'/></lease>" > "$SH/lease-hot.xml"

collect() {
  local n
  for n in 1 2 3; do
    mkdir -p "$OUT/n$n"
    gx "$n" "cat /run/vms/virtdlmd.log" > "$OUT/n$n/virtdlmd.log" 2>&1
    gx "$n" "cat /run/vms/libvirtd.log" > "$OUT/n$n/libvirtd.log" 2>&1
    gx "$n" "tail -n 30 /var/log/libvirt/qemu/vmx-*.log" > "$OUT/n$n/qemu.log" 2>&1
  done
}
teardown() {
  collect
  for n in 1 2 3; do gx "$n" "$NODE_SH teardown" >/dev/null 2>&1; done
  rm -f "$SH"/*.img "$SH"/*.qcow2 "$SH"/*.xml; rm -rf "$SH/leases"
}
trap teardown EXIT

echo "== libvirt VMs on the DLM: libvirtd + virtdlmd (dlm backend) in the 3 guests"
# Node1 first: its libvirtd probes QEMU's capabilities (minutes in UML) and leaves them in
# /shared/.qemucaps, where nodes 2 and 3 (and a later run in the same cluster) find them
# (libvirt-node.sh; libvirtd revalidates a cached copy and probes again if it is stale).
gx 1 "$NODE_SH setup 1 $VIRTDLMD $PLUGIN ${CL_VMS_CONF:-}" > "$OUT/setup-n1.log" 2>&1 || { cat "$OUT/setup-n1.log"; setup_failed "libvirtd or virtdlmd did not start on node1"; }
for n in 2 3; do
  gx "$n" "$NODE_SH setup $n $VIRTDLMD $PLUGIN ${CL_VMS_CONF:-}" > "$OUT/setup-n$n.log" 2>&1 &
done
for n in 2 3; do wait -n || { cat "$OUT"/setup-n*.log; setup_failed "libvirtd or virtdlmd did not start in a guest"; }; done
setup_pass "libvirtd $(vsh 1 version | sed -n 's/.*Running hypervisor: //p') with dlm.so and virtdlmd --backend dlm on nodes 1-3 ($(( $(date +%s) - T0 )) s)"
for n in 1 2; do for d in a b m; do vsh "$n" define "/shared/vmx-$d.xml" >/dev/null || setup_failed "define vmx-$d on node$n"; done; done
for n in 1 3; do for d in p q; do vsh "$n" define "/shared/vmx-$d.xml" >/dev/null || setup_failed "define vmx-$d on node$n"; done; done
for n in 1 2; do for d in o1 o2; do vsh "$n" define "/shared/vmx-$d.xml" >/dev/null || setup_failed "define vmx-$d on node$n"; done; done
for n in 1 2 3; do vsh "$n" define /shared/vmx-base.xml >/dev/null || setup_failed "define vmx-base on node$n"; done
setup_pass "vmx-a, vmx-b, vmx-m, vmx-o1, vmx-o2 defined on nodes 1 and 2; vmx-p, vmx-q on nodes 1 and 3; vmx-base on all"

# ---- start on one node, refused on another naming the holder; destroy and handover
echo "---- start, refusal, handover"
ok "node1: virsh start vmx-a (exclusive disk and a lease)" vsh 1 start vmx-a
ok "node2 sees vmx-a@node1 holding a.img (inventory)" test "$(holder 2 /shared/a.img)" = vmx-a@node1
refused "node2: virsh start vmx-a refused, naming the VM and node1" \
  "resource busy: lease vms/vm-a is held exclusively by VM vmx-a \(uuid [^)]*\) on node node1" vsh 2 start vmx-a
ok "node2: vmx-a stayed shut off" state_is 2 vmx-a "shut off"
ok "node1: virsh destroy vmx-a" vsh 1 destroy vmx-a
ok "node2: virsh start vmx-a after node1 destroyed it (handover)" vsh 2 start vmx-a
ok "node1 sees vmx-a@node2 holding a.img after the handover" test "$(holder 1 /shared/a.img)" = vmx-a@node2

# ---- hotplug: a disk and a <lease>, between vmx-a on node2 and vmx-b on node1.
# SCSI bus: its unplug completes without a guest OS (a PCI unplug waits for the guest's ACPI).
echo "---- hotplug"
ok "node1: virsh start vmx-b" vsh 1 start vmx-b
ok "node2: attach-disk hot.img to vmx-a" vsh 2 attach-disk vmx-a /shared/hot.img sdb --targetbus scsi --live
refused "node1: attach-disk hot.img to vmx-b refused, naming vmx-a on node2" \
  "disk /shared/hot.img is held exclusively by VM vmx-a .* on node node2" \
  vsh 1 attach-disk vmx-b /shared/hot.img sdb --targetbus scsi --live
ok "node2: detach-disk hot.img from vmx-a" vsh 2 detach-disk vmx-a sdb --live
ok "node1: attach-disk hot.img to vmx-b once node2 let go" vsh 1 attach-disk vmx-b /shared/hot.img sdb --targetbus scsi --live
ok "node1: detach-disk hot.img from vmx-b" vsh 1 detach-disk vmx-b sdb --live
ok "hot.img is free in node3's view after the unplug" test -z "$(holder 3 /shared/hot.img)"
ok "node2: attach <lease> hot to vmx-a" vsh 2 attach-device vmx-a /shared/lease-hot.xml --live
refused "node1: attach the same <lease> to vmx-b refused, naming vmx-a on node2" \
  "lease .*hot.* is held exclusively by VM vmx-a .* on node node2" vsh 1 attach-device vmx-b /shared/lease-hot.xml --live
ok "node2: detach <lease> hot from vmx-a" vsh 2 detach-device vmx-a /shared/lease-hot.xml --live
ok "node1: attach <lease> hot to vmx-b once node2 let go" vsh 1 attach-device vmx-b /shared/lease-hot.xml --live
ok "node1: detach <lease> hot from vmx-b" vsh 1 detach-device vmx-b /shared/lease-hot.xml --live
step "node1: virsh destroy vmx-b" vsh 1 destroy vmx-b

# ---- libvirtd restart on node2 while vmx-a runs there
echo "---- libvirtd restart"
table() { locks_json "$1" | jq -c 'map({identity, mode, vm_name, pid, node_name, since}) | sort_by(.identity)'; }
before=$(table 2); qa=$(qemu_pid 2 vmx-a)
how=$(gx 2 "$NODE_SH stop-libvirtd") || setup_failed "stop libvirtd on node2: $how"
setup_pass "node2: libvirtd stopped ($how)"
ok "node2: vmx-a's QEMU ($qa) survives libvirtd stopping" gx 2 "kill -0 $qa"
step "node2: libvirtd started again" gx 2 "$NODE_SH start-libvirtd"
ok "node2: vmx-a still running after the libvirtd restart" state_is 2 vmx-a running
after=$(table 2)
if [ "$before" = "$after" ] && [ "$before" != "[]" ]; then pass "node2: lock table unchanged by the restart ($after)"
else fail "node2: lock table changed by the libvirtd restart: before $before after $after"; fi
refused "node1: vmx-a still refused after node2's libvirtd restart" "held exclusively by VM vmx-a .* on node node2" vsh 1 start vmx-a

# ---- kill -9 of QEMU frees the locks; the other node then starts the VM
echo "---- kill -9 of QEMU"
qa=$(qemu_pid 2 vmx-a)
step "node2: kill -9 of vmx-a's QEMU ($qa)" gx 2 "kill -9 $qa"
ok "node2: libvirt sees vmx-a shut off after kill -9 of its QEMU" wait_state 2 vmx-a "shut off" 60
ok "a.img is free in node1's view after the kill" test -z "$(holder 1 /shared/a.img)"
ok "node1: virsh start vmx-a after its QEMU on node2 was killed" vsh 1 start vmx-a
step "node1: virsh destroy vmx-a" vsh 1 destroy vmx-a

# ---- live migration node1 -> node2, each node with its own virtdlmd; node3 samples the inventory
echo "---- live migration"
ok "node1: virsh start vmx-m" vsh 1 start vmx-m
src=$(qemu_pid 1 vmx-m)
# One line per sample: the exclusive holders of mig.img as node3 sees them, e.g. "vmx-m@node1".
gx 3 "rm -f /run/vms/mig.done /run/vms/mig.samples; while [ ! -e /run/vms/mig.done ]; do
  $VIRTDLM --admin-socket /run/vms/admin.sock --json locks 2>/dev/null | jq -r '[.[] | select(.identity == \"/shared/mig.img\" and .mode == \"EX\") | \"\(.vm_name)@\(.node_name)\"] | join(\" \")' >> /run/vms/mig.samples
  sleep 0.05; done </dev/null >/dev/null 2>&1 &" || setup_failed "start the sampler on node3"
setup_pass "node3: the sampler of mig.img's holders started"
sleep 2
k1=$(offset 1); k2=$(offset 2)
ok "node1: virsh migrate --live --unsafe vmx-m qemu+tcp://$CL_NET.2/system" \
  vsh 1 migrate --live --unsafe vmx-m "qemu+tcp://$CL_NET.2/system" --migrateuri "tcp://$CL_NET.2"
sleep 2
gx 3 "touch /run/vms/mig.done; sleep 0.5; cat /run/vms/mig.samples" > "$OUT/mig.samples"
ok "node2: vmx-m runs after the migration" state_is 2 vmx-m running
ok "node1: vmx-m shut off after the migration" state_is 1 vmx-m "shut off"
ok "node1 sees vmx-m@node2 holding mig.img" test "$(holder 1 /shared/mig.img)" = vmx-m@node2
n=$(wc -l < "$OUT/mig.samples"); two=$(grep -c ' ' "$OUT/mig.samples")
if [ "$n" -gt 0 ] && [ "$two" = 0 ]; then pass "node3: never two exclusive holders of mig.img in $n samples ($(uniq "$OUT/mig.samples" | sed 's/^$/(none)/' | tr '\n' ' '))"
else fail "node3: two exclusive holders of mig.img in $two of $n samples: $(grep ' ' "$OUT/mig.samples" | head -n 3 | tr '\n' ';')"; fi
if uniq "$OUT/mig.samples" | grep -v '^$' | tr '\n' ' ' | grep -q '^vmx-m@node1 vmx-m@node2 $'; then
  pass "node3: mig.img held by node1, then by node2, never both"
else fail "node3: the samples do not show node1 then node2: $(uniq "$OUT/mig.samples" | tr '\n' ' ')"; fi
# The source's release and the destination's grant, each in its own virtdlmd's log, on the
# host's clock (offset measured just before; uncertainty +- the exec round trip).
rel=$(gx 1 "grep 'released' /run/vms/virtdlmd.log | grep 'vm=vmx-m' | grep 'disk=/shared/mig.img' | tail -n 1")
gra=$(gx 2 "grep 'granted' /run/vms/virtdlmd.log | grep 'vm=vmx-m' | grep 'disk=/shared/mig.img' | tail -n 1")
echo "    node1: $rel"; echo "    node2: $gra"
if [ -n "$rel" ] && [ -n "$gra" ]; then
  r=$(echo "$(epoch "${rel%% *}") - ${k1% *}" | bc -l); g=$(echo "$(epoch "${gra%% *}") - ${k2% *}" | bc -l)
  u=$(echo "${k1#* } + ${k2#* }" | bc -l)
  if [ "$(echo "$r < $g" | bc -l)" = 1 ]; then
    pass "virtdlmd logs: node1 released mig.img $(printf %.3f "$(echo "$g - $r" | bc -l)") s before node2 was granted it (clock uncertainty +-$(printf %.3f "$u") s)"
  else fail "virtdlmd logs: node2 granted mig.img at $g, node1 released it at $r (host clock, +-$u s)"; fi
else fail "virtdlmd logs lack node1's release or node2's grant of mig.img for vmx-m"; fi
src_gone=$(gx 1 "[ -e /proc/$src ] && echo alive || echo gone")
ok "node1: the source QEMU ($src) is gone" test "$src_gone" = gone
step "node2: virsh destroy vmx-m" vsh 2 destroy vmx-m

# ---- a qcow2 base protected across nodes: overlays o1 (node1) and o2 (node2) over base.img.
# The base is held PR (any number of readers, no writer) on every node that runs an overlay.
# Break it: CL_VMS_CONF=backing_chains=false (virtdlmd follows no chain; boot the cluster
# afresh first, the guests may keep an old copy of guest/libvirt-node.sh): node2's VM on
# base.img starts while node1's overlay VM reads it, and 7 checks of this section fail (checked).
echo "---- backing chain across nodes"
# base_readers NODE: "VM@NODE MODE" of each lock on base.img in NODE's view, sorted.
base_readers() {
  locks_json "$1" | jq -r '.[] | select(.identity | startswith("/shared/base.img")) | "\(.vm_name)@\(.node_name) \(.mode)"' 2>/dev/null | sort | tr '\n' ' '
}
ok "node1: virsh start vmx-o1 (o1.qcow2 over base.img)" vsh 1 start vmx-o1
ok "node3 sees base.img held PR by vmx-o1@node1 (inventory)" test "$(base_readers 3)" = "vmx-o1@node1 PR "
refused "node2: virsh start vmx-base on base.img refused, naming the overlay and node1's VM" \
  "/shared/base.img is the backing file of /shared/o1.qcow2, used by VM vmx-o1" vsh 2 start vmx-base
ok "node2: vmx-base stayed shut off" state_is 2 vmx-base "shut off"
ok "node2: virsh start vmx-o2 (a second overlay over base.img)" vsh 2 start vmx-o2
ok "node3 sees base.img held PR by both overlay VMs, on node1 and node2" \
  test "$(base_readers 3)" = "vmx-o1@node1 PR vmx-o2@node2 PR "
gx 3 "$VIRTDLM --admin-socket /run/vms/admin.sock locks" | sed 's/^/node3 virtdlm locks: /'   # docs/GUIDE.md §3.1
# On node3, which runs neither overlay: on a node that runs one, QEMU's own image lock (the
# overlay's QEMU has base.img open there) refuses the start before the lock plugin is asked.
refused "node3: virsh start vmx-base refused while the overlays read it, both named" \
  "o1.qcow2, used by VM vmx-o1.*and of /shared/o2.qcow2, used by VM vmx-o2|o2.qcow2, used by VM vmx-o2.*and of /shared/o1.qcow2, used by VM vmx-o1" \
  vsh 3 start vmx-base
step "node1: virsh destroy vmx-o1" vsh 1 destroy vmx-o1
refused "node1: vmx-base still refused while node2's overlay VM reads base.img" \
  "used by VM vmx-o2" vsh 1 start vmx-base
step "node2: virsh destroy vmx-o2" vsh 2 destroy vmx-o2
ok "node3 sees base.img free once both overlay VMs are gone" test -z "$(base_readers 3)"
ok "node1: virsh start vmx-base once no overlay VM runs" vsh 1 start vmx-base
step "node1: virsh destroy vmx-base" vsh 1 destroy vmx-base

# ---- partition: node3 cut off with vmx-p (pause) and vmx-q (poweroff)
echo "---- partition of node3: <on_lockfailure> pause and poweroff"
ok "node3: virsh start vmx-p (on_lockfailure pause)" vsh 3 start vmx-p
ok "node3: virsh start vmx-q (on_lockfailure poweroff)" vsh 3 start vmx-q
ok "node1 sees vmx-p@node3 holding p.img before the cut" test "$(holder 1 /shared/p.img)" = vmx-p@node3
k1=$(offset 1); k3=$(offset 3)
cut=$(date +%s.%N)
step "node3 cut off (cluster.sh partition 3)" "$CL" partition 3
# Node1 starts both as soon as it may (each try: the refusal or the grant, never a wait on node3).
gx 1 "for i in \$(seq 150); do virsh -q -c qemu:///system start vmx-p >/dev/null 2>&1 && break; sleep 1; done
      for i in \$(seq 60); do virsh -q -c qemu:///system start vmx-q >/dev/null 2>&1 && break; sleep 1; done" > /dev/null &
survivors=$!
ok "node3: libvirt paused vmx-p (on_lockfailure pause)" wait_state 3 vmx-p paused 120
ok "node3: libvirt shows vmx-q shut off (on_lockfailure poweroff)" wait_state 3 vmx-q "shut off" 120
st=$(status_json 3)
echo "$st" | jq -c '.lock_loss.last | {reason, vms: [.vms[] | {vm_name, action, outcome}], elapsed_ms}' 2>/dev/null | sed 's/^/    node3 lock loss: /'
ok "node3's virtdlmd: quorum lost, vmx-p paused, vmx-q terminated" test "$(echo "$st" | jq -r '.lock_loss.last | "\(.reason.kind) \([.vms[] | "\(.vm_name)=\(.outcome)"] | sort | join(","))"')" = "quorum_lost vmx-p=paused,vmx-q=terminated"
wait "$survivors"
ok "node1: vmx-p runs on the survivor" state_is 1 vmx-p running
ok "node1: vmx-q runs on the survivor" state_is 1 vmx-q running
stopped=$(echo "$st" | jq -r '.lock_loss.last | .at + .elapsed_ms / 1000')
for d in p q; do
  gra=$(gx 1 "grep granted /run/vms/virtdlmd.log | grep 'vm=vmx-$d ' | grep 'disk=/shared/$d.img' | tail -n 1")
  if [ -n "$gra" ] && [ -n "$stopped" ]; then
    g=$(echo "$(epoch "${gra%% *}") - ${k1% *}" | bc -l); s=$(echo "$stopped - ${k3% *}" | bc -l)
    if [ "$(echo "$s < $g" | bc -l)" = 1 ]; then
      pass "node1 granted $d.img $(printf %.2f "$(echo "$g - $s" | bc -l)") s after node3 had handled its VMs (cut at +0, handled +$(printf %.2f "$(echo "$s - $cut" | bc -l)") s)"
    else fail "node1 granted $d.img at $g before node3 handled its VMs at $s (host clock)"; fi
  else fail "no grant of $d.img in node1's log, or no lock-loss event on node3"; fi
done

# Heal; node3 is removed from corosync (stateful merge) and its virtdlmd releases the abandoned
# lockspace; only then may it stop (a lockspace left in the kernel makes the next dlm_controld
# remove its own node and exit). Node3 comes back with a fresh stack, the way a node manager
# restarts it (as in tests/cluster/tests/lockloss.rs).
"$CL" heal 3 >/dev/null
gx 3 "for i in \$(seq 480); do corosync-cmapctl -g totem.cluster_name >/dev/null 2>&1 || dlm_tool status 2>/dev/null | grep -q '^cluster nodeid' ||
  [ -e /sys/kernel/dlm/vmtest ] || exit 0; sleep 0.25; done; exit 1" ||
  setup_failed "node3 still runs corosync or dlm_controld, or holds lockspace vmtest, 120 s after the heal"
setup_pass "node3 healed: removed from corosync (stateful merge), lockspace vmtest released"
# A node that still holds any DLM lockspace in its kernel (one this test's virtdlmd released is
# gone; an earlier test's may be left) comes back "stateful": the survivors' dlm_controld kills
# its corosync again as it joins ("Killed by node 1: dlm_controld"). Then only a reboot brings it
# back, as fencing would: done here, and said, so that the next tier finds three nodes.
if gx 3 "$NODE_SH teardown; $HERE/guest/cluster-stack.sh 3" >/dev/null && sleep 15 &&
   gx 3 "corosync-cmapctl -g totem.cluster_name >/dev/null && dlm_tool status >/dev/null"; then
  setup_pass "node3 back in the cluster with a fresh stack"
else
  echo "    node3 did not stay in the cluster after its stack restarted (lockspaces in its kernel: $(gx 3 'ls /sys/kernel/dlm 2>/dev/null' | tr '\n' ' ')); rebooting it"
  { "$CL" kill 3 && "$CL" start-node 3; } >/dev/null || setup_failed "rebooting node3 after the heal"
  setup_pass "node3 back in the cluster after a reboot"
fi
finish
