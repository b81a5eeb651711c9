#!/usr/bin/env bash
# Route scale: how long a configuration of N HTTPRoutes (and N Services, each with its own
# EndpointSlice) takes to be applied and served, the memory the proxy then holds, and the
# request rate with that table loaded. For each N (default 1 1000 10000):
#
#   stages   the time and memory of each stage of the apply path, in a process of its own
#            (bins/novaedge/examples/scale_stages.rs): read and parse the YAML, translate,
#            validate, protobuf encode and decode (controller -> agent), engine apply (first and
#            reload); then, as `agent:` rows, a node agent's part alone in a child process that
#            holds nothing else (decode, validate, apply, reload): an agent pod's time and memory
#   start    `novaedge run` from exec to the last route answering 200, and its VmRSS / VmHWM
#   reload   from writing one more HTTPRoute next to the others to that route answering 200
#            (includes the file watcher's 200 ms quiet period), and VmRSS / VmHWM after it
#   load     wrk, requests spread over every route of the table (random host, one of four
#            paths, all answered 200 by the echo backend), and VmRSS after the load
#
# The configurations come from bench/gen_routes.py (every tenth route also has a regular
# expression match). Run it on a quiet machine; compare the rows of one run with each other.
#
#   bench/scale.sh [duration-seconds] [connections] [sizes...]
#
# To compare two builds in one run, point NOVAEDGE_BIN and SCALE_STAGES_BIN at copies of the
# other build's `novaedge` and `scale_stages`, run once with and once without.
#
# Needs wrk (Debian: wrk); installs it if missing and root.
set -euo pipefail

duration=${1:-10}
conns=${2:-64}
shift $(( $# > 2 ? 2 : $# ))
if [ $# -gt 0 ]; then sizes=("$@"); else sizes=(1 1000 10000); fi
source "$(dirname "$0")/lib.sh"

need wrk wrk

if [ -n "${NOVAEDGE_BIN:-}" ]; then
  bin=$NOVAEDGE_BIN
  stages=${SCALE_STAGES_BIN:?set with NOVAEDGE_BIN}
else
  build_novaedge
  cargo build --release -q -p novaedge --example scale_stages --manifest-path "$root/Cargo.toml"
  stages="${CARGO_TARGET_DIR:-$root/target}/release/examples/scale_stages"
fi

backend=$(free_port)
"$bin" echo --listen "127.0.0.1:$backend" --name scale 2>"$work/echo.log" &
pids+=($!)

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
mib() { # pid field: VmRSS or VmHWM in MiB
  awk -v f="$2:" '$1 == f {printf "%.1f", $2 / 1024}' "/proc/$1/status"
}
# Polls until `Host: HOST` on PORT answers 200, at most 60 s.
wait_200() { # port host
  for _ in $(seq 6000); do
    curl -sf -o /dev/null -H "Host: $2" "http://127.0.0.1:$1/api/v1/items" && return 0
    sleep 0.01
  done
  echo "no answer from $2 on port $1" >&2
  return 1
}

# The wrk script: requests spread over the routes, formatted once per thread.
cat >"$work/spread.lua" <<'LUA'
local routes = tonumber(os.getenv("ROUTES"))
local paths = {"/api/v1/items", "/healthz", "/static/app.js", "/index.html"}
local requests = {}
local next_request = 1
function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
  for i = 1, 4096 do
    local host = "r" .. math.random(0, routes - 1) .. ".scale.test"
    requests[i] = wrk.format("GET", paths[math.random(#paths)], {Host = host})
  end
end
function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end
LUA

results=()
for n in "${sizes[@]}"; do
  dir="$work/routes-$n"
  port=$(free_port)
  python3 "$root/bench/gen_routes.py" "$n" "$dir" --listen-port "$port" --backend-port "$backend" \
    --regex-every 10
  echo "== $n routes"
  "$stages" "$dir"

  admin=$(free_port)
  start=$(now)
  RUST_LOG=warn "$bin" run --bind 127.0.0.1 --admin-addr "127.0.0.1:$admin" "$dir" \
    2>"$work/proxy-$n.log" &
  proxy=$!
  pids+=($proxy)
  wait_200 "$port" "r$((n - 1)).scale.test" || { cat "$work/proxy-$n.log"; exit 1; }
  start_s=$(elapsed "$start" "$(now)")
  start_rss=$(mib $proxy VmRSS) start_hwm=$(mib $proxy VmHWM)

  # One more route, in a file of its own: the whole directory is read and applied again. The
  # file is moved in, so that the watcher never sees it half written.
  python3 "$root/bench/gen_routes.py" 1 "$work/extra-$n" --first "$n" --listen-port "$port" \
    --backend-port "$backend" --regex-every 10
  start=$(now)
  mv "$work/extra-$n/extra.yaml" "$dir/extra.yaml"
  wait_200 "$port" "r$n.scale.test" || { cat "$work/proxy-$n.log"; exit 1; }
  reload_s=$(elapsed "$start" "$(now)")
  reload_rss=$(mib $proxy VmRSS) reload_hwm=$(mib $proxy VmHWM)

  out=$(ROUTES=$n wrk -t1 -c"$conns" -d"${duration}s" -s "$work/spread.lua" "http://127.0.0.1:$port/")
  if echo "$out" | grep -qE 'Non-2xx|Socket errors'; then
    echo "wrk saw failures:" >&2; echo "$out" >&2; exit 1
  fi
  rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "Latency" {print $2}')
  load_rss=$(mib $proxy VmRSS)
  kill "$proxy"; wait "$proxy" 2>/dev/null || true
  errors=$(grep -c ' ERROR ' "$work/proxy-$n.log" || true)
  results+=("$(printf '%7s %9s %9s %9s %9s %9s %9s %10s %9s %9s %6s' "$n" "$start_s" \
    "$start_rss" "$start_hwm" "$reload_s" "$reload_rss" "$reload_hwm" "$rps" "$p50" \
    "$load_rss" "$errors")")
done

echo
echo "== end to end (novaedge run; times in s, memory in MiB; wrk -t1 -c$conns ${duration}s)"
printf '%7s %9s %9s %9s %9s %9s %9s %10s %9s %9s %6s\n' routes start RSS HWM reload RSS HWM \
  "req/s" "mean lat" "RSS load" errors
printf '%s\n' "${results[@]}"
