#!/bin/bash
# virtdlmd's own watchdog escalation for real, on the cluster tier's guests (3 UML nodes, real
# corosync and kernel DLM, dlm_controld enable_fencing=0: no fencing but virt-dlm's own).
#
# node3 runs a VM that survives SIGKILL: a process frozen by the cgroup-v1 freezer (the UML
# kernel has CONFIG_CGROUP_FREEZER; a frozen task keeps a pending SIGKILL until thawed, shown
# first on a second process). Its virtdlmd has `watchdog` set to softdog's device (loaded with
# soft_margin=$WD_SECS; /dev/watchdog1, as /dev/watchdog is UML's built-in harddog, which needs
# uml_watchdog on the host, and the kernel has WATCHDOG_NOWAYOUT); node1's and node2's have `watchdog_timeout_ms` set to the same
# timeout, as the configuration asks of every node (their grant hold counts it). node3's VM
# holds EX on a disk; node1's VM asks for the same disk until granted. node3's link is cut:
# node3 is inquorate, its virtdlmd stops the VM (SIGTERM, SIGKILL), finds it still there and
# stops petting the watchdog; softdog resets node3 (the UML guest's kernel then stays stopped:
# its restart path faults, so the node does not boot again by itself).
# Proved from the logs: node3's virtdlmd logged the VM surviving SIGKILL and the watchdog
# fired (its log is on the host, /xchg), node3's console shows softdog's "Initiating system
# reboot" (stamped by the host as it came), node3 runs nothing after it, and node1's grant came after that
# reset on the host's time line. Failure-to-grant time: $RESULTS/watchdog-bench.json (and
# WATCHDOG_BENCH_OUT, e.g. docs/bench/watchdog.json); a figure, not an assertion.
#
# Settings as tests/cluster/cluster.sh (CL_NS, CL_BASE, CL_NET), CARGO_TARGET_DIR. Boots a
# cluster of its own (stopped at the end). Prints "N passed, N failed"; non-zero on a failure.
# Takes about 3 minutes, plus the release build.
set -uo pipefail
cd "$(dirname "$0")/../.."
TOP=$PWD
export CL_NS=${CL_NS:-virtdlmcl} CL_BASE=${CL_BASE:-/tmp/virtdlm-cluster} CL_NET=${CL_NET:-10.99.0}
CL=$TOP/tests/cluster/cluster.sh
TGT=${CARGO_TARGET_DIR:-$TOP/target}
RESULTS=$TGT/watchdog-results
WD_SECS=${WD_SECS:-5}
PASSED=0 FAILED=0 STARTED=
pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }
finish() { echo "$PASSED passed, $FAILED failed"; [ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]; exit $?; }
gx() { CL_EXEC_TIMEOUT=${T_EXEC:-150} "$CL" exec "$@"; }
cleanup() {
    [ -n "${WATCH:-}" ] && kill "$WATCH" 2>/dev/null
    if [ -n "$STARTED" ]; then
        for i in 1 2 3; do mkdir -p "$RESULTS/node$i"; cp "$CL_BASE/n$i/console.log" "$CL_BASE/n$i/xchg/"*.log "$RESULTS/node$i/" 2>/dev/null; done
        "$CL" stop >/dev/null 2>&1
    fi
}
trap cleanup EXIT
# Seconds since the epoch from the first RFC 3339 stamp in a line (virtdlmd's log).
rfc3339() { python3 -c 'import sys,re,datetime as d; m=re.search(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z",sys.argv[1]); print(d.datetime.strptime(m.group(1)[:26],"%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=d.timezone.utc).timestamp())' "$1"; }
clock_offset() {
    local a g b
    a=$(date +%s.%N); g=$(gx "$1" "date +%s.%N"); b=$(date +%s.%N)
    python3 -c "import sys; a,g,b=map(float,sys.argv[1:]); print('%.3f %.3f' % (g-(a+b)/2, (b-a)/2))" "$a" "$g" "$b"
}

[ "$(id -u)" = 0 ] || { fail "preflight: needs root"; finish; }
rm -rf "$RESULTS"; mkdir -p "$RESULTS"
if ! { cargo build --release --locked -p lockmgr --bin virtdlmd && cargo build --release --locked -p cluster-tests --bin daemon-client; } >"$RESULTS/build.log" 2>&1; then
    fail "cargo build --release: $(tail -n 10 "$RESULTS/build.log" | tr '\n' ' ')"; finish
fi
"$CL" prepare >/dev/null || { fail "cluster.sh prepare"; finish; }
"$CL" stop >/dev/null 2>&1
STARTED=1
if out=$("$CL" start 3 2>&1); then pass "3 guests with corosync and dlm_controld: $out"; else fail "cluster start: $out"; finish; fi
D=$("$CL" bin "$TGT/release/virtdlmd"); DC=$("$CL" bin "$TGT/release/daemon-client"); VM=$("$CL" bin /bin/sleep)
IMG=/var/lib/libvirt/images/wd.img

# ---- node3: softdog, and a process the freezer keeps alive through SIGKILL
out=$(gx 3 "m=\$(sed -n 's/.*cl\.umlmods=\([^ ]*\).*/\1/p' /proc/cmdline)
    insmod \$m/kernel/drivers/watchdog/softdog.ko soft_margin=$WD_SECS && w=\$(ls /dev/watchdog[0-9]* | head -n1) && [ -c \"\$w\" ] && echo softdog loaded: \$w" 2>&1)
WDDEV=$(echo "$out" | sed -n 's/^softdog loaded: //p')
if [ -n "$WDDEV" ]; then pass "node3: softdog loaded (soft_margin=$WD_SECS): $WDDEV"; else fail "node3: softdog: $out"; finish; fi
out=$(gx 3 "mkdir -p /run/fz && mount -t cgroup -o freezer freezer /run/fz && mkdir -p /run/fz/probe /run/fz/vm
    setsid $VM 3600 </dev/null >/dev/null 2>&1 & p=\$!
    echo \$p > /run/fz/probe/tasks; echo FROZEN > /run/fz/probe/freezer.state
    for i in \$(seq 40); do [ \"\$(cat /run/fz/probe/freezer.state)\" = FROZEN ] && break; sleep 0.25; done
    kill -9 \$p; sleep 2
    if [ -e /proc/\$p ]; then echo \"frozen pid \$p survived SIGKILL: \$(grep State /proc/\$p/status)\"; fi
    echo THAWED > /run/fz/probe/freezer.state; sleep 1; [ -e /proc/\$p ] || echo 'thawed: gone'" 2>&1)
if echo "$out" | grep -q "survived SIGKILL" && echo "$out" | grep -q "thawed: gone"; then
    pass "node3: a task frozen by the cgroup-v1 freezer survives SIGKILL until thawed ($(echo "$out" | head -n1))"
else fail "node3: frozen task and SIGKILL: $(echo "$out" | tr '\n' ' ')"; finish; fi

# ---- virtdlmd on every node (logs on the host side: /xchg survives node3's reset)
for i in 1 2 3; do
    if [ "$i" = 3 ]; then wd="watchdog = $WDDEV"; else wd="watchdog_timeout_ms = $((WD_SECS * 1000))"; fi
    out=$(gx "$i" "d=/run/virtdlmd-wd; mkdir -p \$d
        printf 'lockspace = wdtest\nfence_grace_ms = 1000\nfence_kill_wait_ms = 1000\n$wd\n' > \$d/virtdlmd.conf
        RUST_LOG=info setsid $D --config \$d/virtdlmd.conf --backend dlm --socket \$d/ctl.sock --admin-socket \$d/admin.sock \
            --journal \$d/journal --node-name node$i >/xchg/virtdlmd-wd.log 2>&1 </dev/null &
        for t in \$(seq 1200); do grep -q 'serving on' /xchg/virtdlmd-wd.log && exit 0; sleep 0.1; done; tail -5 /xchg/virtdlmd-wd.log; exit 1" 2>&1) ||
        { fail "node$i: virtdlmd did not start: $out"; finish; }
done
pass "virtdlmd on node1 node2 node3 (node3: watchdog = $WDDEV; node1, node2: watchdog_timeout_ms = $((WD_SECS * 1000)))"
grep -a -m1 -iE "grant hold|grant_hold" "$CL_BASE/n1/xchg/virtdlmd-wd.log" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-200 | sed 's/^/  | node1: /'

# ---- node3's VM (frozen) holds EX; node1's VM asks until granted
out=$(gx 3 "mkdir -p /var/lib/libvirt/images && truncate -s 1M $IMG
    setsid $VM 3600 </dev/null >/dev/null 2>&1 & p=\$!; echo \$p > /run/vm-a.pid
    $DC /run/virtdlmd-wd/ctl.sock acquire:wd-a:\$p:EX=$IMG
    echo \$p > /run/fz/vm/tasks; echo FROZEN > /run/fz/vm/freezer.state
    for i in \$(seq 40); do [ \"\$(cat /run/fz/vm/freezer.state)\" = FROZEN ] && break; sleep 0.25; done; cat /run/fz/vm/freezer.state" 2>&1)
if echo "$out" | grep -q '"outcome":"ok"' && echo "$out" | grep -q '^FROZEN'; then pass "node3: VM wd-a holds EX on $IMG and is frozen"
else fail "node3: acquire/freeze: $(echo "$out" | tr '\n' ' ' | cut -c1-300)"; finish; fi
read -r off unc <<<"$(clock_offset 1)"
gx 1 "mkdir -p /var/lib/libvirt/images && truncate -s 1M $IMG; setsid $VM 3600 </dev/null >/dev/null 2>&1 & echo \$! > /run/vm-b.pid" >/dev/null
T_EXEC=300 gx 1 "$DC /run/virtdlmd-wd/ctl.sock until-granted:240:wd-b:\$(cat /run/vm-b.pid):EX=$IMG" >"$RESULTS/until-granted.json" 2>&1 &
pid=$!
tail -n0 -F "$CL_BASE/n3/console.log" 2>/dev/null | while IFS= read -r l; do printf '%s %s\n' "$(date +%s.%N)" "$l"; done >"$RESULTS/console.node3.stamped" &
WATCH=$!
sleep 3
tfail=$(date +%s.%N)
"$CL" partition 3 >/dev/null
echo "node3's link cut at $(date -u -d "@$tfail" +%H:%M:%S.%N | cut -c1-12) (host clock)"
wait "$pid"
sleep 5
kill "$WATCH" 2>/dev/null; WATCH=
if grep -q '"outcome":"ok"' "$RESULTS/until-granted.json"; then pass "node1: VM wd-b granted EX on $IMG after node3 was cut off"
else fail "node1 not granted: $(tr '\n' ' ' <"$RESULTS/until-granted.json" | cut -c1-400)"; finish; fi

L3=$CL_BASE/n3/xchg/virtdlmd-wd.log
if grep -a -q "survived SIGKILL" "$L3" && grep -a -q "petting stopped" "$L3"; then
    pass "node3's virtdlmd: $(grep -a -m1 'survived SIGKILL' "$L3" | sed 's/\x1b\[[0-9;]*m//g' | grep -o 'watchdog:.*' | cut -c1-200)"
else fail "node3's virtdlmd did not fire the watchdog: $(tail -n 8 "$L3" | sed 's/\x1b\[[0-9;]*m//g' | tr '\n' ' ' | cut -c1-600)"; fi
tfire=$(rfc3339 "$(grep -a -m1 'petting stopped' "$L3" | sed 's/\x1b\[[0-9;]*m//g')" 2>/dev/null)
treset=$(grep -a -m1 'softdog: Initiating system reboot' "$RESULTS/console.node3.stamped" | cut -d' ' -f1)
if [ -n "$treset" ]; then pass "node3 reset by softdog: $(python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) - float(sys.argv[2])))" "$treset" "$tfail") s after the link was cut (console, host stamp)"
else fail "no softdog reset in node3's console: $(tail -n 10 "$RESULTS/console.node3.stamped" | cut -c1-160 | tr '\n' ' ')"; finish; fi
# The UML guest does not boot again by itself: its restart path faults ("Received SIGSEGV in
# SIGSEGV handler" on the console) and the kernel stays stopped, as a host a reset left off.
if T_EXEC=15 gx 3 true >/dev/null 2>&1; then fail "node3 still runs commands after its reset"
else pass "node3's kernel stopped at the reset (no command runs there; console: $(sed -n '/softdog: Initiating/,$p' "$RESULTS/console.node3.stamped" | sed -n 2p | cut -d' ' -f2- | cut -c1-60))"; fi
"$CL" kill 3 >/dev/null 2>&1
gx 1 "cat /xchg/virtdlmd-wd.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -a 'granted' | grep -a 'vm=wd-b' >"$RESULTS/grant.txt"
grantline=$(head -n1 "$RESULTS/grant.txt")
[ -n "$grantline" ] || { fail "no grant line for wd-b in node1's log"; finish; }
tgrant=$(rfc3339 "$grantline")
read -r verdict margin f2g <<<"$(python3 -c "import sys; g,o,u,r,f=map(float,sys.argv[1:]); h=g-o-u-0.05; print('%s %.3f %.3f' % ('after' if h>r else 'BEFORE', h-r, g-o-f))" "$tgrant" "$off" "$unc" "$treset" "$tfail")"
if [ "$verdict" = after ]; then pass "node1's grant came $margin s after node3's watchdog reset (clock offset ${off}s +-${unc}s)"
else fail "node1's grant came BEFORE node3's watchdog reset ($margin s): $grantline"; fi
echo "--- node3's virtdlmd (the lock loss):"; grep -a -E "lock loss|SIGTERM|SIGKILL|watchdog" "$L3" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-220 | sed 's/^/  | /'
echo "--- node3's console (host stamps):"; grep -a -E "softdog|Linux version" "$RESULTS/console.node3.stamped" | cut -c1-160 | sed 's/^/  | /'
echo "--- node1's grant:"; echo "$grantline" | cut -c1-220 | sed 's/^/  | /'
python3 - "$RESULTS/watchdog-bench.json" "${WATCHDOG_BENCH_OUT:-}" "$tfail" "${tfire:-0}" "$treset" "$tgrant" "$off" "$unc" "$f2g" "$WD_SECS" <<'PY'
import json, sys, time, os
sys.path.insert(0, "tests/bench")
from provenance import provenance
out1, out2, fail, fire, reset, grant, off, unc, f2g, wd = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
prov = provenance({"journal_fs": "tmpfs (guest /run)", "log_level": "info", "corosync_token_ms": "3000",
                   "softdog_soft_margin_s": "%d" % wd})
o3 = None
row = {"scenario": "frozen-vm-3", "nodes": 3, "failure": "link cut; the VM survives SIGKILL (cgroup-v1 freezer)",
       "failure_host": fail, "watchdog_reset_host": reset, "grant_guest": grant, "clock_offset": off,
       "clock_uncertainty": unc, "failure_to_watchdog_reset_s": round(reset - fail, 3), "failure_to_grant_s": f2g}
doc = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "commit": prov["commit"], "dirty": prov["dirty"], "settings": prov["settings"],
       "machine": dict(prov["machine"], load=open("/proc/loadavg").read().split()[:3]),
       "what": "tests/cluster/watchdog.sh: seconds from node3's link cut (host clock) to its softdog reset (host stamp on its console) and to node1's virtdlmd grant of its disk (guest stamp on the host's time line); dlm_controld enable_fencing=0, corosync token 3000 ms, fence_grace_ms=1000, fence_kill_wait_ms=1000, softdog soft_margin=%d s" % wd,
       "rows": [row]}
for out in (out1, out2):
    if out:
        json.dump(doc, open(out, "w"), indent=1); open(out, "a").write("\n")
print("bench: link cut to watchdog reset %.2f s, to node1's grant %.2f s" % (reset - fail, f2g))
PY
finish
