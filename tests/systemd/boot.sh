#!/bin/bash
# Boots the systemd tier's guest: one User-Mode Linux guest (tests/cluster's kernel, its
# uml-init.sh overlay root) whose PID 1 becomes systemd (guest/systemd-init.sh). No network.
# Same layout as tests/cluster/cluster.sh ($CL_BASE/n1/xchg, $CL_BASE/n1/vm.pid,
# uml_dir=$CL_BASE/uml), so `cluster.sh exec 1 CMD` and `cluster.sh stop` work on it.
# Returns once systemd runs the command runner (READY), or fails with the console's tail.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BASE=${CL_BASE:-/tmp/virtdlm-sysd}
CACHE=${CL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/virt-dlm/cluster}
UML=$CACHE/uml/usr/bin/linux.uml
mods=""
for m in "$CACHE"/uml/usr/lib/uml/modules/*; do [ -f "$m/kernel/fs/dlm/dlm.ko" ] && mods=$m; done
[ -x "$UML" ] && [ -n "$mods" ] || { echo "boot.sh: user-mode-linux is missing (tests/cluster/cluster.sh prepare failed?)" >&2; exit 1; }
d=$BASE/n1
rm -rf "$BASE"; mkdir -p "$d/xchg/cmd" "$BASE/uml"; echo 1 > "$BASE/nodes"
TMPDIR=/dev/shm setsid "$UML" mem="${CL_MEM:-512}M" \
  root=/dev/root rootfstype=hostfs rootflags=/ ro init="$ROOT/tests/cluster/guest/uml-init.sh" \
  con=null con0=null,fd:1 ssl=null umid=n1 uml_dir="$BASE/uml" \
  panic=-1 systemd.show_status=1 cl.base=$BASE "cl.init=$HERE/guest/systemd-init.sh" \
  "cl.umlmods=$mods" "cl.hostfs_xchg=$d/xchg" </dev/null >"$d/console.log" 2>&1 &
echo $! > "$d/vm.pid"
end=$(( $(date +%s) + ${CL_TIMEOUT:-120} ))
until grep -q ' READY' "$d/xchg/status" 2>/dev/null; do
  if ! kill -0 "$(cat "$d/vm.pid")" 2>/dev/null || [ "$(date +%s)" -ge "$end" ]; then
    echo "boot.sh: the guest did not reach READY (systemd as PID 1); console:" >&2
    tail -40 "$d/console.log" >&2; exit 1
  fi
  sleep 0.2
done
