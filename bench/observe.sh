#!/usr/bin/env bash
# What request observability costs: the same echo backend through three engines in one process
# (novaedge-core's `observe_bench` example, the backend in another): `off` with every observer off, `ids` with the
# defaults (request ids only), `on` with request ids, metrics and a JSON access log to a file.
# Alternates load runs between them so that drift (thermal, other load) hits all alike, and
# prints requests per second for each and the ratios on/off (everything) and on/ids (what
# turning on metrics and the access log costs), for HTTP/1.1 (wrk) and h2c (h2load). Compare
# ratios, not absolute numbers; `bench/observe_instructions.sh` gives the steadier count of
# instructions per request.
#
# The backend answers a fixed 64-byte body (`?size=64`), as a real one would: its JSON echo of
# the request headers would charge the proxy's added `x-request-id` to the backend's side.
#
# A second figure is steadier on a shared machine: the CPU time (user + system) the proxy's
# process spends per request, read from /proc before and after a fixed number of requests (h2load -n)
# to one engine, alternating. Throughput at saturation follows it when the proxy is the
# bottleneck; other load on the machine skews it much less than requests per second.
#
#   bench/observe.sh [duration-seconds] [connections] [rounds]
#
# Needs wrk and h2load (Debian: wrk, nghttp2-client); installs them if missing and root.
set -euo pipefail

duration=${1:-5}
conns=${2:-64}
rounds=${3:-3}
source "$(dirname "$0")/lib.sh"

need wrk wrk
need h2load nghttp2-client

cargo build --release -q -p novaedge-core --example observe_bench --manifest-path "$root/Cargo.toml"
bench_bin="${CARGO_TARGET_DIR:-$root/target}/release/examples/observe_bench"

# start_bench NAME [BACKEND-ADDR]: runs the example, its ports into $work/NAME.ports.
start_bench() {
  RUST_LOG=warn "$bench_bin" "$work/$1.log" ${2:+"$2"} >"$work/$1.ports" 2>"$work/$1.err" &
  pids+=($!)
  for _ in $(seq 100); do
    [ -s "$work/$1.ports" ] && return
    sleep 0.1
  done
  cat "$work/$1.err" >&2
  exit 1
}
# The backend runs in a process of its own, so that the measured process's CPU time is the
# proxy's alone: an instance of the example whose engines are left idle.
start_bench backend
read -r _ _ backend_kv _ <"$work/backend.ports"
start_bench proxy "127.0.0.1:${backend_kv#backend=}"
bench_pid=${pids[-1]}
read -r off_kv on_kv _ ids_kv <"$work/proxy.ports"
off=${off_kv#off=}
on=${on_kv#on=}
ids=${ids_kv#ids=}

wrk_rps() { # port
  local out
  out=$(wrk -t1 -c"$conns" -d"${duration}s" "http://127.0.0.1:$1/?size=64")
  if echo "$out" | grep -qE 'Non-2xx|Socket errors'; then
    echo "wrk saw failures:" >&2; echo "$out" >&2; exit 1
  fi
  echo "$out" | awk '/^Requests\/sec:/ {print $2}'
}
h2_rps() { # port
  local out
  out=$(h2load -c"$conns" -m10 -D"$duration" "http://127.0.0.1:$1/?size=64" 2>/dev/null)
  echo "$out" | grep -q '^status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' \
    || { echo "h2load saw failures:" >&2; echo "$out" >&2; exit 1; }
  echo "$out" | awk '/^finished in/ {gsub(",", "", $4); print $4}'
}

echo "warming up"
for port in "$off" "$ids" "$on"; do
  wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$port/?size=64" >/dev/null
done

tick=$(getconf CLK_TCK)
cpu_seconds() { awk -v t="$tick" '{print ($14 + $15) / t}' "/proc/$bench_pid/stat"; }
# cpu_us PORT H2LOAD-FLAGS...: microseconds of process CPU per request for 100,000 requests.
cpu_us() {
  local port=$1 n=100000 before after out
  shift
  before=$(cpu_seconds)
  out=$(h2load "$@" -c"$conns" -n"$n" "http://127.0.0.1:$port/?size=64" 2>/dev/null)
  after=$(cpu_seconds)
  echo "$out" | grep -q "^status codes: $n 2xx" \
    || { echo "h2load saw failures:" >&2; echo "$out" >&2; exit 1; }
  python3 -c "print(f'{($after - $before) / $n * 1e6:.2f}')"
}

declare -A h1 h2 c1 c2
for round in $(seq "$rounds"); do
  echo "round $round of $rounds"
  for engine in off ids on; do
    port=${!engine}
    h1[$engine]+=" $(wrk_rps "$port")"
    h2[$engine]+=" $(h2_rps "$port")"
    c1[$engine]+=" $(cpu_us "$port" --h1)"
    c2[$engine]+=" $(cpu_us "$port" -m10)"
  done
done

# row LABEL ARRAY-NAME INVERT: the means of off, ids and on; the ratios of the means on/off and
# on/ids; and on/ids round by round (median, lowest, highest): rounds alternate the engines, so
# a round's own ratio is what drift disturbs least, and the spread shows how far to trust the
# figure. For CPU per request, INVERT=1 turns the ratios over (off/on, ids/on), so that below 1
# is a cost in both tables.
row() {
  local -n values=$2
  python3 - "$1" "$3" "${values[off]}" "${values[ids]}" "${values[on]}" <<'PY'
import statistics, sys
label, invert = sys.argv[1], sys.argv[2] == "1"
off, ids, on = ([float(v) for v in arg.split()] for arg in sys.argv[3:6])
mean = lambda v: sum(v) / len(v)
ratio = (lambda a, b: b / a) if invert else (lambda a, b: a / b)
rounds = [ratio(o, i) for o, i in zip(on, ids)]
print(f"{label:<30} {mean(off):>10.2f} {mean(ids):>10.2f} {mean(on):>10.2f}"
      f" {ratio(mean(on), mean(off)):>8.3f} {ratio(mean(on), mean(ids)):>8.3f}"
      f"   {statistics.median(rounds):.3f} ({min(rounds):.3f}-{max(rounds):.3f})")
PY
}
printf '%-30s %10s %10s %10s %8s %8s   %s\n' "requests/s" "off" "ids" "on" "on/off" "on/ids" \
  "on/ids by round: median (range)"
row "HTTP/1.1 (wrk, c=$conns)" h1 0
row "h2c (h2load, c=$conns m=10)" h2 0
echo
printf '%-30s %10s %10s %10s %8s %8s   %s\n' "CPU per request (us)" "off" "ids" "on" "off/on" \
  "ids/on" "ids/on by round: median (range)"
row "HTTP/1.1 (h2load --h1)" c1 1
row "h2c (h2load -m10)" c2 1
echo "off: every observer off; ids: the defaults (request ids); on: request ids, metrics, JSON access log"

kill -INT "$bench_pid"
wait "$bench_pid" || true
tail -n +2 "$work/proxy.ports"
echo "access log lines written: $(wc -l <"$work/proxy.log")"
