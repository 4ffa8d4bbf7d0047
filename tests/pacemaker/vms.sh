# Sourced by tests/pacemaker/run.sh: a real libvirtd and a real VM under Pacemaker.
# libvirtd is the clone of deploy/cluster/ (after virtdlmd, only where it runs) as lsb:libvirtd:
# the guests have no systemd, and Debian's libvirt ships no init script, so the tier installs
# its own (tests/pacemaker/libvirtd.init) starting the same /usr/sbin/libvirtd; dlm.so is in
# libvirt's lock-driver directory and qemu.conf says lock_manager = "dlm", as the package and
# docs set a host up. The VM is an ocf:heartbeat:VirtualDomain resource (resource-agents), a
# QEMU TCG domain without an OS (a one-instruction boot sector: its vCPU halts) on a raw image
# in /shared, the storage every guest sees.
#
# vms_bins                 the files below, copied for the guests (after run.sh's own)
# vms_provision_lines      lines of /xchg/provision.sh (fencing_provision): run again after a fence
# vms_precache             node1 probes QEMU's capabilities once, for every guest (/shared/.qemucaps)
# vms_scenario             the VM under Pacemaker: start, refusal elsewhere naming the holder, a move
# vms_after_fence N        the VM of crashed node N restarted on a survivor only after the fence

VMX=pcmk-vm1                          # the domain's name
VMIMG=/shared/$VMX.img                # its disk, as every guest sees it

vms_bins() {
    PLUG=$("$CL" bin "$TGT"/release/libvirtdlm_plugin.so)
    LVINIT=$("$CL" bin tests/pacemaker/libvirtd.init)
    QDC=$("$CL" bin deploy/qemu-dlm.conf)
}

# What a host with the package and a lock_manager = "dlm" qemu.conf has (docs/GUIDE.md), for
# root QEMU on shared storage without relabelling (no cgroups, no virtlogd in the guests).
vms_provision_lines() {
    cat <<EOL
install -D -m755 $PLUG /usr/lib/x86_64-linux-gnu/libvirt/lock-driver/dlm.so
install -m755 $LVINIT /etc/init.d/libvirtd
install -m644 $QDC /etc/libvirt/qemu-dlm.conf
rm -f /etc/libvirt/qemu/*.xml /etc/libvirt/qemu/autostart/* /etc/libvirt/qemu/networks/autostart/*
grep -q '^lock_manager = "dlm"' /etc/libvirt/qemu.conf || printf '%s\n' 'lock_manager = "dlm"' 'user = "root"' 'group = "root"' 'dynamic_ownership = 0' 'security_driver = "none"' 'stdio_handler = "file"' 'cgroup_controllers = [ ]' >> /etc/libvirt/qemu.conf
EOL
}

# libvirtd probes QEMU's capabilities before it answers (minutes in a UML guest): node1 does it
# once, before Pacemaker starts libvirtd anywhere, and leaves them in /shared/.qemucaps (the
# init script's start copies them in; libvirtd probes again if they are stale).
vms_precache() {
    ls "$CL_BASE"/shared/.qemucaps/*.xml >/dev/null 2>&1 && return 0
    T_EXEC=900 gx 1 "/etc/init.d/libvirtd start && /etc/init.d/libvirtd stop && ls /shared/.qemucaps/*.xml" >"$RES/qemucaps.txt" 2>&1
}

# "VM@NODE" of each exclusive lock on the VM's disk, as node $1's virtdlmd sees the cluster.
vm_holder() {
    gx "$1" "virtdlm --json locks" 2>/dev/null |
        jq -r --arg d "$VMIMG" '.[] | select(.identity == $d and .mode == "EX") | "\(.vm_name)@\(.node_name)"' 2>/dev/null | tr '\n' ' ' | sed 's/ $//'
}
vm_where() { gx 1 "crm_resource --locate -r vm1" 2>/dev/null | sed -n 's/.*is running on: \(node[0-9]\).*/\1/p' | tr '\n' ' ' | sed 's/ $//'; }
vm_state() { gx "$1" "virsh -q -c qemu:///system domstate $VMX" 2>/dev/null | head -n 1; }
# Waits up to $1 s until Pacemaker shows vm1 Started on node $2 and libvirt there shows the
# domain running (QEMU starts paused and is resumed once dlm.so holds its disk). A QEMU start
# takes 1-3 minutes in a UML guest on a loaded host.
vm_wait_on() {
    gwait "$1" 1 "crm_mon -1 -r 2>/dev/null | grep -q 'vm1.*(ocf:heartbeat:VirtualDomain):.* Started node$2\$'" &&
        gwait 60 "$2" "[ \"\$(virsh -q -c qemu:///system domstate $VMX 2>/dev/null | head -n 1)\" = running ]"
}

vms_scenario() {
    local i out rel gra k1 k3 u1 u3 r g u
    echo "---- a real VM under Pacemaker: ocf:heartbeat:VirtualDomain on lsb:libvirtd with dlm.so"
    for i in $ONLINE; do
        i=${i#node}
        if gx "$i" "/etc/init.d/libvirtd status && virsh -q -c qemu:///system version >/dev/null && grep -q /lock-driver/dlm.so /proc/\$(cat /run/libvirtd.pid)/maps" >/dev/null 2>&1; then
            pass "node$i: Pacemaker's libvirtd (lsb:libvirtd) answers virsh and has dlm.so loaded"
        else fail "node$i: libvirtd: $(gx "$i" "/etc/init.d/libvirtd status; echo rc=\$?; tail -n 5 /var/log/libvirt/libvirtd.log" 2>&1 | tr '\n' ' ' | cut -c1-400)"; fi
    done
    # An 8 MiB raw image whose boot sector is `cli; hlt`: QEMU TCG boots it and idles.
    truncate -s 8M "$CL_BASE/shared/$VMX.img"
    printf '\xfa\xf4\xeb\xfd' | dd of="$CL_BASE/shared/$VMX.img" conv=notrunc status=none
    printf '\x55\xaa' | dd of="$CL_BASE/shared/$VMX.img" bs=1 seek=510 conv=notrunc status=none
    cat >"$CL_BASE/shared/$VMX.xml" <<EOX
<domain type='qemu'>
  <name>$VMX</name>
  <uuid>5ee0c0de-0000-4000-8000-00000000a001</uuid>
  <memory unit='MiB'>16</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$VMIMG'/><target dev='vda' bus='virtio'/></disk>
  </devices>
</domain>
EOX
    chmod 0666 "$CL_BASE/shared/$VMX.img" "$CL_BASE/shared/$VMX.xml"
    # The resource as users write it (pcs resource create vm1 ocf:heartbeat:VirtualDomain
    # config=... hypervisor=qemu:///system force_stop=true ...; order and colocation with the
    # libvirtd clone), fed to cibadmin: each pcs command takes 10-20 s in a guest. force_stop:
    # the VM has no OS to answer an ACPI shutdown. node1 preferred (50), stickiness 100: a
    # VM moved away stays where it was moved once the move is cleared. Start timeout 600 s: QEMU
# starts in 1-3 minutes in a UML guest on a loaded host.
    out=$(gx 1 "cibadmin -C -o resources -X \"<primitive id='vm1' class='ocf' provider='heartbeat' type='VirtualDomain'>
        <instance_attributes id='vm1-ia'><nvpair id='vm1-config' name='config' value='/shared/$VMX.xml'/>
          <nvpair id='vm1-hv' name='hypervisor' value='qemu:///system'/><nvpair id='vm1-fs' name='force_stop' value='true'/></instance_attributes>
        <meta_attributes id='vm1-meta'><nvpair id='vm1-stick' name='resource-stickiness' value='100'/></meta_attributes>
        <operations><op id='vm1-start' name='start' interval='0s' timeout='600s'/><op id='vm1-stop' name='stop' interval='0s' timeout='300s'/>
          <op id='vm1-monitor' name='monitor' interval='30s' timeout='120s'/></operations></primitive>\" &&
      cibadmin -C -o constraints -X \"<rsc_order id='vm1-after-libvirtd' first='libvirtd-clone' then='vm1' kind='Mandatory'/>\" &&
      cibadmin -C -o constraints -X \"<rsc_colocation id='vm1-with-libvirtd' rsc='vm1' with-rsc='libvirtd-clone' score='INFINITY'/>\" &&
      cibadmin -C -o constraints -X \"<rsc_location id='vm1-prefers-node1' rsc='vm1' node='node1' score='50'/>\"" 2>&1)
    if [ $? = 0 ]; then setup_pass "vm1 (ocf:heartbeat:VirtualDomain, $VMX) added after the libvirtd clone"
    else setup_fail "cibadmin vm1: $(echo "$out" | tr '\n' ' ' | cut -c1-400)"; return; fi
    if vm_wait_on 700 1; then pass "Pacemaker started vm1 on node1: $VMX's QEMU runs there (virsh domstate: running)"
    else fail "vm1 not running on node1: $(vm_where) / $(vm_state 1) / $(gx 1 'crm_mon -1 -r --failcounts' 2>&1 | tr '\n' ' ' | cut -c1-600)"; return; fi
    out=$(vm_holder 2)
    if [ "$out" = "$VMX@node1" ]; then pass "node2's virtdlmd: $VMIMG held EX by $VMX@node1 (the cluster inventory)"
    else fail "node2 sees the holders of $VMIMG as '$out', not $VMX@node1"; fi

    # The same domain started by hand on node2: dlm.so refuses, naming the holder.
    out=$(gx 2 "virsh -q -c qemu:///system define /shared/$VMX.xml >/dev/null && virsh -q -c qemu:///system start $VMX" 2>&1)
    if [ $? = 0 ]; then fail "node2: virsh start $VMX succeeded while node1 runs it"
    elif echo "$out" | grep -Eq "held exclusively by VM $VMX \(uuid [^)]*\) on node node1"; then
        pass "node2: virsh start $VMX refused: $(echo "$out" | grep -Eo '[^:]*held exclusively by VM.*on node node1' | head -n 1 | cut -c1-240)"
    else fail "node2: virsh start $VMX refused without naming the holder: $(echo "$out" | tr '\n' ' ' | cut -c1-400)"; fi
    if [ "$(vm_state 2)" = "shut off" ] && [ "$(vm_holder 1)" = "$VMX@node1" ]; then pass "node2: $VMX stayed shut off, node1 still the only holder"
    else fail "node2: $VMX is '$(vm_state 2)', holders '$(vm_holder 1)'"; fi
    gx 2 "virsh -q -c qemu:///system undefine $VMX" >/dev/null 2>&1

    # A move by Pacemaker: stop on node1 (destroy, dlm.so releases), then start on node3.
    read -r k1 u1 <<<"$(clock_offset 1)"; read -r k3 u3 <<<"$(clock_offset 3)"
    u=$(python3 -c "import sys; print('%.3f' % (float(sys.argv[1]) + float(sys.argv[2])))" "$u1" "$u3")
    out=$(gx 1 "crm_resource --move -r vm1 -N node3 2>&1")
    if vm_wait_on 700 3 && [ "$(vm_state 1)" != running ]; then pass "crm_resource --move -r vm1 -N node3: $VMX runs on node3 and no longer on node1"
    else fail "move to node3: $out: $(vm_where) node1 '$(vm_state 1)' node3 '$(vm_state 3)'"; fi
    out=$(vm_holder 2)
    if [ "$out" = "$VMX@node3" ]; then pass "node2's virtdlmd: $VMIMG held EX by $VMX@node3 alone after the move"
    else fail "after the move node2 sees the holders of $VMIMG as '$out'"; fi
    rel=$(gx 1 "grep -a released /var/log/messages | grep -a 'vm=$VMX ' | grep -a 'disk=$VMIMG' | tail -n 1" | sed 's/\x1b\[[0-9;]*m//g')
    gra=$(gx 3 "grep -a granted /var/log/messages | grep -a 'vm=$VMX ' | grep -a 'disk=$VMIMG' | tail -n 1" | sed 's/\x1b\[[0-9;]*m//g')
    echo "  | node1: $(echo "$rel" | cut -c1-220)"; echo "  | node3: $(echo "$gra" | cut -c1-220)"
    if [ -n "$rel" ] && [ -n "$gra" ]; then
        r=$(rfc3339 "$rel"); g=$(rfc3339 "$gra")
        out=$(python3 -c "import sys; r,k1,g,k3,u=map(float,sys.argv[1:]); d=(g-k3)-(r-k1); print('%s %.3f' % ('ok' if d>u else 'no', d))" "$r" "$k1" "$g" "$k3" "$u")
        if [ "${out%% *}" = ok ]; then pass "virtdlmd logs: node1 released $VMIMG ${out#* } s before node3 was granted it (clock uncertainty +-$u s)"
        else fail "virtdlmd logs: node3's grant not after node1's release (${out#* } s, +-$u s)"; fi
    else fail "virtdlmd logs lack node1's release or node3's grant of $VMIMG for $VMX"; fi
    gx 1 "crm_resource --clear -r vm1" >/dev/null 2>&1
    if gwait 60 1 "! cibadmin -Q -o constraints | grep -q cli-prefer-vm1" && [ "$(vm_where)" = node3 ]; then
        pass "crm_resource --clear -r vm1: vm1 stays on node3 (stickiness)"
    else fail "after --clear vm1 is on '$(vm_where)'"; fi
}

# Node $1 crashed with vm1 on it (fencing_failure ... kill): Pacemaker fenced it and started vm1
# on a survivor; in that survivor's pacemaker.log the start comes after the fence's completion.
vms_after_fence() {
    local n=$1 s fin st out
    gwait 700 1 "crm_mon -1 -r 2>/dev/null | grep -q 'vm1.*(ocf:heartbeat:VirtualDomain):.* Started node'" >/dev/null
    s=$(vm_where)
    if [ -n "$s" ] && [ "$s" != "node$n" ] && [ "$(vm_state "${s#node}")" = running ]; then
        pass "vm1 (on node$n when it crashed) runs on $s (crm_resource --locate; virsh domstate)"
    else fail "vm1 after node$n's crash: on '$s', state '$(vm_state "${s#node}" 2>/dev/null)'"; return; fi
    s=${s#node}
    fin=$(gx "$s" "grep -a -n 'finalize_op' /var/log/pacemaker/pacemaker.log | grep -a 'targeting node$n ' | grep -a ': OK' | tail -n 1 | cut -d: -f1")
    st=$(gx "$s" "grep -a -n 'Result of start operation for vm1 on node$s: ok' /var/log/pacemaker/pacemaker.log | tail -n 1 | cut -d: -f1")
    if [ -n "$fin" ] && [ -n "$st" ] && [ "$st" -gt "$fin" ]; then
        pass "node$s: vm1 started (pacemaker.log line $st) after the fence of node$n completed (line $fin)"
    else fail "node$s: vm1's start (line '${st:-none}') not after the fence of node$n (line '${fin:-none}')"; fi
    out=$(vm_holder "$s")
    if [ "$out" = "$VMX@node$s" ]; then pass "node$s's virtdlmd: $VMIMG held EX by $VMX@node$s alone"
    else fail "after the fence node$s sees the holders of $VMIMG as '$out'"; fi
}
