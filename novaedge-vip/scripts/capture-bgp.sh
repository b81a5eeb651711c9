#!/bin/sh
# Re-captures the BGP messages GoBGP and BIRD 2 send to our speaker into
# tests/data/captured/{gobgp,bird}/ (see the README there). Needs root, gobgpd, bird2 and
# tcpdump. The harness is tests/capture.rs; it runs in network namespaces it removes again.
set -eu
cd "$(dirname "$0")/.."
cargo test -p novaedge-vip --test capture -- --ignored --test-threads 1 --nocapture
dpkg-query -W -f '${Package} ${Version}\n' gobgpd bird2 tcpdump
