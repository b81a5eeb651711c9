#!/usr/bin/env bash
# TLS termination: NovaEdge and nginx in front of the same echo backend, in one run, taking
# turns (nginx, NovaEdge, nginx, NovaEdge, ...). Measures with h2load:
#   - HTTPS request rate: h2 over TLS, keep-alive, 64 connections x 10 streams;
#   - handshake rate: HTTP/1.1 over TLS with `Connection: close`, so every request is a new
#     connection and a full handshake (h2load does not resume sessions): a fixed number of
#     connections, 64 at a time (h2load only reconnects in `-n` mode).
# Prints each round, the median of each, and the ratio NovaEdge / nginx. Both use an ECDSA
# P-256 certificate and the machine's cores (nginx `worker_processes auto`). Compare ratios,
# not absolute numbers: the load generator shares the machine.
#
#   bench/tls.sh [duration-seconds] [rounds]
#
# Needs nginx, h2load and openssl (Debian: nginx-light, nghttp2-client, openssl); installs
# them if missing and root.
set -euo pipefail

duration=${1:-8}
rounds=${2:-3}
conns=64
source "$(dirname "$0")/lib.sh"

need h2load nghttp2-client
need openssl openssl
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need nginx nginx-light
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

build_novaedge

backend=$(free_port)
nova=$(free_port)
ngx=$(free_port)

# A throwaway CA and a certificate for the benchmark's name and 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=bench CA" -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=tls.bench" -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:tls.bench,IP:127.0.0.1\n' >"$work/san.ext"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
  -CAcreateserial -days 2 -extfile "$work/san.ext" -out "$work/tls.crt" 2>/dev/null

"$bin" echo --listen "127.0.0.1:$backend" --name bench 2>"$work/echo.log" &
pids+=($!)

{
  cat <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench, namespace: bench}
spec:
  gatewayClassName: novaedge
  listeners:
  - name: https
    protocol: HTTPS
    port: $nova
    tls: {mode: Terminate, certificateRefs: [{name: bench-tls}]}
YAML
  tls_secret_manifest bench-tls "$work/tls.crt" "$work/tls.key"
  route_manifest echo "$backend"
} >"$work/bench.yaml"

cat >"$work/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream echo { server 127.0.0.1:$backend; keepalive 64; }
  server {
    listen 127.0.0.1:$ngx ssl http2;
    ssl_certificate $work/tls.crt;
    ssl_certificate_key $work/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
CONF

RUST_LOG=warn "$bin" run --bind 127.0.0.1 "$work/bench.yaml" 2>"$work/novaedge.log" &
nova_pid=$!; pids+=($nova_pid)
"$nginx_bin" -p "$work" -c "$work/nginx.conf" -g 'daemon off;' 2>>"$work/nginx-error.log" &
ngx_pid=$!; pids+=($ngx_pid)

for port in "$nova" "$ngx"; do
  for _ in $(seq 100); do
    curl -sf -o /dev/null --cacert "$work/ca.crt" "https://127.0.0.1:$port/" && break
    sleep 0.1
  done
  curl -sf -o /dev/null --cacert "$work/ca.crt" "https://127.0.0.1:$port/" \
    || { cat "$work/novaedge.log" "$work/nginx-error.log"; exit 1; }
done

# Each run must succeed completely: a fast stream of errors is not throughput.
h2load_rps() { # h2load arguments...
  local out
  out=$(h2load "$@" 2>/dev/null)
  echo "$out" | grep -qE '^requests: .* 0 failed, 0 errored' \
    || { echo "h2load saw failures:" >&2; echo "$out" >&2; exit 1; }
  echo "$out" | awk '/^finished in/ {gsub(",", "", $4); print $4}'
}
requests() { h2load_rps -c"$conns" -m10 -D"$duration" "https://127.0.0.1:$1/"; }
handshakes() { h2load_rps --h1 -c"$conns" -n"$handshake_count" -H 'Connection: close' "https://127.0.0.1:$1/"; }
handshake_count=$((duration * 500))

for who in novaedge:$nova nginx:$ngx; do
  printf '%s negotiates %s with h2load\n' "${who%%:*}" \
    "$(h2load -n1 -c1 "https://127.0.0.1:${who#*:}/" 2>/dev/null | awk -F': ' '/^TLS Protocol/ {print $2}')"
done
echo "warming up"
requests "$nova" >/dev/null; requests "$ngx" >/dev/null

declare -A results
for round in $(seq "$rounds"); do
  for who in nginx novaedge; do
    port=$ngx; [ "$who" = novaedge ] && port=$nova
    r=$(requests "$port"); h=$(handshakes "$port")
    results[$who-req]+="$r "; results[$who-hs]+="$h "
    printf 'round %d %-9s h2 requests/s %10s   handshakes/s %9s\n' "$round" "$who" "$r" "$h"
  done
done

median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.0f}')" $1; }
ratio() { python3 -c "print(f'{float($1)/float($2):.2f}')"; }
req_nova=$(median "${results[novaedge-req]}"); req_ngx=$(median "${results[nginx-req]}")
hs_nova=$(median "${results[novaedge-hs]}"); hs_ngx=$(median "${results[nginx-hs]}")
echo
printf '%-36s %10s %10s %8s\n' "median of $rounds rounds" nginx novaedge ratio
printf '%-36s %10s %10s %8s\n' "HTTPS h2 requests/s (c=$conns m=10)" "$req_ngx" "$req_nova" "$(ratio "$req_nova" "$req_ngx")"
printf '%-36s %10s %10s %8s\n' "TLS handshakes/s (c=$conns, h1 close)" "$hs_ngx" "$hs_nova" "$(ratio "$hs_nova" "$hs_ngx")"
hwm() { awk '/VmHWM/ {print $2}' /proc/"$1"/status; }
ngx_kb=$(( $(hwm "$ngx_pid") + $(for w in $(pgrep -P "$ngx_pid"); do hwm "$w"; done | awk '{s+=$1} END {print s+0}') ))
printf 'peak RSS: novaedge %d KiB, nginx (master + workers) %d KiB\n' "$(hwm "$nova_pid")" "$ngx_kb"
echo "novaedge errors logged: $(grep -c ' ERROR ' "$work/novaedge.log" || true)"
