#!/usr/bin/env bash
# NovaEdge BGP VIP lab: a router (BIRD 2 or GoBGP) in netns "nvlab-rtr" (AS 64512, passive) and
# NovaEdge's BGP speaker (novaedge-vip-bgp) in netns "nvlab-node" (AS 64513) announcing a VIP
# over an IPv4 and an IPv6 session. Shows the router's sessions and RIB after assign and after
# unassign, then shuts the speaker down gracefully and cleans up (also on error or Ctrl-C).
#
# usage (as root): examples/vip-bgp/lab.sh [bird|gobgp]
# needs: iproute2, bird2 or gobgpd (Debian packages), cargo
set -euo pipefail
ROUTER=${1:-bird}
cd "$(dirname "$0")/../.."
cargo build -q -p novaedge-vip --bin novaedge-vip-bgp
BIN=${CARGO_TARGET_DIR:-target}/debug/novaedge-vip-bgp
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 1; }

R=nvlab-rtr N=nvlab-node D=$(mktemp -d -t novaedge-vip-bgp-XXXX)
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
ip -n $R addr add 172.31.255.1/30 dev veth-rtr; ip -n $R addr add fd00:31::1/64 dev veth-rtr nodad
ip -n $N addr add 172.31.255.2/30 dev veth-node; ip -n $N addr add fd00:31::2/64 dev veth-node nodad
for ns in $R $N; do ip -n $ns link set lo up; done
ip -n $R link set veth-rtr up; ip -n $N link set veth-node up

case $ROUTER in
bird)
  cat > $D/bird.conf <<X
log stderr all;
router id 172.31.255.1;
protocol device { scan time 1; }
protocol direct { ipv4; ipv6; }
protocol bgp node4 { local 172.31.255.1 as 64512; neighbor 172.31.255.2 as 64513; passive on;
  hold time 9; error wait time 1, 5; ipv4 { import all; export none; }; }
protocol bgp node6 { local fd00:31::1 as 64512; neighbor fd00:31::2 as 64513; passive on;
  hold time 9; error wait time 1, 5; ipv6 { import all; export none; }; }
X
  ip netns exec $R bird -f -c $D/bird.conf -s $D/bird.ctl -P $D/bird.pid > $D/router.log 2>&1 & PIDS+=($!)
  show() { birdc -s $D/bird.ctl show protocols; birdc -s $D/bird.ctl show route all; } ;;
gobgp)
  cat > $D/gobgpd.toml <<X
[global.config]
  as = 64512
  router-id = "172.31.255.1"
  local-address-list = ["172.31.255.1", "fd00:31::1"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "172.31.255.2"
    peer-as = 64513
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "fd00:31::2"
    peer-as = 64513
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
X
  ip netns exec $R gobgpd -f $D/gobgpd.toml --api-hosts 127.0.0.1:50051 --pprof-disable -p > $D/router.log 2>&1 & PIDS+=($!)
  show() { ip netns exec $R gobgp neighbor; ip netns exec $R gobgp global rib -a ipv4; ip netns exec $R gobgp global rib -a ipv6; } ;;
*) echo "usage: $0 [bird|gobgp]"; exit 2 ;;
esac
sleep 1

# The speaker reads commands (assign/unassign/status/shutdown) on a FIFO.
mkfifo $D/cmd
ip netns exec $N "$BIN" --local-as 64513 --router-id 172.31.255.2 --hold 9 \
  --peer 172.31.255.1,64512 --peer fd00:31::1,64512 < $D/cmd > $D/speaker.out 2> $D/speaker.log & PIDS+=($!)
exec 3> $D/cmd
sleep 2
echo "== assign 192.0.2.10 and 2001:db8::10"
echo "assign 192.0.2.10" >&3; echo "assign 2001:db8::10" >&3; sleep 1
echo "status" >&3; sleep 0.3; cat $D/speaker.out
echo "== router view"; show
echo "== unassign 192.0.2.10"
echo "unassign 192.0.2.10" >&3; sleep 1; show
echo "== graceful shutdown (withdraw, then NOTIFICATION Cease)"
echo "shutdown" >&3; exec 3>&-; sleep 1; show
echo "== speaker log"; cat $D/speaker.log
