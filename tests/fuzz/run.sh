#!/bin/bash
# Fuzz tier: builds the cargo-fuzz targets in fuzz/ and runs each for a bounded time from its
# checked-in seeds. One result per target: it passes when libFuzzer finds no crash, no failed
# property and no timeout. A crash fails the tier and its input stays at the printed path.
#
# Works with the stable toolchain alone: RUSTC_BOOTSTRAP=1 lets stable rustc take the -Z
# flags cargo-fuzz passes. cargo-fuzz is installed with cargo install (from crates.io) when
# neither PATH, ~/.cargo/bin nor target/tools/bin has it.
# Knobs: FUZZ_SECONDS per target (default 12), FUZZ_TARGETS (default: all), FUZZ_MIN_RUNS
# (default 1000: a target that ran fewer inputs fails).
# A longer run: docs/RELIABILITY.md, "Fuzzing".
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TOOLS=$TARGET_DIR/tools
OUT=$TARGET_DIR/fuzz-out
SECONDS_EACH=${FUZZ_SECONDS:-12}
# Fewest inputs a target must have run to pass (FUZZ_MIN_RUNS); the targets run tens of
# thousands in 12 s even on a loaded 2-core machine.
MIN_RUNS=${FUZZ_MIN_RUNS:-1000}
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1
# The stable toolchain explicitly where rustup manages toolchains (CI has no other).
if command -v rustup >/dev/null 2>&1; then export RUSTUP_TOOLCHAIN=${RUSTUP_TOOLCHAIN:-stable}; fi

fail_setup() { echo "fuzz: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

command -v c++ >/dev/null 2>&1 || fail_setup "no C++ compiler (libfuzzer-sys builds libFuzzer): run tests/install-deps.sh"
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
CARGO_FUZZ=$(command -v cargo-fuzz || true)
for c in "$CARGO_BIN/cargo-fuzz" "$TOOLS/bin/cargo-fuzz"; do
  if [ -z "$CARGO_FUZZ" ] && [ -x "$c" ]; then CARGO_FUZZ=$c; fi
done
if [ -z "$CARGO_FUZZ" ]; then
  # Into cargo's own bin directory (like deploy/build-deb.sh's cargo-deb), so that it outlives
  # this checkout; under a minute.
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION (cargo install, from crates.io; once)"
  cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz || fail_setup "cargo install cargo-fuzz failed"
  CARGO_FUZZ=$CARGO_BIN/cargo-fuzz
fi

mapfile -t ALL < <(cd fuzz && "$CARGO_FUZZ" list)
[ ${#ALL[@]} -gt 0 ] || fail_setup "cargo fuzz list found no target"
read -r -a TARGETS <<<"${FUZZ_TARGETS:-${ALL[*]}}"

# No sanitizer: the parsers are safe Rust, so what fuzzing finds is panics, arithmetic
# overflow (debug assertions on) and broken properties; ASan would only slow both steps.
BUILD=(--sanitizer none --debug-assertions --target-dir "$TARGET_DIR/fuzz")
# cargo fuzz has no --locked: a stale fuzz/Cargo.lock would be rewritten silently by the build.
(cd fuzz && cargo metadata --locked --format-version 1 >/dev/null) ||
  fail_setup "fuzz/Cargo.lock is out of date with the crates it builds (cargo metadata --locked); update it with: cd fuzz && cargo update -w"
echo "building the fuzz targets (running ${#TARGETS[@]})"
(cd fuzz && "$CARGO_FUZZ" build "${BUILD[@]}") || fail_setup "the fuzz targets do not build"

pass=0 failed=0
for t in "${TARGETS[@]}"; do
  work=$OUT/$t
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  log=$work/log
  # The seeds are read, never written: new inputs go to the scratch corpus under target/.
  (cd fuzz && "$CARGO_FUZZ" run "${BUILD[@]}" "$t" "$work/corpus" "corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$work/artifacts/" -print_final_stats=1) >"$log" 2>&1
  rc=$?
  runs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')
  crash=$(find "$work/artifacts" -type f | head -1)
  # A target that ran (almost) nothing proves nothing: a start-up failure or a build that
  # panics on every input before libFuzzer counts it would otherwise pass as "no crash".
  if [ "$rc" = 0 ] && [ -z "$crash" ] && [ "${runs:-0}" -lt "$MIN_RUNS" ]; then
    echo "FAIL  $t: only ${runs:-no} inputs run in ${SECONDS_EACH}s (minimum $MIN_RUNS; libFuzzer's stat::number_of_executed_units); log: $log"
    failed=$((failed + 1))
  elif [ "$rc" = 0 ] && [ -z "$crash" ]; then
    echo "ok    $t: ${runs:-?} inputs in ${SECONDS_EACH}s, no crash"
    pass=$((pass + 1))
  else
    echo "FAIL  $t (exit $rc)"
    # The panic message (the broken property), without the backtrace; else libFuzzer's verdict.
    awk '/panicked at/{p=1} /stack backtrace|^note: run with/{if(p)exit} p&&n++<12' "$log" | sed 's/^/      /'
    grep -m1 -E "ERROR: libFuzzer" "$log" | sed 's/^/      /'
    echo "      crash input: ${crash:-none written}; full log: $log"
    echo "      reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${BUILD[*]} $t ${crash:-})"
    failed=$((failed + 1))
  fi
done
echo "$pass passed, $failed failed"
[ "$failed" = 0 ]
