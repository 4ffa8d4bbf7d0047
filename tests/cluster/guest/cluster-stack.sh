#!/bin/bash
# Starts corosync, waits until this node is quorate with every node, then starts dlm_controld
# and waits until it answers (`start_stack`; or the two steps apart: `start_corosync`,
# `start_dlm_controld`). Sourced by guest-init.sh at boot; run again inside a guest
# (`cluster-stack.sh NODES`) after this node was removed from the cluster, the way a node
# manager (pacemaker, systemd after a reboot) brings the cluster stack back.
# Output of each start goes to /xchg (corosync.stdout, dlm_controld.log; appended).
# Exits (or returns) non-zero with the reason on stderr if either daemon dies.
start_stack() {
  start_corosync "$1" && start_dlm_controld
}

# corosync, until this node is quorate with all $1 nodes.
start_corosync() {
  local nodes=$1 q cpid
  # Asked, not looked up with pgrep: a daemon that died stays listed as a zombie of PID 1.
  corosync-cmapctl -g totem.cluster_name >/dev/null 2>&1 && { echo "corosync already runs" >&2; return 1; }
  corosync -f >> /xchg/corosync.stdout 2>&1 &
  cpid=$!
  until q=$(corosync-quorumtool -s 2>/dev/null) && grep -q 'Quorate: *Yes' <<<"$q" && grep -q "^Nodes: *$nodes\$" <<<"$q"; do
    kill -0 $cpid 2>/dev/null || { echo "corosync exited: $(tail -c 300 /xchg/corosync.stdout)" >&2; return 1; }
    sleep 0.25
  done
}

# dlm_controld, until it answers.
start_dlm_controld() {
  local dpid
  dlm_tool status 2>/dev/null | grep -q '^cluster nodeid' && { echo "dlm_controld already runs" >&2; return 1; }
  dlm_controld --foreground >> /xchg/dlm_controld.log 2>&1 &
  dpid=$!
  until dlm_tool status >/dev/null 2>&1; do
    kill -0 $dpid 2>/dev/null || { echo "dlm_controld exited: $(tail -c 300 /xchg/dlm_controld.log)" >&2; return 1; }
    sleep 0.1
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -u
  [ $# = 1 ] || { echo "usage: $0 NODES" >&2; exit 2; }
  start_stack "$1"
fi
