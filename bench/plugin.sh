#!/usr/bin/env bash
# Benchmark: the plugin ABI's overhead. The vfs example driver called directly against the same
# driver loaded from its .so, in one run, on a fresh journaled ext4 made on a loop device.
#
#   sudo bench/plugin.sh [RUNS]     default: 5 runs; medians, ratios of medians, min-max
set -euo pipefail
runs=${1:-5}
[ "$(id -u)" = 0 ] || { echo "bench/plugin.sh: needs root (loop device, mount)" >&2; exit 1; }
cd "$(dirname "$0")/.."
cargo build --release -q -p strata-vfs-plugin --examples
. bench/lib.sh
fresh_ext4 plugin 4G
target/release/examples/abi_bench "$mnt" "$runs"
