#!/bin/bash
# Builds the Debian package virt-dlm from this workspace and prints the .deb's path.
#   deploy/build-deb.sh            -> target/debian/virt-dlm_<version>-1_amd64.deb
# The package holds virtdlmd (/usr/sbin), virtdlm (/usr/bin), dlm.so (crates/plugin) in libvirt's lock-driver
# directory, the Pacemaker resource agent ocf:virt-dlm:virtdlmd, the systemd unit (installed
# disabled, never started by the package), and the two
# configuration files as conffiles. Metadata: [package.metadata.deb] in crates/lockmgr/Cargo.toml.
# Needs cargo-deb; if it is missing it is installed with `cargo install` (into ~/.cargo/bin,
# so a CI cache of ~/.cargo keeps it), and dpkg-dev (dpkg-shlibdeps computes Depends).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_DEB_VERSION=${CARGO_DEB_VERSION:-3.8.0}

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb $CARGO_DEB_VERSION (cargo install, from crates.io)" >&2
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" >&2
fi
command -v dpkg-shlibdeps >/dev/null || { echo "build-deb: dpkg-shlibdeps missing: install dpkg-dev" >&2; exit 1; }

# dlm.so comes out of cargo as libvirtdlm_plugin.so (never as libdlm.so, the system libdlm's
# name); the package installs it as dlm.so.
cargo build --release --locked -p plugin -p lockmgr -p cli >&2
TARGET=${CARGO_TARGET_DIR:-target}
if ldd "$TARGET/release/libvirtdlm_plugin.so" | grep -Eq 'libdlm|libcpg|libquorum|libcmap|libcfg'; then
    echo "build-deb: $TARGET/release/libvirtdlm_plugin.so links the cluster libraries; it must not" >&2
    exit 1
fi
cargo deb -p lockmgr --no-build --locked --strip --output "$TARGET/debian/" >&2
ls -t "$TARGET"/debian/virt-dlm_*.deb | head -n 1
