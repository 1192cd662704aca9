//! The system calls this driver is built from: mounting a [`Stack`] either way, unmounting,
//! telling a mount point, and reading small files. Every error names the call and the path.
//! Detaching everything under a directory is `strata_driver_util::mountinfo::detach_under`;
//! small files are written with `strata_archive::atomic`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, UnmountFlags, fsconfig_create,
    fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
};
use strata_driver_api::{Error, ErrorKind, Result};

use crate::opts::{Options, Stack};

/// A syscall error on `path`.
pub(crate) fn os(call: &str, path: &Path, e: Errno) -> Error {
    Error::os(call, path, std::io::Error::from(e))
}

/// The `statfs` magic of a path's filesystem, and overlayfs's (which cannot be an upper).
pub(crate) use strata_driver_util::fsname::{OVERLAYFS_MAGIC, magic as fs_magic};

/// Opens an overlay file-system context (loading the module if needed).
pub(crate) fn open_overlay(path: &Path) -> Result<OwnedFd> {
    fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| os("fsopen overlay", path, e))
}

/// Whether the kernel takes `lowerdir+` (Linux 6.8+): set one on a fresh context, never mount.
pub(crate) fn has_lowerdir_plus(dir: &Path) -> Result<bool> {
    let fs = open_overlay(dir)?;
    match fsconfig_set_string(&fs, "lowerdir+", dir) {
        Ok(()) => Ok(true),
        Err(Errno::INVAL | Errno::NOENT) => Ok(false),
        Err(e) => Err(os("fsconfig lowerdir+", dir, e)),
    }
}

/// The messages the kernel logged on an fs context, joined on one line (best effort).
fn context_log(fs: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..16 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => break,
        }
    }
    out.join("; ")
}

/// Mounts `stack` (absolute paths) on `target` with `fsopen`/`fsconfig`/`fsmount`/`move_mount`,
/// one `lowerdir+` at a time.
pub(crate) fn mount_fsconfig(
    stack: &Stack<PathBuf>,
    opts: &Options,
    read_only: bool,
    target: &Path,
) -> Result<()> {
    let fs = open_overlay(target)?;
    let fail = |what: &str, e: Errno| {
        let log = context_log(&fs);
        let err = os(&format!("fsconfig {what} for"), target, e);
        if log.is_empty() {
            err
        } else {
            err.context(log)
        }
    };
    fsconfig_set_string(&fs, "index", "off").map_err(|e| fail("index=off", e))?;
    for (key, value) in &opts.params {
        match value {
            Some(v) => fsconfig_set_string(&fs, key.as_str(), v.as_str()),
            None => fsconfig_set_flag(&fs, key.as_str()),
        }
        .map_err(|e| fail(key, e))?;
    }
    for lower in &stack.lowers {
        fsconfig_set_string(&fs, "lowerdir+", lower).map_err(|e| fail("lowerdir+", e))?;
    }
    if let Some((upper, work)) = &stack.upper {
        fsconfig_set_string(&fs, "upperdir", upper).map_err(|e| fail("upperdir", e))?;
        fsconfig_set_string(&fs, "workdir", work).map_err(|e| fail("workdir", e))?;
    }
    fsconfig_create(&fs).map_err(|e| fail("create", e))?;
    let mut attrs = opts.attrs;
    if read_only {
        attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
    }
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| os("fsmount overlay for", target, e))?;
    move_mount(
        mnt.as_fd(),
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| os("move_mount onto", target, e))
}

/// Lazily unmounts `target`; not mounted is fine.
pub(crate) fn unmount(target: &Path) -> Result<()> {
    match rustix::mount::unmount(target, UnmountFlags::DETACH) {
        Ok(()) | Err(Errno::INVAL | Errno::NOENT) => Ok(()),
        Err(e) => Err(os("umount2", target, e)),
    }
}

/// Whether `path` is the root of a mount (missing is `false`).
pub(crate) fn is_mount_root(path: &Path) -> Result<bool> {
    match rustix::fs::statx(
        CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    ) {
        Ok(st) => {
            let mask = st.stx_attributes_mask;
            let attrs = st.stx_attributes;
            if mask.contains(StatxAttributes::MOUNT_ROOT) {
                return Ok(attrs.contains(StatxAttributes::MOUNT_ROOT));
            }
            // Kernels before 5.8: a different device than the parent's.
            let parent = path.parent().unwrap_or(Path::new("/"));
            let p = rustix::fs::stat(parent).map_err(|e| os("stat", parent, e))?;
            Ok((st.stx_dev_major, st.stx_dev_minor)
                != (rustix::fs::major(p.st_dev), rustix::fs::minor(p.st_dev)))
        }
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(false),
        Err(e) => Err(os("statx", path, e)),
    }
}

/// Reads a small metadata file; a missing one is `NotFound`, an empty one `Corrupt`.
pub(crate) fn read_small(path: &Path) -> Result<String> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::os("read", path, e))?;
    let s = s.trim_end_matches('\n').to_string();
    if s.is_empty() {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(s)
}

/// Whether the file system under `dir` reports file types in `readdir` (`d_type`), which
/// overlayfs needs to see whiteouts, told by reading `dir` only (nothing is created): any
/// entry other than `.` and `..` with a known type says yes; entries all of unknown type say
/// no; a directory with no other entry cannot tell (`None`).
pub(crate) fn supports_d_type(dir: &Path) -> Result<Option<bool>> {
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| os("open", dir, e))?;
    let mut d = rustix::fs::Dir::read_from(&fd).map_err(|e| os("opendir", dir, e))?;
    let mut answer = None;
    while let Some(entry) = d.read() {
        let entry = entry.map_err(|e| os("readdir", dir, e))?;
        if matches!(entry.file_name().to_bytes(), b"." | b"..") {
            continue;
        }
        if entry.file_type() != rustix::fs::FileType::Unknown {
            return Ok(Some(true));
        }
        answer = Some(false);
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d_type_is_read_from_what_is_there() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(supports_d_type(tmp.path()).unwrap(), None);
        std::fs::create_dir(tmp.path().join("l")).unwrap();
        // tmpfs, ext4, xfs (ftype=1), btrfs: all report types.
        assert_eq!(supports_d_type(tmp.path()).unwrap(), Some(true));
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
