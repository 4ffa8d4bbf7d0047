#!/bin/bash
# A real Corosync + kernel DLM cluster of User-Mode Linux guests on this host, for the cluster tier.
#
#   cluster.sh prepare          fetch and extract Debian's user-mode-linux kernel (idempotent)
#   cluster.sh start N          boot N (2 or 3) guests; returns once all are members, quorate, dlm_controld up
#   cluster.sh exec NODE 'cmd'  run a shell command inside a guest, stream its output, return its exit code
#   cluster.sh partition NODE   cut the guest off at its bridge port (it loses the others, they lose it)
#   cluster.sh heal NODE        bring the link back up
#   cluster.sh kill NODE        hard-kill the guest (its whole process group); returns once it is gone
#   cluster.sh start-node NODE  boot a killed guest again into the running cluster (a crashed node
#                               rebooting); returns once it is READY (booted again, up to 4 times,
#                               when the others' dlm_controld stops its corosync as it joins)
#   cluster.sh stop             kill every guest, delete the network namespace (never leaves anything behind)
#   (start also runs the guests' power switch, fence/switch.sh: fence/fence_uml inside a guest
#   powers guests off and on through it, as a fence agent does; log in $CL_BASE/switch.log)
#   cluster.sh status           one line per node
#   cluster.sh bin PATH         copy a host binary to target/cluster-bin/<name>-<sha256:12>, print that path
#                               (a running guest can keep serving a stale copy of a rebuilt file)
#
# Each guest's root is the host's / read-only (hostfs) under a tmpfs overlay, so binaries built on
# the host run inside at the same paths. $CL_BASE/shared is mounted writable at /shared in every
# guest: shared storage (one host directory, the same files on every node). Networking: one tap per guest on a bridge inside a private
# network namespace; nothing is added to the host's own network namespace.
#
# Environment (two clusters coexist when CL_NS, CL_BASE and CL_NET differ):
#   CL_NS       network namespace name           (default virtdlmcl)
#   CL_BASE     runtime directory                (default /tmp/virtdlm-cluster)
#   CL_NET      first three octets of the subnet (default 10.99.0; node i is $CL_NET.i)
#   CL_MEM      MiB per guest (default 512)      CL_TOKEN  corosync totem token in ms (default 3000)
#   CL_TIMEOUT  seconds to wait for start (120)  CL_EXEC_TIMEOUT  seconds per exec (default 120)
#   CL_CACHE    download cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/virt-dlm/cluster)
#   CL_VM       uml (default) or qemu: a stock Debian kernel under qemu TCG (about 3x slower to
#               start; has debugfs, so `dlm_tool lockdebug` works). Set it for prepare and start.
#   CL_PCMK     1: the guests start pacemakerd after corosync instead of dlm_controld (the
#               pacemaker tier; Pacemaker then runs dlm_controld as a resource). Default 0.
#   CL_PROVISION  a script each guest booted by this command runs before corosync (copied to
#               its /xchg/provision.sh, which also runs at every later boot). Default none.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NS=${CL_NS:-virtdlmcl}
BASE=${CL_BASE:-/tmp/virtdlm-cluster}
NET=${CL_NET:-10.99.0}
MEM=${CL_MEM:-512}
TOKEN=${CL_TOKEN:-3000}
CACHE=${CL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/virt-dlm/cluster}
VM=${CL_VM:-uml}
UML=$CACHE/uml/usr/bin/linux.uml
QEMU_DIR=$CACHE/qemu
ROOT=$(cd "$HERE/../.." && pwd)
BIN_DIR=${CL_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/cluster-bin}

die() { echo "cluster.sh: $*" >&2; exit 1; }
node_dir() { [[ $1 =~ ^[1-9]$ ]] || die "bad node number '$1'"; echo "$BASE/n$1"; }
# Process group of a guest, from the pid its start recorded (empty if it is gone).
guest_pgid() {
  local f=$BASE/n$1/vm.pid pid pg
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  # Each guest runs in a session of its own (UML: setsid, so pgid = pid, also after the main
  # process died and left its child processes behind; qemu: -daemonize, pgid = its parent's pid).
  pg=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ') || true
  [ -n "$pg" ] || pg=$pid
  if pgrep -g "$pg" -f "cl.base=$BASE " >/dev/null 2>&1; then echo "$pg"; fi
}

# Process groups of every guest process that belongs to $BASE, found by command line (not by
# pidfile): a guest left over from an earlier cluster in the same directory would otherwise
# keep running the commands dropped into the new cluster's node directories.
guest_groups() {
  local re pg
  re=$(printf '%s' "$BASE" | sed 's#[][\.*^$+?(){}|]#\\&#g')
  re="(uml_dir=$re/uml|-pidfile $re/n[0-9]+/vm\.pid)( |\$)"
  local pids; pids=$(pgrep -d, -f "$re") || return 0
  for pg in $(ps -o pgid= -p "$pids" | sort -u); do
    # Only whole groups made of guest processes (never a group the caller shares).
    if [ -z "$(ps -o args= -p "$(pgrep -d, -g "$pg")" | grep -Ev "$re")" ]; then echo "$pg"; fi
  done
}

cmd_prepare() {
  case $VM in
    uml) prepare_uml ;;
    qemu) prepare_qemu ;;
    *) die "CL_VM must be uml or qemu" ;;
  esac
}

# Debian 12's user-mode-linux (6.1) dies at its first user process on hosts whose CPUs have a
# large XSAVE area (AMX): "ptrace set fp regs failed, errno = 14" (the host refuses a register
# buffer smaller than its own). Kernels from 6.13 size it from the host, so the guests run the
# user-mode-linux of Debian's unstable suite, with that suite's C library beside it (the kernel
# is a host program linked against glibc >= 2.38; patchelf points it there). Both are
# downloaded and extracted, never installed: the host needs none of it. The versions fetched
# are written to uml/VERSIONS and printed.
UML_SUITE=${CL_UML_SUITE:-sid}
DEBIAN_MIRROR=${CL_DEBIAN_MIRROR:-http://deb.debian.org/debian}

# Prints the pool path of package $1 in $UML_SUITE's index (downloaded once per prepare). awk
# reads to the end: an early exit would kill xz with SIGPIPE, a failure under pipefail.
suite_pool_path() {
  xz -dc "$CACHE/Packages-$UML_SUITE.xz" |
    awk -v pkg="$1" '$0 == "Package: " pkg {p = 1} p && /^Filename:/ && !f {print $2; f = 1} /^$/ {p = 0}'
}

prepare_uml() {
  [ -x "$UML" ] && [ -n "$(uml_modules)" ] && [ -f "$CACHE/uml/VERSIONS" ] && return 0
  for t in curl xz dpkg-deb patchelf; do command -v "$t" >/dev/null || die "$t is missing (tests/install-deps.sh)"; done
  mkdir -p "$CACHE"
  rm -rf "$CACHE/uml" "$CACHE/uml.tmp" "$CACHE"/*.deb
  curl -fsS --retry 3 -o "$CACHE/Packages-$UML_SUITE.xz" "$DEBIAN_MIRROR/dists/$UML_SUITE/main/binary-amd64/Packages.xz" ||
    die "cannot download $UML_SUITE's package index from $DEBIAN_MIRROR"
  mkdir -p "$CACHE/uml.tmp"
  local pkg path
  for pkg in user-mode-linux libc6; do
    path=$(suite_pool_path "$pkg")
    [ -n "$path" ] || die "$pkg is not in $UML_SUITE's package index"
    curl -fsS --retry 3 -o "$CACHE/${path##*/}" "$DEBIAN_MIRROR/$path" || die "cannot download $DEBIAN_MIRROR/$path"
    dpkg-deb -x "$CACHE/${path##*/}" "$CACHE/uml.tmp"
    echo "${path##*/}" >> "$CACHE/uml.tmp/VERSIONS"
  done
  local lib=$CACHE/uml/usr/lib/x86_64-linux-gnu
  patchelf --set-interpreter "$lib/ld-linux-x86-64.so.2" --set-rpath "$lib" "$CACHE/uml.tmp/usr/bin/linux.uml"
  mv "$CACHE/uml.tmp" "$CACHE/uml"
  [ -x "$UML" ] && [ -n "$(uml_modules)" ] || die "user-mode-linux package has no kernel or dlm module"
  "$UML" --version >/dev/null || die "$UML does not run on this host"
  echo "user-mode-linux ready in $CACHE/uml: $(tr '\n' ' ' < "$CACHE/uml/VERSIONS")"
}

# Debian's stock kernel (extracted, not installed) and a busybox initramfs with the modules
# the guest needs before it can mount the host's root over 9p.
prepare_qemu() {
  local kpkg kver md r m f rel
  for t in qemu-system-x86_64 busybox cpio depmod; do command -v "$t" >/dev/null || die "$t is missing (tests/install-deps.sh)"; done
  mkdir -p "$QEMU_DIR"
  kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$kpkg" ] || { apt-get update -qq; kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); }
  [ -n "$kpkg" ] || die "cannot tell which linux-image package linux-image-amd64 points to"
  kver=${kpkg#linux-image-}
  if [ ! -f "$QEMU_DIR/vmlinuz" ] || [ "$(cat "$QEMU_DIR/kver" 2>/dev/null)" != "$kver" ]; then
    rm -rf "$QEMU_DIR"/kernel "$QEMU_DIR"/linux-image-*.deb
    (cd "$QEMU_DIR" && apt-get download -q "$kpkg" 2>/dev/null) || die "apt-get download $kpkg failed"
    dpkg-deb -x "$QEMU_DIR"/linux-image-*.deb "$QEMU_DIR/kernel"
    cp "$QEMU_DIR/kernel/boot/vmlinuz-$kver" "$QEMU_DIR/vmlinuz"
    echo "$kver" > "$QEMU_DIR/kver"
    rm -f "$QEMU_DIR/initramfs.cpio.gz"
  fi
  if [ ! -f "$QEMU_DIR/initramfs.cpio.gz" ] || [ "$HERE/guest/initramfs-init" -nt "$QEMU_DIR/initramfs.cpio.gz" ]; then
    md=$QEMU_DIR/kernel/lib/modules/$kver; r=$QEMU_DIR/initramfs
    rm -rf "$r"; mkdir -p "$r"/{bin,sbin,proc,sys,dev,newroot,lib/modules/$kver}
    cp "$(command -v busybox)" "$r/bin/busybox"
    for a in sh mount umount mkdir modprobe insmod switch_root cat sleep echo ln grep sed; do ln -s busybox "$r/bin/$a"; done
    for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover \
             virtio_net netfs fscache 9pnet 9pnet_virtio 9p overlay configfs dlm; do
      f=$(find "$md" -name "$m.ko*" | head -1); [ -n "$f" ] || die "module $m not in $kpkg"
      rel=${f#"$md"/}; mkdir -p "$r/lib/modules/$kver/$(dirname "$rel")"; cp "$f" "$r/lib/modules/$kver/$rel"
    done
    cp "$md"/modules.{order,builtin,builtin.modinfo} "$r/lib/modules/$kver/" 2>/dev/null || true
    depmod -b "$r" "$kver"
    cp "$HERE/guest/initramfs-init" "$r/init"
    (cd "$r" && find . | cpio -o -H newc --quiet | gzip -1) > "$QEMU_DIR/initramfs.cpio.gz.tmp"
    mv "$QEMU_DIR/initramfs.cpio.gz.tmp" "$QEMU_DIR/initramfs.cpio.gz"
  fi
  echo "qemu guest kernel $kver ready in $QEMU_DIR"
}

uml_modules() {
  local d
  for d in "$CACHE"/uml/usr/lib/uml/modules/*; do
    [ -f "$d/kernel/fs/dlm/dlm.ko" ] && { echo "$d"; return; }
  done
}

# Boots guest $1 of $2 on its tap (which start created) and returns at once.
boot_node() {
  local i=$1 n=$2 d mac cpu args mods=""
  [ "$VM" = uml ] && mods=$(uml_modules)
  d=$BASE/n$i; mkdir -p "$d/xchg/cmd" "$d/xchg/fence" "$BASE/shared"; mac=52:54:00:99:00:$(printf %02x "$i")
  # A provision script for the first boot (guest-init.sh runs /xchg/provision.sh before corosync).
  if [ -n "${CL_PROVISION:-}" ]; then cp "$CL_PROVISION" "$d/xchg/provision.sh"; fi
  rm -rf "$BASE/uml/n$i"
  # Exists before the guest boots: a directory the guest looked up while it was missing stays
  # missing in its overlay (negative dentry), and cl.keep binds it when it lives under /tmp.
  mkdir -p "$BIN_DIR"
  # One host CPU per guest: unpinned guests migrating between CPUs start 3x slower.
  cpu=$(( (i - 1) % $(nproc) ))
  args="quiet panic=-1 cl.node=$i cl.nodes=$n cl.token=$TOKEN cl.net=$NET cl.pcmk=${CL_PCMK:-0} cl.base=$BASE cl.init=$HERE/guest/guest-init.sh cl.keep=$ROOT:${CARGO_TARGET_DIR:-$ROOT/target}:$BIN_DIR:$BASE"
  if [ "$VM" = uml ]; then
    # setsid: the guest is several host processes; its own process group lets kill/stop reach
    # all of them. UML keeps guest memory in a file under TMPDIR: /dev/shm is tmpfs.
    # shellcheck disable=SC2086
    TMPDIR=/dev/shm ip netns exec "$NS" taskset -c $cpu setsid "$UML" mem="${MEM}M" \
      root=/dev/root rootfstype=hostfs rootflags=/ ro init="$HERE/guest/uml-init.sh" \
      con=null con0=null,fd:1 ssl=null "vec0:transport=tap,ifname=tap$i,mac=$mac" "umid=n$i" uml_dir="$BASE/uml" \
      $args "cl.umlmods=$mods" "cl.hostfs_xchg=$d/xchg" "cl.hostfs_shared=$BASE/shared" </dev/null >"$d/console.log" 2>&1 &
    echo $! > "$d/vm.pid"
  else
    # -daemonize: qemu forks into its own session and writes the pid of that session leader.
    # No KVM: the stock kernel needs hardware virtualisation, and TCG works everywhere.
    ip netns exec "$NS" taskset -c $cpu qemu-system-x86_64 \
      -accel tcg,thread=multi,tb-size=128 -cpu max -machine pc -smp 1 -m "$MEM" \
      -nodefaults -no-user-config -display none -no-reboot \
      -kernel "$QEMU_DIR/vmlinuz" -initrd "$QEMU_DIR/initramfs.cpio.gz" \
      -append "console=ttyS0 $args" -serial "file:$d/console.log" \
      -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
      -virtfs "local,path=$d/xchg,mount_tag=xchg,security_model=none" \
      -virtfs "local,path=$BASE/shared,mount_tag=shared,security_model=none" \
      -netdev "tap,id=n0,ifname=tap$i,script=no,downscript=no" -device "virtio-net-pci,netdev=n0,mac=$mac" \
      -daemonize -pidfile "$d/vm.pid" 2>"$d/vm.stderr" ||
      { echo "qemu for node$i failed:" >&2; cat "$d/vm.stderr" >&2; cmd_stop >/dev/null; exit 1; }
  fi
}

# Waits until guest $1 is READY (members, quorate, dlm_controld up); says why not, returns 1.
wait_ready() {
  local i=$1 deadline=$2 d=$BASE/n$1
  until grep -q '^[0-9.]* READY' "$d/xchg/status" 2>/dev/null; do
    if grep -q FAILED "$d/xchg/status" 2>/dev/null; then
      echo "node$i failed to start:" >&2; cat "$d/xchg/status" >&2; return 1; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "node$i not ready after ${CL_TIMEOUT:-120}s; status and console:" >&2
      cat "$d/xchg/status" >&2 2>/dev/null; tail -20 "$d/console.log" >&2; return 1; fi
    if ! kill -0 "$(cat "$d/vm.pid")" 2>/dev/null; then
      echo "node$i died during boot; console:" >&2; tail -20 "$d/console.log" >&2; return 1; fi
    sleep 0.1
  done
}

# Boots one guest again after `kill` (a crashed node coming back: fresh corosync, dlm_controld,
# empty /run), into the running cluster; returns once it is READY.
cmd_start_node() {
  local i=$1 d n t0
  d=$(node_dir "$i")
  [ -f "$BASE/nodes" ] && ip netns list | grep -qw "$NS" || die "no cluster runs in $BASE (netns $NS)"
  n=$(cat "$BASE/nodes")
  [ "$i" -le "$n" ] || die "node$i is not part of this $n-node cluster"
  [ -z "$(guest_pgid "$i")" ] || die "node$i is running (kill it first)"
  t0=$(date +%s.%N)
  # The earlier boot's logs stay beside the new ones; commands it never ran are dropped.
  for f in console.log xchg/status xchg/corosync.log xchg/dlm_controld.log; do
    [ -f "$d/$f" ] && mv "$d/$f" "$d/$f.$(date +%s%N)"
  done
  rm -f "$d"/xchg/cmd/*
  # A port disabled by `partition` forwards again once the new guest opens the tap (the
  # bridge enables a port when its carrier comes back): a rebooted node is healed, as before.
  ip -n "$NS" link set "tap$i" up
  # A node that joins again soon after the others removed it (a heal's stateful merge) can be
  # removed once more at once by their dlm_controld ("corosync exited" at boot): booted again
  # after a pause, as a fence device's reboot would be retried, up to 4 times.
  local try pg
  for try in 1 2 3 4; do
    boot_node "$i" "$n"
    wait_ready "$i" $(( $(date +%s) + ${CL_TIMEOUT:-120} )) && break
    grep -q 'FAILED: corosync exited' "$d/xchg/status" 2>/dev/null && [ "$try" -lt 4 ] || die "node$i did not come back"
    echo "node$i: its corosync was stopped as it joined; booting it again in 20 s (try $((try + 1)))" >&2
    pg=$(guest_pgid "$i"); [ -z "$pg" ] || kill -KILL -- "-$pg"; rm -f "$d/vm.pid"
    sleep 20
    for f in console.log xchg/status; do [ -f "$d/$f" ] && mv "$d/$f" "$d/$f.$(date +%s%N)"; done
    rm -f "$d"/xchg/cmd/*
  done
  echo "node$i ready again in $(echo "$(date +%s.%N) - $t0" | bc) s"
}

cmd_start() {
  local n=${1:-3} i t0 deadline
  [[ $n =~ ^[23]$ ]] || die "start: N must be 2 or 3"
  [ "$(id -u)" = 0 ] || die "start needs root (network namespace, taps, hostfs root)"
  case $VM in
    uml) [ -x "$UML" ] && [ -n "$(uml_modules)" ] || die "user-mode-linux is missing: run '$0 prepare' first" ;;
    qemu) [ -f "$QEMU_DIR/initramfs.cpio.gz" ] || die "qemu guest kernel is missing: run 'CL_VM=qemu $0 prepare' first" ;;
    *) die "CL_VM must be uml or qemu" ;;
  esac
  if ip netns list | grep -qw "$NS"; then die "netns $NS exists: a cluster is running (run '$0 stop')"; fi
  [ -z "$(guest_groups)" ] || die "guests of an earlier cluster in $BASE still run (run '$0 stop')"
  t0=$(date +%s.%N)
  rm -rf "$BASE"; mkdir -p "$BASE/uml"; echo "$n" > "$BASE/nodes"
  ip netns add "$NS"
  ip -n "$NS" link set lo up
  ip -n "$NS" link add br0 type bridge
  ip -n "$NS" link set br0 up
  start_switch
  for i in $(seq 1 "$n"); do
    ip -n "$NS" tuntap add dev "tap$i" mode tap
    ip -n "$NS" link set "tap$i" master br0 up
    boot_node "$i" "$n"
  done
  deadline=$(( $(date +%s) + ${CL_TIMEOUT:-120} ))
  for i in $(seq 1 "$n"); do
    wait_ready "$i" "$deadline" || { cmd_stop >/dev/null; exit 1; }
  done
  echo "cluster of $n $VM nodes ready in $(echo "$(date +%s.%N) - $t0" | bc) s (netns $NS, $NET.0/24, $BASE)"
}

cmd_exec() {
  [ $# -ge 2 ] || die "usage: exec NODE 'command'"
  local d id end off=0 sz node=$1
  d=$(node_dir "$node")/xchg/cmd; shift
  [ -d "$d" ] || die "no node dir $d (cluster not started?)"
  [ -f "$(dirname "$(dirname "$d")")/vm.pid" ] || die "node is not running"
  id=$(date +%s%N)-$$-$RANDOM
  printf '%s\n' "$*" > "$d/.$id.tmp"; mv "$d/.$id.tmp" "$d/$id.sh"
  end=$(( $(date +%s) + ${CL_EXEC_TIMEOUT:-120} ))
  flush() {
    [ -f "$d/$id.out" ] || return 0
    sz=$(stat -c %s "$d/$id.out")
    if [ "$sz" -gt "$off" ]; then tail -c +$((off + 1)) "$d/$id.out" | head -c $((sz - off)); off=$sz; fi
  }
  until [ -e "$d/$id.rc" ]; do
    flush
    if [ "$(date +%s)" -ge "$end" ]; then echo "cluster.sh: exec timed out after ${CL_EXEC_TIMEOUT:-120}s on node$node" >&2; exit 124; fi
    sleep 0.05
  done
  flush
  exit "$(cat "$d/$id.rc")"
}

# The cut is made at the bridge port (disabled: the bridge neither forwards the guest's frames
# nor sends it any), not by taking the tap down: UML's vector driver stops using a tap that
# went down, for good, so the node would never come back.
cmd_link() {
  local state=$1 node=$2 port
  node_dir "$node" >/dev/null
  case $state in down) port=0 ;; up) port=3 ;; esac
  ip netns exec "$NS" bridge link set dev "tap$node" state $port || die "no tap$node on the bridge in netns $NS"
  echo "node$node link $state"
}

cmd_kill() {
  local d pg; d=$(node_dir "$1")
  pg=$(guest_pgid "$1")
  [ -n "$pg" ] || die "node$1 is not running"
  kill -KILL -- "-$pg"; rm -f "$d/vm.pid"
  # Gone for sure when this returns: callers take "now" as the moment its processes died.
  for _ in $(seq 1 100); do kill -0 -- "-$pg" 2>/dev/null || break; sleep 0.05; done
  kill -0 -- "-$pg" 2>/dev/null && die "node$1's processes survive SIGKILL"
  echo "node$1 killed"
}

# The power switch fence_uml presses (fence/switch.sh): one per cluster, in its own session.
start_switch() {
  CL_BASE=$BASE setsid "$HERE/fence/switch.sh" </dev/null >"$BASE/switch.stdout" 2>&1 &
  echo $! > "$BASE/switch.pid"
}
stop_switch() {
  local pid
  [ -f "$BASE/switch.pid" ] || return 0
  pid=$(cat "$BASE/switch.pid"); rm -f "$BASE/switch.pid"
  # Only if that pid still is the switch of this cluster (pids are reused).
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "fence/switch.sh"; then kill -TERM "$pid" 2>/dev/null; fi
}

cmd_stop() {
  local d pg pgs="" alive
  stop_switch
  for d in "$BASE"/n*; do
    [ -f "$d/vm.pid" ] || continue
    pg=$(guest_pgid "${d##*/n}"); rm -f "$d/vm.pid"
    [ -n "$pg" ] || continue
    # The whole group: a UML kernel killed alone leaves its child processes behind, one spinning.
    kill -KILL -- "-$pg" 2>/dev/null && pgs="$pgs $pg"
  done
  for pg in $(guest_groups); do kill -KILL -- "-$pg" 2>/dev/null && pgs="$pgs $pg"; done
  for _ in $(seq 1 50); do
    alive=""; for pg in $pgs; do kill -0 -- "-$pg" 2>/dev/null && alive="$alive $pg"; done
    [ -z "$alive" ] && break; sleep 0.1
  done
  # Taps and the bridge live in the namespace and go with it.
  if ip netns list | grep -qw "$NS"; then ip netns del "$NS"; fi
  rm -rf "$BASE/uml"
  echo "stopped"
}

cmd_bin() {
  local src=$1 sum dst
  [ -f "$src" ] || die "bin: no file $src"
  sum=$(sha256sum "$src" | cut -c1-12)
  dst=$BIN_DIR/$(basename "$src")-$sum
  if [ ! -x "$dst" ]; then
    mkdir -p "$BIN_DIR"
    cp "$src" "$dst.tmp.$$" && mv "$dst.tmp.$$" "$dst"
  fi
  echo "$dst"
}

cmd_status() {
  local n i pg st
  [ -f "$BASE/nodes" ] || { echo "no cluster in $BASE"; return 1; }
  n=$(cat "$BASE/nodes")
  ip netns list | grep -qw "$NS" && echo "netns $NS present" || echo "netns $NS absent"
  for i in $(seq 1 "$n"); do
    pg=$(guest_pgid "$i")
    st=$(tail -1 "$BASE/n$i/xchg/status" 2>/dev/null | cut -d' ' -f2-)
    if [ -n "$pg" ]; then echo "node$i running (pgid $pg) ${st:+- $st}"; else echo "node$i down"; fi
  done
}

case ${1:-} in
  prepare) cmd_prepare ;;
  start) shift; cmd_start "$@" ;;
  exec) shift; cmd_exec "$@" ;;
  partition) [ $# -eq 2 ] || die "usage: partition NODE"; cmd_link down "$2" ;;
  heal) [ $# -eq 2 ] || die "usage: heal NODE"; cmd_link up "$2" ;;
  kill) [ $# -eq 2 ] || die "usage: kill NODE"; cmd_kill "$2" ;;
  start-node) [ $# -eq 2 ] || die "usage: start-node NODE"; cmd_start_node "$2" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  bin) [ $# -eq 2 ] || die "usage: bin PATH"; cmd_bin "$2" ;;
  *) sed -n '2,35s/^# \{0,1\}//p' "$0"; exit 2 ;;
esac
