#!/usr/bin/env bash
# Every cargo-deny check of deny.toml, the RustSec advisories included. The advisories check
# fetches the advisory database (a git repository) at run time, so it needs a network that
# reaches it; the test command (scripts/test.sh) runs the other three checks, which need none.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deny >/dev/null || cargo install --locked --quiet cargo-deny@0.20.2
exec cargo deny --locked check "$@"
