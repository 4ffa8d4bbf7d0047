#!/bin/bash
# Runs every test tier, cheapest first. A tier that cannot run fails (it is never skipped).
# Each tier prints its own "N passed, N failed" (virt-dlm's own assertions; checks of the peers
# lockd, sanlock, nop and setup steps go on "peer: …" / "setup: …" lines); this script adds
# them up and ends with the virt-dlm total, exiting non-zero if any tier, peer or setup failed. Set TIERS to run a subset, e.g. TIERS="unit abi".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LOG=${CARGO_TARGET_DIR:-$ROOT/target}/tier-logs
mkdir -p "$LOG"
TIERS=${TIERS:-unit reliability fuzz corosync inventory abi bench libvirt deb systemd cluster pacemaker}
total_pass=0 total_fail=0 summary=() failures=()
total_peer_pass=0 total_peer_fail=0 total_setup_pass=0 total_setup_fail=0

# Runs one tier, showing its output, and records its "N passed, N failed" line.
tier() {
  local name=$1 title=$2; shift 2
  echo
  echo "================ tier: $name — $title"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$LOG/$name.log"
  local rc=${PIPESTATUS[0]}
  local line p f other op=0 of=0 extra=""
  # virt-dlm's own assertions; "peer: …" (lockd, sanlock, nop) and "setup: …" lines are apart.
  line=$(grep -E '^[[:alnum:]:]* ?[0-9]+ passed, [0-9]+ failed' "$LOG/$name.log" | grep -vE '^(peer|setup):' | tail -1)
  p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+'); p=${p:-0}
  f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+'); f=${f:-0}
  for other in peer setup; do
    local ol opp=0 off=0
    ol=$(grep -E "^$other: [0-9]+ passed, [0-9]+ failed" "$LOG/$name.log" | tail -1)
    [ -n "$ol" ] || continue
    opp=$(grep -oE '[0-9]+ passed' <<<"$ol" | grep -oE '[0-9]+'); off=$(grep -oE '[0-9]+ failed' <<<"$ol" | grep -oE '[0-9]+')
    op=$((op + opp)); of=$((of + off)); extra+=" $other $opp/$off"
    eval "total_${other}_pass=\$((total_${other}_pass + opp)); total_${other}_fail=\$((total_${other}_fail + off))"
  done
  if [ "$rc" != 0 ] && [ "$f" = 0 ] && [ "$of" = 0 ]; then f=1; fi
  if [ -z "$line" ] && [ "$rc" = 0 ]; then f=1; echo "tier $name printed no result line" >&2; fi
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
  # The failing checks by name, repeated at the end: a long run's log is often read from its tail.
  local l
  while IFS= read -r l; do failures+=("$name: ${l:0:300}"); done < <(grep -E '^(FAIL |peer: FAIL |setup: FAIL )|^test .* \.\.\. FAILED$' "$LOG/$name.log" | head -n 20)
  summary+=("$(printf '%-9s %4s passed, %3s failed  (%ss)%s' "$name" "$p" "$f" $((SECONDS - t0)) "${extra:+  [not virt-dlm, passed/failed:$extra]}")")
}

# Tier 1: build once (every later tier reuses these binaries), lints, unit and daemon tests.
unit_tier() {
  set -e
  cargo build --workspace --locked --all-targets
  cargo build --workspace --locked --release
  cargo fmt --all --check
  cargo fmt --manifest-path fuzz/Cargo.toml --check
  cargo clippy --workspace --all-targets --locked -- -D warnings
  # Every figure in docs/ from a stored result; stale ones listed (docs/TESTING.md, "Figures").
  python3 tests/bench/figures.py check
  tests/bench/figures-selftest.sh
  cargo test --workspace --exclude cluster-tests --locked --no-fail-fast 2>&1 | tee "$LOG/unit-cargo.log"
  awk '/^test result:/{for(i=1;i<=NF;i++){if($i=="passed;")p+=$(i-1); if($i=="failed;")f+=$(i-1)}}
       END{printf "unit: %d passed, %d failed\n", p, f}' "$LOG/unit-cargo.log"
}

for t in $TIERS; do
  case $t in
    unit)     tier unit "unit tests, daemon tests on the local backend, lints" unit_tier ;;
    reliability) tier reliability "crashes, contention, journal faults, hostile clients (local backend)" tests/reliability/run.sh ;;
    fuzz)     tier fuzz "cargo-fuzz on the protocol, config and journal parsers (stable toolchain)" tests/fuzz/run.sh ;;
    corosync) tier corosync "real corosync, one per network namespace" tests/corosync/run.sh ;;
    inventory) tier inventory "cluster lock inventory over real corosync (netns)" tests/corosync/inventory.sh ;;
    abi)      tier abi "dlm.so and lockd.so through libvirt's lock-driver ABI" tests/abi/run.sh ;;
    bench)    tier bench "peer benchmark, short run: nop, dlm.so, lockd.so, sanlock.so rows (no timings asserted)" tests/bench/smoke.sh ;;
    libvirt)  tier libvirt "a real libvirtd 9.0 with qemu TCG domains" tests/libvirt/run.sh ;;
    deb)      tier deb "the Debian package: build, dpkg -i, installed plugin in a real libvirtd, purge" tests/deb/run.sh ;;
    systemd)  tier systemd "the systemd unit under a real systemd (PID 1 of a UML guest): enable, restart, kill -9, journald, lock loss" tests/systemd/run.sh ;;
    cluster)  tier cluster "3-node corosync + kernel DLM in User-Mode Linux" tests/cluster/run.sh ;;
    pacemaker) tier pacemaker "deploy/cluster's Pacemaker configuration on 3 UML guests" tests/pacemaker/run.sh ;;
    *) echo "unknown tier $t"; total_fail=$((total_fail + 1)) ;;
  esac
done

echo
if [ ${#failures[@]} -gt 0 ]; then
  echo "================ failed checks (each tier's log: $LOG/TIER.log)"
  printf '%s\n' "${failures[@]}"
fi
echo "================ summary"
printf '%s\n' "${summary[@]}"
echo "not virt-dlm: peers (lockd, sanlock, nop) $total_peer_pass passed, $total_peer_fail failed; setup $total_setup_pass passed, $total_setup_fail failed"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ] && [ "$total_peer_fail" = 0 ] && [ "$total_setup_fail" = 0 ]
