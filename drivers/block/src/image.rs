//! Image files: cloning one (reflink, else a sparse copy of the allocated extents), making the
//! scratch image a base layer starts from, and measuring what an image really takes on disk.
//!
//! This module works on files only; it never decides which layer an image belongs to.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{Mode, OFlags};
use strata_driver_api::{Error, ErrorKind, Result};

use crate::config::Fs;
use crate::{loopdev, sys};

pub use strata_driver_util::clone_file::{CloneMethod, clone_file, probe_reflink};

/// The bytes a file takes on disk (`st_blocks * 512`), not its apparent size.
pub fn allocated(path: &Path) -> Result<u64> {
    let st = rustix::fs::stat(path).map_err(|e| Error::os("stat", path, e))?;
    Ok(st.st_blocks as u64 * 512)
}

/// The apparent size of a file.
pub fn apparent(path: &Path) -> Result<u64> {
    let st = rustix::fs::stat(path).map_err(|e| Error::os("stat", path, e))?;
    Ok(st.st_size as u64)
}

/// The mount options the driver uses for `fs`: ext4 never starts its lazy inode-table zeroing
/// (it would allocate every table in the sparse image; the tables read as zeros already, as
/// holes); xfs clones share their parent's UUID, which xfs refuses twice unless `nouuid`.
pub fn fs_options(fs: Fs) -> &'static [&'static str] {
    match fs {
        Fs::Ext4 => &["noinit_itable"],
        Fs::Xfs => &["nouuid"],
    }
}

/// The mkfs command line for an image of `fs` at `path`.
///
/// ext4: 4 KiB blocks (what the loop device is configured with; mke2fs would pick 1 KiB for a
/// small image), no reserved blocks (a layer has no root-only reserve to keep), lazy inode
/// tables and journal (the file is fresh and sparse, so both read as zeros already and nothing
/// needs writing), no discard (a new sparse file has nothing to discard). The journal stays:
/// a container layer is written while mounted and must survive a crash.
/// xfs: 4 KiB sectors (the loop device's block size; xfs refuses a device whose sectors are
/// bigger than its own), `-K` (no discard), otherwise the defaults.
pub fn mkfs_command(fs: Fs, path: &Path) -> Command {
    let mut cmd = match fs {
        Fs::Ext4 => {
            let mut c = Command::new("mkfs.ext4");
            c.args([
                "-q",
                "-F",
                "-b",
                "4096",
                "-m",
                "0",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
                "-L",
                "strata",
            ]);
            c
        }
        Fs::Xfs => {
            let mut c = Command::new("mkfs.xfs");
            c.args(["-q", "-f", "-K", "-s", "size=4096", "-L", "strata"]);
            c
        }
    };
    cmd.arg(path);
    cmd
}

/// Whether `path` holds an `fs` superblock: a cheap check that a kept scratch image is whole.
pub fn has_magic(path: &Path, fs: Fs) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut buf = [0u8; 1024 + 58];
    if f.read_exact(&mut buf).is_err() {
        return false;
    }
    magic_ok(&buf, fs)
}

fn magic_ok(head: &[u8], fs: Fs) -> bool {
    match fs {
        // s_magic, little-endian 0xEF53, at byte 56 of the superblock at 1024.
        Fs::Ext4 => head.get(1024 + 56..1024 + 58) == Some(&[0x53, 0xEF][..]),
        Fs::Xfs => head.get(..4) == Some(&b"XFSB"[..]),
    }
}

/// Whether the ext4 image at `path` needs its journal replayed (`needs_recovery` set: it was
/// mounted read-write when the machine went down, or copied while mounted). Such an image
/// cannot be mounted from a read-only device. Always false for xfs (its log is replayed only
/// on a writable device too, but it has no cheap flag to read).
pub fn needs_recovery(path: &Path, fs: Fs) -> Result<bool> {
    if fs != Fs::Ext4 {
        return Ok(false);
    }
    let mut f = File::open(path).map_err(|e| Error::os("open", path, e))?;
    let mut head = [0u8; 1024 + 0x64];
    f.read_exact(&mut head)
        .map_err(|e| Error::os("read superblock", path, e))?;
    Ok(ext4_recover_flag(&head))
}

/// `s_feature_incompat & EXT4_FEATURE_INCOMPAT_RECOVER` of the superblock at 1024.
fn ext4_recover_flag(head: &[u8]) -> bool {
    head.get(1024 + 0x60..1024 + 0x64)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x4 != 0)
        .unwrap_or(false)
}

/// The scratch image's file name for `fs` and `size`.
pub fn scratch_name(fs: Fs, size: u64) -> String {
    format!("{}-{size}.img", fs.as_str())
}

/// Returns the scratch image for `fs` and `size` in `dir`, making it first when it is missing,
/// the wrong size or has no superblock: mkfs on a fresh sparse file, then one mount to make its
/// root what an empty layer's root is (no `lost+found`, 0755, owned by this process), then a
/// rename into place. `tmp_tag` makes the temporary names unique to the caller.
pub fn scratch(dir: &Path, fs: Fs, size: u64, tmp_tag: &str) -> Result<PathBuf> {
    let path = dir.join(scratch_name(fs, size));
    if apparent(&path).ok() == Some(size) && has_magic(&path, fs) {
        return Ok(path);
    }
    let tmp = dir.join(format!(".{}.tmp-{tmp_tag}", scratch_name(fs, size)));
    let mnt = dir.join(format!(".mnt-{tmp_tag}"));
    let result = make_scratch(&tmp, &mnt, fs, size);
    let _ = std::fs::remove_dir(&mnt);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path).map_err(|e| Error::os("rename", &tmp, e))?;
    sync_dir(dir)?;
    Ok(path)
}

fn make_scratch(tmp: &Path, mnt: &Path, fs: Fs, size: u64) -> Result<()> {
    let _ = std::fs::remove_file(tmp);
    let f = File::create_new(tmp).map_err(|e| Error::os("create", tmp, e))?;
    f.set_len(size)
        .map_err(|e| Error::os("ftruncate", tmp, e))?;
    drop(f);
    let mut cmd = mkfs_command(fs, tmp);
    let out = cmd
        .output()
        .map_err(|e| Error::io(format!("run {:?}", cmd.get_program()), e))?;
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{:?} for {} failed ({}): {}",
                cmd.get_program(),
                tmp.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    std::fs::create_dir(mnt).map_err(|e| Error::os("mkdir", mnt, e))?;
    let dev = loopdev::attach(tmp, false, "scratch")?;
    sys::mount(&dev.path(), mnt, fs, false, fs_options(fs))?;
    drop(dev);
    let prepared = prepare_root(mnt);
    let umounted = sys::unmount(mnt, tmp);
    prepared?;
    umounted?;
    let f = File::open(tmp).map_err(|e| Error::os("open", tmp, e))?;
    f.sync_all().map_err(|e| Error::os("fsync", tmp, e))
}

fn prepare_root(root: &Path) -> Result<()> {
    let lf = root.join("lost+found");
    match std::fs::remove_dir(&lf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::os("rmdir", &lf, e)),
    }
    let uid = rustix::process::geteuid();
    let gid = rustix::process::getegid();
    rustix::fs::chown(root, Some(uid), Some(gid)).map_err(|e| Error::os("chown", root, e))?;
    rustix::fs::chmod(root, Mode::from_raw_mode(0o755)).map_err(|e| Error::os("chmod", root, e))?;
    let d = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| Error::os("open", root, e))?;
    rustix::fs::syncfs(&d).map_err(|e| Error::os("syncfs", root, e))
}

/// fsyncs a directory, making the renames in it durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let d = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| Error::os("open", dir, e))?;
    rustix::fs::fsync(&d).map_err(|e| Error::os("fsync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_is_checked_per_fs() {
        let mut head = vec![0u8; 1024 + 58];
        assert!(!magic_ok(&head, Fs::Ext4));
        head[1024 + 56] = 0x53;
        head[1024 + 57] = 0xEF;
        assert!(magic_ok(&head, Fs::Ext4));
        assert!(!magic_ok(&head, Fs::Xfs));
        head[..4].copy_from_slice(b"XFSB");
        assert!(magic_ok(&head, Fs::Xfs));
        assert!(!magic_ok(&head[..10], Fs::Ext4));
    }

    #[test]
    fn recover_flag_is_bit_2_of_incompat() {
        let mut head = vec![0u8; 1024 + 0x64];
        assert!(!ext4_recover_flag(&head));
        head[1024 + 0x60] = 0x02 | 0x40;
        assert!(!ext4_recover_flag(&head));
        head[1024 + 0x60] |= 0x04;
        assert!(ext4_recover_flag(&head));
        assert!(!ext4_recover_flag(&head[..100]));
    }

    #[test]
    fn scratch_names_carry_fs_and_size() {
        assert_eq!(scratch_name(Fs::Ext4, 64 << 20), "ext4-67108864.img");
        assert_eq!(scratch_name(Fs::Xfs, 1), "xfs-1.img");
    }
}
