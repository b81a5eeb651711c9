#!/usr/bin/env bash
# Load test: the echo backend directly, then the same backend through NovaEdge, in one run.
# Prints requests per second for each and the ratio proxied/direct, for HTTP/1.1 (wrk) and
# HTTP/2 cleartext (h2load). Run it on a quiet machine; compare ratios, not absolute numbers.
#
#   bench/proxy.sh [duration-seconds] [connections]
#
# Needs wrk and h2load (Debian: wrk, nghttp2-client); installs them if missing and root.
set -euo pipefail

duration=${1:-10}
conns=${2:-64}
source "$(dirname "$0")/lib.sh"

need wrk wrk
need h2load nghttp2-client

build_novaedge

backend=$(free_port)
proxy=$(free_port)

"$bin" echo --listen "127.0.0.1:$backend" --name bench 2>"$work/echo.log" &
pids+=($!)

{
  gateway_manifest "$proxy"
  route_manifest echo-h1 "$backend" h1.bench
  route_manifest echo-h2 "$backend" h2.bench kubernetes.io/h2c
} >"$work/bench.yaml"

RUST_LOG=warn "$bin" run --bind 127.0.0.1 "$work/bench.yaml" 2>"$work/proxy.log" &
pids+=($!)

for _ in $(seq 100); do
  curl -sf -o /dev/null -H 'Host: h1.bench' "http://127.0.0.1:$proxy/" && break
  sleep 0.1
done
curl -sf -o /dev/null -H 'Host: h1.bench' "http://127.0.0.1:$proxy/" || { cat "$work/proxy.log"; exit 1; }

wrk_rps() { # url host
  local out
  out=$(wrk -t1 -c"$conns" -d"${duration}s" -H "Host: $2" "$1")
  if echo "$out" | grep -qE 'Non-2xx|Socket errors'; then
    echo "wrk saw failures:" >&2; echo "$out" >&2; exit 1
  fi
  echo "$out" | awk '/^Requests\/sec:/ {print $2}'
}
# Each load run must succeed completely: a fast stream of 404s or 502s is not throughput.
h2_rps() { # url host
  local out
  out=$(h2load -c"$conns" -m10 -D"$duration" -H ":authority: $2" "$1" 2>/dev/null)
  echo "$out" | grep -q '^status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' \
    || { echo "h2load saw failures:" >&2; echo "$out" >&2; exit 1; }
  echo "$out" | awk '/^finished in/ {gsub(",", "", $4); print $4}'
}
ratio() { python3 -c "print(f'{float($1)/float($2):.2f}')"; }

echo "warming up"; wrk -t1 -c"$conns" -d2s -H 'Host: h1.bench' "http://127.0.0.1:$proxy/" >/dev/null

h1_direct=$(wrk_rps "http://127.0.0.1:$backend/" h1.bench)
h1_proxy=$(wrk_rps "http://127.0.0.1:$proxy/" h1.bench)
h2_direct=$(h2_rps "http://127.0.0.1:$backend/" h2.bench)
h2_proxy=$(h2_rps "http://127.0.0.1:$proxy/" h2.bench)

printf '%-28s %12s %12s %8s\n' "protocol (client -> backend)" "direct rps" "proxied rps" "ratio"
printf '%-28s %12s %12s %8s\n' "HTTP/1.1 (wrk, c=$conns)" "$h1_direct" "$h1_proxy" "$(ratio "$h1_proxy" "$h1_direct")"
printf '%-28s %12s %12s %8s\n' "h2c (h2load, c=$conns m=10)" "$h2_direct" "$h2_proxy" "$(ratio "$h2_proxy" "$h2_direct")"
errors=$(grep -c ' ERROR ' "$work/proxy.log" || true)
echo "proxy errors logged: $errors"
