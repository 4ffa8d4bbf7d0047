# Sourced by tests/libvirt/run.sh: backing chains (docs/GUIDE.md, "Backing chains") on the
# real libvirtd. libvirt hands the plugin only each disk's top image; virtdlmd reads the
# qcow2 chain below it and holds every backing image in PR. Images come from qemu-img when
# installed, else from tests/libvirt/mkqcow2.py (empty qcow2 v3 images QEMU opens).
# Each check fails on a build whose virtdlmd does not lock backing images: the VM on the base
# would start, and the table would show no "(backing of" lock.

mkqcow2() { # mkqcow2 IMAGE [BACKING_NAME]: 16 MiB, qcow2 backing format
    if command -v qemu-img >/dev/null; then
        if [ -n "${2:-}" ]; then qemu-img create -q -f qcow2 -b "$2" -F qcow2 "$1" 16M
        else qemu-img create -q -f qcow2 "$1" 16M; fi
    else
        python3 tests/libvirt/mkqcow2.py "$1" 16 ${2:+"$2" qcow2}
    fi
}

qcow2_disk() { # qcow2_disk PATH TARGET
    echo "    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$1'/><target dev='$2' bus='virtio'/></disk>"
}

# has_lock VM IDENTITY MODE: virtdlmd's table (`virtdlm locks --json`) has that lock.
has_lock() {
    locks --json | python3 -c 'import json, sys
vm, identity, mode = sys.argv[1:]
sys.exit(not any(l["vm_name"] == vm and l["identity"] == identity and l["mode"] == mode for l in json.load(sys.stdin)))' "$@"
}

lacks_lock() { ! has_lock "$@"; }

test_chains() {
    # Over ch-base.qcow2: ch-ov1 and ch-ov2 (by relative name); over ch-base2.qcow2: ch-ov3.
    # The VMs on the bases open them under the "other host's" mount point (hostb, path_map'd
    # onto hosta), so that QEMU's own image lock (taken before libvirt asks the plugin, at
    # resume) cannot be what refuses them or the overlays.
    mkqcow2 "$A/ch-base.qcow2" && mkqcow2 "$A/ch-base2.qcow2" && cp "$A/ch-base.qcow2" "$B/ch-base.qcow2" &&
        cp "$A/ch-base2.qcow2" "$B/ch-base2.qcow2" &&
        mkqcow2 "$A/ch-ov1.qcow2" ch-base.qcow2 && mkqcow2 "$A/ch-ov2.qcow2" ch-base.qcow2 &&
        mkqcow2 "$A/ch-ov3.qcow2" ch-base2.qcow2 || { as setup fail "could not write the qcow2 images"; return; }
    qcow2_disk "$A/ch-ov1.qcow2" vda | define_domain vdlm-t-o1
    qcow2_disk "$A/ch-ov2.qcow2" vda | define_domain vdlm-t-o2
    qcow2_disk "$A/ch-ov3.qcow2" vda | define_domain vdlm-t-o3
    qcow2_disk "$B/ch-base.qcow2" vda | define_domain vdlm-t-base
    qcow2_disk "$B/ch-base2.qcow2" vda | define_domain vdlm-t-base2

    ok "chains: start o1 on ch-ov1.qcow2 (over ch-base.qcow2)" virsh_ start vdlm-t-o1
    ok "chains: o1 holds ch-ov1.qcow2 exclusively" has_lock vdlm-t-o1 "$A/ch-ov1.qcow2" EX
    ok "chains: o1 holds ch-base.qcow2 read-only, shown as ch-ov1's backing image" \
        has_lock vdlm-t-o1 "$A/ch-base.qcow2 (backing of $A/ch-ov1.qcow2)" PR
    refused "chains: a VM on base.qcow2 itself refused, overlay and VM named" \
        "resource busy: .*$A/ch-base.qcow2 is the backing file of $A/ch-ov1.qcow2, used by VM vdlm-t-o1" \
        virsh_ start vdlm-t-base
    ok "chains: the base's VM stayed shut off" state_is vdlm-t-base "shut off"
    ok "chains: start o2 on a second overlay over the same base" virsh_ start vdlm-t-o2
    ok "chains: o2 holds base.qcow2 read-only too" \
        has_lock vdlm-t-o2 "$A/ch-base.qcow2 (backing of $A/ch-ov2.qcow2)" PR
    locks | sed 's/^/virtdlm locks: /'      # for docs/GUIDE.md, "Backing chains"
    refused "chains: the VM on the base still refused, both overlays named" \
        "backing file of .*ov1.qcow2, used by VM vdlm-t-o1.*; and of .*ov2.qcow2, used by VM vdlm-t-o2" \
        virsh_ start vdlm-t-base

    ok "chains: start base2 directly on ch-base2.qcow2 (other mount point)" virsh_ start vdlm-t-base2
    refused "chains: o3, whose base base2.qcow2 another VM writes, refused, that VM named" \
        "resource busy: .*base2.qcow2 \(backing of .*ov3.qcow2\) is held exclusively by VM vdlm-t-base2" \
        virsh_ start vdlm-t-o3
    ok "chains: o3 holds nothing" lacks vdlm-t-o3

    ok "chains: destroy o1" virsh_ destroy vdlm-t-o1
    ok "chains: o1's backing lock went with it" lacks vdlm-t-o1
    refused "chains: the VM on the base refused while o2 reads it" "used by VM vdlm-t-o2" virsh_ start vdlm-t-base
    ok "chains: destroy o2" virsh_ destroy vdlm-t-o2
    ok "chains: the VM on the base starts once no overlay reads it" virsh_ start vdlm-t-base
    for d in base base2; do ok "chains: destroy $d" virsh_ destroy "vdlm-t-$d"; done
    ok "chains: no lock left" no_locks
}

# What libvirt asks of the plugin while a running VM's chain changes, and what virtdlmd does:
# each operation's lock changes (from virtdlmd's log, which records every one at info) are
# printed as "trace OP:" lines (docs/DAEMON.md, "Chain operations" has the table). Asserted
# after each: the VM runs and the base stays protected from a writer while it is in the chain.
log_mark() { wc -l < "$T/virtdlmd.log"; }
trace() { # trace OP MARK
    tail -n +"$(($2 + 1))" "$T/virtdlmd.log" | grep -E ' (granted|released|refused)' |
        sed -E -e 's/^.*INFO [a-z_:]+: //' -e 's/ (uuid|resource)=[^ ]*//g' -e "s|$A/||g" -e "s/^/trace $1: /"
}
lock_list() { locks --json | python3 -c 'import json, sys
for l in json.load(sys.stdin): print(l["vm_name"], l["mode"], l["identity"])' | sed "s|$A/||g"; }

test_chain_ops() {
    local m
    ok "ops: start o1 on ch-ov1.qcow2" virsh_ start vdlm-t-o1
    m=$(log_mark)
    ok "ops: snapshot-create-as --disk-only (new top ch-ov1.s1 over ch-ov1.qcow2)" \
        virsh_ snapshot-create-as vdlm-t-o1 s1 --disk-only --no-metadata --diskspec "vda,file=$A/ch-ov1.s1"
    trace snapshot "$m"; lock_list | sed 's/^/table after snapshot: /'
    ok "ops: o1 runs after the snapshot" state_is vdlm-t-o1 running
    ok "ops: the new top ch-ov1.s1 is held EX" has_lock vdlm-t-o1 "$A/ch-ov1.s1" EX
    # libvirt releases the old top; virtdlmd keeps it (the new top reads through it).
    # Fails if release() drops a disk another disk of the VM still reads through.
    ok "ops: the old top ch-ov1.qcow2 is still held EX by o1" has_lock vdlm-t-o1 "$A/ch-ov1.qcow2" EX
    refused "ops: the base is still refused to a writer" "used by VM vdlm-t-o1" virsh_ start vdlm-t-base

    m=$(log_mark)
    ok "ops: blockcommit --active --pivot (ch-ov1.s1 into ch-ov1.qcow2)" \
        virsh_ blockcommit vdlm-t-o1 vda --active --pivot --wait --base "$A/ch-ov1.qcow2"
    trace "blockcommit-active" "$m"; lock_list | sed 's/^/table after blockcommit --active: /'
    ok "ops: o1 runs after the active commit" state_is vdlm-t-o1 running
    ok "ops: the committed top ch-ov1.s1 is released" lacks_lock vdlm-t-o1 "$A/ch-ov1.s1" EX
    ok "ops: ch-ov1.qcow2, the top again, is held EX" has_lock vdlm-t-o1 "$A/ch-ov1.qcow2" EX
    refused "ops: the base is still refused to a writer after the commit" "used by VM vdlm-t-o1" virsh_ start vdlm-t-base

    m=$(log_mark)
    ok "ops: blockpull (ch-base.qcow2 pulled into ch-ov1.qcow2)" virsh_ blockpull vdlm-t-o1 vda --wait
    trace blockpull "$m"; lock_list | sed 's/^/table after blockpull: /'
    ok "ops: o1 runs after the pull" state_is vdlm-t-o1 running
    # libvirt releases the image pulled out of the chain; no disk of o1 reads through it now.
    ok "ops: the pulled-out base is released" \
        lacks_lock vdlm-t-o1 "$A/ch-base.qcow2 (backing of $A/ch-ov1.qcow2)" PR

    m=$(log_mark)
    ok "ops: blockcopy --pivot (onto ch-copy.qcow2)" \
        virsh_ blockcopy vdlm-t-o1 vda "$A/ch-copy.qcow2" --format qcow2 --wait --pivot --transient-job
    trace blockcopy "$m"; lock_list | sed 's/^/table after blockcopy: /'
    ok "ops: o1 runs after the copy" state_is vdlm-t-o1 running
    ok "ops: the copy ch-copy.qcow2 is held EX" has_lock vdlm-t-o1 "$A/ch-copy.qcow2" EX
    ok "ops: the old top ch-ov1.qcow2 is released after the pivot" lacks_lock vdlm-t-o1 "$A/ch-ov1.qcow2" EX

    ok "ops: destroy o1" virsh_ destroy vdlm-t-o1
    ok "ops: every lock of o1 went with it" lacks vdlm-t-o1
}

# Inactive block commit (the top stays; an image below it is merged into its own backing
# file): o2 on ch-ov2.qcow2 over ch-base.qcow2, two snapshots on top, so the chain is
# base <- ov2 <- s1 <- s2 (active).
test_chain_commit() {
    local m
    ok "commit: start o2 on ch-ov2.qcow2" virsh_ start vdlm-t-o2
    ok "commit: snapshot s1" virsh_ snapshot-create-as vdlm-t-o2 s1 --disk-only --no-metadata --diskspec "vda,file=$A/ch-ov2.s1"
    ok "commit: snapshot s2" virsh_ snapshot-create-as vdlm-t-o2 s2 --disk-only --no-metadata --diskspec "vda,file=$A/ch-ov2.s2"
    lock_list | sed 's/^/table before the inactive commits: /'

    # Into an image the VM holds EX (ov2, an old top): libvirt asks for it as a disk again,
    # which is answered from the table, then releases the image merged away.
    m=$(log_mark)
    ok "commit: blockcommit --top s1 --base ch-ov2.qcow2 (into an image o2 holds EX)" \
        virsh_ blockcommit vdlm-t-o2 vda --top "$A/ch-ov2.s1" --base "$A/ch-ov2.qcow2" --wait
    trace "blockcommit-inactive" "$m"; lock_list | sed 's/^/table after blockcommit --top s1: /'
    ok "commit: o2 runs after the inactive commit" state_is vdlm-t-o2 running
    ok "commit: the merged-away s1 is released" lacks_lock vdlm-t-o2 "$A/ch-ov2.s1" EX
    ok "commit: ch-ov2.qcow2 is still held EX" has_lock vdlm-t-o2 "$A/ch-ov2.qcow2" EX

    # Into the base the VM reads as a backing file (PR, shared with any other overlay's VM,
    # on any host): libvirt asks for it writable; refused, saying what to do instead.
    m=$(log_mark)
    refused "commit: blockcommit --top ch-ov2.qcow2 --base ch-base.qcow2 refused (the base is read as a backing file)" \
        "does not convert a backing image's shared read lock.*qemu-img commit" \
        virsh_ blockcommit vdlm-t-o2 vda --top "$A/ch-ov2.qcow2" --base "$A/ch-base.qcow2" --wait
    trace "blockcommit-into-base" "$m"; lock_list | sed 's/^/table after the refused commit: /'
    ok "commit: o2 runs after the refused commit" state_is vdlm-t-o2 running
    # libvirt then asks for the base again read-only ("revert access to read-only"): it may
    # be listed as a read-only disk of o2 from then on, still PR.
    ok "commit: the base is still held PR by o2" \
        eval 'has_lock vdlm-t-o2 "$A/ch-base.qcow2 (backing of $A/ch-ov2.qcow2)" PR || has_lock vdlm-t-o2 "$A/ch-base.qcow2" PR'
    refused "commit: the base is still refused to a writer" "VM vdlm-t-o2" virsh_ start vdlm-t-base
    ok "commit: destroy o2" virsh_ destroy vdlm-t-o2
    ok "commit: every lock of o2 went with it" lacks vdlm-t-o2
}
