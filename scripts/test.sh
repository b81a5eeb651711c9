#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what the tests need (idempotent),
# checks formatting and lints, then runs all tests, doctests and each benchmark once.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use (one per line in scripts/test-packages.txt; '#' comments).
packages=$(grep -v '^\s*#' scripts/test-packages.txt | xargs -r || true)
missing=()
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A one-shot build gains nothing from incremental state, which would double the target's size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# No panic reachable from network input or manifests: no unwrap/expect in library and binary
# code (tests may). The few invariants left (a future polled after completion, start-up) say so
# with `#[allow(clippy::expect_used, reason = "...")]`.
cargo clippy --workspace --lib --bins --locked -- -D warnings -D clippy::unwrap_used -D clippy::expect_used
# Supply chain (deny.toml): licenses, duplicate versions, sources. The advisories check needs
# the RustSec database from the network: scripts/deny.sh runs it where that is reachable.
command -v cargo-deny >/dev/null || cargo install --locked --quiet cargo-deny@0.20.2
cargo deny --locked check bans licenses sources
# Unit, integration and bench targets (criterion runs each benchmark once in test mode).
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
# The API documentation builds without broken or private links.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
