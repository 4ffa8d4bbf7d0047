#!/bin/bash
# The corosync tier: the corosync crate (crates/corosync) against real corosync, no guests. Starts a 3-node
# cluster with netns.sh (one corosync per network namespace), runs scenarios.sh, tears it
# all down (also on failure or interrupt), prints "N passed, N failed".
#
#   tests/corosync/run.sh            netns cluster (default; needs root)
#   tests/corosync/run.sh --guests   the same scenarios in UML guests via tests/cluster/cluster.sh
#                                    (CS_GUEST_HARNESS: another cluster.sh; CS_REUSE_CLUSTER=1:
#                                    use the 3-node cluster already running and leave it running)
#
# Exits non-zero when a scenario fails or the tier cannot run (it never skips silently).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
MODE=netns
[ "${1:-}" = --guests ] && MODE=guests

passed=0; failed=0
cannot_run() { echo "corosync tier cannot run: $*"; echo "0 passed, 1 failed"; exit 1; }

[ "$(id -u)" = 0 ] || cannot_run "needs root (network namespaces, bind mounts, taps)"
for tool in corosync corosync-cmapctl corosync-quorumtool ip cargo; do
  command -v "$tool" >/dev/null || cannot_run "'$tool' not found (tests/install-deps.sh installs it)"
done

echo "== building the probe"
cargo build -p corosync --features tokio --example corosync_probe --locked 2>&1 | tail -1
BUILT=${CARGO_TARGET_DIR:-$ROOT/target}/debug/examples/corosync_probe
[ -x "$BUILT" ] || cannot_run "build failed"
# A content-addressed copy: a running guest may keep serving a stale copy of a rebuilt file.
BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/cluster-bin
PROBE=$BIN_DIR/corosync_probe-$(sha256sum "$BUILT" | cut -c1-12)
[ -x "$PROBE" ] || { mkdir -p "$BIN_DIR" && cp "$BUILT" "$PROBE.tmp.$$" && mv "$PROBE.tmp.$$" "$PROBE"; }

LOGS=$(mktemp -d /tmp/virtdlm-corosync-tier.XXXXXX)
export CS_PREFIX=${CS_PREFIX:-vdlmcs} CS_SUBNET=${CS_SUBNET:-10.231.7}
NONET=${CS_PREFIX}x    # an empty network namespace: no corosync reachable from it

if [ "$MODE" = netns ]; then
  export CS_NAMELESS=3   # node3 has no name: exercises the ring0_addr fallback
  EXPECT_NAMES="names 1=node1 2=node2 3=$CS_SUBNET.3"
  CLUSTER() { "$HERE/netns.sh" "$@"; }
  node_run() { "$HERE/netns.sh" exec "$1" sh -c "$2"; }
  node_spawn() { ( "$HERE/netns.sh" exec "$1" sh -c "exec $3" > "$2" 2>&1; exit $? ) 2>/dev/null & SPAWN_PID=$!; }
  node_cut() { "$HERE/netns.sh" cut "$1"; }
  node_heal() { "$HERE/netns.sh" heal "$1"; }
  node_kill_corosync() { "$HERE/netns.sh" kill-corosync "$1"; }
else
  CL=${CS_GUEST_HARNESS:-$ROOT/tests/cluster/cluster.sh}
  [ -x "$CL" ] || cannot_run "--guests needs the guest harness $CL"
  EXPECT_NAMES="names 1=node1 2=node2 3=node3"
  CLUSTER() { case "$1" in start) "$CL" prepare && "$CL" start "$2" ;; *) "$CL" "$@" ;; esac; }
  node_run() { "$CL" exec "$1" "$2"; }
  node_spawn() { "$CL" exec "$1" "exec $3" > "$2" 2>&1 & SPAWN_PID=$!; }
  node_cut() { "$CL" partition "$1"; }
  node_heal() { "$CL" heal "$1"; }
  node_kill_corosync() { "$CL" exec "$1" 'kill -9 $(cat /run/corosync.pid)'; }
  PROBE=$("$CL" bin "$BUILT")
fi

# shellcheck source=scenarios.sh
. "$HERE/scenarios.sh"

cleanup() {
  stop_spawned
  [ "$MODE" = netns ] && ip netns del "$NONET" 2>/dev/null
  [ "${CS_REUSE_CLUSTER:-0}" = 1 ] || CLUSTER stop >/dev/null 2>&1
  echo "logs: $LOGS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

result() { # result NAME RC
  if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "PASS $1"; else failed=$((failed + 1)); echo "FAIL $1"; fi
}

# Without any corosync: a typed "not running" error, not a panic.
if [ "$MODE" = netns ]; then
  echo "== no corosync reachable"
  ip netns add "$NONET" || cannot_run "cannot create network namespace $NONET"
  out=$(ip netns exec "$NONET" "$PROBE" info 2>&1); rc=$?
  want="corosync-probe: corosync_cfg_initialize: corosync is not reachable on this node (CS_ERR_LIBRARY); is corosync running?"
  if [ $rc = 2 ] && [ "$out" = "$want" ]; then result not_running 0
  else echo "    rc=$rc output: $out"; result not_running 1; fi
  ip netns del "$NONET"
fi

if [ "$MODE" = guests ] && [ "${CS_REUSE_CLUSTER:-0}" = 1 ]; then
  echo "== using the running cluster"
  CLUSTER status || cannot_run "CS_REUSE_CLUSTER=1 but no cluster is running"
elif echo "== starting a 3-node cluster ($MODE)" && ! CLUSTER start 3; then
  echo "cluster did not start"; failed=$((failed + 1))
  echo "$passed passed, $failed failed"; exit 1
fi

if [ "$MODE" = guests ] && [ "${CS_REUSE_CLUSTER:-0}" = 1 ]; then
  # It kills node3's corosync, which would break the cluster for whoever runs after us.
  echo "== corosync_lost: not run on a shared cluster (run without CS_REUSE_CLUSTER to include it)"
  SCENARIOS=("${SCENARIOS[@]/corosync_lost}")
fi
for s in "${SCENARIOS[@]}"; do
  [ -n "$s" ] || continue
  echo "== $s"
  "scenario_$s"; rc=$?
  stop_spawned
  result "$s" $rc
done

echo "$passed passed, $failed failed"
[ $failed = 0 ]
