#!/usr/bin/env bash
# What request observability costs in throughput: requests per second and CPU per request with
# metrics and a JSON access log on, against the same proxy with them off, measured side by side.
#
# Two identical proxy processes (novaedge-core's `observe_bench` example, three engines each:
# `off` with every observer off, `ids` with the defaults (request ids only), `on` with request
# ids, metrics and a JSON access log to a file) forward to one echo backend in a third process.
# A run loads the `on` engine of one proxy and a baseline engine (`ids`, or `off`) of the other
# AT THE SAME TIME, with the same load (h2load, half the connections each, for the same
# seconds); the next run swaps the processes. Both halves of a run share whatever else the
# machine does at that moment, so a shared, noisy machine moves both alike, where runs taken in
# turn differ by more than the cost measured. The kernel shares the CPU between the two
# processes' threads, so the cheaper engine serves more requests: the ratio of requests per
# second is the throughput cost. The CPU time (user + system, from /proc) each process spent per
# request is the second figure.
#
# The backend answers a fixed 64-byte body (`?size=64`), as a real one would: its JSON echo of
# the request headers would charge the proxy's added `x-request-id` to the backend's side.
#
#   bench/observe.sh [seconds-per-run] [connections] [rounds]
#
# OBSERVE_PROTOCOLS (default "h1 h2c") and OBSERVE_BASES (default "ids off") pick the lines
# measured, so that the runs go to the one in question: `OBSERVE_PROTOCOLS=h2c
# OBSERVE_BASES=ids bench/observe.sh 5 64 30`. OBSERVE_KEEP=DIR keeps each line's runs
# (`DIR/h2c-ids.runs`, one run per line: rps and CPU per request of both sides), appended to
# what is there, to pool runs of several invocations.
#
# Prints, per protocol (HTTP/1.1, h2c) and baseline, the mean requests/s and CPU per request of
# each side, and on/baseline for requests/s and baseline/on for CPU (below 1: a cost), as the
# mean and the median of the runs' own ratios with their range.
# `bench/observe_instructions.sh` gives the steady count of instructions per request.
#
# Needs h2load (Debian: nghttp2-client); installs it if missing and root.
set -euo pipefail

secs=${1:-5}
conns=${2:-64}
rounds=${3:-6}
protocols=${OBSERVE_PROTOCOLS:-h1 h2c}
bases=${OBSERVE_BASES:-ids off}
for word in $protocols; do
  case $word in h1 | h2c) ;; *) echo "OBSERVE_PROTOCOLS: $word is neither h1 nor h2c" >&2; exit 2 ;; esac
done
for word in $bases; do
  case $word in ids | off) ;; *) echo "OBSERVE_BASES: $word is neither ids nor off" >&2; exit 2 ;; esac
done
source "$(dirname "$0")/lib.sh"

need h2load nghttp2-client

cargo build --release -q -p novaedge-core --example observe_bench --manifest-path "$root/Cargo.toml"
bench_bin="${CARGO_TARGET_DIR:-$root/target}/release/examples/observe_bench"

# start_bench NAME [BACKEND-ADDR]: runs the example; its ports go to $work/NAME.ports, its
# access log to $work/NAME.log, its pid to bench_pid[NAME].
declare -A bench_pid
start_bench() {
  RUST_LOG=warn "$bench_bin" "$work/$1.log" ${2:+"$2"} >"$work/$1.ports" 2>"$work/$1.err" &
  pids+=($!)
  bench_pid[$1]=$!
  for _ in $(seq 100); do
    [ -s "$work/$1.ports" ] && return
    sleep 0.1
  done
  cat "$work/$1.err" >&2
  exit 1
}
# The backend runs in a process of its own (an instance of the example whose engines stay
# idle), so that each proxy process's CPU time is the proxy's alone.
start_bench backend
read -r _ _ backend_kv _ <"$work/backend.ports"
declare -A port
for proxy in a b; do
  start_bench "$proxy" "127.0.0.1:${backend_kv#backend=}"
  read -r off_kv on_kv _ ids_kv <"$work/$proxy.ports"
  port[$proxy/off]=${off_kv#off=}
  port[$proxy/on]=${on_kv#on=}
  port[$proxy/ids]=${ids_kv#ids=}
done

tick=$(getconf CLK_TCK)
# cpu_ticks PROXY: its user and system CPU time so far, in clock ticks.
cpu_ticks() { awk '{print $14, $15}' "/proc/${bench_pid[$1]}/stat"; }

# load OUT PORT H2LOAD-FLAGS...: h2load on PORT for $secs seconds; its requests/s into OUT.
# Every request must succeed: a fast stream of 404s or 502s is not throughput.
load() {
  local out=$1 port=$2 result
  shift 2
  result=$(h2load "$@" -c"$((conns / 2))" -D"$secs" "http://127.0.0.1:$port/?size=64" 2>/dev/null)
  echo "$result" | grep -q '^status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' \
    || { echo "h2load saw failures:" >&2; echo "$result" >&2; exit 1; }
  echo "$result" | awk '/^finished in/ {gsub(",", "", $4); print $4}' >"$out"
}

# side_by_side LABEL BASE H2LOAD-FLAGS...: one run with BASE in proxy a and `on` in proxy b,
# one swapped; appends "rps_base rps_on user_base sys_base user_on sys_on" (CPU in us per
# request) per run to $work/LABEL.runs.
side_by_side() {
  local label=$1 base=$2 swap base_proxy on_proxy b0 o0 b1 o1
  shift 2
  for swap in 0 1; do
    if [ "$swap" = 0 ]; then base_proxy=a on_proxy=b; else base_proxy=b on_proxy=a; fi
    b0=$(cpu_ticks "$base_proxy")
    o0=$(cpu_ticks "$on_proxy")
    load "$work/base.rps" "${port[$base_proxy/$base]}" "$@" &
    local base_load=$!
    load "$work/on.rps" "${port[$on_proxy/on]}" "$@" &
    local on_load=$!
    wait "$base_load" "$on_load"
    b1=$(cpu_ticks "$base_proxy")
    o1=$(cpu_ticks "$on_proxy")
    python3 - "$(cat "$work/base.rps")" "$(cat "$work/on.rps")" "$b0" "$b1" "$o0" "$o1" \
      "$tick" "$secs" >>"$work/$label.runs" <<'PY'
import sys
base, on = map(float, sys.argv[1:3])
b0, b1, o0, o1 = ([float(t) for t in arg.split()] for arg in sys.argv[3:7])
tick, secs = map(float, sys.argv[7:9])
us = lambda ticks, rps: ticks / tick / (rps * secs) * 1e6
print(base, on, us(b1[0] - b0[0], base), us(b1[1] - b0[1], base),
      us(o1[0] - o0[0], on), us(o1[1] - o0[1], on))
PY
  done
}

echo "warming up"
for proxy in a b; do
  for engine in off ids on; do
    h2load --h1 -c"$conns" -n20000 "http://127.0.0.1:${port[$proxy/$engine]}/?size=64" >/dev/null
  done
done

for round in $(seq "$rounds"); do
  echo "round $round of $rounds"
  for base in $bases; do
    for proto in $protocols; do
      case $proto in
        h1) side_by_side "h1-$base" "$base" --h1 ;;
        h2c) side_by_side "h2c-$base" "$base" -m10 ;;
      esac
    done
  done
done

python3 - "$work" "$conns" "$protocols" "$bases" <<'PY'
import statistics, sys
work, conns = sys.argv[1], sys.argv[2]
protocols, bases = sys.argv[3].split(), sys.argv[4].split()
def summary(ratios):
    return (f"{statistics.mean(ratios):.3f}  {statistics.median(ratios):.3f}"
            f" ({min(ratios):.3f}-{max(ratios):.3f})")
print(f"{'side by side, ' + conns + ' connections':<28} {'base rps':>9} {'on rps':>9}"
      f"   {'on/base rps: mean  median (range)':<36} {'base us':>8} {'on us':>7}"
      f"   {'base/on CPU: mean  median (range)':<36} user+sys us: base, on")
for proto, name in (("h1", "HTTP/1.1"), ("h2c", "h2c (10 streams)")):
    if proto not in protocols:
        continue
    for base in (b for b in ("ids", "off") if b in bases):
        runs = [list(map(float, line.split()))
                for line in open(f"{work}/{proto}-{base}.runs")]
        rps = [on / b for b, on, *_ in runs]
        cpu = [(bu + bs) / (ou + os) for _, _, bu, bs, ou, os in runs]
        mean = lambda i: statistics.mean(r[i] for r in runs)
        print(f"{name + ', on vs ' + base:<28} {mean(0):>9.0f} {mean(1):>9.0f}"
              f"   {summary(rps):<36} {mean(2) + mean(3):>8.2f} {mean(4) + mean(5):>7.2f}"
              f"   {summary(cpu):<36} {mean(2):.1f}+{mean(3):.1f}, {mean(4):.1f}+{mean(5):.1f}")
print(f"runs per line: {len(runs)} ({len(runs) // 2} rounds, each side in each process once)")
print("ids: the defaults (request ids); off: every observer off; "
      "on: request ids, metrics and a JSON access log")
PY

if [ -n "${OBSERVE_KEEP:-}" ]; then
  mkdir -p "$OBSERVE_KEEP"
  for runs in "$work"/*.runs; do
    cat "$runs" >>"$OBSERVE_KEEP/$(basename "$runs")"
  done
fi

for proxy in a b; do
  kill -INT "${bench_pid[$proxy]}"
  wait "${bench_pid[$proxy]}" || true
  echo "proxy $proxy: $(tail -n +2 "$work/$proxy.ports" | tr '\n' ' ')"
  echo "proxy $proxy: access log lines written: $(wc -l <"$work/$proxy.log")"
done
