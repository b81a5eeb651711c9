#!/usr/bin/env bash
# The whole NovaEdge system announcing a BGP VIP, in network namespaces: `novaedge controller`
# (files source) and two `novaedge agent`s over mTLS, and a router (GoBGP or BIRD 2) that both
# nodes peer with, TCP-MD5 signed (the password comes from a Secret).
#
#   nvcb-rtr (router, AS 64500)  eth0 198.51.100.1 ─┐
#   nvcb-ctl (controller)        eth0 198.51.100.9 ─┤
#   nvcb-a   (node-a, AS 64512)  eth0 198.51.100.2 ─┼─ br0 (netns nvcb-sw)
#   nvcb-b   (node-b, AS 64512)  eth0 198.51.100.3 ─┘
#
# The ProxyVIP "api" (192.0.2.100, mode BGP) is announced by both nodes: the router has a path
# through each. Then node-a's agent gets SIGTERM (its path is withdrawn at once), and the
# ProxyVIP is removed from the configuration (withdrawn from the router entirely).
#
# usage (as root, from anywhere): examples/vip-bgp/cluster.sh [gobgp|bird]   (default: gobgp)
# needs: iproute2, gobgpd or bird2; cargo (or NOVAEDGE_BIN=path/to/novaedge)
# Everything it creates is removed on exit, also on error or Ctrl-C.
set -euo pipefail
ROUTER=${1:-gobgp}
case $ROUTER in
  gobgp) TOOLS="ip gobgpd gobgp" ;;
  bird) TOOLS="ip bird birdc" ;;
  *) echo "usage: $0 [gobgp|bird]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)" >&2; exit 1; }
for t in $TOOLS; do
  command -v "$t" >/dev/null || { echo "missing: $t (iproute2; gobgpd or bird2)" >&2; exit 1; }
done
if [ -z "${NOVAEDGE_BIN:-}" ]; then
  cargo build -q -p novaedge
  NOVAEDGE_BIN=${CARGO_TARGET_DIR:-target}/debug/novaedge
fi
BIN=$(realpath "$NOVAEDGE_BIN")
export RUST_LOG=${RUST_LOG:-info}

VIP=192.0.2.100 RTR_IP=198.51.100.1 CTL_IP=198.51.100.9 PASSWORD=novaedge-lab-md5
SW=nvcb-sw RTR=nvcb-rtr CTL=nvcb-ctl
NODES=(node-a node-b) NS=(nvcb-a nvcb-b) IPS=(198.51.100.2 198.51.100.3)
ALL_NS=("$SW" "$RTR" "$CTL" "${NS[@]}")

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
if [ -n "${LEFTOVER:-}" ]; then rm -rf "${TMPDIR:-/tmp}"/novaedge-bgp-cluster-????; fi

D=$(mktemp -d -t novaedge-bgp-cluster-XXXX)

# --- the network ---------------------------------------------------------------------------
for n in "${ALL_NS[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip -n $SW link add br0 type bridge; ip -n $SW link set br0 up
link() { # link PORT NETNS ADDR: a veth from the switch's br0 to NETNS's eth0
  ip link add "$1" netns $SW type veth peer name eth0 netns "$2"
  ip -n $SW link set "$1" master br0 up
  ip -n "$2" addr add "$3" dev eth0
  ip -n "$2" link set eth0 up
}
link p-rtr $RTR $RTR_IP/24
link p-ctl $CTL $CTL_IP/24
link p-a nvcb-a "${IPS[0]}/24"
link p-b nvcb-b "${IPS[1]}/24"

# --- helpers -------------------------------------------------------------------------------
ms() { echo $(( $(date +%s%N) / 1000000 )); }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 100 ms
  local until=$(( $(ms) + $1 * 1000 )) what=$2; shift 2
  until "$@"; do
    [ "$(ms)" -lt $until ] || { echo "timed out waiting for $what" >&2; return 1; }
    sleep 0.1
  done
}
START_PID=
start() { # start NETNS LOG COMMAND...: in the background; PID in $START_PID
  local ns=$1 log=$2; shift 2
  ip netns exec "$ns" "$@" >>"$log" 2>&1 </dev/null &
  START_PID=$!; PIDS+=("$START_PID")
}
forget() { # forget PID: after it exited
  local p keep=()
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
in_rtr() { ip netns exec $RTR "$@"; }
indent() { sed 's/^/   /'; }

# --- the router ----------------------------------------------------------------------------
case $ROUTER in
gobgp)
  {
    printf '[global.config]\n  as = 64500\n  router-id = "%s"\n  local-address-list = ["%s"]\n' \
      $RTR_IP $RTR_IP
    for ip in "${IPS[@]}"; do
      cat <<EOF
[[neighbors]]
  [neighbors.config]
    neighbor-address = "$ip"
    peer-as = 64512
    auth-password = "$PASSWORD"
  [neighbors.transport.config]
    passive-mode = true
  [neighbors.timers.config]
    hold-time = 9
    keepalive-interval = 3
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
EOF
    done
  } > "$D/gobgpd.toml"
  start $RTR "$D/router.log" gobgpd -f "$D/gobgpd.toml" --api-hosts 127.0.0.1:50051 --pprof-disable -p
  router_up() { in_rtr gobgp global >/dev/null 2>&1; }
  show_neighbors() { in_rtr gobgp neighbor; }
  show_rib() { in_rtr gobgp global rib -a ipv4; }
  # The nodes (addresses, space separated) the router has a path to the VIP through.
  paths() {
    { in_rtr gobgp global rib -a ipv4 "$VIP/32" 2>/dev/null || true; } |
      { grep -oE "198\.51\.100\.[23]" || true; } | sort -u | paste -sd' ' -
  }
  ;;
bird)
  {
    printf 'log stderr all;\nrouter id %s;\nprotocol device { scan time 1; }\n' $RTR_IP
    for i in 0 1; do
      cat <<EOF
protocol bgp ${NODES[i]/-/_} {
  local $RTR_IP as 64500; neighbor ${IPS[i]} as 64512;
  passive on; password "$PASSWORD"; hold time 9; keepalive time 3;
  ipv4 { import all; export none; };
}
EOF
    done
  } > "$D/bird.conf"
  start $RTR "$D/router.log" bird -f -c "$D/bird.conf" -s "$D/bird.ctl" -P "$D/bird.pid"
  router_up() { birdc -s "$D/bird.ctl" show status >/dev/null 2>&1; }
  show_neighbors() { birdc -s "$D/bird.ctl" show protocols; }
  show_rib() { birdc -s "$D/bird.ctl" show route all; }
  paths() {
    { birdc -s "$D/bird.ctl" show route "$VIP/32" all 2>/dev/null || true; } |
      { grep -oE "BGP.next_hop: 198\.51\.100\.[23]" || true; } | grep -oE "[0-9.]+$" | sort -u |
      paste -sd' ' -
  }
  ;;
esac
wait_for 10 "the router ($ROUTER)" router_up
# has_paths WANT: the router's paths to the VIP are exactly through WANT ("" = none).
has_paths() { [ "$(paths)" = "$1" ]; }

# --- NovaEdge ------------------------------------------------------------------------------
"$BIN" certs --out "$D/certs" "${NODES[@]}" >/dev/null
mkdir "$D/conf"
SECRET="apiVersion: v1
kind: Secret
metadata: {name: bgp-auth, namespace: demo}
stringData: {password: $PASSWORD}"
write_conf() { # write_conf TEXT: replaces conf/vip.yaml atomically (the controller watches it)
  printf '%s\n' "$1" > "$D/vip.yaml.tmp"
  mv "$D/vip.yaml.tmp" "$D/conf/vip.yaml"
}
write_conf "apiVersion: novaedge.io/v1alpha1
kind: ProxyVIP
metadata: {name: api, namespace: demo}
spec:
  addresses: [$VIP]
  mode: BGP
  bgp:
    localASN: 64512
    peers:
      - {address: $RTR_IP, asn: 64500, holdTime: 9s, passwordSecretRef: {name: bgp-auth}}
---
$SECRET"

start $CTL "$D/controller.log" "$BIN" controller --source "files:$D/conf" --listen $CTL_IP:9400 \
  --tls-cert "$D/certs/controller.crt" --tls-key "$D/certs/controller.key" --tls-ca "$D/certs/ca.crt"
wait_for 10 "the controller" grep -q "serving snapshots" "$D/controller.log"
APID=()
t0=$(ms)
for i in 0 1; do
  n=${NODES[i]}
  start "${NS[i]}" "$D/$n.log" "$BIN" agent --controller https://$CTL_IP:9400 --node "$n" \
    --tls-cert "$D/certs/agent-$n.crt" --tls-key "$D/certs/agent-$n.key" --tls-ca "$D/certs/ca.crt"
  APID[i]=$START_PID
done

echo "== router: $ROUTER (AS 64500, $RTR_IP); nodes ${NODES[0]} ${IPS[0]}, ${NODES[1]} ${IPS[1]} (AS 64512); VIP $VIP"
wait_for 30 "paths through both nodes" has_paths "${IPS[*]}"
echo "== controller and agents started: the router has a path through each node after $(( $(ms) - t0 )) ms"
echo "-- router's neighbors:"; show_neighbors | indent
echo "-- router's RIB:"; show_rib | indent
echo "-- agents:"
for n in "${NODES[@]}"; do grep -hE "BGP session established|VIP assigned" "$D/$n.log" | sed "s/^/   $n: /"; done

echo
echo "== SIGTERM ${NODES[0]}'s agent (pid ${APID[0]})"
t0=$(ms); kill -TERM "${APID[0]}"
wait_for 15 "${NODES[0]}'s path withdrawn" has_paths "${IPS[1]}"
echo "   its path is gone from the router after $(( $(ms) - t0 )) ms"
wait "${APID[0]}" || true; forget "${APID[0]}"
echo "   agent exited after $(( $(ms) - t0 )) ms; its log:"
grep -hE "BGP|VIP|draining" "$D/${NODES[0]}.log" | tail -n 4 | indent
echo "-- router's neighbors:"; show_neighbors | indent
echo "-- router's RIB:"; show_rib | indent

echo
echo "== remove the ProxyVIP from the configuration (the Secret stays)"
lines=$(wc -l < "$D/${NODES[1]}.log")
t0=$(ms); write_conf "$SECRET"
wait_for 15 "the VIP withdrawn" has_paths ""
echo "   $VIP withdrawn from the router after $(( $(ms) - t0 )) ms"
sleep 0.5
tail -n +$(( lines + 1 )) "$D/${NODES[1]}.log" | grep -E "BGP|VIP" | sed "s/^/   ${NODES[1]}: /"
echo "-- router's neighbors:"; show_neighbors | indent
echo "-- router's RIB:"; show_rib | indent
echo
echo "== done; logs were in $D (removed on exit)"
