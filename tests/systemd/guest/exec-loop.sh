#!/bin/bash
# The systemd tier guest's command runner (a service): says READY in /xchg/status once
# systemd runs it, then runs the cluster guests' command loop (/xchg/cmd/X.sh -> X.out, X.rc).
echo "$(cut -d' ' -f1 /proc/uptime) READY" >> /xchg/status
exec "$(dirname "$0")/../../cluster/guest/command-loop.sh"
