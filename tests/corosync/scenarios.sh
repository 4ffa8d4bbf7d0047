# Corosync scenarios for the corosync crate (crates/corosync) on a real 3-node cluster, independent of how the
# nodes are made. Sourced by run.sh, which first defines:
#   node_run I 'cmd'        run a shell command on node I, in the foreground; its exit code
#   node_spawn I LOG 'cmd'  run it in the background (a child of this shell), output to LOG;
#                           sets SPAWN_PID to the local pid
#   node_cut I / node_heal I   partition node I from the others / undo it
#   node_kill_corosync I    SIGKILL node I's corosync (only the last scenario does this)
# and sets PROBE (the corosync_probe binary as the nodes see it), LOGS (a host directory),
# EXPECT_NAMES (the `names ...` line node names must produce).
# Each scenario returns non-zero with a reason on stderr.

WAIT=${CS_WAIT:-40}   # seconds any one expected event may take (failure detection is ~4 s)
SPAWNED=()            # "node:log:localpid" of every background probe

spawn() { # spawn I LOG 'args'
  node_spawn "$1" "$2" "$PROBE $3"
  SPAWNED+=("$1:$2:$SPAWN_PID")
}

# Stop every probe started by spawn: kill it inside its node (by the pid it printed), then
# the local process that ran it.
stop_spawned() {
  local s i log pid me
  for s in "${SPAWNED[@]}"; do
    IFS=: read -r i log pid <<<"$s"
    me=$(awk '$1 == "me" {split($2, a, ":"); print a[2]; exit}' "$log" 2>/dev/null)
    [ -n "$me" ] && node_run "$i" "kill -9 $me 2>/dev/null" >/dev/null 2>&1
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  SPAWNED=()
}

# wait_log FILE FROM REGEX: prints the number of the first line >= FROM matching REGEX (ERE).
wait_log() {
  local f=$1 from=$2 re=$3 end=$((SECONDS + WAIT)) n
  while :; do
    # The pattern goes through the environment: `awk -v` would turn its `\(` into `(` (gawk).
    n=$(RE=$re awk -v s="$from" 'NR >= s && $0 ~ ENVIRON["RE"] {print NR; exit}' "$f" 2>/dev/null)
    [ -n "$n" ] && { echo "$n"; return 0; }
    if [ $SECONDS -ge $end ]; then
      echo "no line matching /$re/ in $(basename "$f") after line $from within ${WAIT}s; it has:" >&2
      tail -n +"$from" "$f" | tail -15 | sed 's/^/    /' >&2
      return 1
    fi
    sleep 0.2
  done
}

lines() { wc -l < "$1"; }
me_pid() { wait_log "$1" 1 '^me ' >/dev/null && awk '$1 == "me" {split($2, a, ":"); print a[2]; exit}' "$1"; }

# cmap names and cfg node id match the configuration, on every node; a multicast before
# joining is refused (corosync itself would drop it silently).
scenario_node_identity() {
  local i out want
  for i in 1 2 3; do
    out=$(node_run "$i" "$PROBE info") || { echo "node$i: probe info failed: $out" >&2; return 1; }
    want=$(printf 'cfg-nodeid %s\ncpg-nodeid %s\nmcast-before-join refused\n%s' "$i" "$i" "$EXPECT_NAMES")
    [ "$out" = "$want" ] || { printf 'node%s: got\n%s\nwanted\n%s\n' "$i" "$out" "$want" >&2; return 1; }
  done
}

# Three members multicast concurrently; all three deliver the same total order, each gets
# its own messages back (the commit point), per-sender FIFO holds.
scenario_total_order() {
  local i pids=() rc=0 count=${CS_ORDER_COUNT:-40} switches
  for i in 1 2 3; do
    node_spawn "$i" "$LOGS/order$i.log" "$PROBE order order-$$ 3 $count --timeout-secs 90"
    pids+=("$SPAWN_PID")
  done
  for i in 1 2 3; do
    wait "${pids[$((i - 1))]}" || { echo "node$i: order probe failed: $(grep -E '^(error|order)' "$LOGS/order$i.log" | head -5)" >&2; rc=1; }
  done
  [ $rc = 0 ] || return 1
  for i in 1 2 3; do
    grep -qx "order ok own=$count total=$((3 * count))" "$LOGS/order$i.log" \
      || { echo "node$i: $(grep '^order' "$LOGS/order$i.log")" >&2; return 1; }
    grep '^seq ' "$LOGS/order$i.log" > "$LOGS/seq$i"
  done
  for i in 2 3; do
    diff -q "$LOGS/seq1" "$LOGS/seq$i" >/dev/null \
      || { echo "node1 and node$i delivered different orders:" >&2; diff "$LOGS/seq1" "$LOGS/seq$i" | head >&2; return 1; }
  done
  # The senders really interleaved (otherwise equal order proves little).
  switches=$(awk '{split($2, a, ":"); if (NR > 1 && a[1] != prev) n++; prev = a[1]} END {print n + 0}' "$LOGS/seq1")
  [ "$switches" -ge 3 ] || { echo "only $switches sender switches in the order: sends did not overlap" >&2; return 1; }
  echo "    $((3 * count)) messages, identical order on 3 nodes, $switches sender switches"
}

# cpg_leave shows as `leave`, kill -9 as `procdown`, at every other member.
scenario_leave_and_kill() {
  local g=leave-$$ i pid3 line
  spawn 1 "$LOGS/lk1.log" "watch $g"
  spawn 2 "$LOGS/lk2.log" "watch $g"
  wait_log "$LOGS/lk1.log" 1 'members=[0-9]+:[0-9]+,[0-9]+:[0-9]+ ' >/dev/null || return 1
  # node3 joins, waits for 3 members, leaves with cpg_leave, exits.
  node_run 3 "$PROBE watch $g --leave-at 3" > "$LOGS/lk3-leave.log" 2>&1 \
    || { echo "node3 leaver failed: $(tail -3 "$LOGS/lk3-leave.log")" >&2; return 1; }
  pid3=$(me_pid "$LOGS/lk3-leave.log") || return 1
  grep -q '^left-group' "$LOGS/lk3-leave.log" || { echo "node3 did not leave" >&2; return 1; }
  # The leaver's own membership view reports that it is no longer a member.
  wait_log "$LOGS/lk3-leave.log" 1 "left=3:$pid3:leave( |$)" >/dev/null || return 1
  wait_log "$LOGS/lk3-leave.log" 1 '^verdict lost$' >/dev/null || return 1
  for i in 1 2; do
    wait_log "$LOGS/lk$i.log" 1 "left=3:$pid3:leave( |$)" >/dev/null || return 1
  done
  # node3 joins again and is killed with SIGKILL.
  spawn 3 "$LOGS/lk3-kill.log" "watch $g"
  pid3=$(me_pid "$LOGS/lk3-kill.log") || return 1
  for i in 1 2; do
    wait_log "$LOGS/lk$i.log" 1 "joined=3:$pid3:join$" >/dev/null || return 1
  done
  node_run 3 "kill -9 $pid3" || { echo "could not kill $pid3 on node3" >&2; return 1; }
  for i in 1 2; do
    line=$(wait_log "$LOGS/lk$i.log" 1 "left=3:$pid3:procdown( |$)") || return 1
    echo "    node$i: $(sed -n "${line}p" "$LOGS/lk$i.log")"
  done
  stop_spawned
}

# A node cut off loses quorum (the others keep it); after heal all are quorate and safe again.
# Also checks the membership rule (verdict) and CPG's nodedown/nodeup reasons on real rings.
scenario_partition() {
  local g=part-$$ i m pid3 cut heal
  for i in 1 2 3; do spawn "$i" "$LOGS/p$i.log" "watch $g --quorum"; done
  for i in 1 2 3; do
    wait_log "$LOGS/p$i.log" 1 '^quorum quorate=1 .* members=1,2,3$' >/dev/null || return 1
    wait_log "$LOGS/p$i.log" 1 '^verdict safe$' >/dev/null || return 1
  done
  pid3=$(me_pid "$LOGS/p3.log") || return 1
  for i in 1 2 3; do cut[$i]=$(( $(lines "$LOGS/p$i.log") + 1 )); done
  node_cut 3
  m=$(wait_log "$LOGS/p3.log" "${cut[3]}" '^quorum quorate=0 ') || return 1
  wait_log "$LOGS/p3.log" "$m" '^verdict inquorate$' >/dev/null || return 1
  echo "    node3 cut off: $(sed -n "${m}p" "$LOGS/p3.log")"
  for i in 1 2; do
    m=$(wait_log "$LOGS/p$i.log" "${cut[$i]}" '^quorum quorate=1 .* members=1,2$') || return 1
    wait_log "$LOGS/p$i.log" "$m" '^verdict safe$' >/dev/null || return 1
    wait_log "$LOGS/p$i.log" "${cut[$i]}" "left=3:$pid3:nodedown( |$)" >/dev/null || return 1
    echo "    node$i stays quorate: $(sed -n "${m}p" "$LOGS/p$i.log")"
  done
  for i in 1 2 3; do heal[$i]=$(( $(lines "$LOGS/p$i.log") + 1 )); done
  if sed -n "${cut[3]},\$p" "$LOGS/p3.log" | grep -q '^verdict safe$'; then
    echo "node3 claimed safe while cut off" >&2; return 1
  fi
  node_heal 3
  for i in 1 2 3; do
    m=$(wait_log "$LOGS/p$i.log" "${heal[$i]}" '^quorum quorate=1 .* members=1,2,3$') || return 1
    wait_log "$LOGS/p$i.log" "$m" '^verdict safe$' >/dev/null || return 1
  done
  for i in 1 2; do
    wait_log "$LOGS/p$i.log" "${heal[$i]}" "joined=.*3:$pid3:nodeup" >/dev/null || return 1
  done
  echo "    healed: all quorate on $(sed -n "${m}p" "$LOGS/p3.log" | awk '{print $3}'), nodeup seen"
  stop_spawned
}

# corosync dies under a member: dispatch fails with the typed "not reachable" error and the
# membership view reports the loss; the other nodes see the node go down. Last: node3 stays
# without corosync.
scenario_corosync_lost() {
  local g=lost-$$ pid3 line
  spawn 1 "$LOGS/cl1.log" "watch $g --quorum"
  spawn 3 "$LOGS/cl3.log" "watch $g --quorum"
  wait_log "$LOGS/cl3.log" 1 '^verdict safe$' >/dev/null || return 1
  pid3=$(me_pid "$LOGS/cl3.log") || return 1
  wait_log "$LOGS/cl1.log" 1 "^confchg members=([^ ]*,)?3:$pid3[, ]" >/dev/null || return 1
  node_kill_corosync 3 || { echo "could not kill corosync on node3" >&2; return 1; }
  line=$(wait_log "$LOGS/cl3.log" 1 '^dispatch-error (cpg|quorum)_dispatch: corosync is not reachable on this node \(CS_ERR_LIBRARY\)') || return 1
  echo "    node3: $(sed -n "${line}p" "$LOGS/cl3.log")"
  wait_log "$LOGS/cl3.log" "$line" '^verdict lost$' >/dev/null || return 1
  wait_log "$LOGS/cl1.log" 1 "left=3:$pid3:nodedown( |$)" >/dev/null || return 1
}

SCENARIOS=(node_identity total_order leave_and_kill partition corosync_lost)
