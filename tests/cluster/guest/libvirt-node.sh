#!/bin/bash
# Runs inside a cluster guest (tests/cluster/libvirt-vms.sh drives it through `cluster.sh exec`):
# a real libvirtd 9.0 with lock_manager = "dlm" (dlm.so) and a virtdlmd on the DLM backend, the
# way a cluster node runs them. Everything of it lives under /run/vms (the guest's tmpfs);
# /etc/libvirt is the guest's own (tmpfs overlay over the host's), so it is edited in place.
#
#   libvirt-node.sh setup NODE VIRTDLMD PLUGIN [KEY=VALUE]   configure (plus one virtdlmd.conf
#                                            setting), start virtdlmd, then libvirtd
#   libvirt-node.sh start-libvirtd               start libvirtd (again)
#   libvirt-node.sh stop-libvirtd                SIGTERM libvirtd, wait until it is gone (QEMUs stay)
#   libvirt-node.sh teardown                     destroy every domain, stop libvirtd and virtdlmd
set -u
D=/run/vms
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
virsh_() { virsh -q -c qemu:///system "$@"; }

wait_for() { # wait_for SECONDS CMD...: polls CMD every 0.1 s
  local n=$(($1 * 10)); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

setup() {
  local node=$1 virtdlmd=$2 plugin=$3 p
  # Nothing of an earlier run may answer in this one's place (a libvirtd still shutting down
  # keeps its socket until it exits).
  teardown >/dev/null 2>&1
  for p in $(pgrep -x libvirtd) $(pgrep -f 'virtdlmd.* --config /run/vms/'); do kill -9 "$p" 2>/dev/null; done
  wait_for 30 sh -c '! pgrep -x libvirtd' || { echo "an earlier libvirtd survives SIGKILL"; return 1; }
  # A fresh start each time (a rerun in the same guests): no journal, the stock configuration.
  rm -rf $D/journal $D/*.log $D/*.sock; mkdir -p $D/plugin
  cp "$plugin" $D/plugin/dlm.so
  for f in qemu.conf libvirtd.conf; do
    [ -f $D/$f.orig ] || cp /etc/libvirt/$f $D/$f.orig
    cp $D/$f.orig /etc/libvirt/$f
  done
  # Fencing bound 1000 + 1000 + 30000 ms: `virsh suspend` in a UML guest on a loaded host took
  # more than 5 s (then the pause escalates to SIGTERM, which is not what this tier checks).
  cat > $D/virtdlmd.conf <<EOC
backend = dlm
lockspace = vmtest
cluster_group = vmtest
socket = $D/virtdlmd.sock
admin_socket = $D/admin.sock
journal = $D/journal
node_name = node$node
fence_grace_ms = 1000
fence_kill_wait_ms = 1000
fence_pause_timeout_ms = 30000
EOC
  # An extra setting (key=value) from libvirt-vms.sh's CL_VMS_CONF, to show a check failing.
  [ -n "${4:-}" ] && echo "${4/=/ = }" >> $D/virtdlmd.conf
  RUST_LOG=info "$virtdlmd" --config $D/virtdlmd.conf >> $D/virtdlmd.log 2>&1 </dev/null &
  echo $! > $D/virtdlmd.pid
  wait_for 120 grep -q 'serving on' $D/virtdlmd.log || { echo "virtdlmd not serving:"; cat $D/virtdlmd.log; return 1; }

  # The host's domains and networks are not this node's: start from none.
  rm -f /etc/libvirt/qemu/*.xml /etc/libvirt/qemu/autostart/* /etc/libvirt/qemu/networks/autostart/*
  # Root QEMU without DAC relabelling: the images are one host directory shared by every
  # node (hostfs/9p), which must not be chown'ed by whichever node starts a VM. No cgroups in
  # the guest; QEMU's output to a file (no virtlogd).
  cat >> /etc/libvirt/qemu.conf <<EOC

# virt-dlm cluster tier
lock_manager = "dlm"
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
EOC
  cat > /etc/libvirt/qemu-dlm.conf <<EOC
socket = "$D/virtdlmd.sock"
timeout_ms = 60000
EOC
  # Migration: the libvirtds talk over TCP without auth on the private cluster network; every
  # guest has the host's SMBIOS/machine-id, so each gets a host UUID of its own.
  cat >> /etc/libvirt/libvirtd.conf <<EOC

listen_tls = 0
listen_tcp = 1
auth_tcp = "none"
host_uuid = "00000000-0000-4000-8000-0000000000$(printf %02d "$node")"
EOC
  # QEMU's capabilities are probed by the first node that starts libvirtd and shared through
  # /shared: libvirtd revalidates a cached copy (QEMU's and libvirtd's ctime, kernel, CPU) and
  # probes again if it does not match, so a copy can only save the probe, never change it.
  local caps=/var/cache/libvirt/qemu/capabilities
  if ls /shared/.qemucaps/*.xml >/dev/null 2>&1; then mkdir -p $caps && cp /shared/.qemucaps/*.xml $caps/; fi
  start_libvirtd || return 1
  if ! ls /shared/.qemucaps/*.xml >/dev/null 2>&1 && ls $caps/*.xml >/dev/null 2>&1; then
    mkdir -p /shared/.qemucaps && cp $caps/*.xml /shared/.qemucaps/
  fi
}

# libvirtd probes QEMU's capabilities before it answers (unless a valid cached copy exists):
# minutes in a UML guest on a loaded host (4+ min seen at a load average of 40).
start_libvirtd() {
  rm -f $D/libvirtd.pid
  LIBVIRT_LOCK_MANAGER_PLUGIN_DIR=$D/plugin LIBVIRT_LOG_FILTERS='1:locking 3:*' \
    LIBVIRT_LOG_OUTPUTS="1:file:$D/libvirtd.log" libvirtd --listen --daemon --pid-file $D/libvirtd.pid </dev/null || return 1
  wait_for 60 test -s $D/libvirtd.pid || { echo "libvirtd wrote no pid file"; tail -20 $D/libvirtd.log; return 1; }
  wait_for 400 virsh_ version || { echo "libvirtd does not answer"; tail -20 $D/libvirtd.log; return 1; }
}

# SIGTERM; a libvirtd still shutting down after 60 s (its shutdown waits on worker threads,
# which a starved UML guest runs slowly) is killed, as a service manager would: for what the
# tier checks (QEMU survives, the locks are unchanged) a crashed libvirtd is the harder case.
stop_libvirtd() {
  local p; p=$(cat $D/libvirtd.pid 2>/dev/null) || return 0
  kill -TERM "$p" 2>/dev/null
  for _ in $(seq 600); do [ -e /proc/$p ] || { echo "libvirtd $p stopped on SIGTERM"; return 0; }; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null
  for _ in $(seq 300); do [ -e /proc/$p ] || { echo "libvirtd $p still shutting down 60 s after SIGTERM: SIGKILL"; return 0; }; sleep 0.1; done
  echo "libvirtd $p survives SIGKILL"; return 1
}

teardown() {
  local d p
  for d in $(virsh_ list --all --name 2>/dev/null); do virsh_ destroy "$d" >/dev/null 2>&1; virsh_ undefine "$d" >/dev/null 2>&1; done
  stop_libvirtd || kill -9 "$(cat $D/libvirtd.pid)" 2>/dev/null
  for p in /run/libvirt/qemu/*.pid; do [ -e "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null; done
  if p=$(cat $D/virtdlmd.pid 2>/dev/null) && kill -TERM "$p" 2>/dev/null; then
    for _ in $(seq 100); do [ -e /proc/$p ] || break; sleep 0.1; done
  fi
  rm -f $D/virtdlmd.pid $D/libvirtd.pid
  true
}

cmd=$1; shift
case $cmd in
  setup) setup "$@" ;;
  start-libvirtd) start_libvirtd ;;
  stop-libvirtd) stop_libvirtd ;;
  teardown) teardown ;;
  *) echo "usage: $0 setup NODE VIRTDLMD PLUGIN | start-libvirtd | stop-libvirtd | teardown" >&2; exit 2 ;;
esac
