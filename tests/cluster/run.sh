#!/bin/bash
# The cluster tier: builds the cluster tests, virtdlmd, dlm.so and the ABI harness, boots one 3-node UML cluster
# (corosync + kernel DLM + dlm_controld), runs every test of the cluster-tests crate against it,
# then real libvirtd + QEMU VMs on the DLM in the same guests (libvirt-vms.sh; CL_LIBVIRT=0
# leaves them out), then the corosync tier's scenarios in the same guests (tests/corosync/run.sh
# --guests), then boots a 2-node cluster for the two-node tests (tests/two_node.rs), then 3
# nodes for virtdlmd's watchdog on softdog (watchdog.sh; CL_WATCHDOG=0 leaves it out), keeps
# the guests' logs, and always tears the cluster down. Prints "N passed, N failed" over all
# virt-dlm checks, after "setup: N passed, N failed" over the setup steps its parts count apart
# (libvirt-vms.sh: starting libvirtd, defining domains...); exits non-zero on any failure, setup
# included, or when the cluster cannot be built or started (saying why).
#
# Needs root (network namespace, taps) and the packages of tests/install-deps.sh.
# Settings: CL_NS, CL_BASE, CL_NET (see cluster.sh) to run beside another cluster on this host,
# CL_VM=qemu for qemu TCG guests instead of User-Mode Linux; VIRTDLM_NEMESIS_ROUNDS (default 50)
# and VIRTDLM_NEMESIS_SEED for the nemesis test (tests/nemesis.rs; a longer soak: more rounds);
# extra arguments are passed to the test binaries (e.g. a test name filter; the corosync
# scenarios, the libvirt VMs and the two-node cluster then do not run). CL_COROSYNC=0 leaves
# the corosync scenarios out, CL_TWO_NODE=0 the two-node cluster (started after the 3-node
# one, for tests/two_node.rs), CL_WATCHDOG=0 the watchdog test (watchdog.sh). The real
# libvirtd + QEMU VMs cost 10-20 min on 2 cores
# (tests/cluster/README.md).
set -uo pipefail
# The nemesis's default in this tier: 50 rounds on the DLM (kill -9 of daemons mid-request and of
# owners, partitions at rounds 12 and 37, the first with a daemon restart while cut off, a node
# crash at round 25). A soak: VIRTDLM_NEMESIS_ROUNDS=500 (docs/RELIABILITY.md).
export VIRTDLM_NEMESIS_ROUNDS=${VIRTDLM_NEMESIS_ROUNDS:-50}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CL=$HERE/cluster.sh
export CL_NS=${CL_NS:-virtdlmcl} CL_BASE=${CL_BASE:-/tmp/virtdlm-cluster} CL_NET=${CL_NET:-10.99.0}
RESULTS=${CARGO_TARGET_DIR:-$ROOT/target}/cluster-results
T0=$(date +%s)

fail() {
  echo "cluster tier FAILED: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}
elapsed() { echo "$(( $(date +%s) - T0 )) s"; }

[ "$(id -u)" = 0 ] || fail "needs root (network namespace, taps, UML hostfs root)"
for tool in corosync dlm_controld dlm_tool ip taskset bc gcc jq libvirtd virsh qemu-system-x86_64; do
  command -v "$tool" >/dev/null || fail "$tool is missing: run tests/install-deps.sh"
done
cd "$ROOT" || fail "no $ROOT"

echo "== cluster tier: building the tests"
cargo build -p cluster-tests --bins --locked || fail "cargo build -p cluster-tests failed"
# The nemesis test runs the corruption oracle (tests/oracle, no code shared with the daemon) on the host.
cargo build -p oracle --locked || fail "cargo build -p oracle (oracle-check) failed"
# The daemon tests run virtdlmd (and virtdlm) in the guests; cargo test does not build another crate's binaries.
cargo build -p lockmgr -p cli --bins --locked || fail "cargo build -p lockmgr -p cli (virtdlmd, virtdlm) failed"
# The plugin tests load dlm.so in the guests through the ABI harness (tests/abi), built beside it.
cargo build -p plugin --locked || fail "cargo build -p plugin (dlm.so) failed"
gcc -O1 -Wall -Wextra -Werror -o "${CARGO_TARGET_DIR:-$ROOT/target}/debug/abi-harness" \
  "$ROOT/tests/abi/harness.c" "$ROOT/tests/abi/script.c" -ldl || fail "gcc tests/abi/harness.c failed"
cargo test -p cluster-tests --no-run --locked || fail "cargo test --no-run -p cluster-tests failed"
echo "   built ($(elapsed))"

echo "== cluster tier: preparing the guests (${CL_VM:-uml})"
"$CL" prepare || fail "cannot prepare the ${CL_VM:-uml} guests (Debian packages fetched with apt-get download)"

if ip netns list | grep -qw "$CL_NS"; then
  fail "network namespace $CL_NS exists: another cluster runs under that name (stop it with cluster.sh stop, or set CL_NS, CL_BASE and CL_NET)"
fi
rm -rf "$RESULTS"; mkdir -p "$RESULTS"
collect() {
  local d
  for d in "$CL_BASE"/n*; do
    [ -d "$d" ] || continue
    mkdir -p "$RESULTS/${d##*/}"
    cp "$d/console.log" "$d"/xchg/{status,corosync.log,dlm_controld.log} "$RESULTS/${d##*/}/" 2>/dev/null
  done
}
trap 'collect; "$CL" stop >/dev/null 2>&1' EXIT

echo "== cluster tier: starting 3 nodes (netns $CL_NS, $CL_NET.0/24)"
"$CL" start 3 || fail "the cluster did not start (logs in $CL_BASE)"
T1=$(date +%s)

echo "== cluster tier: running the tests"
export VIRTDLM_CLUSTER=$CL VIRTDLM_RESULTS=$RESULTS
cargo test -p cluster-tests --locked --no-fail-fast -- --test-threads=1 "$@" 2>&1 | tee "$RESULTS/tests.log"
rc=${PIPESTATUS[0]}
# Figures the lock-loss test measured (timings, checked grants and overlaps).
[ -f "$RESULTS/lockloss.txt" ] && sed 's/^/   lockloss: /' "$RESULTS/lockloss.txt"
# VIRTDLM_LOCKLOSS_RECORD=1: they are stored in docs/bench/lockloss.json and rendered into
# docs/LOCK-LOSS.md (tests/bench/report.py store lockloss), with this checkout's provenance.
if [ "${VIRTDLM_LOCKLOSS_RECORD:-}" = 1 ] && [ -f "$RESULTS/lockloss.txt" ]; then
  python3 "$ROOT/tests/bench/report.py" store lockloss "$RESULTS/lockloss.txt" >/dev/null &&
    echo "   lockloss: stored in docs/bench/lockloss.json" || echo "   lockloss: not stored (report.py failed)" >&2
fi
# The dlm_controld death and hang test's timings, printed and stored the same way.
[ -f "$RESULTS/controld.txt" ] && sed 's/^/   controld: /' "$RESULTS/controld.txt"
if [ "${VIRTDLM_LOCKLOSS_RECORD:-}" = 1 ] && [ -f "$RESULTS/controld.txt" ]; then
  python3 "$ROOT/tests/bench/report.py" store controld "$RESULTS/controld.txt" >/dev/null &&
    echo "   controld: stored in docs/bench/controld.json" || echo "   controld: not stored (report.py failed)" >&2
fi
# Figures of the nemesis and its oracle (raw JSON in $RESULTS/nemesis.json).
[ -f "$RESULTS/nemesis.txt" ] && sed 's/^/   nemesis: /' "$RESULTS/nemesis.txt"
passed=$(awk '/^test result:/{for(i=1;i<=NF;i++){if($i=="passed;")p+=$(i-1)}} END{print p+0}' "$RESULTS/tests.log")
failed=$(awk '/^test result:/{for(i=1;i<=NF;i++){if($i=="failed;")f+=$(i-1)}} END{print f+0}' "$RESULTS/tests.log")
if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then failed=1; echo "cargo test exited $rc without a test failure (build or harness error)" >&2; fi
if [ "$passed" = 0 ] && [ "$failed" = 0 ]; then failed=1; echo "no cluster test ran" >&2; fi
echo "== cluster tier: cargo tests: $passed passed, $failed failed in $(( $(date +%s) - T1 )) s"

# Setup steps of the parts (a "setup: N passed, N failed" line), counted apart from virt-dlm's.
setup_passed=0 setup_failed=0
# Runs one part of the tier that prints "N passed, N failed" (a script of its own) and maybe
# "setup: N passed, N failed", adds its counts to the tier's, and counts a failure when it ends
# without a summary, or exits non-zero without a failed check or setup step.
# Usage: part LABEL LOG COMMAND...
part() {
  local label=$1 log=$2 t0 rc summary setup p f sp=0 sf=0
  shift 2
  t0=$(date +%s)
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
  if [ -n "$summary" ]; then
    p=${summary%% passed*}; f=${summary#*, }; f=${f%% failed}
  else
    p=0; f=1; echo "$* ended without a summary" >&2
  fi
  setup=$(grep -E '^setup: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
  if [ -n "$setup" ]; then
    setup=${setup#setup: }; sp=${setup%% passed*}; sf=${setup#*, }; sf=${sf%% failed}
  fi
  if [ "$rc" != 0 ] && [ "$f" = 0 ] && [ "$sf" = 0 ]; then f=1; echo "$* exited $rc without a failed check" >&2; fi
  echo "== cluster tier: $label: $p passed, $f failed${setup:+ (setup steps: $sp passed, $sf failed)} in $(( $(date +%s) - t0 )) s"
  passed=$((passed + p)); failed=$((failed + f))
  setup_passed=$((setup_passed + sp)); setup_failed=$((setup_failed + sf))
}

# Real libvirtd + QEMU on the DLM in the same guests (tests/cluster/libvirt-vms.sh). Before the
# corosync scenarios: it restarts node 3's stack after its own partition, leaving three
# quorate nodes behind.
if [ "${CL_LIBVIRT:-1}" = 1 ] && [ $# = 0 ]; then
  echo "== cluster tier: real libvirtd + QEMU VMs on the DLM in the guests"
  part "libvirt VMs" "$RESULTS/libvirt-vms.log" "$HERE/libvirt-vms.sh"
else
  echo "== cluster tier: real libvirtd + QEMU VMs not run (${CL_LIBVIRT:+CL_LIBVIRT=$CL_LIBVIRT, }test filter: ${*:-none})"
fi

# The corosync tier's scenarios on this cluster (CPG total order and confchg, quorum loss of
# a node cut off). Last: its partition scenario leaves the DLM to recover, which no later test
# should have to wait for. It leaves the cluster running; the trap above stops it.
if [ "${CL_COROSYNC:-1}" = 1 ] && [ $# = 0 ]; then
  echo "== cluster tier: corosync scenarios in the guests"
  CS_REUSE_CLUSTER=1 part "corosync scenarios" "$RESULTS/corosync.log" "$ROOT/tests/corosync/run.sh" --guests
else
  echo "== cluster tier: corosync scenarios not run (${CL_COROSYNC:+CL_COROSYNC=$CL_COROSYNC, }test filter: ${*:-none})"
fi
# A two-node cluster (corosync two_node: 1, dlm_controld enable_fencing=0) needs a cluster of
# its own: the 3-node one is stopped and 2 nodes boot under the same names (~40 s), then the
# tests marked for it run (two_node.rs, ~2 min).
if [ "${CL_TWO_NODE:-1}" = 1 ] && [ $# = 0 ]; then
  T3=$(date +%s)
  echo "== cluster tier: two-node cluster"
  collect; "$CL" stop >/dev/null 2>&1
  if "$CL" start 2; then
    cargo test -p cluster-tests --locked --no-fail-fast --test two_node -- --ignored --test-threads=1 2>&1 | tee "$RESULTS/two_node.log"
    tn_rc=${PIPESTATUS[0]}
    tn_passed=$(awk '/^test result:/{for(i=1;i<=NF;i++){if($i=="passed;")p+=$(i-1)}} END{print p+0}' "$RESULTS/two_node.log")
    tn_failed=$(awk '/^test result:/{for(i=1;i<=NF;i++){if($i=="failed;")f+=$(i-1)}} END{print f+0}' "$RESULTS/two_node.log")
    if [ "$tn_rc" != 0 ] && [ "$tn_failed" = 0 ]; then tn_failed=1; echo "two-node tests exited $tn_rc without a test failure" >&2; fi
    if [ "$tn_passed" = 0 ] && [ "$tn_failed" = 0 ]; then tn_failed=1; echo "no two-node test ran" >&2; fi
  else
    tn_passed=0; tn_failed=1; echo "the two-node cluster did not start (logs in $CL_BASE)" >&2
  fi
  echo "== cluster tier: two-node tests: $tn_passed passed, $tn_failed failed in $(( $(date +%s) - T3 )) s"
  passed=$((passed + tn_passed)); failed=$((failed + tn_failed))
else
  echo "== cluster tier: two-node tests not run (${CL_TWO_NODE:+CL_TWO_NODE=$CL_TWO_NODE, }test filter: ${*:-none})"
fi
# virtdlmd's own watchdog on the guests' softdog (watchdog.sh): a VM that survives SIGKILL on
# a node cut off; the node is reset and the survivor's grant waits for it. It boots 3 nodes of
# its own (the reset guest does not boot again) and stops them; about 3 minutes.
if [ "${CL_WATCHDOG:-1}" = 1 ] && [ $# = 0 ]; then
  echo "== cluster tier: virtdlmd's watchdog on softdog"
  collect; "$CL" stop >/dev/null 2>&1
  part watchdog "$RESULTS/watchdog.log" "$HERE/watchdog.sh"
else
  echo "== cluster tier: watchdog test not run (${CL_WATCHDOG:+CL_WATCHDOG=$CL_WATCHDOG, }test filter: ${*:-none})"
fi
echo "== cluster tier: tests took $(( $(date +%s) - T1 )) s, whole tier $(elapsed); results in $RESULTS"
# tests/run-all.sh reads the last "setup: N passed, N failed" line as the tier's setup count.
echo "setup: $setup_passed passed, $setup_failed failed"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$setup_failed" = 0 ]
