#!/usr/bin/env bash
# NovaEdge, nginx and HAProxy side by side, in one run, in front of the same backend.
#
# One backend (nginx: a 64-byte body at /small, a 64 KiB one at /64k) and three proxies in
# front of it, each at its default worker or thread count: nginx as reverse proxy
# (`worker_processes auto`, keep-alive upstream), HAProxy (default threads, `http-reuse
# always`) and NovaEdge (`novaedge run` on generated manifests, release build, default
# settings and log level). Each scenario runs against the backend directly and through each
# proxy in turn, round after round (backend, nginx, haproxy, novaedge, backend, ...), so that
# drift and other load on the machine hit all alike:
#
#   h1, h1-64k        HTTP/1.1 keep-alive, wrk, CONNS connections
#   h2c, h2c-64k      HTTP/2 cleartext (prior knowledge), h2load, H2_CONNS x H2_STREAMS streams
#   h2tls, h2tls-64k  HTTP/2 over TLS 1.3 (self-signed ECDSA P-256; each proxy terminates it;
#                     h2load offers only TLS_AES_128_GCM_SHA256, so that all use the same
#                     cipher), h2load, H2_CONNS x H2_STREAMS streams
#   close             HTTP/1.1 with `Connection: close`, wrk, CONNS connections: every request
#                     is a new TCP connection to the proxy (wrk reconnects after each response;
#                     the opens/req column counts them). Upstream connections stay kept alive.
#
# Prints, per scenario and target, the median over the rounds of requests/s, p50 and p99
# latency (wrk: from the request's first byte written, so connection set-up is not in it;
# h2load: from the request's start, from its per-request log), the errors of all rounds
# (wrk: socket errors and non-2xx/3xx responses; h2load: failed requests and 3xx), TCP
# connections opened per request (machine-wide ActiveOpens from /proc/net/snmp: other
# processes' connections count too) and the target's CPU time (user + system, all its
# processes) per request, which other load on the machine skews much less than requests/s;
# then the ratio NovaEdge / best peer of nginx and HAProxy for requests/s (higher is better),
# p99 and CPU per request (lower is better); then each proxy's peak RSS (VmHWM summed over its
# processes: nginx master and workers) after the load runs.
#
# Then the cost of idle connections: each proxy, freshly started, gets IDLE_CONNS HTTP/1.1
# keep-alive connections with one request each, held idle (bench/idle_client.py); its RSS
# (VmRSS, summed over its processes) before, and 2 s and 10 s after the last response, gives
# bytes per idle connection (NovaEdge moves a connection quiet for 1.25 s to its parking lot,
# and frees memory back to the system within a second or two: the 10 s figure is the steady
# state).
#
# Fails (exit 1, after the tables) if any run saw an error; at once if a proxy does not start
# or dies. All traffic is on 127.0.0.1.
#
# Settings that are not defaults, and why (all three proxies are otherwise at their defaults):
#   - nginx: `access_log off` (HAProxy and NovaEdge log no requests by default);
#     `ssl_protocols TLSv1.2 TLSv1.3` (nginx 1.22 leaves TLS 1.3 out by default);
#     `keepalive_requests 1000000` on the client side and the upstream (nginx closes a
#     connection after 1000 requests by default, the others never do); `keepalive 64`
#     upstream connections per worker; `worker_connections` and `worker_rlimit_nofile` at the
#     open-files limit, for the idle connections.
#   - HAProxy: the timeouts it requires (client and server 60 s, as NovaEdge's idle timeout);
#     `maxconn` above IDLE_CONNS (its default follows the open-files limit: 9986 for 20000),
#     with `no strict-limits` when that limit is below two file descriptors per connection
#     (then HAProxy logs an alert and runs; with `http-reuse always` an idle client
#     connection needs one).
#   - NovaEdge: none; RUST_LOG is unset so that the default log level applies. The admin
#     listener gets a free port instead of 9901, which another process may hold.
#
# Environment (defaults: a run of about 8 minutes; QUICK=1, a smoke test of every scenario and
# of the idle part: about 1 minute):
#   DURATION=5     seconds per run (QUICK: 1)
#   ROUNDS=3       rounds (QUICK: 1)
#   CONNS=64       wrk connections
#   H2_CONNS=8 H2_STREAMS=8   h2load connections and concurrent streams on each (64 streams)
#   THREADS=1      load generator threads (wrk -t, h2load -t)
#   IDLE_CONNS=10000          idle connections per proxy; 0 skips that part (QUICK: 2000)
#   SCENARIOS="h1 h1-64k h2c h2c-64k h2tls h2tls-64k close"
#   RESULTS=FILE   also write every run's figures there (tab-separated)
#
# The machine's cores are shared by the load generator, the proxy and the backend (nothing
# is pinned), and by anything else running: compare ratios, not absolute numbers, and raise
# THREADS on a machine with more cores than 2.
#
# Needs nginx, haproxy, wrk, h2load, openssl and python3 (Debian: nginx, haproxy, wrk,
# nghttp2-client, openssl; all in scripts/test-packages.txt).
# Lists of process ids and log files are split into words on purpose.
# shellcheck disable=SC2046
set -euo pipefail

if [ "${QUICK:-0}" = 1 ]; then
  : "${DURATION:=1}" "${ROUNDS:=1}" "${IDLE_CONNS:=2000}"
fi
duration=${DURATION:-5}
rounds=${ROUNDS:-3}
conns=${CONNS:-64}
h2_conns=${H2_CONNS:-8}
h2_streams=${H2_STREAMS:-8}
threads=${THREADS:-1}
idle_conns=${IDLE_CONNS:-10000}
scenarios=${SCENARIOS:-h1 h1-64k h2c h2c-64k h2tls h2tls-64k close}
targets=(backend nginx haproxy novaedge)
proxies=(nginx haproxy novaedge)

for s in $scenarios; do
  case $s in h1 | h1-64k | h2c | h2c-64k | h2tls | h2tls-64k | close) ;;
    *) echo "SCENARIOS: unknown scenario '$s'" >&2; exit 1 ;;
  esac
done
for v in duration rounds conns h2_conns h2_streams threads idle_conns; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "${v^^}=${!v}: not a whole number" >&2; exit 1; }
done

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# daemon COMMAND DEBIAN-PACKAGE: the path of a server binary, which may be in /usr/sbin
# outside PATH.
daemon() {
  command -v "$1" && return
  [ -x "/usr/sbin/$1" ] && { echo "/usr/sbin/$1"; return; }
  need "$1" "$2" >&2
  command -v "$1"
}
need wrk wrk
need h2load nghttp2-client
need openssl openssl
need curl curl
nginx_bin=$(daemon nginx nginx)
haproxy_bin=$(daemon haproxy haproxy)

# Every idle connection is a file descriptor in the client and in the proxy.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
[ "$nofile" = unlimited ] && nofile=1048576
if [ $((idle_conns + 1000)) -gt "$nofile" ]; then
  echo "IDLE_CONNS=$idle_conns needs an open-files limit above $((idle_conns + 1000)); ulimit -Hn is $(ulimit -Hn)" >&2
  exit 1
fi

build_novaedge

# === scratch: certificate, bodies, ports ===

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench \
  -addext subjectAltName=DNS:bench,IP:127.0.0.1 \
  -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
cat "$work/tls.crt" "$work/tls.key" >"$work/tls.pem"
mkdir -p "$work/www"
head -c 64 /dev/zero | tr '\0' x >"$work/www/small"
head -c 65536 /dev/urandom >"$work/www/64k"

declare -A port
for t in "${targets[@]}"; do
  for kind in h1 h2c tls; do port[$t-$kind]=$(free_port); done
done
admin_port=$(free_port)

# nginx workers must read the scratch directory, which only its owner may.
nginx_user=""
[ "$(id -u)" = 0 ] && nginx_user="user root;"

# nginx_main DIR: the settings both nginx instances share.
nginx_main() {
  cat <<CONF
$nginx_user
worker_processes auto;
worker_rlimit_nofile $nofile;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections $((nofile - 64)); }
CONF
}

mkdir -p "$work/backend" "$work/nginx" "$work/haproxy" "$work/novaedge"
{
  nginx_main "$work/backend"
  cat <<CONF
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  sendfile on;
  etag off;
  open_file_cache max=16;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${port[backend-h1]};
    listen 127.0.0.1:${port[backend-h2c]} http2;
    listen 127.0.0.1:${port[backend-tls]} ssl http2;
    ssl_certificate $work/tls.crt;
    ssl_certificate_key $work/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $work/www;
  }
}
CONF
} >"$work/backend/nginx.conf"

{
  nginx_main "$work/nginx"
  cat <<CONF
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend {
    server 127.0.0.1:${port[backend-h1]};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port[nginx-h1]};
    listen 127.0.0.1:${port[nginx-h2c]} http2;
    listen 127.0.0.1:${port[nginx-tls]} ssl http2;
    ssl_certificate $work/tls.crt;
    ssl_certificate_key $work/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
} >"$work/nginx/nginx.conf"

# HAProxy sizes for two file descriptors per connection and refuses to start if the limit is
# too low for its `maxconn`; with `http-reuse always` an idle client connection needs one.
haproxy_maxconn=$((idle_conns + 1000))
haproxy_limits=""
[ $((2 * haproxy_maxconn + 100)) -gt "$nofile" ] && haproxy_limits="no strict-limits"
cat >"$work/haproxy/haproxy.cfg" <<CONF
global
  maxconn $haproxy_maxconn
  $haproxy_limits

defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always

frontend bench
  bind 127.0.0.1:${port[haproxy-h1]}
  bind 127.0.0.1:${port[haproxy-h2c]} proto h2
  bind 127.0.0.1:${port[haproxy-tls]} ssl crt $work/tls.pem alpn h2,http/1.1
  default_backend backend

backend backend
  server backend 127.0.0.1:${port[backend-h1]}
CONF

{
  cat <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench, namespace: bench}
spec:
  gatewayClassName: novaedge
  listeners:
  - {name: h1, protocol: HTTP, port: ${port[novaedge-h1]}}
  - {name: h2c, protocol: HTTP, port: ${port[novaedge-h2c]}}
  - name: tls
    protocol: HTTPS
    port: ${port[novaedge-tls]}
    tls: {mode: Terminate, certificateRefs: [{name: bench-tls}]}
YAML
  tls_secret_manifest bench-tls "$work/tls.crt" "$work/tls.key"
  route_manifest backend "${port[backend-h1]}"
} >"$work/novaedge/bench.yaml"

# === processes ===

declare -A main_pid
log_of() { # TARGET
  case $1 in
    backend | nginx) echo "$work/$1/error.log" "$work/$1/stderr" ;;
    *) echo "$work/$1/log" ;;
  esac
}

start() { # TARGET
  local t=$1
  case $t in
    backend | nginx)
      "$nginx_bin" -p "$work/$t/" -e "$work/$t/error.log" -c "$work/$t/nginx.conf" \
        -g 'daemon off;' 2>"$work/$t/stderr" &
      ;;
    haproxy) "$haproxy_bin" -db -f "$work/haproxy/haproxy.cfg" >"$work/haproxy/log" 2>&1 & ;;
    novaedge)
      env -u RUST_LOG "$bin" run --bind 127.0.0.1 --admin-addr "127.0.0.1:$admin_port" \
        "$work/novaedge/bench.yaml" >"$work/novaedge/log" 2>&1 &
      ;;
  esac
  main_pid[$t]=$!
  pids+=("${main_pid[$t]}")
  local ok=""
  for _ in $(seq 100); do
    if curl -sf -o /dev/null "http://127.0.0.1:${port[$t-h1]}/small" &&
      curl -sf -o /dev/null --http2-prior-knowledge "http://127.0.0.1:${port[$t-h2c]}/small" &&
      curl -sfk -o /dev/null --http2 "https://127.0.0.1:${port[$t-tls]}/small"; then
      ok=1; break
    fi
    kill -0 "${main_pid[$t]}" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$ok" ]; then
    echo "$t did not start (or does not answer 200 on h1, h2c and https); its log:" >&2
    cat $(log_of "$t") >&2
    exit 1
  fi
}

stop() { # TARGET
  local pid=${main_pid[$1]} kept=() p
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${pids[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  pids=("${kept[@]}")
}

alive() { # TARGET
  kill -0 "${main_pid[$1]}" 2>/dev/null && return
  echo "$1 died; its log:" >&2
  cat $(log_of "$1") >&2
  exit 1
}

processes() { echo "${main_pid[$1]}" $(pgrep -P "${main_pid[$1]}" || true); }
sum_status() { # FIELD PID...: a /proc/PID/status field (kB) summed over the processes
  local field=$1
  shift
  for p in "$@"; do awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status"; done |
    awk '{s += $1} END {print s + 0}'
}

for t in "${targets[@]}"; do start "$t"; done

# === load runs ===

cat >"$work/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.0f %.0f %.0f %.0f %.0f\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
LUA

# CPU time (user + system, in clock ticks) of the processes PID... so far.
tick=$(getconf CLK_TCK)
cpu_ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s + 0}'; }

active_opens() {
  awk '/^Tcp:/ { if (!col) { for (i = 1; i <= NF; i++) if ($i == "ActiveOpens") col = i }
                 else print $col }' /proc/net/snmp
}

# run_wrk URL [wrk options]: prints `requests rps p50_us p99_us errors`.
run_wrk() {
  local url=$1 out
  shift
  out=$(wrk -t"$threads" -c"$conns" -d"${duration}s" -s "$work/report.lua" "$@" "$url") ||
    { echo "wrk failed: $out" >&2; exit 1; }
  echo "$out" | awk '$1 == "RESULT" && $6 > 0 {exit 1}' || echo "wrk saw errors: $out" >&2
  echo "$out" | awk '$1 == "RESULT" {printf "%d %.1f %d %d %d\n", $2, $2 / ($3 / 1e6), $4, $5, $6}'
}

# run_h2load URL: prints `requests rps p50_us p99_us errors`.
run_h2load() {
  local url=$1 out
  rm -f "$work/h2load.tsv"
  out=$(h2load "${tls13[@]}" -t"$threads" -c"$h2_conns" -m"$h2_streams" -D"$duration" \
    --log-file="$work/h2load.tsv" "$url" 2>&1) || { echo "h2load failed: $out" >&2; exit 1; }
  if [[ $url == https:* ]] && ! grep -q '^Application protocol: h2$' <<<"$out"; then
    echo "h2load did not negotiate h2 with $url:" >&2; echo "$out" >&2; exit 1
  fi
  local rps failed redirects
  rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out")
  failed=$(awk '/^requests:/ {for (i = 1; i <= NF; i++) if ($i ~ /^failed,?$/) print $(i - 1)}' <<<"$out")
  redirects=$(awk '/^status codes:/ {print $5}' <<<"$out")
  [ $((failed + redirects)) = 0 ] || echo "h2load saw errors: $out" >&2
  python3 - "$work/h2load.tsv" "$rps" "$((failed + redirects))" <<'PY'
import sys
durations = sorted(int(line.split("\t")[2]) for line in open(sys.argv[1]) if line.strip())
if not durations:
    sys.exit("h2load logged no request")
def pct(p):
    return durations[min(len(durations) - 1, int(p / 100 * len(durations)))]
print(len(durations), sys.argv[2], pct(50), pct(99), sys.argv[3])
PY
}

run() { # SCENARIO TARGET: prints `requests rps p50_us p99_us errors`
  local s=$1 t=$2 path=/small
  [[ $s == *-64k ]] && path=/64k
  case $s in
    h1 | h1-64k) run_wrk "http://127.0.0.1:${port[$t-h1]}$path" ;;
    close) run_wrk "http://127.0.0.1:${port[$t-h1]}$path" -H 'Connection: close' ;;
    h2c | h2c-64k) run_h2load "http://127.0.0.1:${port[$t-h2c]}$path" ;;
    h2tls | h2tls-64k) run_h2load "https://127.0.0.1:${port[$t-tls]}$path" ;;
  esac
}

# One TLS 1.3 cipher for all: servers differ in whose preference wins.
tls13=(--tls13-ciphers=TLS_AES_128_GCM_SHA256)
for t in "${targets[@]}"; do
  h2load "${tls13[@]}" -n1 -c1 "https://127.0.0.1:${port[$t-tls]}/small" 2>/dev/null |
    awk -v t="$t" -F': ' '/^TLS Protocol/ {p = $2} /^Cipher/ {c = $2} /^Application protocol/ {a = $2}
      END {printf "%-9s negotiates %s, %s, %s\n", t, p, c, a}'
done
echo "warming up"
for t in "${targets[@]}"; do
  wrk -t"$threads" -c"$conns" -d1s "http://127.0.0.1:${port[$t-h1]}/small" >/dev/null
  h2load "${tls13[@]}" -t"$threads" -c"$h2_conns" -m"$h2_streams" -D1 "https://127.0.0.1:${port[$t-tls]}/small" >/dev/null 2>&1
done

printf 'round\tscenario\ttarget\trequests\trps\tp50_us\tp99_us\terrors\topens_per_request\tcpu_us_per_request\n' >"$work/results.tsv"
for round in $(seq "$rounds"); do
  for s in $scenarios; do
    for t in "${targets[@]}"; do
      alive backend
      alive "$t"
      opens_before=$(active_opens)
      cpu_before=$(cpu_ticks $(processes "$t"))
      line=$(run "$s" "$t")
      read -r requests rps p50 p99 errors <<<"$line"
      alive "$t"
      cpu_after=$(cpu_ticks $(processes "$t"))
      opens_after=$(active_opens)
      if [ "$requests" = 0 ]; then
        echo "round $round, $s, $t: no request completed" >&2
        errors=1
      fi
      per_request=$(python3 -c "n = max($requests, 1); print(f'{($opens_after - $opens_before) / n:.2f}\t{($cpu_after - $cpu_before) / $tick / n * 1e6:.1f}')")
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$s" "$t" "$requests" "$rps" \
        "$p50" "$p99" "$errors" "$per_request" | tee -a "$work/results.tsv"
    done
  done
done

declare -A peak
for t in "${targets[@]}"; do
  peak[$t]="$(sum_status VmHWM $(processes "$t")) $(processes "$t" | wc -w)"
done

# === idle connections ===

declare -A idle
if [ "$idle_conns" -gt 0 ]; then
  for t in "${proxies[@]}"; do stop "$t"; done
  for t in "${proxies[@]}"; do
    start "$t"
    echo "idle: $idle_conns connections to a fresh $t"
    idle[$t]=$(python3 "$root/bench/idle_client.py" "${port[$t-h1]}" "$idle_conns" /small $(processes "$t")) ||
      { echo "idle connections to $t failed" >&2; exit 1; }
    alive "$t"
    stop "$t"
  done
fi

[ -n "${RESULTS:-}" ] && cp "$work/results.tsv" "$RESULTS"

# === report ===

peaks=""; for t in "${targets[@]}"; do peaks+="$t=${peak[$t]// /:},"; done
idles=""; for t in "${!idle[@]}"; do idles+="$t=${idle[$t]// /:},"; done
echo
echo "log lines: nginx warnings and errors $(grep -c '\[warn\]\|\[error\]\|\[crit\]' "$work/nginx/error.log" || true)," \
  "haproxy warnings and alerts $(grep -c 'WARNING\|ALERT' "$work/haproxy/log" || true)," \
  "novaedge warnings and errors $(grep -c ' WARN \| ERROR ' "$work/novaedge/log" || true)" \
  "(of $(wc -l <"$work/novaedge/log") lines at its default log level)"
python3 - "$work/results.tsv" "$peaks" "$idles" "$idle_conns" <<PY
import statistics, sys

runs = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])][1:]
peaks = dict(kv.split("=") for kv in sys.argv[2].split(",") if kv)
idles = dict(kv.split("=") for kv in sys.argv[3].split(",") if kv)
idle_conns = int(sys.argv[4])
targets = "${targets[*]}".split()
peers = ["nginx", "haproxy"]
about = {
    "h1": "HTTP/1.1 keep-alive, 64 B",
    "h1-64k": "HTTP/1.1 keep-alive, 64 KiB",
    "h2c": "h2c, 64 B",
    "h2c-64k": "h2c, 64 KiB",
    "h2tls": "HTTPS h2, 64 B",
    "h2tls-64k": "HTTPS h2, 64 KiB",
    "close": "HTTP/1.1 close, 64 B",
}

def median(s, t, col):
    return statistics.median(float(r[col]) for r in runs if r[1] == s and r[2] == t)

print()
print("median of $rounds round(s) of ${duration} s; wrk -t$threads -c$conns; "
      "h2load -t$threads -c$h2_conns -m$h2_streams; errors summed over rounds")
print(f"{'scenario':<28} {'target':<9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
      f"{'opens/req':>9} {'cpu us/req':>10}")
total_errors = 0
for s in "$scenarios".split():
    for t in targets:
        errors = sum(int(r[7]) for r in runs if r[1] == s and r[2] == t)
        total_errors += errors
        print(f"{about[s] if t == targets[0] else '':<28} {t:<9} {median(s, t, 4):>9.0f} "
              f"{median(s, t, 5) / 1000:>8.2f} {median(s, t, 6) / 1000:>8.2f} {errors:>7} "
              f"{median(s, t, 8):>9.2f} {median(s, t, 9):>10.1f}")
    rps = {t: median(s, t, 4) for t in peers}
    p99 = {t: median(s, t, 6) for t in peers}
    best_rps = max(peers, key=rps.get)
    cpu = {t: median(s, t, 9) for t in peers}
    best_p99 = min(peers, key=p99.get)
    best_cpu = min(peers, key=cpu.get)
    print(f"{'':<28} novaedge / best peer: req/s {median(s, 'novaedge', 4) / rps[best_rps]:.2f} "
          f"(vs {best_rps}), p99 {median(s, 'novaedge', 6) / p99[best_p99]:.2f} (vs {best_p99}), "
          f"cpu/req {median(s, 'novaedge', 9) / cpu[best_cpu]:.2f} (vs {best_cpu})")

print()
print("peak RSS after the load runs (VmHWM summed over each target's processes)")
for t in targets:
    kib, n = peaks[t].split(":")
    print(f"  {t:<9} {int(kib) / 1024:8.1f} MiB  ({n} process{'es' if n != '1' else ''})")
best = min(peers, key=lambda t: int(peaks[t].split(":")[0]))
print(f"  novaedge / best peer: {int(peaks['novaedge'].split(':')[0]) / int(peaks[best].split(':')[0]):.2f} (vs {best})")

failed = False
if idles:
    print()
    print(f"idle HTTP/1.1 keep-alive connections: {idle_conns} per freshly started proxy, one request each")
    print(f"  {'proxy':<9} {'RSS before':>12} {'after 2 s':>12} {'after 10 s':>12} {'bytes/conn 2 s':>15} {'10 s':>6} {'held open':>10}")
    per_conn = {}
    for t in ["nginx", "haproxy", "novaedge"]:
        before, at2, at10, held = (int(x) for x in idles[t].split(":"))
        per_conn[t] = [(after - before) * 1024 / idle_conns for after in (at2, at10)]
        print(f"  {t:<9} {before / 1024:>8.1f} MiB {at2 / 1024:>8.1f} MiB {at10 / 1024:>8.1f} MiB {per_conn[t][0]:>15.0f} {per_conn[t][1]:>6.0f} {held:>10}")
        if held != idle_conns:
            print(f"  {t} closed {idle_conns - held} idle connections before the measurement")
            failed = True
    for i, when in enumerate(["2 s", "10 s"]):
        best = min(peers, key=lambda t: per_conn[t][i])
        ratio = per_conn["novaedge"][i] / per_conn[best][i] if per_conn[best][i] > 0 else float("inf")
        print(f"  novaedge / best peer, {when} after the last response: {ratio:.2f} (vs {best})")

if total_errors:
    print(f"\nFAILED: {total_errors} errors (see the errors column)")
    failed = True
sys.exit(1 if failed else 0)
PY
