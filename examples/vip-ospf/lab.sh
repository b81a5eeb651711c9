#!/usr/bin/env bash
# NovaEdge OSPF VIP lab: BIRD 2 as an OSPF router in netns "nvospf-rtr" and NovaEdge's OSPF
# speaker (novaedge-vip-ospf, priority 0) in netns "nvospf-node", on a point-to-point veth or a
# broadcast link, area 0, hello 1 s, dead 4 s, retransmit 2 s. The speaker advertises the VIP
# 198.51.100.10 as an AS-external LSA (E2, metric 20). Prints BIRD's neighbours, LSDB and RIB
# with the time each step took, then unassigns, re-assigns, shuts the speaker down (MaxAge
# flush) and cleans up (also on error or Ctrl-C).
#
# usage (as root): examples/vip-ospf/lab.sh [ptp|broadcast]
# needs: iproute2, bird2 (Debian packages), cargo
set -euo pipefail
NET=${1:-ptp}
case $NET in ptp) BT=pointopoint ;; broadcast) BT="broadcast; wait 2" ;; *) echo "usage: $0 [ptp|broadcast]"; exit 2 ;; esac
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 1; }
cargo build -q -p novaedge-vip --bin novaedge-vip-ospf
BIN=${CARGO_TARGET_DIR:-target}/debug/novaedge-vip-ospf

R=nvospf-rtr N=nvospf-node D=$(mktemp -d -t novaedge-vip-ospf-XXXX)
VIP=198.51.100.10
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  ip netns del $R 2>/dev/null || true; ip netns del $N 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT

ip netns add $R; ip netns add $N
ip link add veth-rtr netns $R type veth peer name veth-node netns $N
ip -n $R addr add 172.31.250.1/30 dev veth-rtr
ip -n $N addr add 172.31.250.2/30 dev veth-node
for ns in $R $N; do ip -n $ns link set lo up; done
ip -n $R link set veth-rtr up; ip -n $N link set veth-node up

cat > $D/bird.conf <<X
log stderr all;
router id 172.31.250.1;
protocol device { scan time 1; }
protocol ospf v2 ospf1 {
  ecmp yes; merge external yes;
  ipv4 { import all; export none; };
  area 0 { interface "veth-rtr" { type $BT; hello 1; dead 4; retransmit 2; }; };
}
X
ip netns exec $R bird -f -c $D/bird.conf -s $D/bird.ctl -P $D/bird.pid > $D/router.log 2>&1 & PIDS+=($!)
birdc() { command birdc -s $D/bird.ctl "$@"; }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
until [ -S $D/bird.ctl ]; do sleep 0.05; done
# until COND: polls every 20 ms for at most 30 s
until_() { local t=$(date +%s%N); until "$@"; do sleep 0.02; (( $(ms $t) > 30000 )) && { echo "timed out: $*"; tail -20 $D/speaker.log; exit 1; }; done; echo "$(ms $t) ms"; }
full() { birdc show ospf neighbors | grep -q Full; }
has_vip() { birdc show route $VIP/32 | grep -q "^$VIP/32"; }
no_vip() { ! has_vip; }

# The speaker reads commands (assign/unassign/status/shutdown) on a FIFO.
mkfifo $D/cmd
ip netns exec $N "$BIN" --router-id 172.31.250.2 \
  --interface veth-node,type=$NET,hello=1,dead=4,retransmit=2,priority=0,cost=10 \
  < $D/cmd > $D/speaker.out 2> $D/speaker.log & PIDS+=($!)
SP=$!
exec 3> $D/cmd
echo -n "== adjacency Full after "; until_ full
echo "assign $VIP" >&3
echo -n "== assign $VIP: in BIRD's RIB after "; until_ has_vip
echo "== BIRD's view"
birdc show ospf neighbors; birdc show ospf lsadb; birdc show route all $VIP/32
echo "== the speaker's view"
echo status >&3; sleep 0.3; cat $D/speaker.out
echo "unassign $VIP" >&3
echo -n "== unassign: gone (MaxAge flush) after "; until_ no_vip
echo "assign $VIP" >&3
echo -n "== re-assign: back after "; until_ has_vip
kill -TERM $SP
echo -n "== SIGTERM (graceful shutdown: every LSA flushed): gone after "; until_ no_vip
exec 3>&-
birdc show ospf neighbors; birdc show ospf lsadb
