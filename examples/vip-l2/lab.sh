#!/bin/bash
# L2 VIP lab: a bridge (netns nvl2-sw) joining an observer (nvl2-obs, 198.51.100.1) and two
# nodes (nvl2-a .2, nvl2-b .3). novaedge-vip-l2 holds VIP 198.51.100.100 and 2001:db8::100 on
# node A; the observer captures the gratuitous ARP / unsolicited NA and asks who answers
# (arping: one MAC expected). Then A is SIGKILLed, its address lease runs out, B takes over.
# Run as root from the repository root:  examples/vip-l2/lab.sh
# Needs: iproute2, tcpdump, iputils-arping.  Everything is removed on exit.
set -u
BIN=${BIN:-target/debug/novaedge-vip-l2}
[ -x "$BIN" ] || cargo build -q -p novaedge-vip --bin novaedge-vip-l2 || exit 1
BIN=$(realpath "$BIN")
VIP=198.51.100.100; VIP6=2001:db8::100
D=$(mktemp -d -t novaedge-l2-XXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for n in nvl2-obs nvl2-a nvl2-b nvl2-sw; do ip netns del $n 2>/dev/null; done
  rm -rf "$D"
}
trap cleanup EXIT
for n in nvl2-sw nvl2-obs nvl2-a nvl2-b; do ip netns add $n; ip -n $n link set lo up; done
ip -n nvl2-sw link add br0 type bridge; ip -n nvl2-sw link set br0 up
i=1; for n in nvl2-obs nvl2-a nvl2-b; do
  ip link add v-$n netns nvl2-sw type veth peer name eth0 netns $n
  ip -n nvl2-sw link set v-$n master br0 up
  ip -n $n addr add 198.51.100.$i/24 dev eth0
  ip -n $n addr add 2001:db8::$i/64 dev eth0 nodad
  ip -n $n link set eth0 up; i=$((i+1))
done
ip netns exec nvl2-obs sysctl -qw net.ipv4.conf.eth0.arp_accept=1
ip netns exec nvl2-obs sysctl -qw net.ipv6.conf.eth0.forwarding=1 net.ipv6.conf.eth0.accept_untracked_na=1  # RFC 9131: a router learns from unsolicited NA
MA=$(ip netns exec nvl2-a cat /sys/class/net/eth0/address); MB=$(ip netns exec nvl2-b cat /sys/class/net/eth0/address)
echo "node A=$MA node B=$MB"
who() { ip netns exec nvl2-obs arping -c 3 -w 2 -I eth0 $VIP 2>/dev/null | grep -oiE '\[([0-9a-f]{2}:){5}[0-9a-f]{2}\]' | tr -d '[]' | tr A-Z a-z | sort -u | tr '\n' ' '; }

ip netns exec nvl2-obs timeout 4 tcpdump -i eth0 -n -e -vv -l "arp or icmp6[0] == 136" >"$D/cap" 2>/dev/null & TP=$!; sleep 0.5
mkfifo "$D/a.in"
ip netns exec nvl2-a "$BIN" --interface eth0 <"$D/a.in" >"$D/a.out" 2>"$D/a.log" & PIDS+=($!); PA=$!
exec 3>"$D/a.in"
echo "assign $VIP" >&3; echo "assign $VIP6" >&3; sleep 1.5; echo status >&3
wait $TP; echo "--- observer capture:"; cat "$D/cap"
sleep 0.2; echo "--- node A status:"; cat "$D/a.out"
echo "--- observer neighbours:"; ip -n nvl2-obs neigh show dev eth0 | grep -E "$VIP |$VIP6 "
echo "answers for $VIP: $(who)"
echo "unassign $VIP" >&3; sleep 0.3; echo "after unassign, answers: [$(who)]"
echo "assign $VIP" >&3; sleep 0.3
echo "--- SIGKILL node A's driver (pid $PA); its address lease (3 s) runs out"
kill -9 $PA; exec 3>&-; t0=$(date +%s%N)
while ip -n nvl2-a addr show dev eth0 | grep -q "$VIP/32"; do sleep 0.1; done
echo "VIP gone from node A after $(( ($(date +%s%N)-t0)/1000000 )) ms"
ip netns exec nvl2-b "$BIN" --interface eth0 --vip $VIP >"$D/b.out" 2>"$D/b.log" </dev/null & PIDS+=($!)
sleep 0.5; echo "answers for $VIP after takeover: $(who)"
ip -n nvl2-obs neigh show $VIP
