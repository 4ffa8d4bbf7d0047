#!/bin/bash
# Runs every test tier; a tier that cannot run fails the whole run (it is never skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== tier 1: unit tests and lints"
cargo build --workspace --locked --all-targets
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --exclude cluster-tests --locked
echo "== tier 4: real cluster (corosync + kernel DLM in User-Mode Linux guests)"
tests/cluster/run.sh
