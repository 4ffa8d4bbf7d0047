# virt-dlm: the README's commands. Every target installs its own Debian packages first.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c

# Debian packages: tests/install-deps.sh (the one list, used by every target).

.PHONY: deps build deb test test-unit test-cluster demo lint clean-cluster bench-peers bench-cluster bench-profile bench-stall nemesis-records

deps:
	./tests/install-deps.sh

build: deps
	cargo build --workspace --release --locked

# The Debian package virt-dlm (target/debian/virt-dlm_*.deb); installs cargo-deb if missing.
deb: deps
	./deploy/build-deb.sh

# Every test tier, in order of cost. Fails if any tier cannot run.
test: deps
	./tests/run-all.sh

test-unit:
	cargo test --workspace --exclude cluster-tests --locked --no-fail-fast

# Real multi-node cluster (User-Mode Linux guests); needs root.
test-cluster: deps
	./tests/cluster/run.sh

lint:
	cargo fmt --all --check
	cargo fmt --manifest-path fuzz/Cargo.toml --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	python3 tests/bench/figures.py check

# The README's first command: a real libvirtd refusing a second VM on a locked disk (local backend).
demo: build
	./tests/demo.sh

# Benchmarks (not tests): figures go to docs/bench/*.json and docs/PERFORMANCE.md; a figure
# more than 20% worse than the stored one prints REGRESSION and fails (see PERFORMANCE.md).
# Each stored result carries its commit, machine, load and settings; `make lint` says which are
# stale (tests/bench/figures.py, docs/TESTING.md "Figures").
bench-peers: deps
	./tests/bench/peers.sh

bench-cluster: deps
	./tests/cluster/bench.sh

bench-profile: deps
	./tests/bench/profile.sh

bench-stall: deps
	./tests/bench/stall.sh

# The nemesis records no CI run stores: the seed replays and the broken daemon caught by the
# oracle (docs/results/, docs/RELIABILITY.md "Last runs"; about 25 minutes).
nemesis-records: deps
	./tests/cluster/records.sh
