#!/usr/bin/env bash
# What request observability costs: the same echo backend through two engines in one process
# (novaedge-core's `observe_bench` example), one with every observer off, one with request ids,
# metrics and a JSON access log to a file. Alternates load runs between them so that drift
# (thermal, other load) hits both alike, and prints requests per second for each and the ratio
# on/off, for HTTP/1.1 (wrk) and h2c (h2load). Compare ratios, not absolute numbers.
#
# The backend answers a fixed 64-byte body (`?size=64`), as a real one would: its JSON echo of
# the request headers would charge the proxy's added `x-request-id` to the backend's side.
#
# A second figure is steadier on a shared machine: the CPU time (user + system) the process
# spends per request, read from /proc before and after a fixed number of requests (h2load -n)
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

RUST_LOG=warn "$bench_bin" "$work/access.log" >"$work/ports" 2>"$work/bench.log" &
bench_pid=$!
pids+=($bench_pid)
for _ in $(seq 100); do
  [ -s "$work/ports" ] && break
  sleep 0.1
done
read -r off_kv on_kv _ <"$work/ports" || { cat "$work/bench.log"; exit 1; }
off=${off_kv#off=}
on=${on_kv#on=}

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
mean() { python3 -c "import sys; v=[float(x) for x in sys.argv[1:]]; print(f'{sum(v)/len(v):.2f}')" "$@"; }
ratio() { python3 -c "print(f'{float($1)/float($2):.3f}')"; }

echo "warming up"
wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$off/?size=64" >/dev/null
wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$on/?size=64" >/dev/null

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

h1_off=(); h1_on=(); h2_off=(); h2_on=(); c1_off=(); c1_on=(); c2_off=(); c2_on=()
for round in $(seq "$rounds"); do
  echo "round $round of $rounds"
  h1_off+=("$(wrk_rps "$off")"); h1_on+=("$(wrk_rps "$on")")
  h2_off+=("$(h2_rps "$off")"); h2_on+=("$(h2_rps "$on")")
  c1_off+=("$(cpu_us "$off" --h1)"); c1_on+=("$(cpu_us "$on" --h1)")
  c2_off+=("$(cpu_us "$off" -m10)"); c2_on+=("$(cpu_us "$on" -m10)")
done

printf '%-28s %12s %12s %8s\n' "protocol" "off rps" "on rps" "on/off"
a=$(mean "${h1_off[@]}"); b=$(mean "${h1_on[@]}")
printf '%-28s %12s %12s %8s\n' "HTTP/1.1 (wrk, c=$conns)" "$a" "$b" "$(ratio "$b" "$a")"
a=$(mean "${h2_off[@]}"); b=$(mean "${h2_on[@]}")
printf '%-28s %12s %12s %8s\n' "h2c (h2load, c=$conns m=10)" "$a" "$b" "$(ratio "$b" "$a")"
echo
printf '%-28s %12s %12s %8s\n' "CPU per request (us)" "off" "on" "off/on"
a=$(mean "${c1_off[@]}"); b=$(mean "${c1_on[@]}")
printf '%-28s %12s %12s %8s\n' "HTTP/1.1 (h2load --h1)" "$a" "$b" "$(ratio "$a" "$b")"
a=$(mean "${c2_off[@]}"); b=$(mean "${c2_on[@]}")
printf '%-28s %12s %12s %8s\n' "h2c (h2load -m10)" "$a" "$b" "$(ratio "$a" "$b")"

kill -INT "$bench_pid"
wait "$bench_pid" || true
tail -n +2 "$work/ports"
echo "access log lines written: $(wc -l <"$work/access.log")"
