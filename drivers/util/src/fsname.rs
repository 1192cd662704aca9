//! Filesystem names from `statfs` magic numbers, for `status()` ("Backing Filesystem") and
//! for the checks a driver makes on its home (overlayfs cannot be an upper layer).
//!
//! The names are Docker's (`graphdriver.FsNames`): `extfs` for the one magic ext2, ext3 and
//! ext4 share, since `statfs` cannot tell them apart.

use std::path::Path;

use strata_driver_api::{Error, Result};

/// `EXT2_SUPER_MAGIC`, shared by ext2, ext3 and ext4.
pub const EXTFS_MAGIC: u64 = 0xEF53;
/// `XFS_SUPER_MAGIC`.
pub const XFS_MAGIC: u64 = 0x5846_5342;
/// `BTRFS_SUPER_MAGIC`.
pub const BTRFS_MAGIC: u64 = 0x9123_683E;
/// `TMPFS_MAGIC`.
pub const TMPFS_MAGIC: u64 = 0x0102_1994;
/// `OVERLAYFS_SUPER_MAGIC`.
pub const OVERLAYFS_MAGIC: u64 = 0x794C_7630;

const NAMES: &[(u64, &str)] = &[
    (EXTFS_MAGIC, "extfs"),
    (XFS_MAGIC, "xfs"),
    (BTRFS_MAGIC, "btrfs"),
    (TMPFS_MAGIC, "tmpfs"),
    (OVERLAYFS_MAGIC, "overlayfs"),
    (0x2FC1_2FC1, "zfs"),
    (0xF2F5_2010, "f2fs"),
    (0xCA45_1A4E, "bcachefs"),
    (0x6969, "nfs"),
    (0x6573_5546, "fuse"),
    (0x8584_58F6, "ramfs"),
    (0x7371_7368, "squashfs"),
    (0xF15F, "ecryptfs"),
];

/// The `statfs` magic (`f_type`) of the filesystem holding `path`.
pub fn magic(path: &Path) -> Result<u64> {
    let st = rustix::fs::statfs(path).map_err(|e| Error::os("statfs", path, e))?;
    // `f_type` is signed on some targets and wider than the 32-bit magic on others.
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 as u64 & 0xffff_ffff)
}

/// The name of a `statfs` magic number: `extfs`, `xfs`, ..., or `unknown (0x...)`.
pub fn name(magic: u64) -> String {
    match NAMES.iter().find(|(m, _)| *m == magic) {
        Some((_, name)) => (*name).to_string(),
        None => format!("unknown ({magic:#x})"),
    }
}

/// The name of the filesystem holding `path` ([`magic`], then [`name`]).
pub fn of(path: &Path) -> Result<String> {
    Ok(name(magic(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_driver_api::ErrorKind;

    #[test]
    fn names_magics() {
        assert_eq!(name(0xEF53), "extfs");
        assert_eq!(name(XFS_MAGIC), "xfs");
        assert_eq!(name(OVERLAYFS_MAGIC), "overlayfs");
        assert_eq!(name(0x6573_5546), "fuse");
        assert_eq!(name(0x1234), "unknown (0x1234)");
    }

    #[test]
    fn names_a_real_filesystem() {
        let n = of(Path::new("/proc")).unwrap();
        assert_eq!(
            n, "unknown (0x9fa0)",
            "procfs is not a backing filesystem we name"
        );
        let err = of(Path::new("/no/such/dir")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.message().contains("statfs /no/such/dir"));
    }
}
