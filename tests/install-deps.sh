#!/bin/bash
# Installs every Debian package virt-dlm needs to build and to run all test tiers.
# Idempotent: apt-get only runs when something is missing.
set -euo pipefail
PKGS=(
  # build: bindgen over libdlm/corosync headers
  make pkg-config libclang-dev clang libdlm-dev libcpg-dev libquorum-dev libcmap-dev libcfg-dev
  libcorosync-common-dev
  # cluster tier: corosync + dlm_controld inside User-Mode Linux guests
  corosync dlm-controld iproute2 kmod procps util-linux bc
  # ... whose kernel, Debian unstable's user-mode-linux, is fetched with curl and pointed at its
  # own C library with patchelf (tests/cluster/cluster.sh prepare)
  xz-utils patchelf
  # corosync tier's inventory script: JSON checks, and a frame client (perl-base has IO::Socket::UNIX)
  jq perl-base
  # cluster tier with CL_VM=qemu: the guests' initramfs
  busybox-static cpio
  # libvirt tier and demo: a real libvirtd with qemu TCG domains
  libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-system-x86
  # libvirt tier's metrics step: the scrape (curl), promtool check metrics / check rules /
  # test rules (promtool is in Debian's prometheus package)
  curl prometheus
  # plugin ABI tier: the C harness (gcc), dlm.so's linkage checks (readelf, nm), lockd.so and
  # virtlockd as the reference plugin (libvirt-daemon)
  gcc libc6-dev binutils libvirt-daemon
  # deb tier and deploy/build-deb.sh: dpkg-shlibdeps, systemd-analyze (binutils above: objdump);
  # systemd tier: systemd as PID 1 of its User-Mode Linux guest
  # (cargo-deb itself is installed by deploy/build-deb.sh with cargo install)
  dpkg-dev systemd
  # fuzz tier: libfuzzer-sys compiles libFuzzer (C++); cargo-fuzz comes from crates.io (tests/fuzz/run.sh)
  g++
  # benchmarks (tests/bench/peers.sh): the peers lockd.so (above), sanlock.so and its daemon;
  # report.py
  libvirt-sanlock sanlock python3
  # tests/bench/profile.sh (syscall counts, the perf profile, the heap profile) and
  # tests/cluster/bench.sh, whose guests run the host's strace to count the libdlm floor's and
  # virtdlmd's syscalls in node 1
  strace linux-perf heaptrack
  # pacemaker tier (and the deb tier's check of the OCF agent): Pacemaker in the cluster guests,
  # both configuration tools, ocf:pacemaker:controld, ocf:heartbeat:VirtualDomain (the tier's VM);
  # busybox (above) gives the guests syslogd
  pacemaker pacemaker-cli-utils pacemaker-resource-agents resource-agents pcs crmsh
  # pacemaker tier, sbd.sh: watchdog-only sbd (the guests' UML kernel has softdog)
  sbd
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
