#!/bin/bash
# Builds a deliberately broken virtdlmd, for showing that the corruption oracle (tests/oracle,
# run by tests/cluster/tests/nemesis.rs) catches a daemon that does not keep disks exclusive.
# The break: the DLM backend never converts its NL anchor lock to the mode asked for, and
# reports the grant anyway (virtdlmd "grants without asking the DLM"). Other nodes' requests
# are then granted too, and two nodes' writers write one image at once.
#
# The patch goes to a scratch copy of the tree under target/oracle-broken (the worktree is
# not touched); it has a target directory of its own (a full build, a few minutes).
# Prints the broken binary's path. Use it with:
#   VIRTDLMD=$(tests/cluster/broken-virtdlmd.sh) VIRTDLM_NEMESIS_ROUNDS=6 tests/cluster/run.sh nemesis
# which must FAIL with "the oracle found incompatible writers on one image".
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=${CARGO_TARGET_DIR:-$ROOT/target}/oracle-broken
mkdir -p "$W/src"
rm -rf "$W/src/crates" "$W/src/tests"
cp -a "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" "$ROOT/crates" "$W/src/"
mkdir -p "$W/src/tests"; cp -a "$ROOT/tests/cluster" "$ROOT/tests/oracle" "$W/src/tests/"
f=$W/src/crates/lockmgr/src/backend/dlm.rs
grep -q 'match anchor.convert_wait(lock_mode(mode), flags, wait) {' "$f" || { echo "broken-virtdlmd.sh: the line to patch is gone from $f" >&2; exit 1; }
sed -i 's/match anchor.convert_wait(lock_mode(mode), flags, wait) {/match { let _ = (flags, wait, \&mode); Ok::<(), DlmError>(()) } {/' "$f"
(cd "$W/src" && CARGO_TARGET_DIR=$W/target nice cargo build -q -p lockmgr --bin virtdlmd --locked >&2)
echo "$W/target/debug/virtdlmd"
