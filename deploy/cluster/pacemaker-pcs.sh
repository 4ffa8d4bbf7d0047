#!/bin/sh
# Pacemaker resources for virt-dlm, with pcs (Debian 12: pcs 0.11). Run once, on one node,
# after `pcs cluster setup vmcluster hv1 hv2 hv3 && pcs cluster start --all`. pcs writes the
# live CIB directly: pcsd is needed for `pcs cluster setup`, not for these commands.
# Resulting start order on every node: dlm (dlm_controld) -> virtdlmd -> libvirtd, each
# running only where the previous one runs; stopping goes the other way round.
# Pacemaker starts all three here: leave the virtdlmd and libvirtd units disabled in systemd
# (`systemctl disable --now virtdlmd libvirtd`), as a daemon started by both is started twice.
# Tested: tests/pacemaker/run.sh applies this file on 3 nodes, fencing included (fence_uml,
# the test guests' power switch, in place of fence_ipmilan), and crashes and partitions nodes.
set -e

# 1. Fencing first: the DLM recovers a failed node's locks only once it is fenced.
#    One fence device per node; replace with the agent of your hardware (fence_ipmilan,
#    fence_redfish, sbd, ...). `pcs stonith list` shows the installed agents.
pcs stonith create fence-hv1 fence_ipmilan ip=10.0.0.11 username=admin password=secret lanplus=1 pcmk_host_list=hv1
pcs stonith create fence-hv2 fence_ipmilan ip=10.0.0.12 username=admin password=secret lanplus=1 pcmk_host_list=hv2
pcs stonith create fence-hv3 fence_ipmilan ip=10.0.0.13 username=admin password=secret lanplus=1 pcmk_host_list=hv3
# Each device runs (is monitored) on another node than the one it fences: a node does not
# watch its own power switch. Any node's fencer can use any device wherever it runs.
pcs constraint location fence-hv1 avoids hv1
pcs constraint location fence-hv2 avoids hv2
pcs constraint location fence-hv3 avoids hv3
pcs property set stonith-enabled=true
# A partition without quorum freezes its resources (VMs keep running until fenced) rather
# than stopping them; virtdlmd stops VMs that lose their locks on its own.
pcs property set no-quorum-policy=freeze

# 2. dlm_controld on every node (the usual DLM clone of cluster filesystems).
pcs resource create dlm ocf:pacemaker:controld op monitor interval=30s on-fail=fence clone interleave=true ordered=true

# 3. virtdlmd on every node, after dlm and only where dlm runs. The agent ships in the
#    virt-dlm package (/usr/lib/ocf/resource.d/virt-dlm/virtdlmd); its start returns once
#    the daemon answers `virtdlm status`, its monitor asks the same, its stop leaves the DLM
#    lockspace when no VM of the node holds a lock (dlm_controld refuses to stop otherwise).
pcs resource create virtdlmd ocf:virt-dlm:virtdlmd op monitor interval=30s timeout=30s clone interleave=true
pcs constraint order start dlm-clone then virtdlmd-clone
pcs constraint colocation add virtdlmd-clone with dlm-clone

# 4. libvirtd on every node, after virtdlmd and only where virtdlmd runs, so that no VM
#    starts on a host whose lock daemon is not serving. (A restart of virtdlmd restarts
#    libvirtd after it; running VMs are not touched by either.)
pcs resource create libvirtd systemd:libvirtd op monitor interval=30s timeout=60s clone interleave=true
pcs constraint order start virtdlmd-clone then libvirtd-clone
pcs constraint colocation add libvirtd-clone with virtdlmd-clone

# 5. Each VM: a VirtualDomain resource (resource-agents) after the libvirtd clone, its XML on
#    storage every node sees. virt-dlm refuses it on a second node while it runs on one.
#    pcs resource create vm1 ocf:heartbeat:VirtualDomain config=/shared/vm1.xml hypervisor=qemu:///system \
#        op start timeout=120s op stop timeout=120s op monitor interval=30s timeout=60s
#    pcs constraint order start libvirtd-clone then vm1
#    pcs constraint colocation add vm1 with libvirtd-clone

# Where Pacemaker manages systemd units, `systemd:virtdlmd` (the packaged unit) also works
# in place of ocf:virt-dlm:virtdlmd, with one difference: stopping the unit leaves the DLM
# lockspace in place, so a later stop of the dlm clone on that node waits until the stop
# times out (dlm_controld ignores SIGTERM while a lockspace exists). Prefer the agent.
# pcs 0.12 and later want the clone options after `meta`:
#   pcs resource create virtdlmd ocf:virt-dlm:virtdlmd op monitor interval=30s timeout=30s clone meta interleave=true
