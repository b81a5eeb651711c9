#!/usr/bin/env bash
# What request observability costs: the same echo backend through two engines in one process
# (novaedge-core's `observe_bench` example), one with every observer off, one with request ids,
# metrics and a JSON access log to a file. Alternates load runs between them so that drift
# (thermal, other load) hits both alike, and prints requests per second for each and the ratio
# on/off, for HTTP/1.1 (wrk) and h2c (h2load). Compare ratios, not absolute numbers.
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
  out=$(wrk -t1 -c"$conns" -d"${duration}s" "http://127.0.0.1:$1/")
  if echo "$out" | grep -qE 'Non-2xx|Socket errors'; then
    echo "wrk saw failures:" >&2; echo "$out" >&2; exit 1
  fi
  echo "$out" | awk '/^Requests\/sec:/ {print $2}'
}
h2_rps() { # port
  local out
  out=$(h2load -c"$conns" -m10 -D"$duration" "http://127.0.0.1:$1/" 2>/dev/null)
  echo "$out" | grep -q '^status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' \
    || { echo "h2load saw failures:" >&2; echo "$out" >&2; exit 1; }
  echo "$out" | awk '/^finished in/ {gsub(",", "", $4); print $4}'
}
mean() { python3 -c "import sys; v=[float(x) for x in sys.argv[1:]]; print(f'{sum(v)/len(v):.0f}')" "$@"; }
ratio() { python3 -c "print(f'{float($1)/float($2):.3f}')"; }

echo "warming up"
wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$off/" >/dev/null
wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$on/" >/dev/null

h1_off=(); h1_on=(); h2_off=(); h2_on=()
for round in $(seq "$rounds"); do
  echo "round $round of $rounds"
  h1_off+=("$(wrk_rps "$off")"); h1_on+=("$(wrk_rps "$on")")
  h2_off+=("$(h2_rps "$off")"); h2_on+=("$(h2_rps "$on")")
done

printf '%-28s %12s %12s %8s\n' "protocol" "off rps" "on rps" "on/off"
a=$(mean "${h1_off[@]}"); b=$(mean "${h1_on[@]}")
printf '%-28s %12s %12s %8s\n' "HTTP/1.1 (wrk, c=$conns)" "$a" "$b" "$(ratio "$b" "$a")"
a=$(mean "${h2_off[@]}"); b=$(mean "${h2_on[@]}")
printf '%-28s %12s %12s %8s\n' "h2c (h2load, c=$conns m=10)" "$a" "$b" "$(ratio "$b" "$a")"

kill -INT "$bench_pid"
wait "$bench_pid" || true
tail -n +2 "$work/ports"
echo "access log lines written: $(wc -l <"$work/access.log")"
