#!/usr/bin/env bash
# What request observability costs, in instructions per request: the steady figure behind
# `bench/observe.sh`. Runs novaedge-core's `observe_bench` example under callgrind (valgrind),
# warms one engine up, zeroes the counters, sends a fixed number of requests to that engine
# alone, and divides the instructions the whole proxy process executed (every thread: the
# runtime's and the access log writer) by the request count. The echo backend runs natively,
# in a process of its own, so that the count is the proxy's alone. Once for the engine with
# every observer off, once for the engine with the defaults (request ids only), once for the
# engine with request ids, metrics and a JSON access log.
# Instruction counts do not depend on what else the machine is doing, so the ratio is exact
# where requests per second on a shared machine wobble by several percent.
#
#   bench/observe_instructions.sh [requests] [h1|h2]
#
# NOVAEDGE_BENCH_OBSERVE (all, metrics, log) picks the observers of the second engine, as in
# observe_bench. Needs valgrind and h2load (Debian: valgrind, nghttp2-client).
set -euo pipefail

requests=${1:-20000}
proto=${2:-h1}
source "$(dirname "$0")/lib.sh"

need valgrind valgrind
need h2load nghttp2-client

# OBSERVE_BENCH_BIN measures another build of the example (an older commit's, say) instead.
if [ -n "${OBSERVE_BENCH_BIN:-}" ]; then
  bench_bin=$OBSERVE_BENCH_BIN
else
  cargo build --release -q -p novaedge-core --example observe_bench --manifest-path "$root/Cargo.toml"
  bench_bin="${CARGO_TARGET_DIR:-$root/target}/release/examples/observe_bench"
fi

case "$proto" in
  h1) flags=(--h1 -c8) ;;
  h2) flags=(-c8 -m10) ;;
  *) echo "protocol is h1 or h2, not $proto" >&2; exit 2 ;;
esac

# The backend: an instance of the example whose own engines stay idle.
RUST_LOG=warn "$bench_bin" "$work/backend.log" >"$work/backend.ports" 2>"$work/backend.err" &
pids+=($!)
for _ in $(seq 100); do
  [ -s "$work/backend.ports" ] && break
  sleep 0.1
done
read -r _ _ backend_kv _ <"$work/backend.ports" || { cat "$work/backend.err" >&2; exit 1; }
backend="127.0.0.1:${backend_kv#backend=}"

# instructions ENGINE(off|ids|on): instructions per request through that engine.
instructions() {
  local which=$1 dir="$work/$1" pid port
  mkdir -p "$dir"
  (cd "$dir" && RUST_LOG=warn exec valgrind --tool=callgrind --callgrind-out-file="$dir/out.%p" \
    "$bench_bin" "$dir/access.log" "$backend" >"$dir/ports" 2>"$dir/valgrind.log") &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 600); do
    [ -s "$dir/ports" ] && break
    sleep 0.1
  done
  read -r off_kv on_kv _ ids_kv <"$dir/ports" || { cat "$dir/valgrind.log" >&2; exit 1; }
  case "$which" in
    off) port=${off_kv#off=} ;;
    ids) port=${ids_kv#ids=} ;;
    on) port=${on_kv#on=} ;;
  esac
  # OBSERVE_CALLGRIND_KEEP=DIR keeps the dumps there, for callgrind_annotate.
  callgrind_per_request "$pid" "$dir" "$requests" \
    "${OBSERVE_CALLGRIND_KEEP:+$OBSERVE_CALLGRIND_KEEP/$which}" \
    "http://127.0.0.1:$port/?size=64" "${flags[@]}"
}

off=$(instructions off)
ids=$(instructions ids)
on=$(instructions on)
ratio() { python3 -c "print(f'{$1/$2:.3f}')"; }
printf '%-30s %9s %9s %9s %8s %8s\n' "instructions per request" "off" "ids" "on" "on/off" "on/ids"
printf '%-30s %9s %9s %9s %8s %8s\n' "$proto, observers: ${NOVAEDGE_BENCH_OBSERVE:-all}" \
  "$off" "$ids" "$on" "$(ratio "$on" "$off")" "$(ratio "$on" "$ids")"
echo "off: every observer off; ids: the defaults (request ids); on: request ids, metrics, JSON access log"
