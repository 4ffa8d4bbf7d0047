#!/bin/bash
# Watchdog fencing for real in the Pacemaker tier: sbd without a disk (watchdog only) on every
# node, on the guests' softdog (a module of the UML kernel; its device is /dev/watchdog1:
# /dev/watchdog is UML's built-in harddog, which needs uml_watchdog on the host), Pacemaker
# with stonith-enabled=true, no fence device and stonith-watchdog-timeout=$SBD_STONITH_WD;
# dlm_controld with enable_fencing=1 (deploy/cluster/dlm.conf as shipped) asks Pacemaker's
# fencer, which counts a lost node fenced once stonith-watchdog-timeout has passed.
#
# Sourced by tests/pacemaker/run.sh (sbd_scenario, after its other sections), or run alone:
#   tests/pacemaker/sbd.sh        (same settings as run.sh: CL_NS, CL_BASE, CL_NET, CARGO_TARGET_DIR;
#                                  SBD_BENCH_OUT: a file to store the failure-to-grant figures in,
#                                  e.g. docs/bench/sbd.json)
#
# The scenario (sbd-hang-3): node3's VM holds EX on a disk, node1's VM asks for the same disk
# until granted. node3's link is cut and its sbd is stopped (SIGSTOP) at the same moment: a
# node cut off whose user space hangs, so only the kernel watchdog can reset it (a running sbd
# would reset it itself on the loss of quorum). Proved from the logs: node3 resets (softdog's
# "Initiating system reboot" and a new boot in node3's console, stamped by the host as they
# come); every survivor's fencer counts node3 fenced only after waiting
# stonith-watchdog-timeout ("Waiting ... to self-fence", then the reboot operation OK); node1's
# grant comes after both. `virtdlm status` shows the sbd shape as working fencing.
# Failure-to-grant time: $RES/sbd-bench.json (and SBD_BENCH_OUT).

SBD_WD_TIMEOUT=${SBD_WD_TIMEOUT:-10}   # SBD_WATCHDOG_TIMEOUT (s): softdog's timeout
SBD_STONITH_WD=${SBD_STONITH_WD:-20s}  # stonith-watchdog-timeout: twice the watchdog's, as sbd(8) advises

# The provision script of every guest (cluster.sh CL_PROVISION: it runs at each boot before
# corosync and Pacemaker, as sbd.service runs before pacemaker.service): what fencing.sh
# installs, softdog loaded, /etc/default/sbd (the Debian file, watchdog only: no SBD_DEVICE),
# sbd started as sbd.service starts it. guest-init.sh gives pacemakerd sbd's environment, as
# pacemaker.service's EnvironmentFile does.
sbd_provision_script() {
    fencing_provision_script
    cat <<EOP
m=\$(sed -n 's/.*cl\.umlmods=\([^ ]*\).*/\1/p' /proc/cmdline)
ls /dev/watchdog[0-9]* >/dev/null 2>&1 || insmod "\$m/kernel/drivers/watchdog/softdog.ko"
w=\$(ls /dev/watchdog[0-9]* | head -n1)
[ -c "\$w" ]
cat > /etc/default/sbd <<EOC
SBD_PACEMAKER=yes
SBD_STARTMODE=always
SBD_DELAY_START=no
SBD_WATCHDOG_DEV=\$w
SBD_WATCHDOG_TIMEOUT=$SBD_WD_TIMEOUT
SBD_TIMEOUT_ACTION=flush,reboot
SBD_MOVE_TO_ROOT_CGROUP=no
SBD_SYNC_RESOURCE_STARTUP=no
EOC
# sbd goes to the background once corosync answers (it starts before it): not waited for here;
# guest-init.sh waits for its pid file (/run/sbd.wanted) before it starts pacemakerd.
touch /run/sbd.wanted
# The guest's syslog, copied as it grows to the host side, where it outlives a watchdog reset
# (/var/log is the guest's tmpfs): each boot appends after a marker.
echo "---- boot at \$(date -u +%FT%T)" >>/xchg/messages.live
(exec setsid tail -n +1 -F /var/log/messages >>/xchg/messages.live 2>/dev/null </dev/null &)
# Not before 8 s of uptime: sbd records a servant's "unhealthy" report as a last liveness at
# 1 s of CLOCK_MONOTONIC (src/sbd-inquisitor.c, SIG_PCMK_UNHEALTHY), so one that comes in the
# first 5 s after boot counts as healthy. A guest reaches sbd 2 s after boot: its Pacemaker
# servant's first report (pacemakerd not up yet) then marks the cluster as seen, the next
# reports age it, and sbd stops feeding the watchdog while Pacemaker still starts: softdog
# resets the node (seen: every node reset before a DC was elected). A real host starts sbd
# later than that after boot.
(while [ "\$(cut -d. -f1 /proc/uptime)" -lt 8 ]; do sleep 0.5; done
 set -a; . /etc/default/sbd; set +a; exec setsid /usr/sbin/sbd -p /run/sbd.pid watch) >/xchg/sbd.start.log 2>&1 </dev/null &
EOP
}

# The host's stamps on guest $1's console lines from now on (kernel messages: the watchdog's).
sbd_console_watch() {
    local log=$CL_BASE/n$1/console.log
    tail -n0 -F "$log" 2>/dev/null | while IFS= read -r l; do printf '%s %s\n' "$(date +%s.%N)" "$l"; done >"$2" &
    SBD_WATCH_PID=$!
}

# After a failed start: which guests their watchdog reset, and what each guest's sbd logged
# before (from the copy on the host side, /xchg/messages.live).
sbd_resets() {
    local i
    for i in 1 2 3; do
        grep -q 'softdog: Initiating system reboot' "$CL_BASE/n$i/console.log" 2>/dev/null &&
            echo "sbd: node$i was reset by its watchdog (console: softdog: Initiating system reboot)"
        grep -h 'sbd\[\|pacemaker-controld.*\(election\|State transition\)' "$CL_BASE/n$i/xchg/messages.live" 2>/dev/null | tail -n 15 | sed "s/^/  | node$i /"
    done
}

sbd_scenario() {
    local out name=sbd-hang-3 n=3 s=1 img=/var/lib/libvirt/images/sbd-hang-3.img
    collect; mkdir -p "$RES/before-sbd"; mv "$RES"/node[123] "$RES/before-sbd/" 2>/dev/null
    "$CL" stop >/dev/null 2>&1
    # Every guest boots with sbd (provision.sh, before corosync and Pacemaker).
    sbd_provision_script >"$T/provision-sbd.sh"
    if out=$(CL_PROVISION=$T/provision-sbd.sh "$CL" start 3 2>&1); then pass "sbd: 3 guests with sbd, corosync and pacemakerd: $out"
    else fail "sbd: cluster start: $out"; return; fi
    ONLINE="node1 node2 node3"
    for i in 1 2 3; do
        gx "$i" "kill -0 \$(cat /run/sbd.pid)" >/dev/null 2>&1 || { fail "sbd: sbd does not run on node$i: $(gx "$i" 'cat /xchg/sbd.start.log /xchg/provision.log' 2>&1 | tr '\n' ' ')"; return; }
    done
    pass "sbd: softdog loaded ($(gx 1 ". /etc/default/sbd; echo \$SBD_WATCHDOG_DEV" 2>/dev/null)), sbd -p /run/sbd.pid watch running on node1 node2 node3 before corosync (watchdog only, SBD_WATCHDOG_TIMEOUT=$SBD_WD_TIMEOUT)"
    if ! gwait 180 1 "crm_mon -1 | grep -q 'Current DC: node.*partition with quorum' && crm_mon -1 | grep -q 'Online: \[ node1 node2 node3 \]'"; then
        fail "sbd: no DC with 3 nodes online: $(gx 1 'crm_mon -1' 2>&1 | tr '\n' ' ')"; sbd_resets; return; fi
    if gwait 60 1 "[ \"\$(crm_attribute --type crm_config --name have-watchdog --query --quiet 2>/dev/null)\" = true ]"; then
        pass "sbd: Pacemaker sees sbd (have-watchdog=true)"
    else fail "sbd: have-watchdog is not true: $(gx 1 'crm_attribute --type crm_config --name have-watchdog --query; cat /xchg/sbd.start.log' 2>&1 | tr '\n' ' ')"; return; fi
    # The pcs form without the fence devices, plus stonith-watchdog-timeout (crm_attribute:
    # pcs refuses it unless it finds sbd enabled in systemd, which the guests do not run).
    test_edits deploy/cluster/pacemaker-pcs.sh pcs | sed -e '/fence-hv[0-9]\|fence-node[0-9]/d' >"$RES/pacemaker-pcs.sbd.sh"
    if pcs_push sbd "$RES/pacemaker-pcs.sbd.sh" crm_attribute --type crm_config --name stonith-watchdog-timeout --update "$SBD_STONITH_WD"; then
        pass "sbd: pcs form without fence devices, stonith-watchdog-timeout=$SBD_STONITH_WD, pushed: $out"
    else fail "sbd: configuration: $(echo "$out" | tr '\n' ' ' | cut -c1-600)"; return; fi
    if all_started 600; then pass "sbd: dlm, virtdlmd and libvirtd clones Started on node1 node2 node3"
    else fail "sbd: not all started: $(gx 1 'crm_mon -1 -r' 2>&1 | tr '\n' ' ')"; return; fi
    gx 1 "crm_mon -1 -r" >"$RES/crm_mon.sbd.txt" 2>&1
    # virtdlmd reads the shape: watchdog fencing counts as working fencing.
    if gwait 60 1 "virtdlm status | grep -q 'fencing works.*stonith-watchdog-timeout=$SBD_STONITH_WD (sbd runs)'"; then
        pass "sbd: virtdlm status: $(gx 1 'virtdlm status' | grep -o 'fencing works.*sbd runs)' | head -n1)"
    else fail "sbd: virtdlm status does not show the sbd shape: $(gx 1 'virtdlm status' 2>&1 | grep -A2 fencing | tr '\n' ' ')"; fi
    gx 1 "virtdlm status" >"$RES/virtdlm-status.sbd.txt" 2>&1

    # ---- node3 cut off and hung (its sbd stopped): only the watchdog can reset it
    out=$(gx "$n" "mkdir -p /var/lib/libvirt/images && truncate -s 1M $img
        setsid $VM 3600 </dev/null >/dev/null 2>&1 & echo \$! > /run/vm-$name.pid
        $DC /run/virt-dlm/virtdlmd.sock acquire:$name-a:\$(cat /run/vm-$name.pid):EX=$img" 2>&1)
    if echo "$out" | grep -q '"outcome":"ok"'; then pass "$name: node$n's VM $name-a holds EX on $img"
    else fail "$name: node$n acquire: $(echo "$out" | tr '\n' ' ' | cut -c1-300)"; return; fi
    local off unc oo ou pid tfail
    read -r off unc <<<"$(clock_offset "$s")"
    gx "$s" "mkdir -p /var/lib/libvirt/images && truncate -s 1M $img; setsid $VM 3600 </dev/null >/dev/null 2>&1 & echo \$! > /run/vm-$name.pid" >/dev/null
    T_EXEC=400 gx "$s" "$DC /run/virt-dlm/virtdlmd.sock until-granted:360:$name-b:\$(cat /run/vm-$name.pid):EX=$img" >"$RES/$name.until-granted.json" 2>&1 &
    pid=$!
    sbd_console_watch "$n" "$RES/$name.console.node$n.txt"
    sleep 3
    # The stop first (an exec into a cut-off guest goes over the host side, not its link).
    tfail=$(date +%s.%N)
    gx "$n" "kill -STOP \$(cat /run/sbd.pid) \$(pgrep -x sbd)" >/dev/null 2>&1
    "$CL" partition "$n" >/dev/null
    echo "$name: node$n's sbd stopped and its link cut at $(date -u -d "@$tfail" +%H:%M:%S.%N | cut -c1-12) (host clock)"
    wait "$pid"
    if grep -q '"outcome":"ok"' "$RES/$name.until-granted.json"; then pass "$name: node$s's VM $name-b granted EX on $img after node$n was cut off"
    else fail "$name: node$s not granted: $(tr '\n' ' ' <"$RES/$name.until-granted.json" | cut -c1-400)"; kill "$SBD_WATCH_PID" 2>/dev/null; return; fi
    sleep 2
    kill "$SBD_WATCH_PID" 2>/dev/null
    local grantline tgrant treset
    gx "$s" "grep -a 'granted' /var/log/messages | grep -a 'vm=$name-b'" | sed 's/\x1b\[[0-9;]*m//g' >"$RES/$name.grant.txt"
    grantline=$(head -n1 "$RES/$name.grant.txt")
    [ -n "$grantline" ] || { fail "$name: no grant line for $name-b in node$s's log"; return; }
    tgrant=$(rfc3339 "$grantline")
    treset=$(grep -a -m1 -E 'softdog: Initiating system reboot' "$RES/$name.console.node$n.txt" | cut -d' ' -f1)
    if [ -n "$treset" ]; then
        pass "$name: node$n reset by its watchdog: $(grep -a -m1 'softdog: Initiating' "$RES/$name.console.node$n.txt" | cut -d' ' -f2- | cut -c1-120) ($(python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) - float(sys.argv[2])))" "$treset" "$tfail") s after the failure)"
    else fail "$name: no watchdog reset in node$n's console: $(tail -n 15 "$RES/$name.console.node$n.txt" | cut -c1-200 | tr '\n' ' ')"; return; fi
    # The UML guest does not boot again by itself: its restart path faults ("Received SIGSEGV
    # in SIGSEGV handler" on the console) and the kernel stays stopped, as a host that a
    # reset left off. The test turns it off (cluster.sh kill) as a power switch would.
    if T_EXEC=15 gx "$n" true >/dev/null 2>&1; then
        fail "$name: node$n still runs commands after its reset"
    else pass "$name: node$n's kernel stopped at the reset (no command runs there; console: $(sed -n '/softdog: Initiating/,$p' "$RES/$name.console.node$n.txt" | sed -n 2p | cut -d' ' -f2- | cut -c1-60))"; fi
    "$CL" kill "$n" >/dev/null 2>&1
    local verdict
    verdict=$(python3 -c "import sys; g,o,u,r,f=map(float,sys.argv[1:]); h=g-o-u-0.05; print('%s %.3f %.3f' % ('after' if h>r else 'BEFORE', h-r, g-o-f))" "$tgrant" "$off" "$unc" "$treset" "$tfail")
    set -- $verdict
    local f2g=$3
    if [ "$1" = after ]; then pass "$name: node$s's grant came $2 s after node$n's watchdog reset (clock offset ${off}s +-${unc}s)"
    else fail "$name: node$s's grant came BEFORE node$n's watchdog reset ($2 s): $grantline"; fi
    # Every survivor's fencer: the watchdog fence ("Waiting <timeout> for node3 to self-fence")
    # and its completion, the first after the failure, before node1's grant.
    local o hk hd hc hw
    for o in 1 2; do
        gx "$o" "grep -a -E 'self-fence|finalize_op.*targeting node$n .*: OK' /var/log/pacemaker/pacemaker.log" >"$RES/$name.fencer.node$o.txt" 2>&1
        if [ "$o" = "$s" ]; then oo=$off ou=$unc; else read -r oo ou <<<"$(clock_offset "$o")"; fi
        read -r hk hd hc hw <<<"$(python3 - "$RES/$name.fencer.node$o.txt" "$tgrant" "$off" "$unc" "$oo" "$ou" "$tfail" <<'PY'
import re, sys, time, datetime as d
path, g, so, su, oo, ou, fail = sys.argv[1], *map(float, sys.argv[2:])
year = time.gmtime().tm_year
wait = done = None
for line in open(path, errors="replace"):
    m = re.match(r"(\w{3} +\d+ \d\d:\d\d:\d\d\.\d+) ", line)
    if not m:
        continue
    t = d.datetime.strptime("%d %s" % (year, m.group(1)), "%Y %b %d %H:%M:%S.%f").replace(tzinfo=d.timezone.utc).timestamp()
    host = t - oo
    if host < fail - ou - 0.05:
        continue
    if wait is None and "self-fence" in line:
        wait = (t, line)
    if done is None and "finalize_op" in line:
        done = (t, host, m.group(1).replace(" ", "_"))
if done is None:
    print("none 0 - -")
else:
    margin = (g - so - su) - (done[1] + ou)
    if oo == so:
        margin = g - done[0]
    w = "-" if wait is None else "%.1f" % (done[0] - wait[0])
    print("%s %.3f %s %s" % ("after" if margin > 0 else "BEFORE", margin, done[2], w))
PY
)"
        case $hk in
            after) pass "$name: node$s's grant came $hd s after node$o's fencer counted node$n fenced ($hc, finalize_op OK; ${hw} s after it began waiting for node$n to self-fence)" ;;
            BEFORE) fail "$name: node$s's grant came before node$o's fencer counted node$n fenced ($hd s; $hc)" ;;
            *) fail "$name: no completed fence of node$n after the failure in node$o's pacemaker.log: $(tr '\n' ' ' <"$RES/$name.fencer.node$o.txt" | cut -c1-400)" ;;
        esac
        if grep -a -q "self-fence" "$RES/$name.fencer.node$o.txt"; then
            [ "$o" = "$s" ] && echo "  | $(grep -a 'self-fence' "$RES/$name.fencer.node$o.txt" | tail -n1 | cut -c1-220)"
        fi
    done
    gx "$s" "stonith_admin --history node$n --verbose" >"$RES/$name.history.txt" 2>&1
    printf '{"scenario":"%s","nodes":3,"failure":"link cut and sbd stopped","failure_host":%s,"watchdog_reset_host":%s,"grant_guest":%s,"clock_offset":%s,"clock_uncertainty":%s,"failure_to_grant_s":%s}\n' \
        "$name" "$tfail" "$treset" "$tgrant" "$off" "$unc" "$f2g" >"$RES/sbd-bench.jsonl"
    python3 - "$RES/sbd-bench.jsonl" "$RES/sbd-bench.json" "${SBD_BENCH_OUT:-}" "$SBD_WD_TIMEOUT" "$SBD_STONITH_WD" <<'PY'
import json, sys, time, os
sys.path.insert(0, "tests/bench")
from provenance import provenance
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
prov = provenance({"journal_fs": "tmpfs (guest /run)", "log_level": "the ocf agent's default", "corosync_token_ms": "3000",
                   "sbd_watchdog_timeout_s": sys.argv[4], "stonith_watchdog_timeout": sys.argv[5]})
doc = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "commit": prov["commit"], "dirty": prov["dirty"], "settings": prov["settings"],
       "machine": dict(prov["machine"], load=open("/proc/loadavg").read().split()[:3]),
       "what": "tests/pacemaker/sbd.sh: seconds from a node's failure (host clock: its sbd stopped and its link cut) to the survivor's virtdlmd grant of the failed node's disk (guest stamp on the host's time line); sbd watchdog only on softdog, SBD_WATCHDOG_TIMEOUT=%s s, stonith-watchdog-timeout=%s, dlm_controld enable_fencing=1, corosync token 3000 ms" % (sys.argv[4], sys.argv[5]),
       "rows": rows}
for out in sys.argv[2:4]:
    if out:
        json.dump(doc, open(out, "w"), indent=1); open(out, "a").write("\n")
for r in rows:
    print("bench: %-10s failure to watchdog reset %.2f s, failure to grant %.2f s" % (r["scenario"], r["watchdog_reset_host"] - r["failure_host"], r["failure_to_grant_s"]))
PY
    "$CL" heal "$n" >/dev/null 2>&1
    gx "$s" "kill \$(cat /run/vm-$name.pid)" >/dev/null 2>&1
}

# ---- run alone: the tier's setup (as run.sh has it), then the scenario
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -uo pipefail
    cd "$(dirname "$0")/../.."
    TOP=$PWD
    export CL_NS=${CL_NS:-virtdlmpcmk} CL_BASE=${CL_BASE:-/tmp/virtdlm-pcmk} CL_NET=${CL_NET:-10.99.4} CL_PCMK=1
    CL=$TOP/tests/cluster/cluster.sh
    . "$TOP/tests/pacemaker/lib.sh"
    . "$TOP/tests/pacemaker/fencing.sh"
    TGT=${CARGO_TARGET_DIR:-$TOP/target}
    RES=$TGT/pacemaker-results-sbd
    PASSED=0 FAILED=0 STARTED=
    pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
    fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }
    finish() { echo "$PASSED passed, $FAILED failed"; [ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]; exit $?; }
    ONLINE="node1 node2 node3"
    # run.sh's libvirtd is a real one (lsb:libvirtd with dlm.so, provisioned by
    # tests/pacemaker/vms.sh); run alone, that provisioning is not done and a Dummy stands in.
    test_edits() { sed -e 's#systemd:libvirtd#ocf:pacemaker:Dummy#' "$1"; }
    vms_provision_lines() { :; }   # fencing_provision_script's libvirt part: not run alone
    cleanup() { collect; [ -n "$STARTED" ] && "$CL" stop >/dev/null 2>&1; [ -n "${T:-}" ] && rm -rf "$T"; }
    trap cleanup EXIT
    command -v sbd >/dev/null || { fail "preflight: sbd is missing (tests/install-deps.sh)"; finish; }
    rm -rf "$RES"; mkdir -p "$RES"
    if ! { cargo build --release --locked -p lockmgr -p cli --bins && cargo build --release --locked -p cluster-tests --bin daemon-client; } >"$RES/build.log" 2>&1; then
        fail "cargo build --release: $(tail -n 10 "$RES/build.log" | tr '\n' ' ')"; finish
    fi
    "$CL" prepare >/dev/null || { fail "cluster.sh prepare"; finish; }
    "$CL" stop >/dev/null 2>&1
    STARTED=1
    T=$(mktemp -d /tmp/virtdlm-sbd-cib.XXXXXX)
    D=$("$CL" bin "$TGT"/release/virtdlmd); C=$("$CL" bin "$TGT"/release/virtdlm)
    A=$("$CL" bin deploy/ocf/virtdlmd); F=$("$CL" bin deploy/cluster/virtdlmd.conf)
    VM=$("$CL" bin /bin/sleep)
    FA=$("$CL" bin tests/cluster/fence/fence_uml); DLMCONF=$("$CL" bin deploy/cluster/dlm.conf)
    DC=$("$CL" bin "$TGT"/release/daemon-client)
    sbd_scenario
    finish
fi
