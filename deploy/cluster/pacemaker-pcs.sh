#!/bin/sh
# Pacemaker resources for virt-dlm, with pcs (Debian 12: pcs 0.11). Run once, on one node,
# after `pcs cluster setup vmcluster hv1 hv2 hv3 && pcs cluster start --all`.
# Resulting start order on every node: dlm (dlm_controld) -> virtdlmd -> libvirtd, each
# running only where the previous one runs; stopping goes the other way round.
# virtdlmd and libvirtd are started by Pacemaker here: leave their units disabled
# (`systemctl disable virtdlmd libvirtd`), as a unit enabled in systemd and also managed by
# Pacemaker is started twice over.
set -e

# 1. Fencing first: the DLM recovers a failed node's locks only once it is fenced.
#    One fence device per node; replace with the agent of your hardware (fence_ipmilan,
#    fence_redfish, sbd, ...). `pcs stonith list` shows the installed agents.
pcs stonith create fence-hv1 fence_ipmilan ip=10.0.0.11 username=admin password=secret lanplus=1 pcmk_host_list=hv1
pcs stonith create fence-hv2 fence_ipmilan ip=10.0.0.12 username=admin password=secret lanplus=1 pcmk_host_list=hv2
pcs stonith create fence-hv3 fence_ipmilan ip=10.0.0.13 username=admin password=secret lanplus=1 pcmk_host_list=hv3
pcs property set stonith-enabled=true
# A partition without quorum freezes its resources (VMs keep running until fenced) rather
# than stopping them; virtdlmd stops VMs that lose their locks on its own.
pcs property set no-quorum-policy=freeze

# 2. dlm_controld on every node (the usual DLM clone of cluster filesystems).
pcs resource create dlm ocf:pacemaker:controld op monitor interval=30s on-fail=fence clone interleave=true ordered=true

# 3. virtdlmd on every node, after dlm and only where dlm runs.
pcs resource create virtdlmd systemd:virtdlmd op monitor interval=30s timeout=60s clone interleave=true
pcs constraint order start dlm-clone then virtdlmd-clone
pcs constraint colocation add virtdlmd-clone with dlm-clone

# 4. libvirtd on every node, after virtdlmd and only where virtdlmd runs, so that no VM
#    starts on a host whose lock daemon is not serving.
pcs resource create libvirtd systemd:libvirtd op monitor interval=30s timeout=60s clone interleave=true
pcs constraint order start virtdlmd-clone then libvirtd-clone
pcs constraint colocation add libvirtd-clone with virtdlmd-clone

# pcs 0.12 and later want the clone options after `meta`:
#   pcs resource create virtdlmd systemd:virtdlmd op monitor interval=30s timeout=60s clone meta interleave=true
