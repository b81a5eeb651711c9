#!/usr/bin/env bash
# Runs one fuzz target of this directory for a while:
#
#   fuzz/run.sh TARGET [SECONDS] [extra libFuzzer flags...]
#
# Targets: router, normalize_path, manifests, snapshot. The corpus grows in
# fuzz/corpus/TARGET (not committed); `manifests` is also seeded with every YAML file of
# examples/ and config/. Crashes land in fuzz/artifacts/TARGET. Needs cargo-fuzz
# (`cargo install cargo-fuzz --locked`); builds with the nightly toolchain if there is one,
# else with RUSTC_BOOTSTRAP=1 on stable.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh TARGET [SECONDS]}
seconds=${2:-60}
shift $(( $# > 1 ? 2 : 1 ))

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

corpus=corpus/$target
mkdir -p "$corpus"
seeds=()
if [ "$target" = manifests ]; then
  seeds=(seeds/manifests)
  rm -rf seeds/manifests && mkdir -p seeds/manifests
  find ../examples ../config -name '*.yaml' -size -64k -exec cp --backup=numbered -t seeds/manifests {} +
fi
exec cargo "${toolchain[@]}" fuzz run "$target" "$corpus" "${seeds[@]}" -- \
  -max_total_time="$seconds" -rss_limit_mb=4096 "$@"
