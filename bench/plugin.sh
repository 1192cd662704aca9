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
work=$(mktemp -d /tmp/strata-bench.XXXXXX)
mnt=$work/mnt
cleanup() {
    umount "$mnt" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
truncate -s 4G "$work/fs.img"
mkfs.ext4 -q -F "$work/fs.img"
mkdir "$mnt"
mount -o loop "$work/fs.img" "$mnt"
target/release/examples/abi_bench "$mnt" "$runs"
