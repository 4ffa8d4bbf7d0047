#!/bin/bash
# PID 1 of every guest (after uml-init.sh or the qemu initramfs). Root = host / read-only + tmpfs overlay.
# Kernel command line: cl.node=<id> cl.nodes=<n> cl.token=<ms> cl.net=<a.b.c> cl.hostfs_xchg=<dir>
# cl.pcmk=<0|1>: 1 starts pacemakerd after corosync instead of dlm_controld (Pacemaker starts
# dlm_controld itself then, as the ocf:pacemaker:controld resource the pacemaker tier configures).
# /xchg is a per-node directory shared with the host (UML: hostfs; qemu: 9p):
#   /xchg/status    stage log stamped with guest uptime; "READY" once corosync and dlm_controld (or pacemakerd) are up
#   /xchg/cmd/X.sh  the host drops a script; the guest runs it once -> X.out (stdout+stderr), X.rc
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
up() { cut -d' ' -f1 /proc/uptime; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t configfs none /sys/kernel/config
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
# The guest's /tmp is a fresh tmpfs, but the harness (this checkout), the cargo target dir and
# $CL_BASE may live under the host's /tmp (cl.keep=<dir>:<dir>…): keep them visible at their
# host paths by holding binds of them across the tmpfs mount, then moving them back.
KEEP=$(sed -n 's/.*cl\.keep=\([^ ]*\).*/\1/p' /proc/cmdline); kept=""
k=0; mkdir -p /run/.keep
for d in $(echo "$KEEP" | tr : ' '); do
  case $d in /tmp/*) ;; *) continue;; esac
  [ -d "$d" ] || continue
  in=0; for e in $kept; do case $d/ in "${e%:*}"/*) in=1;; esac; done   # inside a kept dir already
  [ $in = 0 ] || continue
  mkdir -p /run/.keep/$k && mount --bind "$d" /run/.keep/$k && kept="$kept $d:$k" && k=$((k + 1))
done
mount -t tmpfs tmpfs /tmp
for e in $kept; do mkdir -p "${e%:*}" && mount --move "/run/.keep/${e##*:}" "${e%:*}"; done
umount -l /.oldroot 2>/dev/null
# libdlm and dlm_controld open /dev/misc/<name>; without udev these links must exist by hand.
ln -s . /dev/misc
for kv in $(cat /proc/cmdline); do
  case $kv in
    cl.node=*) NODE=${kv#*=};; cl.nodes=*) NODES=${kv#*=};; cl.token=*) TOKEN=${kv#*=};;
    cl.net=*) NET=${kv#*=};; cl.hostfs_xchg=*) HXCHG=${kv#*=};; cl.pcmk=*) PCMK=${kv#*=};;
    cl.hostfs_shared=*) HSHARED=${kv#*=};;
  esac
done
mkdir -p /xchg
if [ -n "${HXCHG:-}" ]; then mount -t hostfs -o "$HXCHG" none /xchg                                   # UML
else mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=262144 xchg /xchg; fi     # qemu
# /shared: one host directory, writable, the same in every guest (shared storage for VM images).
mkdir -p /shared
if [ -n "${HSHARED:-}" ]; then mount -t hostfs -o "$HSHARED" none /shared                          # UML
else mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=262144 shared /shared 2>/dev/null; fi  # qemu
st() { echo "$(up) $*" >> /xchg/status; }
st "init node=$NODE nodes=$NODES"
hostname "node$NODE"
ip link set lo up
# UML's vector driver names the interface vec0; the rest of the guest knows it as eth0.
[ -e /sys/class/net/vec0 ] && ip link set vec0 name eth0
ip addr add "$NET.$NODE/24" dev eth0
ip link set eth0 up

mkdir -p /etc/corosync /var/lib/corosync /var/log/corosync /etc/dlm
{
  cat <<EOC
totem {
  version: 2
  cluster_name: virtdlmtest
  transport: knet
  crypto_cipher: none
  crypto_hash: none
  token: ${TOKEN:-3000}
  interface {
    linknumber: 0
    knet_ping_interval: 200
    knet_ping_timeout: 1000
    knet_pong_count: 1
  }
}
logging {
  to_stderr: no
  to_logfile: yes
  logfile: /xchg/corosync.log
  to_syslog: no
  timestamp: on
}
quorum {
  provider: corosync_votequorum
EOC
  [ "$NODES" = 2 ] && printf '  two_node: 1\n  wait_for_all: 0\n'
  printf '}\nnodelist {\n'
  for i in $(seq 1 "$NODES"); do
    printf '  node {\n    nodeid: %s\n    name: node%s\n    ring0_addr: %s.%s\n  }\n' "$i" "$i" "$NET" "$i"
  done
  printf '}\n'
} > /etc/corosync/corosync.conf
# No fence devices exist in the test cluster; lowcomms over TCP; no settle delay.
cat > /etc/dlm/dlm.conf <<EOC
enable_fencing=0
enable_startup_fencing=0
protocol=tcp
post_join_delay=0
EOC
. "$(dirname "$0")/cluster-stack.sh"
# What a test installs into this guest's overlay (binaries, agents, configuration) is lost when
# the guest is powered off; a test that wants it back after a reboot leaves /xchg/provision.sh.
if [ -f /xchg/provision.sh ]; then
  bash /xchg/provision.sh > /xchg/provision.log 2>&1 || { st "FAILED: /xchg/provision.sh: $(tail -c 300 /xchg/provision.log)"; sleep infinity; }
  st "provisioned (/xchg/provision.sh)"
fi
st "starting corosync; quorate with $NODES nodes before anything else starts"
start_corosync "$NODES" 2>/tmp/stack.err || { st "FAILED: $(cat /tmp/stack.err)"; sleep infinity; }
st "quorate with $NODES nodes"
if [ "${PCMK:-0}" = 1 ]; then
  # pacemakerd always runs in the foreground; it starts and watches its own daemons. Its log
  # stays in the guest (the daemons running as hacluster cannot write to /xchg).
  # Where sbd runs (started by a test's /xchg/provision.sh, which leaves /run/sbd.wanted),
  # pacemakerd starts once sbd is up (its pid file), as pacemaker.service after sbd.service, and
  # gets sbd's settings as pacemaker.service's EnvironmentFile=-/etc/default/sbd gives them.
  if [ -e /run/sbd.wanted ]; then
    for t in $(seq 240); do [ -s /run/sbd.pid ] && break; sleep 0.25; done
    [ -s /run/sbd.pid ] || { st "FAILED: sbd did not start: $(tail -c 300 /xchg/sbd.start.log)"; sleep infinity; }
  fi
  if [ -s /run/sbd.pid ]; then set -a; . /etc/default/sbd; set +a; fi
  pacemakerd > /xchg/pacemakerd.stdout 2>&1 &
  PMPID=$!
  until crm_mon -1 >/dev/null 2>&1; do
    kill -0 $PMPID 2>/dev/null || { st "FAILED: pacemakerd exited: $(head -c 300 /xchg/pacemakerd.stdout)"; sleep infinity; }
    sleep 0.25
  done
  st "pacemaker up"
else
  start_dlm_controld 2>/tmp/stack.err || { st "FAILED: $(cat /tmp/stack.err)"; sleep infinity; }
  st "dlm_controld up"
fi
st "READY"

# PID 1 must reap every orphan that exits (a daemon started with --daemon is reparented here):
# bash as PID 1 leaves them zombies, and a zombie still answers kill -0, pgrep and /proc/PID, so
# a test would see a stopped libvirtd or a killed QEMU as alive. So PID 1 is this reaper, and
# the command loop its child. It reaps at once (blocking waitpid): ocf:pacemaker:controld's
# stop waits until `killall -0 dlm_controld` fails, which a zombie never does, and a stop that
# times out gets the node fenced (stonith-enabled=true).
exec perl -e 'my $loop = fork() // die "fork: $!";
  if ($loop == 0) { exec(@ARGV) or die "exec @ARGV: $!"; }
  while (1) { my $p = waitpid(-1, 0); exit(1) if $p == $loop; sleep(1) if $p < 0; }' \
  "$(dirname "$0")/command-loop.sh"
