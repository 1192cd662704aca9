#!/usr/bin/env bash
# Benchmark: the overlay driver (drivers/overlay/examples/overlay_bench.rs) on a fresh journaled ext4
# made on a loop device (never the machine's root fs): the lifecycle cycle on a 10-layer chain
# against the dir driver, native against naive diff, and mount time of deep chains.
#
#   sudo bench/overlay.sh [cycle|diff|deep]...   (default: all three)
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "bench/overlay.sh: needs root (loop device, mount)" >&2; exit 1; }
cd "$(dirname "$0")/.."
cargo build --release -q -p strata-driver-overlay --example overlay_bench
bench=$PWD/target/release/examples/overlay_bench

. bench/lib.sh
fresh_ext4 overlay 4G
echo "kernel $(uname -r), fresh ext4 on $(findmnt -n -o SOURCE "$mnt")"
"$bench" "$mnt/b" "$@"
