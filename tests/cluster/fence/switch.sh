#!/bin/bash
# The host side of fence_uml: the test cluster's power switch. `cluster.sh start` runs it in
# the background (pid in $CL_BASE/switch.pid), `cluster.sh stop` ends it. It carries out the
# requests fence_uml writes into each guest's exchange directory (n<i>/xchg/fence/<id>.req,
# <id> = the guest's time in ns first), one at a time and in the order they were made:
#   off N     cluster.sh kill N (power off; "ok off" once every process of the guest is gone)
#   on N      cluster.sh start-node N in the background ("ok on" once the guest runs; it then
#             boots and rejoins by itself, its log in n<N>/switch-on.log)
#   status N  "ok on" / "ok off"          list   "ok 1:on 2:off ..."
# and answers in <id>.ans. A request from a guest that is powered off (or that was made before
# the guest's current boot) is not carried out: a dead node cannot press a switch.
# Log: $CL_BASE/switch.log, one line per request, stamped with the host's clock.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=${CL_BASE:-/tmp/virtdlm-cluster}
CL=$HERE/cluster.sh
LOG=$BASE/switch.log

stamp() { date +'%s.%N %Y-%m-%dT%H:%M:%S.%6N'; }
log() { echo "$(stamp) $*" >> "$LOG"; }
# A guest runs: its recorded pid's group has processes of this cluster.
running() {
  local f=$BASE/n$1/vm.pid pg
  [ -f "$f" ] || return 1
  pg=$(ps -o pgid= -p "$(cat "$f")" 2>/dev/null | tr -d ' ')
  [ -n "$pg" ] && pgrep -g "$pg" -f "cl.base=$BASE " >/dev/null 2>&1
}
state() { if running "$1"; then echo on; else echo off; fi; }
valid() { [[ $1 =~ ^[1-9]$ ]] && [ -d "$BASE/n$1" ]; }

answer() { echo "$2" > "$1.ans.tmp"; mv "$1.ans.tmp" "$1.ans"; }

handle() {
  local req=$1 from=$2 id b what n boot t
  b=${req%.req}; id=${b##*/}
  what=$(head -n1 "$req" 2>/dev/null); rm -f "$req"
  set -- $what; n=${2:-}
  if ! running "$from"; then log "node$from: '$what' IGNORED: node$from is powered off"; answer "$b" "error node$from is powered off"; return; fi
  boot=$(stat -c %Y "$BASE/n$from/vm.pid" 2>/dev/null || echo 0); t=${id%%-*}
  if [ "${t:0:10}" -lt "$boot" ] 2>/dev/null; then log "node$from: '$what' IGNORED: made before node$from's current boot"; answer "$b" "error stale request"; return; fi
  case ${1:-} in
    list) local s="" i; for i in $(seq 1 "$(cat "$BASE/nodes")"); do s="$s $i:$(state "$i")"; done
          answer "$b" "ok$s"; return ;;
    status|off|on) valid "$n" || { answer "$b" "error no node$n"; return; } ;;
    *) answer "$b" "error unknown request '$what'"; return ;;
  esac
  case $1 in
    status) answer "$b" "ok $(state "$n")" ;;
    off)
      if running "$n"; then
        log "node$from: off node$n: powering off"
        if out=$("$CL" kill "$n" 2>&1); then log "node$from: off node$n: OFF ($out)"; answer "$b" "ok off"
        else log "node$from: off node$n: FAILED $out"; answer "$b" "error $out"; fi
      else log "node$from: off node$n: already off"; answer "$b" "ok off"; fi ;;
    on)
      if running "$n"; then log "node$from: on node$n: already on"; answer "$b" "ok on"; return; fi
      log "node$from: on node$n: powering on"
      setsid "$CL" start-node "$n" </dev/null >"$BASE/n$n/switch-on.log" 2>&1 &
      for _ in $(seq 1 100); do running "$n" && break; sleep 0.1; done
      if running "$n"; then log "node$from: on node$n: ON (booting)"; answer "$b" "ok on"
      else log "node$from: on node$n: FAILED $(tail -c 300 "$BASE/n$n/switch-on.log")"; answer "$b" "error node$n did not start"; fi ;;
  esac
}

log "switch up (pid $$)"
trap 'log "switch down"; exit 0' TERM INT
while :; do
  # Every pending request of every guest, oldest first (ids start with the guest's time in ns).
  reqs=$(for f in "$BASE"/n*/xchg/fence/*.req; do
           [ -e "$f" ] || continue
           n=${f#"$BASE"/n}; echo "${f##*/} ${n%%/*} $f"; done | sort)
  if [ -n "$reqs" ]; then
    while read -r _ from f; do handle "$f" "$from"; done <<<"$reqs"
  fi
  sleep 0.1
done
