#!/bin/bash
# The systemd tier guest's command runner (a service): /xchg/cmd/X.sh -> X.out, X.rc, as
# tests/cluster/guest/guest-init.sh does; "READY" in /xchg/status once systemd runs it.
echo "$(cut -d' ' -f1 /proc/uptime) READY" >> /xchg/status
while :; do
  for f in /xchg/cmd/*.sh; do
    [ -e "$f" ] || continue
    b=${f%.sh}; [ -e "$b.started" ] && continue
    touch "$b.started"
    ( bash "$f" > "$b.out" 2>&1; echo $? > "$b.rc.tmp"; mv "$b.rc.tmp" "$b.rc" ) &
  done
  sleep 0.05
done
