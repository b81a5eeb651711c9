#!/usr/bin/env bash
# Failover under load: three echo backends behind NovaEdge, wrk driving traffic, one backend
# killed (SIGKILL, by PID) part way through: its connections are reset, new ones refused.
# Runs once per health configuration and prints the requests that failed (non-2xx responses and
# wrk socket errors), how many requests were re-dispatched after a refused connect to the dead
# endpoint (from the proxy's debug log), throughput and latency, so that the configurations can
# be compared within one run:
#
#   none     outlier detection disabled (connect failures are still re-dispatched)
#   passive  the defaults: passive outlier detection only
#   active   the defaults plus an active HTTP check every second
#
#   bench/failover.sh [duration-seconds] [connections] [kill-after-seconds]
#
# Needs wrk (Debian: wrk); installs it if missing and root.
set -euo pipefail

duration=${1:-10}
conns=${2:-32}
kill_after=${3:-3}
source "$(dirname "$0")/lib.sh"

need wrk wrk

build_novaedge


# The Service annotations of each configuration.
annotations() {
  case $1 in
    none) echo "novaedge.io/outlier-detection: '{disabled: true}'" ;;
    passive) echo "{}" ;;
    active) echo "novaedge.io/health-check: '{http: {path: /healthz}, interval: 1s, jitter: 0s, timeout: 500ms, unhealthyThreshold: 2}'" ;;
  esac
}

run() { # mode
  local mode=$1 port proxy echo_pids=() out
  port=$(free_port)
  proxy=$(free_port)
  for ip in 127.0.0.1 127.0.0.2 127.0.0.3; do
    "$bin" echo --listen "$ip:$port" --name "echo-$ip" 2>>"$work/echo.log" &
    pids+=($!)
    echo_pids+=($!)
  done
  local ann
  ann=$(annotations "$mode")
  cat >"$work/$mode.yaml" <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench, namespace: bench}
spec:
  gatewayClassName: novaedge
  listeners: [{name: http, protocol: HTTP, port: $proxy}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: bench}
spec:
  parentRefs: [{name: bench}]
  rules: [{backendRefs: [{name: app, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata:
  name: app
  namespace: bench
  annotations:
    $(echo "$ann" | sed 's/^{}$//')
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app, namespace: bench, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{name: http, port: $port}]
endpoints: [{addresses: [127.0.0.1]}, {addresses: [127.0.0.2]}, {addresses: [127.0.0.3]}]
YAML
  RUST_LOG=warn,novaedge_core::proxy=debug "$bin" run --bind 127.0.0.1 "$work/$mode.yaml" 2>"$work/proxy-$mode.log" &
  local proxy_pid=$!
  pids+=($proxy_pid)
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$proxy/" && break
    sleep 0.1
  done
  curl -sf -o /dev/null "http://127.0.0.1:$proxy/" || { cat "$work/proxy-$mode.log" >&2; exit 1; }
  # Let active checks see every endpoint before the load starts.
  sleep 2

  (sleep "$kill_after"; kill -KILL "${echo_pids[1]}") &
  local killer=$!
  out=$(wrk -t2 -c"$conns" -d"${duration}s" --latency "http://127.0.0.1:$proxy/?delay_ms=1")
  wait "$killer" || true

  local total non2xx sockerr rps p50 p99
  total=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  sockerr=$(echo "$out" | awk -F'[ ,]+' '/Socket errors/ {print $5+$7+$9+$11}')
  rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  local failed=$(( ${non2xx:-0} + ${sockerr:-0} ))
  local redispatched
  redispatched=$(grep -c 'trying another endpoint' "$work/proxy-$mode.log" || true)
  printf '%-8s %10s %8s %10s %12s %10s %8s %8s\n' "$mode" "$total" "$failed" \
    "$(python3 -c "print(f'{100*$failed/$total:.4f}%')")" "$redispatched" "$rps" "$p50" "$p99"

  for pid in "$proxy_pid" "${echo_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "$proxy_pid" "${echo_pids[@]}" 2>/dev/null || true
}

echo "three backends, one SIGKILLed after ${kill_after}s of ${duration}s; wrk -c$conns"
printf '%-8s %10s %8s %10s %12s %10s %8s %8s\n' mode requests failed "failed %" redispatched "req/s" p50 p99
for mode in none passive active; do
  run "$mode" 2>/dev/null
done
