# Shared by the bench scripts (source it): a fresh journaled ext4 on a loop device, never the
# machine's root filesystem, removed on exit with whatever a failed run left mounted in it.
#
#   fresh_ext4 NAME SIZE     sets $work (a temp dir) and $mnt (the ext4's mountpoint)

fresh_ext4() {
    work=$(mktemp -d "/tmp/strata-bench-$1.XXXXXX")
    mnt=$work/mnt
    trap _fresh_ext4_cleanup EXIT
    truncate -s "$2" "$work/fs.img"
    mkfs.ext4 -q -F "$work/fs.img"
    mkdir "$mnt"
    mount -o loop "$work/fs.img" "$mnt"
}

_fresh_ext4_cleanup() {
    # Views a bench left (each cleans up itself; this is for a failed run), then the fs.
    set +e
    if mountpoint -q "$mnt"; then
        findmnt -rn -o TARGET | grep "^$mnt/" | sort -r | while read -r m; do umount -l "$m"; done
        umount "$mnt"
    fi
    rm -rf "$work"
}
