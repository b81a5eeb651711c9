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

# A TCP port on 127.0.0.1 that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Builds the release binary once and sets `bin` to it.
build_novaedge() {
  cargo build --release -q -p novaedge --manifest-path "$root/Cargo.toml"
  bin="${CARGO_TARGET_DIR:-$root/target}/release/novaedge"
}
