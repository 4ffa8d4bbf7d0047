# Sourced by tests/pacemaker/run.sh: real fencing in the Pacemaker tier (kept apart from the
# tier's other sections). fence_uml (tests/cluster/fence/) is the stonith agent of every node;
# the host's switch (tests/cluster/fence/switch.sh, run by cluster.sh) powers guests off and on.
# dlm_controld runs with enable_fencing=1 (deploy/cluster/dlm.conf as shipped) and fences
# through dlm_stonith, i.e. through Pacemaker's fencer.

# What the .deb installs, plus the fence agent and dlm.conf, into guest $1's overlay; also left
# as /xchg/provision.sh so that a guest fenced and booted again gets it back before Pacemaker
# starts (guest-init.sh runs it).
fencing_provision() {
    fencing_provision_script >"$CL_BASE/n$1/xchg/provision.sh"
    gx "$1" "bash /xchg/provision.sh"
}
# The script itself (cluster.sh's CL_PROVISION takes it before a boot).
fencing_provision_script() {
    cat <<EOP
set -e
busybox syslogd -O /var/log/messages
install -m755 $D /usr/sbin/virtdlmd; install -m755 $C /usr/bin/virtdlm
install -D -m755 $A /usr/lib/ocf/resource.d/virt-dlm/virtdlmd; install -D -m644 $F /etc/virt-dlm/virtdlmd.conf
install -m755 $FA /usr/sbin/fence_uml
install -m644 $DLMCONF /etc/dlm/dlm.conf
$(vms_provision_lines)
EOP
}

# Seconds since the epoch, as a float, from the first RFC 3339 stamp in a line (virtdlmd's log).
rfc3339() { python3 -c 'import sys,re,datetime as d; m=re.search(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z",sys.argv[1]); print(d.datetime.strptime(m.group(1)[:26],"%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=d.timezone.utc).timestamp())' "$1"; }

# Guest $1's clock minus the host's, and half the round trip it was measured in ("OFF UNC").
clock_offset() {
    local a g b
    a=$(date +%s.%N); g=$(gx "$1" "date +%s.%N"); b=$(date +%s.%N)
    python3 -c "import sys; a,g,b=map(float,sys.argv[1:]); print('%.3f %.3f' % (g-(a+b)/2, (b-a)/2))" "$a" "$g" "$b"
}

# One failure of node $2 on a cluster of $3 nodes ($4 "kill": crash; "partition": its link
# cut), named $1; $5: the survivor that asks (default 1). Node $2's VM holds EX on a disk; the
# survivor's VM asks for the same disk from before the failure until it is granted. Proves
# from the logs that the grant came after node $2 was powered off by the fence (switch log),
# after the fencer's "Operation ... OK" (the survivor's pacemaker.log), and that node $2
# rejoins ($6 "norejoin": not waited for). Appends a benchmark record to
# $RES/fencing-bench.jsonl.
fencing_failure() {
    local name=$1 n=$2 nodes=$3 how=$4 s=${5:-1} rejoin=${6:-rejoin} img=/var/lib/libvirt/images/$1.img
    local out pid sw0 tfail off unc grantline tgrant toff okline hv
    out=$(gx "$n" "mkdir -p /var/lib/libvirt/images && truncate -s 1M $img
        setsid $VM 3600 </dev/null >/dev/null 2>&1 & echo \$! > /run/vm-$name.pid
        $DC /run/virt-dlm/virtdlmd.sock acquire:$name-a:\$(cat /run/vm-$name.pid):EX=$img" 2>&1)
    if echo "$out" | grep -q '"outcome":"ok"'; then pass "$name: node$n's VM $name-a holds EX on $img"
    else fail "$name: node$n acquire: $(echo "$out" | tr '\n' ' ' | cut -c1-300)"; return; fi
    read -r off unc <<<"$(clock_offset "$s")"
    sw0=$(wc -l <"$CL_BASE/switch.log")
    gx "$s" "mkdir -p /var/lib/libvirt/images && truncate -s 1M $img; setsid $VM 3600 </dev/null >/dev/null 2>&1 & echo \$! > /run/vm-$name.pid" >/dev/null
    # node 1 asks from before the failure on (refused: conflict) until it is granted.
    T_EXEC=400 gx "$s" "$DC /run/virt-dlm/virtdlmd.sock until-granted:360:$name-b:\$(cat /run/vm-$name.pid):EX=$img" >"$RES/$name.until-granted.json" 2>&1 &
    pid=$!
    sleep 3
    tfail=$(date +%s.%N)
    if [ "$how" = kill ]; then "$CL" kill "$n" >/dev/null; else "$CL" partition "$n" >/dev/null; fi
    echo "$name: node$n $how at $(date -u -d "@$tfail" +%H:%M:%S.%N | cut -c1-12) (host clock)"
    wait "$pid"
    if grep -q '"outcome":"ok"' "$RES/$name.until-granted.json"; then pass "$name: node$s's VM $name-b granted EX on $img after node$n's $how"
    else fail "$name: node$s not granted: $(tr '\n' ' ' <"$RES/$name.until-granted.json" | cut -c1-400)"; return; fi
    tail -n +$((sw0 + 1)) "$CL_BASE/switch.log" >"$RES/$name.switch.log"
    gx "$s" "grep -a 'granted' /var/log/messages | grep -a 'vm=$name-b'" | sed 's/\x1b\[[0-9;]*m//g' >"$RES/$name.grant.txt"
    grantline=$(head -n1 "$RES/$name.grant.txt")
    gx "$s" "grep -a -E \"Operation '(reboot|off)' .*targeting node$n|node$n.*(fenc|Operation)\" /var/log/pacemaker/pacemaker.log | tail -n 20" >"$RES/$name.fencer.txt" 2>&1
    okline=$(grep -a -E "Operation '(reboot|off)'.* targeting node$n .*(OK|ok)" "$RES/$name.fencer.txt" | tail -n1)
    # The moment node $n was powered off: the switch's OFF (partition), or, for a crash, the
    # kill itself (the switch then finds it off already).
    if [ "$how" = kill ]; then
        toff=$tfail
        grep -q "off node$n: already off" "$RES/$name.switch.log" && pass "$name: the fence's off found node$n off already (switch log)" ||
            fail "$name: no off of node$n in the switch log: $(tr '\n' ' ' <"$RES/$name.switch.log")"
    else
        toff=$(grep "off node$n: OFF" "$RES/$name.switch.log" | head -n1 | cut -d' ' -f1)
        [ -n "$toff" ] && pass "$name: the fence powered node$n off (switch log)" ||
            { fail "$name: node$n never powered off by the switch: $(tr '\n' ' ' <"$RES/$name.switch.log")"; return; }
    fi
    [ -n "$okline" ] && pass "$name: node$s's fencer: $(echo "$okline" | sed 's/.*\(Operation\)/\1/' | cut -c1-120)" ||
        fail "$name: no successful fence operation against node$n in node$s's pacemaker.log: $(tr '\n' ' ' <"$RES/$name.fencer.txt" | cut -c1-600)"
    if [ -z "$grantline" ]; then fail "$name: no grant line for $name-b in node$s's log"; return; fi
    tgrant=$(rfc3339 "$grantline")
    # The grant on the host's time line, as early as it can have been (offset and its uncertainty).
    local verdict
    verdict=$(python3 -c "import sys; g,o,u,off,fail=map(float,sys.argv[1:]); h=g-o-u-0.05; print('%s %.3f %.3f' % ('after' if h>off else 'BEFORE', h-off, g-o-fail))" "$tgrant" "$off" "$unc" "$toff" "$tfail")
    set -- $verdict
    if [ "$1" = after ]; then
        pass "$name: node$s's grant came $2 s after node$n was powered off (clock offset ${off}s +-${unc}s)"
    else fail "$name: node$s's grant came BEFORE node$n was powered off ($2 s): $grantline"; fi
    # The fence completed before the grant: the fencer's "Operation 'reboot' targeting nodeN
    # ...: OK (complete)" (finalize_op, millisecond stamps), the first after the failure, in
    # the survivor's pacemaker.log (the same guest clock as the grant) and in every other
    # surviving node's (put on the survivor's clock through the host's). The fenced node's own
    # logs went with its power-off; the switch log above speaks for it.
    gx "$s" "stonith_admin --history node$n --verbose" >"$RES/$name.history.txt" 2>&1
    local o oo ou hk hd hc
    for o in $ONLINE; do
        [ "$o" = "node$n" ] && continue
        o=${o#node}
        gx "$o" "grep -a 'finalize_op' /var/log/pacemaker/pacemaker.log | grep -a \"targeting node$n \" | grep -a ': OK'" >"$RES/$name.finalize.node$o.txt" 2>&1
        if [ "$o" = "$s" ]; then oo=$off ou=$unc; else read -r oo ou <<<"$(clock_offset "$o")"; fi
        read -r hk hd hc <<<"$(python3 - "$RES/$name.finalize.node$o.txt" "$tgrant" "$off" "$unc" "$oo" "$ou" "$tfail" <<'PY'
import re, sys, time, datetime as d
path, g, so, su, oo, ou, fail = sys.argv[1], *map(float, sys.argv[2:])
year = time.gmtime().tm_year
done = None
for line in open(path, errors="replace"):
    m = re.match(r"(\w{3} +\d+ \d\d:\d\d:\d\d\.\d+) ", line)
    if not m:
        continue
    t = d.datetime.strptime("%d %s" % (year, m.group(1)), "%Y %b %d %H:%M:%S.%f").replace(tzinfo=d.timezone.utc).timestamp()
    host = t - oo  # on the host's time line
    if host >= fail - ou - 0.05:
        done = (t, host, m.group(1).replace(" ", "_"))
        break
if done is None:
    print("none 0 -")
else:
    # The grant on the host's time line as early as it can be, the completion as late.
    margin = (g - so - su) - (done[1] + ou)
    if oo == so:  # the same guest clock: no uncertainty between the two stamps
        margin = g - done[0]
    print("%s %.3f %s" % ("after" if margin > 0 else "BEFORE", margin, done[2]))
PY
)"
        case $hk in
            after) pass "$name: node$s's grant came $hd s after node$o's fencer logged the fence of node$n complete ($hc, finalize_op)" ;;
            BEFORE) fail "$name: node$s's grant came before node$o's fencer logged the fence of node$n complete ($hd s; $hc)" ;;
            *) fail "$name: no completed fence of node$n after the failure in node$o's pacemaker.log: $(tr '\n' ' ' <"$RES/$name.finalize.node$o.txt" | cut -c1-400)" ;;
        esac
    done
    printf '{"scenario":"%s","nodes":%s,"failure":"%s","failure_host":%s,"powered_off_host":%s,"grant_guest":%s,"clock_offset":%s,"clock_uncertainty":%s,"failure_to_grant_s":%s}\n' \
        "$name" "$nodes" "$how" "$tfail" "$toff" "$tgrant" "$off" "$unc" "$3" >>"$RES/fencing-bench.jsonl"
    echo "--- $name: switch log (host clock)"; sed 's/^[0-9.]* /  | /' "$RES/$name.switch.log"
    echo "--- $name: node$s fencer (pacemaker.log)"; grep -a "Operation" "$RES/$name.fencer.txt" | tail -n 3 | cut -c1-220 | sed 's/^/  | /'
    echo "--- $name: node$s virtdlmd grant (/var/log/messages)"; echo "$grantline" | cut -c1-260 | sed 's/^/  | /'
    echo "--- $name: failure to grant: $3 s"
    # The fenced node boots again (the reboot's on) and rejoins: Pacemaker runs everything
    # there. The last scenario of the tier skips the wait (nothing runs after it).
    [ "$rejoin" = rejoin ] || { gx "$s" "kill \$(cat /run/vm-$name.pid)" >/dev/null 2>&1; return; }
    if gwait 600 "$s" "crm_mon -1 | grep -q 'Online: \[ $ONLINE \]'" && all_started 600 "$s"; then
        pass "$name: node$n rebooted by the fence and rejoined; dlm, virtdlmd, libvirtd Started on $ONLINE"
    else fail "$name: node$n did not rejoin: $(gx "$s" 'crm_mon -1 -r' 2>&1 | tr '\n' ' ')"; fi
    gx "$s" "kill \$(cat /run/vm-$name.pid)" >/dev/null 2>&1
}

# Two nodes (corosync two_node: 1, as cluster.sh start 2 writes it): both stay quorate when the
# link between them is cut, so each fences the other. The race breaker is the one real
# deployments use, a static delay on one device: fence-node2 has pcmk_delay_base=5s, so
# node1's request to fence node2 waits 5 s while node2's request to fence node1 goes at once;
# node1 is powered off first, and its own (delayed) request, coming from a node that is now
# off, is never carried out (the switch refuses requests from powered-off nodes, as a dead
# node cannot press a switch). Node1's VM holds EX; node2's VM asks for the same disk: it is
# granted only after node1 was powered off, so the VM runs on at most one node at any instant.
fencing_two_node() {
    local out
    collect; mkdir -p "$RES/3nodes"; mv "$RES"/node[123] "$RES/3nodes/" 2>/dev/null
    cp "$CL_BASE/switch.log" "$RES/3nodes/switch.log" 2>/dev/null
    "$CL" stop >/dev/null 2>&1
    if out=$("$CL" start 2 2>&1); then setup_pass "two_node: 2 guests with corosync (two_node: 1) and pacemakerd: $out"
    else setup_fail "two_node: cluster start: $out"; return; fi
    ONLINE="node1 node2"
    for i in 1 2; do fencing_provision "$i" || fail "two_node: install on node$i"; done
    if ! gwait 90 1 "crm_mon -1 | grep -q 'Current DC: node.*partition with quorum' && crm_mon -1 | grep -q 'Online: \[ node1 node2 \]'"; then
        setup_fail "two_node: no DC with 2 nodes online: $(gx 1 'crm_mon -1' 2>&1 | tr '\n' ' ')"; return; fi
    test_edits deploy/cluster/pacemaker-pcs.sh pcs | sed -e '/fence-node3/d' \
        -e 's/\(fence-node2 fence_uml pcmk_host_list=node2\)/\1 pcmk_delay_base=5s/' >"$RES/pacemaker-pcs.two-node.sh"
    if pcs_push two_node "$RES/pacemaker-pcs.two-node.sh"; then
        pass "two_node: pcs form (fence-node2 with pcmk_delay_base=5s) pushed: $out"
    else fail "two_node: pcs: $(echo "$out" | tr '\n' ' ' | cut -c1-600)"; return; fi
    if all_started 600; then pass "two_node: dlm, virtdlmd and libvirtd clones Started on node1 node2"
    else fail "two_node: not all started: $(gx 1 'crm_mon -1 -r' 2>&1 | tr '\n' ' ')"; return; fi
    gx 1 "crm_mon -1 -r" >"$RES/crm_mon.two-node.txt" 2>&1
    fencing_failure two-node 1 2 partition 2 norejoin
    # The race had one survivor: node2 stayed up all along, node1's request never ran.
    if grep -q "node1: off node2" "$RES/two-node.switch.log"; then
        fail "two_node: node1's request to power node2 off was carried out: $(tr '\n' ' ' <"$RES/two-node.switch.log")"
    else pass "two_node: exactly one survivor: node2 powered node1 off; node1's request was never carried out (switch log)"; fi
}

# The failure-to-grant figures of this run (a benchmark, never asserted): $RES/fencing-bench.json,
# and FENCING_BENCH_OUT if set (docs/bench/fencing.json holds the stored run).
fencing_bench() {
    [ -s "$RES/fencing-bench.jsonl" ] || return 0
    python3 - "$RES/fencing-bench.jsonl" "$RES/fencing-bench.json" "${FENCING_BENCH_OUT:-}" <<'PY'
import json, sys, time, os
sys.path.insert(0, "tests/bench")
from provenance import provenance
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
prov = provenance({"journal_fs": "tmpfs (guest /run)", "log_level": "the ocf agent's default", "corosync_token_ms": "3000"})
doc = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "commit": prov["commit"], "dirty": prov["dirty"], "settings": prov["settings"],
       "machine": dict(prov["machine"], load=open("/proc/loadavg").read().split()[:3]),
       "what": "tests/pacemaker/run.sh: seconds from a node's failure (host clock: kill or link cut) to the survivor's virtdlmd grant of the failed node's disk (guest stamp on the host's time line); Pacemaker stonith via fence_uml, dlm_controld enable_fencing=1, corosync token 3000 ms",
       "rows": rows}
for out in sys.argv[2:]:
    if out:
        json.dump(doc, open(out, "w"), indent=1); open(out, "a").write("\n")
for r in rows:
    print("bench: %-10s %d nodes, %-9s failure to grant %.2f s" % (r["scenario"], r["nodes"], r["failure"], r["failure_to_grant_s"]))
PY
}

# What an operator looks at (docs/GUIDE.md, section 8): the devices and the fence history.
fencing_show() {
    local out
    if out=$(gx 1 "pcs stonith status 2>&1; echo '# stonith_admin --history $1'; stonith_admin --history $1 2>&1") &&
       echo "$out" | grep -q "fence-node1.*Started"; then
        pass "pcs stonith status lists the fence_uml devices Started; stonith_admin --history $1"
    else fail "pcs stonith status: $(echo "$out" | tr '\n' ' ' | cut -c1-400)"; fi
    echo "--- # pcs stonith status (node1)"; echo "$out" | tee "$RES/stonith-status.txt"
}
