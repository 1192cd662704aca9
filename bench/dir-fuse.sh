#!/usr/bin/env bash
# Benchmark: the dir driver's fuse mode (drivers/dir/examples/fuse_bench.rs) against fuse-overlayfs
# over the same lower directories, in one run, on a fresh journaled ext4 made on a loop device
# (never the machine's root fs): sequential read of 512 MiB (cold and warm cache), a walk + lstat
# of a 10,000-file tree, 1,000 small-file copy-ups.
#
#   sudo bench/dir-fuse.sh [RUNS]     default: 5 runs, best of each
set -euo pipefail
runs=${1:-5}
[ "$(id -u)" = 0 ] || { echo "bench/dir-fuse.sh: needs root (loop device, mount, drop_caches)" >&2; exit 1; }
command -v fuse-overlayfs >/dev/null || {
    echo "bench/dir-fuse.sh: needs fuse-overlayfs: apt-get install fuse-overlayfs" >&2
    exit 1
}
cd "$(dirname "$0")/.."
# --bins: the FUSE helper (strata-dir-fuse), which the driver finds beside target/release/examples.
cargo build --release -q -p strata-driver-dir --bins --examples
bench=$PWD/target/release/examples/fuse_bench

. bench/lib.sh
fresh_ext4 dir-fuse 4G
echo "kernel $(uname -r), fresh ext4 on $(findmnt -n -o SOURCE "$mnt")"
"$bench" "$mnt/b" "$runs"
