#!/bin/bash
# systemd tier: deploy/virtdlmd.service under a real systemd. One User-Mode Linux guest
# (tests/cluster's kernel and overlay root) whose PID 1 is systemd (guest/systemd-init.sh:
# journald and a command runner, the rest masked). In it: the package built by
# deploy/build-deb.sh is installed with dpkg -i (into the guest's overlay; the host is not
# touched), virtdlmd configured with backend = local, and the operator's commands run for real:
# systemctl enable --now / status / restart / kill -s KILL / stop / disable, virtdlm status,
# journalctl -u virtdlmd and -t virtdlmd. A lock held by a VM stand-in (a sleep, registered
# through the control socket as the plugin does) survives restart, kill -9 and stop/start.
# Then backend = dlm behind corosync (one node, on loopback) and dlm_controld started by their
# own units: After= order, a DLM lock, corosync killed: the hardened daemon stops the VM and
# releases the lockspace dlm_controld abandoned, and stops cleanly.
# Outputs are kept in target/systemd-results/. Prints "N passed, N failed"; non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
export CL_NS=${CL_NS:-virtdlmsysd} CL_BASE=${CL_BASE:-/tmp/virtdlm-sysd} CL_NET=${CL_NET:-10.99.5}
C=tests/cluster/cluster.sh
RES=${CARGO_TARGET_DIR:-$PWD/target}/systemd-results
PASSED=0 FAILED=0
pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }
finish() { $C stop >/dev/null 2>&1; echo "$PASSED passed, $FAILED failed"; [ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]; exit $?; }
abort() { fail "$*"; finish; }
trap '$C stop >/dev/null 2>&1' EXIT
rm -rf "$RES"; mkdir -p "$RES"
# g NAME 'cmd': runs cmd in the guest as root; its output goes to $RES/NAME.txt and to $OUT.
g() { local n=$1; shift; OUT=$($C exec 1 "$*" 2>&1); local rc=$?; printf '%s\n' "$OUT" > "$RES/$n.txt"; return $rc; }
# check NAME 'cmd' 'extended regexp' ...: cmd succeeds and its output matches every regexp.
check() {
  local n=$1 cmd=$2 re; shift 2
  if ! g "$n" "$cmd"; then fail "$n: '$cmd' failed: $(echo "$OUT" | tail -5 | tr '\n' ' ')"; return 1; fi
  for re in "$@"; do
    echo "$OUT" | grep -Eq -- "$re" || { fail "$n: no /$re/ in: $(echo "$OUT" | tail -8 | tr '\n' ' ')"; return 1; }
  done
  pass "$n"
}

[ "$(id -u)" = 0 ] || abort "needs root (User-Mode Linux guest over the host's root)"
$C prepare >/dev/null || abort "cluster.sh prepare (user-mode-linux kernel) failed"
DEB=$(deploy/build-deb.sh 2>"$RES/build-deb.log") && [ -f "$DEB" ] || abort "deploy/build-deb.sh failed (see $RES/build-deb.log)"
cargo build -q -p cluster-tests --bin daemon-client 2>"$RES/build.log" || abort "building daemon-client failed (see $RES/build.log)"
DC=$($C bin "${CARGO_TARGET_DIR:-target}/debug/daemon-client")
DEB=$(cd "$(dirname "$DEB")" && pwd)/$(basename "$DEB")
$C stop >/dev/null 2>&1
tests/systemd/boot.sh 2>"$RES/boot.err" || { cat "$RES/boot.err"; abort "the guest did not boot with systemd as PID 1"; }
cp "$CL_BASE/n1/console.log" "$RES/console-boot.log"

IMG=/var/lib/libvirt/images
SOCK=/run/virt-dlm/virtdlmd.sock
check pid1-systemd 'ps -o comm= -p 1; systemctl is-system-running --wait; systemctl --failed --no-legend' \
  '^systemd$' '^running$'
check dpkg-install "dpkg -i $DEB && cmp /usr/lib/systemd/system/virtdlmd.service $PWD/deploy/virtdlmd.service && echo same-unit" \
  'Setting up virt-dlm' '^same-unit$'
check unit-verify 'systemd-analyze verify virtdlmd.service && echo verified' '^verified$'
check config-local 'echo "backend = local" >> /etc/virt-dlm/virtdlmd.conf && virtdlmd --config /etc/virt-dlm/virtdlmd.conf --check-config' \
  'backend: Local'
check enable-now 'systemctl enable --now virtdlmd; systemctl is-enabled virtdlmd; systemctl is-active virtdlmd' \
  'multi-user.target.wants/virtdlmd.service' '^enabled$' '^active$'
# After= orders only: neither corosync nor dlm is pulled in or needed with backend = local.
check no-cluster-stack 'systemctl show -p Requires -p Wants -p After virtdlmd; for u in corosync dlm; do echo "$u $(systemctl is-active $u)"; done; true' \
  'After=.*corosync.service' 'After=.*dlm.service' '^corosync inactive$' '^dlm inactive$'
! grep -Eq '^(Requires|Wants)=.*(corosync|dlm)' "$RES/no-cluster-stack.txt" && pass requires-no-cluster-stack || fail "requires-no-cluster-stack: $(cat "$RES/no-cluster-stack.txt")"
check status 'systemctl status virtdlmd --no-pager' 'Loaded: loaded \(/lib/systemd/system/virtdlmd.service; enabled' \
  'Active: active \(running\)' 'Main PID: [0-9]+ \(virtdlmd\)'
check virtdlm-status 'virtdlm status' 'backend +local' 'locks here +0'
check journal-startup 'journalctl -u virtdlmd --no-pager' 'journal replayed' 'serving on /run/virt-dlm/virtdlmd.sock' \
  'Started virtdlmd.service'
# Hardening in force, and what the daemon needs from it still there.
check hardening 'P=$(systemctl show -P MainPID virtdlmd); grep -E "NoNewPrivs|Seccomp:|CapBnd" /proc/$P/status; awk "\$5==\"/\"{print \"root\", \$6}" /proc/$P/mountinfo; ls -l /run/virt-dlm' \
  'NoNewPrivs:\s+1' 'Seccomp:\s+2' 'CapBnd:\s+000000000920402f' '^root ro,' 'virtdlmd.sock' 'virtdlmd-admin.sock' ' journal$'
# A VM holds a disk: the lock change is logged at info, with VM, disk and mode.
check acquire "sleep 100000 & echo \$! > /run/web-1.pid; mkdir -p $IMG; truncate -s 1M $IMG/web-1.img; $DC $SOCK acquire:web-1:\$(cat /run/web-1.pid):EX=$IMG/web-1.img" \
  '"outcome":"ok"'
check journal-lock-change 'journalctl -u virtdlmd --no-pager -o cat | grep granted' "INFO .*granted vm=web-1 .*disk=$IMG/web-1.img mode=EX"
check conflict "sleep 100000 & $DC $SOCK acquire:web-2:\$!:EX=$IMG/web-1.img" '"outcome":"conflict"'
check restart-keeps-lock 'systemctl restart virtdlmd; systemctl is-active virtdlmd; virtdlm locks; journalctl -u virtdlmd --no-pager -o cat | tail -4' \
  '^active$' "$IMG/web-1.img +EX +web-1 .* held" 'adopted after restart vm=web-1'
check journal-u 'journalctl -u virtdlmd' 'virtdlmd\[[0-9]+\]: .*INFO .*granted vm=web-1 ' 'Stopped virtdlmd.service' 'adopted after restart vm=web-1'
check kill9-restarts 'P=$(systemctl show -P MainPID virtdlmd); systemctl kill -s KILL virtdlmd; for i in $(seq 1 100); do Q=$(systemctl show -P MainPID virtdlmd); [ "$(systemctl is-active virtdlmd)" = active ] && [ "$Q" != 0 ] && [ "$Q" != "$P" ] && break; sleep 0.1; done; systemctl show -p NRestarts -p ActiveState virtdlmd; virtdlm locks' \
  '^NRestarts=1$' '^ActiveState=active$' "$IMG/web-1.img +EX +web-1 .* held"
check journal-kill9 'for i in $(seq 1 50); do journalctl -u virtdlmd | grep -q "status=9/KILL" && break; sleep 0.1; done; journalctl -u virtdlmd | grep -A8 "status=9/KILL"' "Main process exited, code=killed, status=9/KILL" 'Scheduled restart job, restart counter is at 1' \
  'journal replayed: [0-9]+ owners with 1 locks taken back'
check stop-keeps-journal 'systemctl stop virtdlmd; systemctl is-active virtdlmd; ls /run/virt-dlm; systemctl start virtdlmd; virtdlm locks' \
  '^inactive$' '^journal$' "$IMG/web-1.img +EX +web-1 .* held"
# The owner exits: the daemon (pidfd on a process of another cgroup) releases its lock.
check owner-exit 'kill $(cat /run/web-1.pid); for i in $(seq 1 50); do virtdlm locks | grep -q web-1 || break; sleep 0.1; done; virtdlm locks; journalctl -u virtdlmd --no-pager -o cat | tail -3' \
  '^no locks$' 'released: its QEMU process exited vm=web-1'
check journal-tag 'journalctl -t virtdlmd --no-pager | tail -3' 'virtdlmd\[[0-9]+\]: .*INFO'
check disable-now 'systemctl disable --now virtdlmd libvirtd; systemctl is-enabled virtdlmd; systemctl is-active virtdlmd; true' \
  'Removed "/etc/systemd/system/multi-user.target.wants/virtdlmd.service"' '^disabled$' '^inactive$'
check no-failed-units 'systemctl --failed --no-legend --plain; journalctl -b -p err --no-pager -o cat | grep -i virtdlm; echo end' '^end$'
grep -q 'virtdlmd' "$RES/no-failed-units.txt" && fail "no-failed-units: $(cat "$RES/no-failed-units.txt")"
# Metrics under the hardened unit: the drop-in shipped as an example (docs/GUIDE.md section 9)
# allows the HTTP endpoint's IP socket and the textfile's directory; without it the start fails,
# naming the drop-in. After the no-failed-units check: the refused start is logged at err.
EX=/usr/share/doc/virt-dlm/examples/prometheus
check metrics-blocked "mkdir -p /var/lib/prometheus/node-exporter; printf 'metrics_listen = 127.0.0.1:9665\\nmetrics_textfile = /var/lib/prometheus/node-exporter/virtdlm.prom\\n' >> /etc/virt-dlm/virtdlmd.conf; systemctl restart virtdlmd; sleep 1; systemctl is-active virtdlmd; journalctl -u virtdlmd --no-pager -o cat | grep -m1 'cannot listen for metrics'; true" \
  '^(failed|activating)$' 'cannot listen for metrics on 127.0.0.1:9665: .*add the drop-in .*virtdlmd-metrics.conf'
check metrics-dropin "mkdir -p /etc/systemd/system/virtdlmd.service.d; cp $EX/virtdlmd-metrics.conf /etc/systemd/system/virtdlmd.service.d/metrics.conf; systemctl daemon-reload; systemctl reset-failed virtdlmd; systemctl restart virtdlmd; systemctl is-active virtdlmd; curl -sf http://127.0.0.1:9665/metrics | grep -E '^virtdlm_(build_info\{|owners )'; for i in \$(seq 1 50); do [ -s /var/lib/prometheus/node-exporter/virtdlm.prom ] && break; sleep 0.1; done; grep -c '^virtdlm_' /var/lib/prometheus/node-exporter/virtdlm.prom; promtool check metrics < /var/lib/prometheus/node-exporter/virtdlm.prom && echo textfile-ok; systemctl stop virtdlmd" \
  '^active$' '^virtdlm_build_info\{.*backend="local".*\} 1$' '^virtdlm_owners [0-9]+$' '^textfile-ok$'

# backend = dlm behind corosync and dlm_controld of their own units (one node, on loopback):
# After= orders the three; a lock loss (corosync killed) makes the hardened daemon stop the VM
# (pidfd signal) and release the lockspace dlm_controld abandoned (configfs and sysfs writes).
CS='totem {\n version: 2\n cluster_name: hv\n transport: knet\n crypto_cipher: none\n crypto_hash: none\n}\nlogging {\n to_syslog: yes\n}\nquorum {\n provider: corosync_votequorum\n}\nnodelist {\n node {\n  nodeid: 1\n  name: hv1\n  ring0_addr: 127.0.0.1\n }\n}\n'
# dlm first: systemctl enqueues one job per unit, and a virtdlmd job enqueued before dlm's is
# runnable at once (After= orders only against jobs already queued; at boot, multi-user.target
# queues all three in one transaction).
check dlm-start "printf '$CS' > /etc/corosync/corosync.conf; mkdir -p /etc/dlm; printf 'enable_fencing=0\\nprotocol=tcp\\npost_join_delay=0\\n' > /etc/dlm/dlm.conf; sed -i 's/^backend = local/backend = dlm/' /etc/virt-dlm/virtdlmd.conf; S=\$(date +%s); sleep 1; systemctl start dlm virtdlmd; systemctl is-active corosync dlm virtdlmd; virtdlm status; journalctl --since @\$S --no-pager -o cat | grep -E '^(Started|Starting|Failed).*(corosync|dlm|virtdlmd).service'" \
  'backend +dlm' 'quorate +true' 'Started dlm.service'
sed -n '/^Start\|^Fail/p' "$RES/dlm-start.txt" | awk '/Started dlm.service/{d=1} /virtdlmd.service/{if(!d) bad=1} /^Failed/{bad=1} END{exit bad}' &&
  pass dlm-after-order || fail "dlm-after-order: $(grep -E '^(Start|Fail)' "$RES/dlm-start.txt" | tr '\n' ' ')"
check dlm-acquire "sleep 100000 & echo \$! > /run/web-3.pid; truncate -s 1M $IMG/web-3.img; $DC $SOCK acquire:web-3:\$(cat /run/web-3.pid):EX=$IMG/web-3.img; dlm_tool ls" \
  '"outcome":"ok"' 'name +virtdlm'
check dlm-lock-loss 'systemctl kill -s KILL corosync; for i in $(seq 1 100); do [ -e /sys/kernel/dlm/virtdlm ] || break; sleep 0.1; done; kill -0 $(cat /run/web-3.pid) 2>/dev/null && echo vm-alive || echo vm-stopped; ls /sys/kernel/dlm | grep -c virtdlm; virtdlm status; journalctl -u virtdlmd --no-pager -o cat | grep -E "sending SIG|lockspace released|Read-only"' \
  '^vm-stopped$' '^0$' 'VM web-3 pid [0-9]+: poweroff -> terminated' 'sending SIGTERM vm=web-3' 'lockspace released'
grep -q 'Read-only' "$RES/dlm-lock-loss.txt" && fail "dlm-lock-loss: read-only file system in the daemon's log"
check dlm-stop 'timeout 30 systemctl stop virtdlmd; echo "stop rc $?"; systemctl is-active virtdlmd; true' '^stop rc 0$' '^inactive$'
g journal-all 'journalctl -b --no-pager' || true
finish
