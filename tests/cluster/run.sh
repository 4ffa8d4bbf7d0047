#!/bin/bash
# The cluster tier: builds the cluster tests, boots one 3-node UML cluster (corosync + kernel
# DLM + dlm_controld), runs every test of the cluster-tests crate against it, keeps the guests'
# logs, and always tears the cluster down. Prints "N passed, N failed"; exits non-zero on any
# failure, or when the cluster cannot be built or started (saying why).
#
# Needs root (network namespace, taps) and the packages of tests/install-deps.sh.
# Settings: CL_NS, CL_BASE, CL_NET (see cluster.sh) to run beside another cluster on this host,
# CL_VM=qemu for qemu TCG guests instead of User-Mode Linux;
# extra arguments are passed to the test binaries (e.g. a test name filter).
set -uo pipefail
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
for tool in corosync dlm_controld dlm_tool ip taskset bc; do
  command -v "$tool" >/dev/null || fail "$tool is missing: run tests/install-deps.sh"
done
cd "$ROOT" || fail "no $ROOT"

echo "== cluster tier: building the tests"
cargo build -p cluster-tests --bins --locked || fail "cargo build -p cluster-tests failed"
cargo build -p lockmgr --bin virtdlmd --locked || fail "cargo build -p lockmgr --bin virtdlmd failed"
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
export VIRTDLM_CLUSTER=$CL
cargo test -p cluster-tests --locked -- --test-threads=1 "$@" 2>&1 | tee "$RESULTS/tests.log"
rc=${PIPESTATUS[0]}
passed=$(awk '/^test result:/{for(i=1;i<=NF;i++){if($i=="passed;")p+=$(i-1)}} END{print p+0}' "$RESULTS/tests.log")
failed=$(awk '/^test result:/{for(i=1;i<=NF;i++){if($i=="failed;")f+=$(i-1)}} END{print f+0}' "$RESULTS/tests.log")
if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then failed=1; echo "cargo test exited $rc without a test failure (build or harness error)" >&2; fi
if [ "$passed" = 0 ] && [ "$failed" = 0 ]; then failed=1; echo "no cluster test ran" >&2; fi
echo "== cluster tier: tests took $(( $(date +%s) - T1 )) s, whole tier $(elapsed); results in $RESULTS"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
