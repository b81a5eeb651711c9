#!/usr/bin/env bash
# What the proxy's data path costs in instructions per request: `novaedge run` with its default
# settings, in front of an nginx backend answering 64 bytes (as in `bench/compare.sh`), under
# callgrind (valgrind). Warms the proxy up, zeroes the counters, sends a fixed number of
# requests (h2load), and divides the instructions the whole proxy process executed (every
# thread) by the request count. nginx runs natively, apart, so the count is the proxy's alone;
# the kernel's share (system calls, TCP) is not counted.
#
# Requests per second and CPU time per request move by 20% or more on a shared machine from
# one run to the next; instruction counts move by about 1%. This is the figure to compare two
# builds by, before `bench/compare.sh` says what they do against nginx and HAProxy:
#
#   bench/instructions.sh [requests] [h1|h2c]
#   NOVAEDGE_BINS="/tmp/before/novaedge /tmp/after/novaedge" bench/instructions.sh 20000 h1
#
# Each binary of NOVAEDGE_BINS (default: this tree's release build) is measured in turn, and
# each after the first also as a ratio to the first. INSTRUCTIONS_KEEP=DIR keeps the callgrind
# dumps there, for callgrind_annotate. Needs valgrind, nginx and h2load (Debian: valgrind,
# nginx, nghttp2-client).
# Lists of files are split into words on purpose.
# shellcheck disable=SC2086
set -euo pipefail

requests=${1:-20000}
proto=${2:-h1}
source "$(dirname "$0")/lib.sh"

need valgrind valgrind
need nginx nginx
need h2load nghttp2-client

case "$proto" in
  h1) flags=(--h1 -c8) ;;
  h2c) flags=(-c8 -m8) ;;
  *) echo "protocol is h1 or h2c, not $proto" >&2; exit 2 ;;
esac

if [ -n "${NOVAEDGE_BINS:-}" ]; then
  read -r -a bins <<<"$NOVAEDGE_BINS"
else
  build_novaedge
  bins=("$bin")
fi

# The backend: nginx, one worker, a 64-byte body at /small.
backend_port=$(free_port)
mkdir -p "$work/www" "$work/nginx"
head -c 64 /dev/zero | tr '\0' x >"$work/www/small"
nginx_user=""
[ "$(id -u)" = 0 ] && nginx_user="user root;"
cat >"$work/nginx/nginx.conf" <<CONF
$nginx_user
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  etag off;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$backend_port;
    root $work/www;
  }
}
CONF
nginx -p "$work/nginx/" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" \
  -g 'daemon off;' 2>"$work/nginx/stderr" &
pids+=($!)

proxy_port=$(free_port)
admin_port=$(free_port)
{
  gateway_manifest "$proxy_port"
  route_manifest backend "$backend_port"
} >"$work/bench.yaml"

for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$backend_port/small" && break
  sleep 0.1
done

# instructions N BIN: instructions per request through that binary.
instructions() {
  local dir="$work/run$1" binary=$2 pid
  mkdir -p "$dir"
  env -u RUST_LOG valgrind --tool=callgrind --callgrind-out-file="$dir/out.%p" \
    "$binary" run --bind 127.0.0.1 --admin-addr "127.0.0.1:$admin_port" "$work/bench.yaml" \
    >"$dir/log" 2>&1 &
  pid=$!
  pids+=("$pid")
  local up=""
  for _ in $(seq 600); do
    if curl -sf -o /dev/null "http://127.0.0.1:$proxy_port/small"; then up=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$up" ] || { echo "$binary did not start under valgrind; its log:" >&2; cat "$dir/log" >&2; exit 1; }
  callgrind_per_request "$pid" "$dir" "$requests" "${INSTRUCTIONS_KEEP:+$INSTRUCTIONS_KEEP/run$1}" \
    "http://127.0.0.1:$proxy_port/small" "${flags[@]}"
}

printf '%-10s %12s %8s  %s\n' "$proto" "instr/req" "ratio" "binary"
first=""
for i in "${!bins[@]}"; do
  per=$(instructions "$i" "${bins[$i]}")
  if [ -z "$first" ]; then
    first=$per
    ratio="1.000"
  else
    ratio=$(python3 -c "print(f'{$per / $first:.3f}')")
  fi
  printf '%-10s %12s %8s  %s\n' "" "$per" "$ratio" "${bins[$i]}"
done
echo "$requests requests per binary after 2,000 to warm up; h2load ${flags[*]}; nginx backend, 64-byte body"
