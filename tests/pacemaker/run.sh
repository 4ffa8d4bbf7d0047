#!/bin/bash
# Pacemaker tier: the Pacemaker configuration of deploy/cluster/ run for real, on 3 User-Mode
# Linux guests (tests/cluster harness with CL_PCMK=1: each guest starts corosync, then
# pacemakerd; nothing starts dlm_controld but Pacemaker). The guests have no systemd, so virtdlmd
# runs through its OCF agent (deploy/ocf/virtdlmd), as the shipped configuration has it.
#
# 1. both forms on a copy of the live CIB, on the host: deploy/cluster/pacemaker-pcs.sh with
#    `pcs -f` and deploy/cluster/pacemaker-crm.txt with `crm configure load update`
#    (CIB_file); crm_verify accepts both, and both make the same configuration.
# 2. pcs form: the CIB it made pushed on node1 (`pcs cluster cib-push --config`, no pcsd);
#    on every node dlm_controld starts before virtdlmd, virtdlmd before libvirtd (each node's
#    pacemaker log), `virtdlm status` answers on every node; a VM's lock shows cluster-wide;
#    banning the dlm clone from node3 stops virtdlmd there before dlm_controld, and the
#    lockspace is left so dlm_controld can stop; a virtdlmd killed with kill -9 is started again
#    by Pacemaker's monitor.
#    A real libvirtd and VM (vms.sh): Pacemaker's libvirtd clone runs /usr/sbin/libvirtd with
#    dlm.so; an ocf:heartbeat:VirtualDomain resource runs a QEMU TCG VM on /shared: a second
#    `virsh start` of it on node2 is refused naming the holder; `crm_resource --move` hands its
#    disk over (node1's release before node3's grant); after node3 crashes with it (below),
#    Pacemaker starts it on a survivor only after the fence.
# 3. fencing for real (fencing.sh): stonith-enabled=true, one fence_uml device per node (the
#    guests' power switch, tests/cluster/fence/), dlm_controld with enable_fencing=1
#    (deploy/cluster/dlm.conf as shipped) fencing through dlm_stonith. node3 crashes
#    (cluster.sh kill), then node2's link is cut; each time a VM of the failed node holds EX and
#    node1's VM asks for the same disk: the logs show node1's grant only after the failed node
#    was powered off and Pacemaker's fence completed; the fenced node reboots and rejoins.
#    Then a 2-node cluster (two_node: 1): a partition ends in a fence race with one survivor
#    (pcmk_delay_base=5s on fence-node2). Failure-to-grant times: $RES/fencing-bench.json.
# 4. watchdog fencing (sbd.sh): sbd without a disk on softdog, stonith-watchdog-timeout, no fence
#    device; a node cut off with its sbd stopped is reset by its watchdog, the survivors' grant
#    comes after Pacemaker counted it fenced. Also runs alone: tests/pacemaker/sbd.sh.
# What differs from the shipped files (shown in the output): fence_uml instead of
# fence_ipmilan (node1..3 instead of hv1..3), and libvirtd as lsb:libvirtd (systemd:libvirtd
# needs systemd as PID 1; tests/pacemaker/libvirtd.init starts the same libvirtd).
#
# Prints "N passed, N failed" (virt-dlm's own assertions) after "setup: N passed, N failed" (the
# guests, Pacemaker's election, the fence agent and the test VM's resource: setup steps, not
# counted as virt-dlm's); non-zero on any failure. Results (the configurations applied,
# crm_mon output, each node's pacemaker and virtdlmd logs) go to target/pacemaker-results/.
# Settings: CL_NS, CL_BASE, CL_NET (the cluster's network namespace, directory and subnet, as
# for tests/cluster/cluster.sh; two clusters on one host need different ones); CARGO_TARGET_DIR
# (where the release binaries are built and the results go, instead of target/);
# FENCING_BENCH_OUT (a file to store the failure-to-grant figures in, e.g. docs/bench/fencing.json).
# Takes about 9 minutes on 2 loaded cores, plus the release build, plus 6-8 for the VM (vms.sh:
# each QEMU start takes 2-3 minutes in a UML guest; the restart after the fence overlaps the
# rebooted node's rejoin), plus sbd.sh (4 to 8 minutes: a fresh 3-node cluster, sbd, Pacemaker
# started again, the dlm and virtdlmd clones, the reset).
set -uo pipefail
cd "$(dirname "$0")/../.."
TOP=$PWD
export CL_NS=${CL_NS:-virtdlmpcmk} CL_BASE=${CL_BASE:-/tmp/virtdlm-pcmk} CL_NET=${CL_NET:-10.99.4} CL_PCMK=1
CL=$TOP/tests/cluster/cluster.sh
# gx, gwait, collect, all_started, in_ocf_ns, pcs_push (shared with sbd.sh run alone).
. "$TOP/tests/pacemaker/lib.sh"
. "$TOP/tests/pacemaker/fencing.sh"
. "$TOP/tests/pacemaker/vms.sh"
. "$TOP/tests/pacemaker/sbd.sh"
TGT=${CARGO_TARGET_DIR:-$TOP/target}
RES=$TGT/pacemaker-results
PASSED=0
FAILED=0
SETUP_PASSED=0
SETUP_FAILED=0
STARTED=

pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }
# Setup steps (tests/run-all.sh counts them apart from virt-dlm's assertions).
setup_pass() { echo "setup: PASS $*"; SETUP_PASSED=$((SETUP_PASSED + 1)); }
setup_fail() { echo "setup: FAIL $*"; SETUP_FAILED=$((SETUP_FAILED + 1)); }
finish() {
    echo "setup: $SETUP_PASSED passed, $SETUP_FAILED failed"
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ] && [ "$SETUP_FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]; exit $?
}
cleanup() { collect; [ -n "$STARTED" ] && "$CL" stop >/dev/null 2>&1; [ -n "${T:-}" ] && rm -rf "$T"; }
trap cleanup EXIT

# ---- preflight: a tier that cannot run fails
why=""
[ "$(id -u)" = 0 ] || why="this needs root (network namespace, User-Mode Linux guests)"
for t in pacemakerd crm_mon cibadmin pcs crm; do
    command -v "$t" >/dev/null || why="$t is missing (apt-get install pacemaker pacemaker-cli-utils pcs crmsh: tests/install-deps.sh)"
done
[ -x /usr/lib/ocf/resource.d/pacemaker/controld ] || why="ocf:pacemaker:controld is missing (pacemaker-resource-agents)"
[ -x /usr/lib/ocf/resource.d/heartbeat/VirtualDomain ] || why="ocf:heartbeat:VirtualDomain is missing (resource-agents)"
for t in libvirtd virsh qemu-system-x86_64 jq; do command -v "$t" >/dev/null || why="$t is missing (tests/install-deps.sh)"; done
if [ -n "$why" ]; then fail "preflight: cannot run: $why"; finish; fi
rm -rf "$RES"; mkdir -p "$RES"

if ! { cargo build --release --locked -p lockmgr -p cli --bins && cargo build --release --locked -p plugin --lib && cargo build --release --locked -p cluster-tests --bin daemon-client; } >"$RES/build.log" 2>&1; then
    fail "cargo build --release: $(tail -n 10 "$RES/build.log" | tr '\n' ' ')"; finish
fi
"$CL" prepare >/dev/null || { fail "cluster.sh prepare"; finish; }
"$CL" stop >/dev/null 2>&1
STARTED=1
if out=$("$CL" start 3 2>&1); then setup_pass "3 guests with corosync and pacemakerd: $out"; else setup_fail "cluster start: $out"; finish; fi

# ---- install what the .deb installs, into each guest's overlay (content-addressed copies:
# a guest may serve a stale copy of a file rebuilt on the host after it booted)
D=$("$CL" bin "$TGT"/release/virtdlmd); C=$("$CL" bin "$TGT"/release/virtdlm)
A=$("$CL" bin deploy/ocf/virtdlmd); F=$("$CL" bin deploy/cluster/virtdlmd.conf)
VM=$("$CL" bin /bin/sleep)
FA=$("$CL" bin tests/cluster/fence/fence_uml); DLMCONF=$("$CL" bin deploy/cluster/dlm.conf)
DC=$("$CL" bin "$TGT"/release/daemon-client)
vms_bins
# syslog (busybox) so that virtdlmd's log reaches /var/log/messages, as on a real host.
for i in 1 2 3; do fencing_provision "$i" || fail "install on node$i"; done
vms_precache & PRECACHE=$!
if out=$(gx 1 "stonith_admin --metadata -a fence_uml" 2>&1) && echo "$out" | grep -q '<resource-agent name="fence_uml"'; then
    setup_pass "the fencer reads fence_uml's metadata (stonith_admin --metadata -a fence_uml)"
else setup_fail "stonith_admin --metadata -a fence_uml: $(echo "$out" | head -c 300)"; fi
if gx 1 "crm_resource --show-metadata ocf:virt-dlm:virtdlmd" >"$RES/virtdlmd-meta-data.xml" 2>&1; then
    pass "pacemaker reads the agent's meta-data (crm_resource --show-metadata ocf:virt-dlm:virtdlmd)"
else fail "crm_resource --show-metadata: $(head -c 300 "$RES/virtdlmd-meta-data.xml")"; fi

# Pacemaker elects a DC (dc-deadtime, 20 s) before it takes any configuration.
if gwait 90 1 "crm_mon -1 | grep -q 'Current DC: node.*partition with quorum' && crm_mon -1 | grep -q 'Online: \[ node1 node2 node3 \]'"; then
    setup_pass "pacemaker: DC elected, node1 node2 node3 online"
else setup_fail "no DC with 3 nodes online: $(gx 1 'crm_mon -1' 2>&1 | tr '\n' ' ')"; finish; fi

# The nodes all_started (lib.sh) waits for: every clone Started on each (crm_mon's clone lines).
ONLINE="node1 node2 node3"
# The test's edits (the output shows them as a diff): the fence devices are fence_uml (the
# guests' power switch) instead of fence_ipmilan, the nodes are node1..3 instead of hv1..3,
# libvirtd is lsb:libvirtd (tests/pacemaker/libvirtd.init: no systemd in the guests, and
# Debian's libvirt has no init script), with the start and stop timeouts of the crm form (pcs
# takes lsb's default of 20 s). Fencing stays as shipped (stonith-enabled=true, on-fail=fence).
test_edits() {
    sed -e 's/fence-hv\([0-9]\) fence_ipmilan .*pcmk_host_list=hv[0-9]/fence-node\1 fence_uml pcmk_host_list=node\1/' \
        -e 's/fence-hv\([0-9]\) stonith:fence_ipmilan params .*pcmk_host_list=hv[0-9]/fence-node\1 stonith:fence_uml params pcmk_host_list=node\1/' \
        -e 's/location fence-hv\([0-9]\) avoids hv[0-9]/location fence-node\1 avoids node\1/' \
        -e 's/location fence-hv\([0-9]\)-avoids-hv[0-9] fence-hv[0-9] -inf: hv[0-9]/location fence-node\1-avoids-node\1 fence-node\1 -inf: node\1/' \
        -e 's#systemd:libvirtd op monitor#lsb:libvirtd op start timeout=100s op stop timeout=100s op monitor#' \
        -e 's#systemd:libvirtd#lsb:libvirtd#' "$1"
}

# ---- both forms, applied to a copy of the live CIB on this host (pcs -f, crmsh with CIB_file):
# in the guests every pcs or crm command takes 10-20 s (Python over hostfs), on the host well
# under one. The host has no ocf:virt-dlm:virtdlmd installed, and pcs and crmsh read every
# agent's meta-data: a private mount namespace shows them /usr/lib/ocf/resource.d with it.
T=$(mktemp -d /tmp/virtdlm-pcmk-cib.XXXXXX)
gx 1 "cibadmin -Q" >"$T/live.xml" 2>/dev/null
cp "$T/live.xml" "$T/pcs.xml"; cp "$T/live.xml" "$T/crm.xml"
test_edits deploy/cluster/pacemaker-pcs.sh pcs >"$RES/pacemaker-pcs.test.sh"
test_edits deploy/cluster/pacemaker-crm.txt crm >"$RES/pacemaker-crm.test.txt"
echo "--- pcs form as applied (diff against deploy/cluster/pacemaker-pcs.sh):"
diff deploy/cluster/pacemaker-pcs.sh "$RES/pacemaker-pcs.test.sh"
echo "--- crm form as applied (diff against deploy/cluster/pacemaker-crm.txt):"
diff deploy/cluster/pacemaker-crm.txt "$RES/pacemaker-crm.test.txt"
# The pcs script unchanged but for `pcs` itself, which writes the file CIB.
if out=$(in_ocf_ns sh -c 'pcs() { command pcs -f "$0" "$@"; }; . "$1"' "$T/pcs.xml" "$RES/pacemaker-pcs.test.sh" 2>&1) &&
   out2=$(crm_verify -V -x "$T/pcs.xml" 2>&1); then
    pass "pacemaker-pcs.sh with pcs -f (pcs 0.11.5): every command accepted; crm_verify -x clean"
    echo "$out" | tee "$RES/pcs-out.txt" | sed 's/^/  | /'
else fail "pacemaker-pcs.sh with pcs -f: $(echo "$out ${out2:-}" | tr '\n' ' ' | cut -c1-800)"; fi
if out=$(in_ocf_ns env CIB_file="$T/crm.xml" crm configure load update "$RES/pacemaker-crm.test.txt" 2>&1) &&
   out2=$(crm_verify -V -x "$T/crm.xml" 2>&1); then
    pass "crm configure load update pacemaker-crm.txt (crmsh $(crm --version 2>/dev/null | awk '{print $NF}')); crm_verify -x clean"
else fail "crm configure load update: $(echo "$out ${out2:-}" | tr '\n' ' ' | cut -c1-800)"; fi
# Both forms make the same configuration: the same primitives (class:provider:type), clones,
# order and colocation pairs, and cluster properties (ids aside).
shape() {
    python3 - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
c = ET.parse(sys.argv[1]).getroot().find("configuration")
out = set()
for p in c.iter("primitive"):
    out.add("primitive %s %s:%s:%s" % (p.get("id"), p.get("class"), p.get("provider", ""), p.get("type")))
for k in c.iter("clone"):
    out.add("clone %s of %s" % (k.get("id"), k.find("primitive").get("id")))
for o in c.iter("rsc_order"):
    out.add("order %s then %s" % (o.get("first"), o.get("then")))
for o in c.iter("rsc_colocation"):
    out.add("colocation %s with %s" % (o.get("rsc"), o.get("with-rsc")))
for l in c.iter("rsc_location"):
    out.add("location %s %s %s" % (l.get("rsc"), l.get("score"), l.get("node")))
for n in c.find("crm_config").iter("nvpair"):
    if n.get("name") in ("stonith-enabled", "no-quorum-policy"):
        out.add("property %s=%s" % (n.get("name"), n.get("value")))
print("\n".join(sorted(out)))
PY
}
shape "$T/pcs.xml" >"$RES/pcs.shape" 2>&1; shape "$T/crm.xml" >"$RES/crm.shape" 2>&1
if [ -s "$RES/pcs.shape" ] && diff "$RES/pcs.shape" "$RES/crm.shape" >"$RES/shape.diff"; then
    pass "the pcs and crm forms make the same configuration ($(wc -l <"$RES/pcs.shape") elements)"
    sed 's/^/  | /' "$RES/pcs.shape"
else fail "pcs and crm forms differ: $(tr '\n' ' ' <"$RES/shape.diff")"; fi
cp "$T/pcs.xml" "$RES/cib.pcs.xml"; cp "$T/crm.xml" "$RES/cib.crm.xml"

# ---- the pcs form, pushed into the live cluster (pcs without pcsd)
MARK=()
for i in 1 2 3; do MARK[$i]=$(gx "$i" "wc -l < /var/log/pacemaker/pacemaker.log"); done
P=$("$CL" bin "$T/pcs.xml")
wait "$PRECACHE" || setup_fail "node1: libvirtd's first start (QEMU capabilities for /shared/.qemucaps): $(tail -c 400 "$RES/qemucaps.txt" | tr '\n' ' ')"
if out=$(gx 1 "pcs cluster cib-push $P --config 2>&1"); then pass "pcs cluster cib-push --config on node1: $out"; echo "$out" >"$RES/cibpush.txt"
else fail "pcs cluster cib-push: $out"; fi
if all_started 600; then pass "dlm, virtdlmd and libvirtd clones Started on node1 node2 node3"
else fail "not all started: $(gx 1 'crm_mon -1 -r' 2>&1 | tr '\n' ' ')"; fi
echo "--- crm_mon -1 -r"
gx 1 "crm_mon -1 -r" 2>&1 | tee "$RES/crm_mon.txt"

# Line number of the first line after the mark matching $3 in node $1's pacemaker log (0: none).
logline() {
    gx "$1" "tail -n +$(( ${MARK[$1]} + 1 )) /var/log/pacemaker/pacemaker.log | grep -n -m1 -E '$2' | cut -d: -f1" 2>/dev/null | head -n1
}
# On node $1: the end of operation $2 of resource $3 comes before the request of operation $4 of $5.
before() {
    local a b
    a=$(logline "$1" "Result of $2 operation for $3 on node$1: ok")
    b=$(logline "$1" "Requesting local execution of $4 operation for $5 on node$1")
    [ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ]
}
for i in 1 2 3; do
    if before "$i" start dlm start virtdlmd && before "$i" start virtdlmd start libvirtd; then
        pass "node$i: pacemaker started dlm, then virtdlmd, then libvirtd (pacemaker.log)"
    else
        fail "node$i: start order: $(gx "$i" "tail -n +$(( ${MARK[$i]} + 1 )) /var/log/pacemaker/pacemaker.log | grep -E 'Result of start operation|Requesting local execution of start' | cut -c1-200" | tr '\n' ' ')"
    fi
    if out=$(gx "$i" "pgrep -x dlm_controld >/dev/null && virtdlm status" 2>&1) && echo "$out" | grep -q "node .*node$i"; then
        pass "node$i: virtdlm status answers (dlm_controld runs)"
        [ "$i" = 1 ] && { echo "--- virtdlm status (node1)"; echo "$out" | tee "$RES/virtdlm-status.txt"; }
    else fail "node$i: virtdlm status: $(echo "$out" | tr '\n' ' ')"; fi
done

# ---- a VM's lock, seen from every node (a sleep stands in for QEMU; daemon-client speaks
# the plugin's protocol)
if [ -x "$TGT/release/daemon-client" ]; then
    out=$(gx 1 "mkdir -p /var/lib/libvirt/images && truncate -s 1M /var/lib/libvirt/images/web-1.img
        setsid $VM 3600 </dev/null >/dev/null 2>&1 & echo \$! > /run/vm-web-1.pid
        $DC /run/virt-dlm/virtdlmd.sock acquire:web-1:\$(cat /run/vm-web-1.pid):EX=/var/lib/libvirt/images/web-1.img" 2>&1)
    if echo "$out" | grep -q '"outcome":"ok"'; then pass "node1: VM web-1 holds EX on web-1.img"
    else fail "node1: acquire: $(echo "$out" | tr '\n' ' ' | cut -c1-400)"; fi
    if gwait 30 2 "virtdlm locks | grep -q 'web-1.img.*EX.*web-1.*node1'"; then
        pass "node2: virtdlm locks shows web-1's lock on node1"
        echo "--- virtdlm locks (node2)"; gx 2 "virtdlm locks" | tee "$RES/virtdlm-locks.txt"
    else fail "node2: virtdlm locks: $(gx 2 'virtdlm locks' 2>&1 | tr '\n' ' ')"; fi
    echo "--- dlm_tool ls (node1)"; gx 1 "dlm_tool ls" | tee "$RES/dlm_tool-ls.txt"
    gx 1 "kill \$(cat /run/vm-web-1.pid)" >/dev/null
    if gwait 30 2 "! virtdlm locks | grep -q web-1"; then pass "web-1 exits: its lock is gone cluster-wide"
    else fail "web-1's lock still listed: $(gx 2 'virtdlm locks' 2>&1 | tr '\n' ' ')"; fi
else
    fail "no $TGT/release/daemon-client"
fi

# ---- stopping the dlm clone on node3 stops virtdlmd there first
MARK[3]=$(gx 3 "wc -l < /var/log/pacemaker/pacemaker.log")
gx 1 "pcs resource ban dlm-clone node3" >/dev/null 2>&1
if gwait 300 3 "! pgrep -x dlm_controld >/dev/null && ! pgrep -x virtdlmd >/dev/null"; then
    pass "pcs resource ban dlm-clone node3: dlm_controld and virtdlmd stopped on node3"
else fail "ban dlm-clone node3: $(gx 1 'crm_mon -1 -r' 2>&1 | tr '\n' ' ')"; fi
if before 3 stop libvirtd stop virtdlmd && before 3 stop virtdlmd stop dlm; then
    pass "node3: pacemaker stopped libvirtd, then virtdlmd, then dlm (pacemaker.log)"
else
    fail "node3: stop order: $(gx 3 "tail -n +$(( ${MARK[3]} + 1 )) /var/log/pacemaker/pacemaker.log | grep -E 'Result of stop operation|Requesting local execution of stop' | cut -c1-200" | tr '\n' ' ')"
fi
if gx 3 "grep -q 'leaving DLM lockspace virtdlm' /var/log/pacemaker/pacemaker.log && ! dlm_tool ls 2>/dev/null | grep -q virtdlm" >/dev/null 2>&1; then
    pass "node3: the agent's stop left the unused lockspace (so dlm_controld could stop)"
else fail "node3: lockspace: $(gx 3 "grep -i lockspace /var/log/pacemaker/pacemaker.log | tail -3" 2>&1 | tr '\n' ' ')"; fi
if gx 1 "virtdlm status" 2>&1 | grep -q "node1"; then pass "node1 still serves while node3 is banned"
else fail "node1 virtdlm status after ban"; fi
echo "--- crm_mon -1 -r (dlm banned from node3)"
gx 1 "crm_mon -1 -r" 2>&1 | tee "$RES/crm_mon.ban.txt"
gx 1 "pcs resource clear dlm-clone node3" >/dev/null 2>&1
if all_started 600 && gwait 60 3 "virtdlm status >/dev/null"; then
    pass "pcs resource clear dlm-clone: dlm and virtdlmd started again on node3, virtdlm status answers"
else fail "clear: $(gx 1 'crm_mon -1 -r' 2>&1 | tr '\n' ' ')"; fi

# ---- a killed virtdlmd is started again by the monitor
old=$(gx 2 "virtdlm --json status | sed -n 's/^  \"pid\": \([0-9]*\).*/\1/p'")
if [ -n "$old" ] && gx 2 "kill -9 $old"; then
    echo "killed virtdlmd (pid $old) on node2 with SIGKILL"
    if gwait 90 2 "p=\$(virtdlm --json status 2>/dev/null | sed -n 's/^  \"pid\": \([0-9]*\).*/\1/p'); [ -n \"\$p\" ] && [ \"\$p\" != $old ]"; then
        pass "node2: pacemaker's monitor found virtdlmd dead and started it again ($(gx 2 "virtdlm --json status | sed -n 's/^  \"pid\": \([0-9]*\).*/pid \1/p'"))"
    else fail "node2: virtdlmd not restarted: $(gx 1 'crm_mon -1 -r --failcounts' 2>&1 | tr '\n' ' ')"; fi
    # node2's syslog from the failed monitor on: the agent's and the daemon's lines.
    gx 2 "sed -n '/monitor operation for virtdlmd on node2: not running/,\$p' /var/log/messages | grep virtdlmd" >"$RES/messages-node2.txt" 2>&1
    if gx 1 "crm_mon -1 --failcounts" 2>&1 | tee "$RES/crm_mon.failcounts.txt" | grep -q "virtdlmd.*node2\|virtdlmd: migration-threshold"; then
        pass "crm_mon shows the failed monitor of virtdlmd on node2"
    else fail "no failure recorded: $(cat "$RES/crm_mon.failcounts.txt" | tr '\n' ' ')"; fi
else fail "node2: no virtdlmd pid to kill"; fi
echo "--- crm_mon -1 -r --failcounts (after kill -9)"
cat "$RES/crm_mon.failcounts.txt"
if out=$(gx 1 "crm_resource --cleanup -r virtdlmd -N node2 2>&1 && crm_mon -1 --failcounts 2>&1"); then
    if echo "$out" | grep -q 'virtdlmd.*fail-count'; then fail "crm_resource --cleanup left the fail count: $(echo "$out" | tr '\n' ' ')"
    else pass "crm_resource --cleanup -r virtdlmd -N node2 clears the failure"; fi
    echo "$out" | head -n 3 | tee "$RES/cleanup.txt"; echo "$out" >"$RES/cleanup-full.txt"
else fail "crm_resource --cleanup: $(echo "$out" | tr '\n' ' ')"; fi
echo "--- /var/log/messages (node2), from the failed monitor on"
cat "$RES/messages-node2.txt"

# ---- a real VM under Pacemaker (vms.sh); it is left on node3 for the crash below
vms_scenario

# ---- fencing for real (fencing.sh): a crash and a partition, each fenced through fence_uml
fencing_failure crash-3 3 3 kill
vms_after_fence 3
fencing_show node3
fencing_failure part-2 2 3 partition
fencing_two_node
fencing_bench
sbd_scenario

finish
