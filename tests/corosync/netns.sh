#!/bin/bash
# A corosync cluster without guests: one corosync (knet) per network namespace, joined by a
# bridge that lives in its own namespace, so nothing is added to the host's root namespace.
#
#   netns.sh start N        start N nodes; returns once all are members and quorate
#   netns.sh exec I CMD...  run CMD on node I (talks to node I's corosync)
#   netns.sh cut I          take node I's link down (partition it from the others)
#   netns.sh heal I         bring it back
#   netns.sh kill-corosync I   SIGKILL node I's corosync (it stays dead until stop/start)
#   netns.sh status         corosync-quorumtool -s on every node
#   netns.sh stop           stop everything this script started (by pid file and name)
#
# Settings (environment), so that several clusters can coexist on one machine:
#   CS_PREFIX  name prefix of namespaces and links (default vdlmcs; at most 8 characters)
#   CS_SUBNET  first three octets of node addresses (default 10.231.7; node I is .I)
#   CS_BASE    state, config and logs (default /tmp/$CS_PREFIX)
#   CS_TOKEN   totem token timeout in ms (default 1000)
#   CS_NAMELESS  space-separated node numbers configured without `name:` (ring0_addr only)
#
# Why the private /run: corosync's pid lock /var/run/corosync.pid is compiled in and not per
# namespace; `ip netns exec` gives each instance its own mount namespace to bind one into.
# corosync's IPC sockets are abstract unix sockets, which are per network namespace, so a
# client run with `exec I` reaches exactly node I's corosync.
set -euo pipefail
P=${CS_PREFIX:-vdlmcs}
SUBNET=${CS_SUBNET:-10.231.7}
BASE=${CS_BASE:-/tmp/$P}
TOKEN=${CS_TOKEN:-1000}
NAMELESS=" ${CS_NAMELESS:-} "
BR=${P}br

die() { echo "netns.sh: $*" >&2; exit 1; }
[ ${#P} -le 8 ] || die "CS_PREFIX '$P' is longer than 8 characters (interface names are limited to 15)"
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, bind mounts)"

nodes() { cat "$BASE/nodes" 2>/dev/null || echo 0; }

stop() {
  local n i pid
  n=$(nodes)
  for i in $(seq 1 "$n"); do
    [ -f "$BASE/n$i/pid" ] || continue
    pid=$(cat "$BASE/n$i/pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    # libqb leaves its blackbox and the IPC buffers of connected clients behind on SIGKILL.
    rm -rf "$BASE/n$i/pid" /dev/shm/qb-corosync-"$pid"-* /dev/shm/qb-"$pid"-*
  done
  for ns in $(ip netns list | awk '{print $1}'); do
    case "$ns" in "$BR"|"${P}n"[0-9]|"${P}n"[0-9][0-9]) ip netns del "$ns" ;; esac
  done
  rm -f "$BASE/nodes"
}

config() { # config I N
  local i=$1 n=$2 j list=""
  for j in $(seq 1 "$n"); do
    list+="  node {
    nodeid: $j
$(case "$NAMELESS" in *" $j "*) ;; *) echo "    name: node$j";; esac)
    ring0_addr: $SUBNET.$j
  }
"
  done
  cat <<EOC
totem {
  version: 2
  cluster_name: $P
  transport: knet
  crypto_cipher: none
  crypto_hash: none
  token: $TOKEN
  interface {
    linknumber: 0
    knet_ping_interval: 200
    knet_ping_timeout: 1000
    knet_pong_count: 1
  }
}
logging {
  to_stderr: no
  to_logfile: yes
  logfile: $BASE/n$i/log/corosync.log
  to_syslog: no
  timestamp: on
}
quorum {
  provider: corosync_votequorum
$( [ "$n" = 2 ] && echo "  two_node: 1" )
}
system {
  state_dir: $BASE/n$i/state
}
nodelist {
$list}
EOC
}

start() {
  local n=$1 i ns
  [ "$(nodes)" = 0 ] || die "a cluster '$P' is already running ($BASE/nodes); stop it first"
  ip netns list | awk '{print $1}' | grep -qx "$BR" && die "namespace $BR exists; another run with CS_PREFIX=$P?"
  mkdir -p "$BASE"
  echo "$n" > "$BASE/nodes"
  trap 'echo "netns.sh: start failed, tearing down" >&2; stop' ERR
  ip netns add "$BR"
  ip -n "$BR" link add br0 type bridge
  ip -n "$BR" link set br0 up
  ip -n "$BR" link set lo up
  for i in $(seq 1 "$n"); do
    ns=${P}n$i
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "${P}v$i" type veth peer name eth0 netns "$ns"
    ip link set "${P}v$i" netns "$BR"
    ip -n "$BR" link set "${P}v$i" master br0 up
    ip -n "$ns" addr add "$SUBNET.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    rm -rf "$BASE/n$i"; mkdir -p "$BASE/n$i/run" "$BASE/n$i/state" "$BASE/n$i/log"
    config "$i" "$n" > "$BASE/n$i/corosync.conf"
    ip netns exec "$ns" sh -c "mount --bind $BASE/n$i/run /run && exec corosync -c $BASE/n$i/corosync.conf -f" \
      > "$BASE/n$i/log/stdout.log" 2>&1 &
    echo $! > "$BASE/n$i/pid"
  done
  local deadline=$((SECONDS + 60))
  for i in $(seq 1 "$n"); do
    until [ "$(ip netns exec "${P}n$i" corosync-cmapctl runtime.members 2>/dev/null | grep -c 'status (str) = joined')" -eq "$n" ] \
       && ip netns exec "${P}n$i" corosync-quorumtool -s 2>/dev/null | grep -q "Quorate: *Yes"; do
      if [ $SECONDS -ge $deadline ]; then
        echo "netns.sh: node$i did not join a quorate $n-node membership in 60 s; its log:" >&2
        tail -20 "$BASE/n$i/log/corosync.log" >&2 || true
        false
      fi
      kill -0 "$(cat "$BASE/n$i/pid")" 2>/dev/null || { cat "$BASE/n$i/log/stdout.log" >&2; false; }
      sleep 0.2
    done
  done
  trap - ERR
  echo "netns.sh: $n nodes joined and quorate (prefix $P, $SUBNET.0/24, logs in $BASE)"
}

cmd=${1:-}; shift || true
case "$cmd" in
  start)  start "${1:-3}" ;;
  exec)   i=$1; shift; exec ip netns exec "${P}n$i" "$@" ;;
  cut)    ip -n "$BR" link set "${P}v$1" down ;;
  heal)   ip -n "$BR" link set "${P}v$1" up ;;
  kill-corosync) kill -KILL "$(cat "$BASE/n$1/pid")" ;;
  status) for i in $(seq 1 "$(nodes)"); do echo "== node$i"; ip netns exec "${P}n$i" corosync-quorumtool -s || true; done ;;
  stop)   stop; echo "netns.sh: stopped $P" ;;
  *)      sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
