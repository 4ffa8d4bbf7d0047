#!/bin/bash
# A guest's command runner: each /xchg/cmd/X.sh the host drops in runs once, in the
# background, its output to X.out and its exit code to X.rc (written last, atomically).
# Run by guest-init.sh once the guest is READY, and by the systemd tier's guest as a service.
# A fork-free 50 ms tick keeps an idle guest cheap.
mkfifo /run/tick; exec 9<>/run/tick
while :; do
  for f in /xchg/cmd/*.sh; do
    [ -e "$f" ] || continue
    b=${f%.sh}; [ -e "$b.started" ] && continue
    touch "$b.started"
    ( bash "$f" > "$b.out" 2>&1; echo $? > "$b.rc.tmp"; mv "$b.rc.tmp" "$b.rc" ) &
  done
  read -t 0.05 -u 9 _ || true
done
