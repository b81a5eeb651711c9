#!/usr/bin/env bash
# The whole NovaEdge system holding an L2 VIP, in network namespaces: `novaedge controller`
# (files source) and two `novaedge agent`s over mTLS, default timings.
#
#   nvc-obs (observer)    eth0 198.51.100.1 ──┐
#   nvc-a   (node-a)      eth0 198.51.100.2 ──┼─ br0 (data)     ┐
#   nvc-b   (node-b)      eth0 198.51.100.3 ──┘                 ├ netns nvc-sw (the switch)
#                         ctl0 10.77.0.2/.3 ──┐                 │
#   nvc-ctl (controller)  ctl0 10.77.0.1   ───┴─ br1 (control)  ┘
#
# The ProxyVIP "web" (198.51.100.100, mode L2, interface eth0) is given to one node. The observer
# captures ARP and asks who answers for the VIP. Then: the holder's agent is SIGKILLed (the other
# node takes over; the time is measured), restarted (the VIP stays where it is), and the new
# holder is cut off from the controller (it drops the VIP itself; the other node takes over).
#
# usage (as root, from anywhere): examples/vip-l2/cluster.sh
# needs: iproute2, tcpdump, iputils-arping; cargo (or NOVAEDGE_BIN=path/to/novaedge)
# Everything it creates is removed on exit, also on error or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)" >&2; exit 1; }
for t in ip tcpdump arping; do
  command -v $t >/dev/null || { echo "missing: $t (iproute2, tcpdump, iputils-arping)" >&2; exit 1; }
done
if [ -z "${NOVAEDGE_BIN:-}" ]; then
  cargo build -q -p novaedge
  NOVAEDGE_BIN=${CARGO_TARGET_DIR:-target}/debug/novaedge
fi
BIN=$(realpath "$NOVAEDGE_BIN")
export RUST_LOG=${RUST_LOG:-info}

VIP=198.51.100.100
SW=nvc-sw OBS=nvc-obs CTL=nvc-ctl
NODES=(node-a node-b) NS=(nvc-a nvc-b) CTLPORT=(c-a c-b)
ALL_NS=("$SW" "$OBS" "$CTL" "${NS[@]}")

PIDS=() D=
cleanup() {
  local rc=$? p f
  trap - EXIT INT TERM
  if [ $rc != 0 ] && [ $rc != 130 ] && [ $rc != 143 ] && [ -n "$D" ]; then
    for f in "$D"/*.log; do [ -s "$f" ] && { echo "--- $f (last lines)"; tail -n 15 "$f"; }; done
  fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.2
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for n in "${ALL_NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  if [ -n "$D" ]; then rm -rf "$D"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Leftovers of an interrupted earlier run of this script (same fixed names).
for n in "${ALL_NS[@]}"; do
  if [ -e "/run/netns/$n" ]; then
    echo "removing netns $n left over from an earlier run"
    for p in $(ip netns pids "$n"); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$n"
    LEFTOVER=1
  fi
done
# ... and its temporary directory (only this script makes directories with this name).
if [ -n "${LEFTOVER:-}" ]; then rm -rf "${TMPDIR:-/tmp}"/novaedge-l2-cluster-????; fi

D=$(mktemp -d -t novaedge-l2-cluster-XXXX)

# --- the network ---------------------------------------------------------------------------
for n in "${ALL_NS[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
for br in br0 br1; do ip -n $SW link add $br type bridge; ip -n $SW link set $br up; done
# link BRIDGE PORT NETNS IFNAME ADDR: a veth from the switch's BRIDGE to NETNS.
link() {
  ip link add "$2" netns $SW type veth peer name "$4" netns "$3"
  ip -n $SW link set "$2" master "$1" up
  ip -n "$3" addr add "$5" dev "$4"
  ip -n "$3" link set "$4" up
}
link br0 d-obs $OBS eth0 198.51.100.1/24
link br1 c-ctl $CTL ctl0 10.77.0.1/24
link br0 d-a nvc-a eth0 198.51.100.2/24
link br1 c-a nvc-a ctl0 10.77.0.2/24
link br0 d-b nvc-b eth0 198.51.100.3/24
link br1 c-b nvc-b ctl0 10.77.0.3/24
# A gratuitous ARP creates the observer's neighbour entry (by default it only updates one).
ip netns exec $OBS sysctl -qw net.ipv4.conf.eth0.arp_accept=1
MAC=()
for i in 0 1; do MAC[i]=$(ip netns exec "${NS[i]}" cat /sys/class/net/eth0/address); done

# --- configuration and certificates --------------------------------------------------------
"$BIN" certs --out "$D/certs" "${NODES[@]}" >/dev/null
mkdir "$D/conf"
cat > "$D/conf/vip.yaml" <<EOF
apiVersion: novaedge.io/v1alpha1
kind: ProxyVIP
metadata: {name: web, namespace: demo}
spec:
  addresses: [$VIP]
  mode: L2
  interface: eth0
EOF

# --- helpers -------------------------------------------------------------------------------
ms() { echo $(( $(date +%s%N) / 1000000 )); }
# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 100 ms.
wait_for() {
  local until=$(( $(ms) + $1 * 1000 )) what=$2; shift 2
  until "$@"; do
    [ "$(ms)" -lt $until ] || { echo "timed out waiting for $what" >&2; return 1; }
    sleep 0.1
  done
}
# macs: the MACs (sorted, space separated) in arping's output.
macs() {
  { grep -oiE '\[([0-9a-f]{2}:){5}[0-9a-f]{2}\]' || true; } | tr -d '[]' | tr 'A-F' 'a-f' | sort -u |
    paste -sd' ' -
}
# who [COUNT]: the MACs that answer ARP for the VIP (COUNT requests, 1 s apart).
who() {
  { ip netns exec $OBS arping -c "${1:-2}" -w "${1:-2}" -I eth0 $VIP 2>/dev/null || true; } | macs
}
# who_now: one ARP request, at most 100 ms for the answer. (arping's -w takes whole seconds:
# timeout(1) cuts it short; stdbuf keeps what it printed.)
who_now() {
  { timeout 0.1 ip netns exec $OBS stdbuf -oL arping -c 1 -w 1 -I eth0 $VIP 2>/dev/null || true; } |
    macs
}
name_of() {
  local m out=
  for m in $1; do
    if [ "$m" = "${MAC[0]}" ]; then out+="${NODES[0]} "
    elif [ "$m" = "${MAC[1]}" ]; then out+="${NODES[1]} "
    else out+="$m(?) "; fi
  done
  echo "${out% }"
}
# Gratuitous ARP: broadcast, sender = target = VIP (requests), or an unsolicited is-at.
garps() {
  sed -n "$(( $1 + 1 )),\$p" "$D/arp.cap" |
    grep -E "> ff:ff:ff:ff:ff:ff.*(who-has $VIP tell $VIP|Reply $VIP is-at)" || echo "  (none)"
}
caplines() { wc -l < "$D/arp.cap"; }
# The controller's decisions about L2 VIPs.
L2LOG="L2 VIP (assigned|waits for its release)"
START_PID=
start() { # start NETNS LOG COMMAND...: in the background; PID in $START_PID
  local ns=$1 log=$2; shift 2
  ip netns exec "$ns" "$@" >>"$log" 2>&1 </dev/null &
  START_PID=$!; PIDS+=("$START_PID")
}
stop() { # stop SIGNAL PID: and forget the PID
  kill "-$1" "$2"; wait "$2" 2>/dev/null || true
  local p keep=()
  for p in "${PIDS[@]}"; do [ "$p" = "$2" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
APID=()
start_agent() { # start_agent I
  local n=${NODES[$1]}
  start "${NS[$1]}" "$D/$n.log" "$BIN" agent --controller https://10.77.0.1:9400 --node "$n" \
    --tls-cert "$D/certs/agent-$n.crt" --tls-key "$D/certs/agent-$n.key" --tls-ca "$D/certs/ca.crt"
  APID[$1]=$START_PID
}
holds() { ip -n "${NS[$1]}" -br addr show dev eth0 | grep -q " $VIP/"; }
# measure_takeover FROM_MS I: polls arping every 100 ms until node I answers and prints the
# time; then goes on for 2.5 s and reports any gap (a VIP given and taken back). Checks all
# along that the two nodes never hold the VIP's address at once.
measure_takeover() {
  local t0=$1 want=${MAC[$2]} deadline=$(( $1 + 15000 )) got seen='' both=0 t left
  local first='' stop_at='' gap='' gaps=''
  while :; do
    t=$(ms)
    holds 0 && holds 1 && both=$(( both + 1 ))
    got=$(who_now)
    if [ -z "$first" ]; then
      if [ "$got" = "$want" ]; then
        first=$(( $(ms) - t0 )); stop_at=$(( t + 2500 ))
        echo "   ${NODES[$2]} ($want) answers $first ms later${seen:+ (before that: $(name_of "$seen"))}"
      else
        [ -n "$got" ] && seen=$got
        [ "$t" -lt $deadline ] || { echo "!! ${NODES[$2]} did not take over within 15 s" >&2; return 1; }
      fi
    else
      if [ "$got" != "$want" ] && [ -z "$gap" ]; then gap=$(( t - t0 )); fi
      if [ "$got" = "$want" ] && [ -n "$gap" ]; then
        gaps+=" $gap-$(( t - t0 ))"; gap=''; stop_at=$(( t + 2500 ))
      fi
      if [ "$t" -ge "$stop_at" ] || [ "$t" -ge $deadline ]; then break; fi
    fi
    left=$(( t + 100 - $(ms) ))
    if [ $left -gt 0 ]; then sleep "0.$(printf %03d $left)"; fi
  done
  if [ -n "$gap" ]; then gaps+=" $gap-(still none)"; fi
  if [ -n "$gaps" ]; then
    echo "   !! then no answer from ${NODES[$2]} at (ms after the event):$gaps"
  else
    echo "   and answers steadily for the next 2.5 s"
  fi
  if [ $both = 0 ]; then echo "   the two nodes never held $VIP at the same time"
  else echo "   !! both nodes held $VIP at once ($both polls)"; fi
}

# --- run -----------------------------------------------------------------------------------
echo "== nodes: ${NODES[0]} eth0 ${MAC[0]}, ${NODES[1]} eth0 ${MAC[1]}; VIP $VIP; files in $D"
ip netns exec $OBS tcpdump -i eth0 -n -e -l arp >"$D/arp.cap" 2>"$D/tcpdump.log" </dev/null &
PIDS+=("$!")
wait_for 5 "tcpdump" grep -q "listening on" "$D/tcpdump.log"

start $CTL "$D/controller.log" "$BIN" controller --source "files:$D/conf" --listen 10.77.0.1:9400 \
  --tls-cert "$D/certs/controller.crt" --tls-key "$D/certs/controller.key" --tls-ca "$D/certs/ca.crt"
wait_for 10 "the controller" grep -q "serving snapshots" "$D/controller.log"
t0=$(ms)
start_agent 0; start_agent 1
answered() { [ -n "$(who_now)" ]; }
wait_for 10 "an answer for $VIP" answered
echo "== agents started; the VIP answers after $(( $(ms) - t0 )) ms"
sleep 1
ans=$(who 2)
echo "== arping -c 2 $VIP from the observer: $ans ($(name_of "$ans"))"
case $ans in
  "${MAC[0]}") H=0 ;;
  "${MAC[1]}") H=1 ;;
  *) echo "!! expected exactly one node's MAC, got: '$ans'" >&2; exit 1 ;;
esac
O=$(( 1 - H ))
echo "   holder: ${NODES[H]} ($(ip -n "${NS[H]}" -br addr show dev eth0))"
echo "   other:  ${NODES[O]} ($(ip -n "${NS[O]}" -br addr show dev eth0))"
echo "   observer's neighbour entry: $(ip -n $OBS neigh show $VIP)"
echo "-- gratuitous ARPs captured on the observer:"
garps 0
grep -hE "$L2LOG" "$D/controller.log" | sed 's/^/   controller: /'

echo
echo "== SIGKILL ${NODES[H]}'s agent (pid ${APID[H]}); polling arping every 100 ms"
mark=$(caplines); massigned=$(grep -cE "$L2LOG" "$D/controller.log" || true)
t0=$(ms); stop KILL "${APID[H]}"
measure_takeover "$t0" $O
sleep 1
echo "-- new gratuitous ARPs:"; garps "$mark"
tail -n +$(( massigned + 1 )) <(grep -hE "$L2LOG" "$D/controller.log") | sed 's/^/   controller: /'
echo "   observer's neighbour entry: $(ip -n $OBS neigh show $VIP)"

echo
echo "== restart ${NODES[H]}'s agent; the VIP must stay on ${NODES[O]}"
massigned=$(grep -cE "$L2LOG" "$D/controller.log" || true)
lines=$(wc -l < "$D/${NODES[H]}.log")
start_agent "$H"
wait_for 10 "${NODES[H]}'s agent to apply a snapshot" \
  sh -c "tail -n +$(( lines + 1 )) '$D/${NODES[H]}.log' | grep -q 'snapshot applied'"
echo "   ${NODES[H]}'s agent is back (pid ${APID[H]}); arping for 3 s:"
seen=
for _ in $(seq 15); do seen+=" $(who_now)"; sleep 0.1; done
seen=$(echo "$seen" | tr ' ' '\n' | grep . | sort | uniq -c | awk '{printf "%s x%s, ", $2, $1}')
echo "   answers: ${seen%, }"
now=$(grep -cE "$L2LOG" "$D/controller.log" || true)
echo "   holder now: $(name_of "$(who 2)"); controller decisions since the restart: $(( now - massigned ))"

echo
P=${CTLPORT[O]}
echo "== cut ${NODES[O]}'s control link (switch port $P down); it still reaches the observer"
mark=$(caplines); massigned=$(grep -cE "$L2LOG" "$D/controller.log" || true)
lines=$(wc -l < "$D/${NODES[O]}.log"); hlines=$(wc -l < "$D/${NODES[H]}.log")
t0=$(ms); ip -n $SW link set "$P" down
measure_takeover "$t0" "$H"
wait_for 5 "the agent's log" sh -c "tail -n +$(( lines + 1 )) '$D/${NODES[O]}.log' | grep -q 'dropping L2 VIPs'"
tail -n +$(( lines + 1 )) "$D/${NODES[O]}.log" | grep -E "dropping L2 VIPs|VIP released" |
  sed "s/^/   ${NODES[O]}: /"
tail -n +$(( massigned + 1 )) <(grep -hE "$L2LOG" "$D/controller.log") | sed 's/^/   controller: /'
tail -n +$(( hlines + 1 )) "$D/${NODES[H]}.log" | grep -E "VIP (assigned|released)" |
  sed "s/^/   ${NODES[H]}: /"
sleep 1
echo "-- new gratuitous ARPs:"; garps "$mark"
echo "   ${NODES[O]}'s eth0 now: $(ip -n "${NS[O]}" -br addr show dev eth0)"

echo
echo "== control link back up"
lines=$(wc -l < "$D/${NODES[O]}.log")
ip -n $SW link set "$P" up
wait_for 15 "${NODES[O]}'s agent to reach the controller again" \
  sh -c "tail -n +$(( lines + 1 )) '$D/${NODES[O]}.log' | grep -qE 'subscribed|snapshot applied|answers again'"
sleep 1
tail -n +$(( lines + 1 )) "$D/${NODES[O]}.log" | sed "s/^/   ${NODES[O]}: /"
ans=$(who 2)
echo "   arping: $ans ($(name_of "$ans"))"
echo
echo "== done; logs were in $D (removed on exit)"
