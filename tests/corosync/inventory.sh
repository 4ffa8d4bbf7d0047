#!/bin/bash
# The lock inventory over real corosync, without the kernel DLM: virtdlmd (local backend,
# `cluster = true`) on each node of a netns cluster (netns.sh). A lock taken on node 1 shows on
# nodes 2 and 3 with its VM; a node cut off is shown `left` by the others and, after the heal
# (no dlm_controld here to stop its corosync on the merge), `held` again once it re-sends.
# `virtdlm release --vm` on node 1 for a VM on node 2 is answered by node 2's daemon (refused
# while the VM runs, done with --force, gone from every node's table); for a VM on a node that
# is cut off it fails as unreachable.
# Prints PASS/FAIL per check and "N passed, N failed"; exits non-zero on any failure or when
# it cannot run (it never skips silently). Needs root.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
export CS_PREFIX=${CS_PREFIX:-vdlminv} CS_SUBNET=${CS_SUBNET:-10.231.9}
passed=0; failed=0
cannot_run() { echo "inventory tier cannot run: $*"; echo "0 passed, 1 failed"; exit 1; }
[ "$(id -u)" = 0 ] || cannot_run "needs root (network namespaces)"
for tool in corosync ip jq perl cargo; do
  command -v "$tool" >/dev/null || cannot_run "'$tool' not found (tests/install-deps.sh installs it)"
done
cargo build -p lockmgr -p cli --bins --locked 2>&1 | tail -1
T=${CARGO_TARGET_DIR:-$ROOT/target}/debug
[ -x "$T/virtdlmd" ] && [ -x "$T/virtdlm" ] || cannot_run "build failed"
W=$(mktemp -d /tmp/virtdlm-inventory.XXXXXX)
PIDS=()
cleanup() {
  exec 2>/dev/null   # no job-control chatter for the processes killed here
  for p in "${PIDS[@]}"; do kill -9 "$p"; done
  "$HERE/netns.sh" stop >/dev/null 2>&1
  echo "logs: $W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

result() { if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "PASS $1"; else failed=$((failed + 1)); echo "FAIL $1"; fi; }
vdlm() { "$T/virtdlm" --socket "$W/n$1/ctl.sock" --admin-socket "$W/n$1/admin.sock" "${@:2}"; }
# poll NODE SECONDS JQ-FILTER: waits until `locks --json` on NODE satisfies the filter;
# prints how long it took (reported, not asserted).
poll() {
  local t0 now; t0=$(date +%s%N)
  while :; do
    if vdlm "$1" locks --json 2>/dev/null | jq -e "$3" >/dev/null; then
      now=$(date +%s%N); echo "   node$1: $(( (now - t0) / 1000000 )) ms"; return 0
    fi
    [ $(( ($(date +%s%N) - t0) / 1000000000 )) -lt "$2" ] || { echo "   node$1 table:"; vdlm "$1" locks; return 1; }
    sleep 0.1
  done
}
# acquire NODE VM UUID DISK: a `sleep` as the VM's QEMU takes DISK through the control socket.
acquire() {
  sleep 100000 & local pid=$!; PIDS+=("$pid")
  local req="{\"v\":1,\"op\":\"acquire\",\"owner\":{\"uuid\":\"$3\",\"name\":\"$2\",\"pid\":$pid},\"resources\":[{\"kind\":\"disk\",\"path\":\"$4\"}]}"
  perl -MIO::Socket::UNIX -e '$s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!\n"; $b = $ARGV[1];
    print $s pack("N", length $b) . $b; read($s, $h, 4) == 4 or die "no answer\n"; read($s, $r, unpack("N", $h)); print "$r\n"' \
    "$W/n$1/ctl.sock" "$req" | jq -e '.result == "ok"' >/dev/null
}

echo "== starting 3 corosync nodes ($CS_PREFIX, $CS_SUBNET.0/24)"
"$HERE/netns.sh" start 3 || cannot_run "the netns cluster did not start"
truncate -s 1M "$W/a.img" "$W/b.img"

echo "== no backend written on a node of a 3-node corosync: virtdlmd refuses to start, saying what to write"
# Break it: make backend_guard::check ignore the cluster it found: virtdlmd starts on `local`
# (runs until `timeout`, exit 124) and this check fails. Done on the unit test of the same
# decision (backend_guard::tests::default_local_is_refused_in_a_multi_node_cluster fails).
mkdir -p "$W/guard"; printf 'node_name = node1\n' > "$W/guard/virtdlmd.conf"
timeout 20 "$HERE/netns.sh" exec 1 "$T/virtdlmd" --config "$W/guard/virtdlmd.conf" --socket "$W/guard/ctl.sock" \
  --admin-socket "$W/guard/admin.sock" --journal "$W/guard/journal" > "$W/guard/log" 2>&1; rc=$?
echo "   exit $rc: $(tail -1 "$W/guard/log")"
[ "$rc" = 1 ] && grep -q "one of 3 nodes of a corosync cluster (the running corosync's nodelist)" "$W/guard/log" &&
  grep -q 'Write `backend = dlm`' "$W/guard/log" && grep -q '`backend = local` if' "$W/guard/log" && [ ! -e "$W/guard/ctl.sock" ]
result unset_backend_refused_in_cluster $?
"$HERE/netns.sh" exec 1 "$T/virtdlmd" --config "$W/guard/virtdlmd.conf" --check-config > "$W/guard/check" 2>&1; rc=$?
[ "$rc" = 2 ] && grep -q 'no lock backend is configured' "$W/guard/check"; result unset_backend_check_config_fails $?

for i in 1 2 3; do
  mkdir -p "$W/n$i"
  printf 'backend = local\nnode_name = node%s\ncluster = true\ncluster_group = virtdlm-inv\n' "$i" > "$W/n$i/virtdlmd.conf"
  RUST_LOG=info "$HERE/netns.sh" exec "$i" "$T/virtdlmd" --config "$W/n$i/virtdlmd.conf" --socket "$W/n$i/ctl.sock" \
    --admin-socket "$W/n$i/admin.sock" --journal "$W/n$i/journal" > "$W/n$i/log" 2>&1 &
  PIDS+=("$!")
done
for i in 1 2 3; do
  for _ in $(seq 100); do vdlm "$i" status --json >/dev/null 2>&1 && break; sleep 0.1; done
  vdlm "$i" status --json >/dev/null || cannot_run "virtdlmd on node$i did not come up: $(tail -5 "$W/n$i/log")"
done

echo "== backend = local with cluster = true: warned in the log, in status and above the lock table"
W1='NO cross-host exclusion'
grep -q "WARN.*$W1" "$W/n1/log" && vdlm 1 status | grep -q "WARNING .*$W1" && vdlm 1 locks | head -1 | grep -q "^WARNING: .*$W1" &&
  vdlm 1 status --json | jq -e '.warnings | length == 1' >/dev/null
result local_with_cluster_warned $?

echo "== a lock taken on node1 shows on nodes 2 and 3"
acquire 1 web-1 0c0ffee0-0000-4000-8000-000000000001 "$W/a.img"
sel='.[] | select(.vm_name == "web-1" and .node_name == "node1" and .node_id == 1 and .state == "held" and .mode == "EX")'
poll 2 10 "$sel" && poll 3 10 "$sel"; result remote_lock_visible $?

echo "== status: three members, verdict safe"
vdlm 3 status --json | jq -e '.cluster.verdict == "safe" and (.cluster.members | length) == 3 and .last_lock_loss == null' >/dev/null
result status_members $?

echo "== node3 cut off: its lock is left on node1; after the heal it is held again"
acquire 3 db-3 0c0ffee0-0000-4000-8000-000000000003 "$W/b.img"
poll 1 10 '.[] | select(.vm_name == "db-3" and .state == "held")'; result node3_lock_visible $?
"$HERE/netns.sh" cut 3
poll 1 30 '.[] | select(.vm_name == "db-3" and .state == "left")'; rc=$?
"$HERE/netns.sh" heal 3
result cut_off_is_left $rc
poll 1 60 '.[] | select(.vm_name == "db-3" and .state == "held")'; result heal_re_sends $?
poll 1 5 '[.[] | select(.vm_name == "web-1" and .state == "held")] | length == 1'; result no_duplicates $?

echo "== release --vm on node1 of a VM on node2: refused while it runs; --force releases it everywhere"
U2=0c0ffee0-0000-4000-8000-000000000002
truncate -s 1M "$W/c.img" "$W/d.img"
acquire 2 app-2 "$U2" "$W/c.img"
poll 1 10 '.[] | select(.vm_name == "app-2" and .node_id == 2 and .state == "held")'; result node2_lock_visible $?
out=$(vdlm 1 release --vm app-2 --json 2>"$W/release.err"); rc=$?
echo "   exit $rc: $out / $(cat "$W/release.err")"
[ "$rc" = 1 ] && jq -e '.error.kind == "busy" and .error.exit == 1 and (.error.message | test("still runs on node node2") and test("WITHOUT disk locks"))' <<<"$out" >/dev/null
result remote_release_refused_while_running $?
vdlm 2 locks --json | jq -e '[.[] | select(.vm_name == "app-2")] | length == 1' >/dev/null; result refused_release_keeps_the_lock $?
out=$(vdlm 1 release --vm app-2 --force); rc=$?
echo "   exit $rc: $out"
[ "$rc" = 0 ] && grep -q "released 1 lock(s) of VM $U2 on node node2" <<<"$out" && grep -q "WITHOUT disk locks" <<<"$out"
result remote_release_forced $?
gone='[.[] | select(.vm_name == "app-2")] | length == 0'
poll 1 10 "$gone" && poll 2 10 "$gone" && poll 3 10 "$gone"; result forced_release_gone_everywhere $?
out=$(vdlm 1 release --vm "$U2" --json 2>/dev/null); rc=$?
[ "$rc" = 1 ] && jq -e '.error.kind == "unknown_vm"' <<<"$out" >/dev/null; result release_of_a_vm_without_locks_is_unknown $?

echo "== release --vm of a VM on a node that is cut off: unreachable (left, or no answer), then not a member"
acquire 3 cut-3 0c0ffee0-0000-4000-8000-000000000033 "$W/d.img"
poll 1 10 '.[] | select(.vm_name == "cut-3" and .state == "held")'; result node3_second_lock_visible $?
"$HERE/netns.sh" cut 3
t0=$(date +%s)
out=$(vdlm 1 release --vm cut-3 --force --json 2>/dev/null); rc=$?
echo "   exit $rc after $(( $(date +%s) - t0 )) s: $out"
[ "$rc" = 1 ] && jq -e '.error.kind == "node_unreachable" and (.error.message | test("node3"))' <<<"$out" >/dev/null
result release_on_cut_off_node_unreachable $?
poll 1 30 '.[] | select(.vm_name == "cut-3" and .state == "left")'; rc=$?
out=$(vdlm 1 release --vm cut-3 --force --json 2>/dev/null); rc2=$?
echo "   exit $rc2: $out"
"$HERE/netns.sh" heal 3
[ "$rc" = 0 ] && [ "$rc2" = 1 ] && jq -e '.error.kind == "node_unreachable" and (.error.message | test("not in the cluster group"))' <<<"$out" >/dev/null
result release_on_departed_node_not_a_member $?
poll 1 60 '.[] | select(.vm_name == "cut-3" and .state == "held")'; result cut_off_vm_keeps_its_lock $?

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
