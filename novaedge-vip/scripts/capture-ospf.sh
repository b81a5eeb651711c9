#!/bin/sh
# Re-captures the OSPF packets BIRD 2 sends to our speaker into tests/data/ospf/ (see the
# README there). Needs root, bird2 and tcpdump. The harness is tests/ospf_capture.rs; it runs
# in network namespaces it removes again.
set -eu
cd "$(dirname "$0")/.."
cargo test -p novaedge-vip --test ospf_capture -- --ignored --test-threads 1 --nocapture
dpkg-query -W -f '${Package} ${Version}\n' bird2 tcpdump
