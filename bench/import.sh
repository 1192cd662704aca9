#!/usr/bin/env bash
# Benchmark: `strata import` of a gzip layer against GNU `tar -xzf` + sync of the same layer, in
# the same run, on a fresh journaled ext4 made on a loop device (never the machine's root fs).
#
#   sudo bench/import.sh [SOURCE_DIR] [RUNS]     default: /usr/include, 3 runs
#
# Both sides decompress gzip and make the data durable (strata: one syncfs per layer; tar: sync
# -f). strata also hashes the uncompressed stream (the diffID) and writes its layer record.
set -euo pipefail
src=${1:-/usr/include}
runs=${2:-3}
[ "$(id -u)" = 0 ] || { echo "bench/import.sh: needs root (loop device, mount)" >&2; exit 1; }
cd "$(dirname "$0")/.."
cargo build --release -q -p strata-cli --bin strata
strata=$PWD/target/release/strata

. bench/lib.sh
fresh_ext4 import 8G

layer=$work/layer.tar.gz
tar --numeric-owner -czf "$layer" -C "$(dirname "$src")" "$(basename "$src")"
entries=$(tar -tzf "$layer" | wc -l)
echo "layer: $src, $entries entries, $(du -h "$layer" | cut -f1) gzip'd; $runs runs each on fresh ext4 (loop)"

now() { date +%s.%N; }
declare -A best
keep_best() { # name start end
    local t; t=$(echo "$3 - $2" | bc)
    best[$1]=$(echo "if (${best[$1]:-999999} > $t) $t else ${best[$1]:-999999}" | bc)
}
for i in $(seq "$runs"); do
    d=$mnt/tar$i; mkdir "$d"
    t0=$(now); tar -xzf "$layer" -C "$d" --numeric-owner; sync -f "$d"; keep_best tar-x "$t0" "$(now)"
    r=$mnt/strata$i
    t0=$(now); id=$("$strata" --root "$r/root" --runroot "$r/run" --driver dir import "$layer"); keep_best strata-import "$t0" "$(now)"
    sync -f "$mnt"; echo 3 > /proc/sys/vm/drop_caches
    t0=$(now); tar --numeric-owner --sort=name -cf "$mnt/t$i.tar" -C "$d" .; keep_best tar-c "$t0" "$(now)"
    sync -f "$mnt"; echo 3 > /proc/sys/vm/drop_caches
    t0=$(now); "$strata" --root "$r/root" --runroot "$r/run" --driver dir export "$id" -o "$mnt/s$i.tar"; keep_best strata-export "$t0" "$(now)"
    rm -rf "$d" "$r" "$mnt/t$i.tar" "$mnt/s$i.tar"
    sync -f "$mnt"
done
row() { printf '%-34s %7.3f s   %-26s %7.3f s   ratio %.2f\n' "$1" "${best[$2]}" "$3" "${best[$4]}" "$(echo "${best[$2]} / ${best[$4]}" | bc -l)"; }
row "strata import (gzip, dir driver)" strata-import "tar -xzf + sync" tar-x
row "strata export (uncompressed)" strata-export "tar -cf --sort=name" tar-c
echo "(best of $runs; ratio = strata / GNU tar, lower is better; caches dropped before each export)"
