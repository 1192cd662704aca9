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

work=$(mktemp -d /tmp/strata-bench-overlay.XXXXXX)
mnt=$work/mnt
cleanup() {
    # Views the bench left (it cleans up itself; this is for a failed run), then the fs.
    set +e
    if mountpoint -q "$mnt"; then
        findmnt -rn -o TARGET | grep "^$mnt/" | sort -r | while read -r m; do umount -l "$m"; done
        umount "$mnt"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
truncate -s 4G "$work/fs.img"
mkfs.ext4 -q -F "$work/fs.img"
mkdir "$mnt"
mount -o loop "$work/fs.img" "$mnt"
echo "kernel $(uname -r), fresh ext4 on $(findmnt -n -o SOURCE "$mnt")"
"$bench" "$mnt/b" "$@"
