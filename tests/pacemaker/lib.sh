# Helpers of the Pacemaker tier, sourced by tests/pacemaker/run.sh and by tests/pacemaker/sbd.sh
# when it runs alone. They read CL (cluster.sh), CL_BASE, RES (the results directory), STARTED
# (set once the guests may run), ONLINE (the nodes all_started expects) and T (a scratch
# directory on the host), which the sourcing script sets.

# Runs a command in a guest, output to stdout.
gx() { CL_EXEC_TIMEOUT=${T_EXEC:-150} "$CL" exec "$@"; }
# Waits up to $1 seconds (the guest's clock, however slow each try is) for the shell
# condition $3 to hold in guest $2.
gwait() {
    local secs=$1 node=$2 cond=$3
    T_EXEC=$((secs + 60)) gx "$node" "end=\$((\$(date +%s) + $secs)); while :; do if $cond; then exit 0; fi; [ \$(date +%s) -lt \$end ] || exit 1; sleep 0.5; done" >/dev/null
}
# Each guest's pacemaker, syslog, corosync and console logs into $RES/nodeN/.
collect() {
    local i
    [ -n "$STARTED" ] || return 0
    for i in 1 2 3; do
        gx "$i" "cp /var/log/pacemaker/pacemaker.log /xchg/pacemaker.log; cp /var/log/messages /xchg/messages 2>/dev/null; true" >/dev/null 2>&1
        mkdir -p "$RES/node$i"
        cp "$CL_BASE/n$i/xchg/"{pacemaker.log,messages,corosync.log} "$RES/node$i/" 2>/dev/null
        cp "$CL_BASE/n$i/console.log" "$RES/node$i/" 2>/dev/null
    done
}
# Waits up to $1 seconds (guest $2, default 1) until the dlm, virtdlmd and libvirtd clones are
# Started on every node of $ONLINE.
all_started() {
    gwait "$1" "${2:-1}" "m=\$(crm_mon -1 -r 2>/dev/null); n=0; for r in dlm virtdlmd libvirtd; do echo \"\$m\" | grep -A3 \"Clone Set: \$r-clone\" | grep -q 'Started: \[ $ONLINE \]' && n=\$((n + 1)); done; [ \$n = 3 ]"
}
# Runs a command on this host in a private mount namespace where /usr/lib/ocf/resource.d has
# ocf:virt-dlm:virtdlmd, /usr/sbin fence_uml and /etc/init.d libvirtd (the test's lsb
# libvirtd): pcs and crmsh read every agent's meta-data, and the host has none of them installed.
in_ocf_ns() {
    unshare -m sh -c 'mount --make-rprivate / && mkdir -p "$0/rd" && cp -a /usr/lib/ocf/resource.d/. "$0/rd/" &&
        install -D -m755 deploy/ocf/virtdlmd "$0/rd/virt-dlm/virtdlmd" &&
        mount --bind "$0/rd" /usr/lib/ocf/resource.d &&
        mkdir -p "$0/sbin" && install -m755 tests/cluster/fence/fence_uml "$0/sbin/fence_uml" &&
        mount -t overlay overlay -o "lowerdir=$0/sbin:/usr/sbin" /usr/sbin &&
        mkdir -p "$0/initd" && install -m755 tests/pacemaker/libvirtd.init "$0/initd/libvirtd" &&
        mount -t overlay overlay -o "lowerdir=$0/initd:/etc/init.d" /etc/init.d && exec "$@"' "$T" "$@"
}
# pcs_push NAME SCRIPT [CMD...]: the pcs form SCRIPT (deploy/cluster/pacemaker-pcs.sh as the
# test edited it; its diff against the shipped file is shown) applied on this host to a copy of
# node1's live CIB ($T/NAME.xml, `pcs -f`), then CMD run with CIB_file on that copy (another
# setting), then the copy pushed on node1 (`pcs cluster cib-push --config`, no pcsd). Returns
# non-zero on the first step that fails; $out holds the last step's output.
pcs_push() {
    local name=$1 script=$2 cib=$T/$1.xml
    shift 2
    gx 1 "cibadmin -Q" >"$cib" 2>/dev/null
    echo "--- $name: pcs form as applied (diff against deploy/cluster/pacemaker-pcs.sh)${*:+, then: $*}:"
    diff deploy/cluster/pacemaker-pcs.sh "$script"
    out=$(in_ocf_ns sh -c 'pcs() { command pcs -f "$0" "$@"; }; . "$1"' "$cib" "$script" 2>&1) &&
        { [ $# = 0 ] || out=$(CIB_file=$cib "$@" 2>&1); } &&
        out=$(gx 1 "pcs cluster cib-push $("$CL" bin "$cib") --config 2>&1")
}
