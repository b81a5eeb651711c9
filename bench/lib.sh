# Shared by the bench scripts (sourced, not run): a scratch directory and the processes a
# script starts, both cleaned up on exit; tools installed on demand; free ports; the release
# binary. Every process a script starts goes into `pids`, and only those are stopped.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# need COMMAND DEBIAN-PACKAGE: installs the package when the command is missing and we are
# root; otherwise says what to install and stops.
need() {
  command -v "$1" >/dev/null && return
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else
    echo "missing $1 (apt-get install $2)" >&2; exit 1
  fi
}

# A TCP port on 127.0.0.1 that was free a moment ago, and not given before in this script
# (those are listed in $work/ports). Taken below the kernel's ephemeral range: a port from
# bind(0) is one an outgoing connection (a load generator's, a proxy's to its backend) may take
# before the process it is meant for binds it.
free_port() {
  python3 - "$work/ports" <<'PY'
import os, random, socket, sys
given = set(open(sys.argv[1]).read().split()) if os.path.exists(sys.argv[1]) else set()
with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
    ephemeral = int(f.read().split()[0])
for _ in range(1000):
    port = random.randrange(10000, max(ephemeral, 11000))
    if str(port) in given:
        continue
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    except OSError:
        continue
    with open(sys.argv[1], "a") as f:
        f.write(f"{port}\n")
    print(port)
    sys.exit(0)
sys.exit("no free port below the ephemeral range")
PY
}

# Builds the release binary once and sets `bin` to it.
build_novaedge() {
  cargo build --release -q -p novaedge --manifest-path "$root/Cargo.toml"
  bin="${CARGO_TARGET_DIR:-$root/target}/release/novaedge"
}

# Manifests for `novaedge run`, in namespace `bench` under a Gateway named `bench`.
#
# gateway_manifest PORT: the Gateway `bench` with one HTTP listener, `http`, on PORT.
gateway_manifest() {
  cat <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench, namespace: bench}
spec:
  gatewayClassName: novaedge
  listeners: [{name: http, protocol: HTTP, port: $1}]
YAML
}

# route_manifest NAME PORT [HOSTNAME] [APP-PROTOCOL]: an HTTPRoute named NAME to a Service
# NAME whose one endpoint is 127.0.0.1:PORT; HOSTNAME limits the route to that host,
# APP-PROTOCOL (kubernetes.io/h2c, say) sets the Service port's appProtocol.
route_manifest() {
  cat <<YAML
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: $1, namespace: bench}
spec:
  parentRefs: [{name: bench}]${3:+
  hostnames: [$3]}
  rules: [{backendRefs: [{name: $1, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: bench}
spec: {ports: [{name: http, port: 80${4:+, appProtocol: $4}}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1, namespace: bench, labels: {kubernetes.io/service-name: $1}}
addressType: IPv4
ports: [{name: http, port: $2}]
endpoints: [{addresses: [127.0.0.1]}]
YAML
}

# tls_secret_manifest NAME CERT-FILE KEY-FILE: a kubernetes.io/tls Secret NAME.
tls_secret_manifest() {
  cat <<YAML
---
apiVersion: v1
kind: Secret
metadata: {name: $1, namespace: bench}
type: kubernetes.io/tls
data: {tls.crt: $(base64 -w0 <"$2"), tls.key: $(base64 -w0 <"$3")}
YAML
}

# callgrind_per_request PID DIR REQUESTS KEEP URL H2LOAD-FLAGS...: instructions per request of
# process PID, run under `valgrind --tool=callgrind --callgrind-out-file=DIR/out.%p`. Warms it
# up with 2,000 requests to URL, zeroes its counters, sends REQUESTS more (h2load; every one must
# be a 2xx), dumps the counters, stops the process, and divides the instructions of that dump
# (every thread's file) by REQUESTS. KEEP, when not empty, is a directory the dumps are copied
# to, for callgrind_annotate.
callgrind_per_request() {
  local pid=$1 dir=$2 requests=$3 keep=$4 url=$5
  shift 5
  h2load "$@" -n2000 "$url" >/dev/null 2>&1
  callgrind_control -z "$pid" >/dev/null 2>&1
  local out
  out=$(h2load "$@" -n"$requests" "$url" 2>/dev/null)
  echo "$out" | grep -q "^status codes: $requests 2xx" \
    || { echo "h2load saw failures:" >&2; echo "$out" >&2; exit 1; }
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  # The dump after zeroing holds only the measured requests.
  local total=0 file events
  for file in "$dir"/out.*.1*; do
    [ -e "$file" ] || continue
    events=$(awk '/^summary:/ {print $2}' "$file")
    total=$((total + ${events:-0}))
  done
  [ "$total" -gt 0 ] || { echo "no callgrind dump in $dir" >&2; ls "$dir" >&2; exit 1; }
  if [ -n "$keep" ]; then
    mkdir -p "$keep"
    cp "$dir"/out.*.1* "$keep/"
  fi
  echo $((total / requests))
}
