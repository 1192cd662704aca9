//! Copying one file-system node with everything that makes it what it is: contents (by
//! reflink where the file system can, else `copy_file_range` over the data extents only, so
//! sparse files stay sparse), owner, mode, xattrs and times with nanoseconds.
//!
//! Sources are named relative to an open directory and never followed if a symlink; the
//! destination must not exist yet. Directories are the caller's: it makes them, fills them,
//! and then gives them their attributes with [`Copier::copy_dir_meta`].

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use strata_archive::whiteout;
use strata_driver_api::{Error, ErrorKind, Result};
use strata_driver_util::clone_file;

use crate::sys::{Kind, Meta, fstat, os};

/// Copies nodes with their metadata, remembering the caller's privilege.
#[derive(Debug)]
pub(crate) struct Copier {
    root: bool,
}

impl Copier {
    pub(crate) fn new() -> Copier {
        Copier {
            root: rustix::process::geteuid().is_root(),
        }
    }

    /// Copies the non-directory `name` in `src_dir` (whose `lstat` is `meta`) to `dst_name` in
    /// `dst_dir`, which must not exist yet: contents, owner, mode, xattrs and times.
    /// Sockets cannot be copied (nor stored in a tar); callers skip them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy_node(
        &self,
        src_dir: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        dst_dir: BorrowedFd<'_>,
        dst_name: &OsStr,
        src_path: &Path,
        dst_path: &Path,
    ) -> Result<()> {
        match meta.kind() {
            Kind::File => self.copy_file(src_dir, name, dst_dir, dst_name, src_path, dst_path),
            Kind::Symlink => {
                let target = rfs::readlinkat(src_dir, name, Vec::new())
                    .map_err(|e| os("readlink", src_path, e))?;
                rfs::symlinkat(target.as_c_str(), dst_dir, dst_name)
                    .map_err(|e| os("symlink", dst_path, e))?;
                self.finish_at(src_dir, name, meta, dst_dir, dst_name, dst_path, false)
            }
            Kind::Fifo | Kind::Char | Kind::Block => {
                let ftype = FileType::from_raw_mode(meta.mode);
                rfs::mknodat(
                    dst_dir,
                    dst_name,
                    ftype,
                    Mode::from_raw_mode(0o600),
                    meta.rdev as rfs::Dev,
                )
                .map_err(|e| os("mknod", dst_path, e))?;
                self.finish_at(src_dir, name, meta, dst_dir, dst_name, dst_path, true)
            }
            Kind::Dir | Kind::Socket => Err(Error::new(
                ErrorKind::NotSupported,
                format!("cannot copy {} as a file", src_path.display()),
            )),
        }
    }

    fn copy_file(
        &self,
        src_dir: BorrowedFd<'_>,
        name: &OsStr,
        dst_dir: BorrowedFd<'_>,
        dst_name: &OsStr,
        src_path: &Path,
        dst_path: &Path,
    ) -> Result<()> {
        // O_NONBLOCK: if a fifo was swapped in since the caller looked, opening must not hang.
        let src_flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let src = match rfs::openat(src_dir, name, src_flags, Mode::empty()) {
            Err(Errno::ACCESS) if !self.root => open_as_owner(src_dir, name, src_flags, src_path)?,
            other => other.map_err(|e| os("open", src_path, e))?,
        };
        // The metadata copied is the open file's, so it matches the contents copied.
        let meta = fstat(src.as_fd(), src_path)?;
        if meta.kind() != Kind::File {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{} changed type while being copied", src_path.display()),
            ));
        }
        let dst_flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dst = rfs::openat(dst_dir, dst_name, dst_flags, Mode::from_raw_mode(0o600))
            .map_err(|e| os("create", dst_path, e))?;
        clone_file::copy_data(&src, &dst, meta.size, src_path, dst_path)?;
        self.chown(
            rfs::fchown(&dst, Some(uid(meta.uid)), Some(gid(meta.gid))),
            dst_path,
        )?;
        rfs::fchmod(&dst, Mode::from_raw_mode(meta.perm()))
            .map_err(|e| os("chmod", dst_path, e))?;
        self.copy_xattrs(
            &XattrAt::Fd(src.as_fd()),
            &XattrAt::Fd(dst.as_fd()),
            src_path,
            dst_path,
        )?;
        rfs::futimens(&dst, &timestamps(&meta)).map_err(|e| os("utimensat", dst_path, e))
    }

    /// Owner, mode (unless a symlink), xattrs and times of a node made by name.
    #[allow(clippy::too_many_arguments)]
    fn finish_at(
        &self,
        src_dir: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        dst_dir: BorrowedFd<'_>,
        dst_name: &OsStr,
        dst_path: &Path,
        chmod: bool,
    ) -> Result<()> {
        let owner = rfs::chownat(
            dst_dir,
            dst_name,
            Some(uid(meta.uid)),
            Some(gid(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        );
        self.chown(owner, dst_path)?;
        if chmod {
            rfs::chmodat(
                dst_dir,
                dst_name,
                Mode::from_raw_mode(meta.perm()),
                AtFlags::empty(),
            )
            .map_err(|e| os("chmod", dst_path, e))?;
        }
        let src_at = XattrAt::Proc(proc_path(src_dir, name));
        let dst_at = XattrAt::Proc(proc_path(dst_dir, dst_name));
        self.copy_xattrs(&src_at, &dst_at, dst_path, dst_path)?;
        rfs::utimensat(
            dst_dir,
            dst_name,
            &timestamps(meta),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| os("utimensat", dst_path, e))
    }

    /// Applies a directory's owner, mode, xattrs and times from `src` to `dst`. Called once
    /// the directory's children are in place, so its times stay as copied.
    pub(crate) fn copy_dir_meta(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        src_path: &Path,
        dst_path: &Path,
    ) -> Result<()> {
        let meta = fstat(src, src_path)?;
        self.chown(
            rfs::fchown(dst, Some(uid(meta.uid)), Some(gid(meta.gid))),
            dst_path,
        )?;
        rfs::fchmod(dst, Mode::from_raw_mode(meta.perm())).map_err(|e| os("chmod", dst_path, e))?;
        self.copy_xattrs(&XattrAt::Fd(src), &XattrAt::Fd(dst), src_path, dst_path)?;
        rfs::futimens(dst, &timestamps(&meta)).map_err(|e| os("utimensat", dst_path, e))
    }

    /// An unprivileged user cannot give a file away: rootless copies keep the caller as owner
    /// (as rootless vfs does), which the view's manifest records, so no change is seen later.
    fn chown(&self, res: rustix::io::Result<()>, path: &Path) -> Result<()> {
        match res {
            Ok(()) => Ok(()),
            Err(Errno::PERM | Errno::INVAL) if !self.root => Ok(()),
            Err(e) => Err(os("chown", path, e)),
        }
    }

    fn copy_xattrs(
        &self,
        src: &XattrAt<'_>,
        dst: &XattrAt<'_>,
        src_path: &Path,
        dst_path: &Path,
    ) -> Result<()> {
        for name in src.list(src_path)? {
            if whiteout::is_overlay_xattr(name.as_bytes()) {
                continue;
            }
            let Some(value) = src.get(&name, src_path)? else {
                continue;
            };
            match dst.set(&name, &value) {
                Ok(()) => {}
                // Without privilege, trusted.* and some security.* names cannot be set: rootless
                // copies go without them, as they go without foreign owners.
                Err(Errno::PERM | Errno::NOTSUP) if !self.root => {}
                Err(e) => return Err(os("setxattr", dst_path, e)),
            }
        }
        Ok(())
    }
}

/// Opens a file its owner may not read (mode 0222, say) for reading, as an unprivileged owner:
/// the file is pinned with `O_PATH`, given `u+r` through its procfs link, reopened through the
/// same link (the very inode pinned, whatever happens to its name), and its mode put back.
/// Root needs none of this; anyone else's file stays unreadable (`chmod` fails).
fn open_as_owner(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlags, path: &Path) -> Result<OwnedFd> {
    let pinned = rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| os("open", path, e))?;
    let meta = fstat(pinned.as_fd(), path)?;
    if meta.kind() != Kind::File {
        return Err(os("open", path, Errno::ACCESS));
    }
    let link = PathBuf::from(format!("/proc/self/fd/{}", pinned.as_raw_fd()));
    rfs::chmod(&link, Mode::from_raw_mode(meta.perm() | 0o400))
        .map_err(|e| os("chmod", path, e))?;
    let opened =
        rfs::open(&link, flags - OFlags::NOFOLLOW, Mode::empty()).map_err(|e| os("open", path, e));
    let restored =
        rfs::chmod(&link, Mode::from_raw_mode(meta.perm())).map_err(|e| os("chmod", path, e));
    let fd = opened?;
    restored?;
    Ok(fd)
}

fn uid(n: u32) -> rfs::Uid {
    rfs::Uid::from_raw(n)
}

fn gid(n: u32) -> rfs::Gid {
    rfs::Gid::from_raw(n)
}

/// The access and modification times of `meta`, for `utimensat`/`futimens`.
pub(crate) fn timestamps(meta: &Meta) -> rfs::Timestamps {
    let ts = |(sec, nsec): (i64, u32)| rfs::Timespec {
        tv_sec: sec,
        tv_nsec: rfs::Nsecs::from(nsec),
    };
    rfs::Timestamps {
        last_access: ts(meta.atime),
        last_modification: ts(meta.mtime),
    }
}

/// A path that names `name` in the open directory `dir` through procfs, for the xattr calls
/// that have no `*at` form (symlinks and device nodes cannot be opened for `fgetxattr`).
fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

enum XattrAt<'a> {
    Fd(BorrowedFd<'a>),
    /// A procfs path whose last component is never followed (the `l*xattr` calls).
    Proc(PathBuf),
}

impl XattrAt<'_> {
    fn list(&self, path: &Path) -> Result<Vec<OsString>> {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let size = match self {
                XattrAt::Fd(fd) => rfs::flistxattr_query(fd),
                XattrAt::Proc(p) => rfs::llistxattr_query(p),
            };
            let size = match size {
                Ok(0) | Err(Errno::NOTSUP) => return Ok(Vec::new()),
                Ok(n) => n,
                Err(e) => return Err(os("listxattr", path, e)),
            };
            buf.resize(size, 0);
            let got = match self {
                XattrAt::Fd(fd) => rfs::flistxattr(fd, &mut buf),
                XattrAt::Proc(p) => rfs::llistxattr(p, &mut buf),
            };
            match got {
                Ok(n) => {
                    buf.truncate(n);
                    break;
                }
                Err(Errno::RANGE) => continue,
                Err(e) => return Err(os("listxattr", path, e)),
            }
        }
        Ok(buf
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| OsString::from_vec(n.to_vec()))
            .collect())
    }

    fn get(&self, name: &OsStr, path: &Path) -> Result<Option<Vec<u8>>> {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let size = match self {
                XattrAt::Fd(fd) => rfs::fgetxattr_query(fd, name),
                XattrAt::Proc(p) => rfs::lgetxattr_query(p, name),
            };
            let size = match size {
                Ok(n) => n,
                // Listed but gone, or not readable by us: nothing to copy.
                Err(Errno::NODATA) => return Ok(None),
                Err(e) => return Err(os("getxattr", path, e)),
            };
            if size == 0 {
                return Ok(Some(Vec::new()));
            }
            buf.resize(size, 0);
            let got = match self {
                XattrAt::Fd(fd) => rfs::fgetxattr(fd, name, &mut buf),
                XattrAt::Proc(p) => rfs::lgetxattr(p, name, &mut buf),
            };
            match got {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                Err(Errno::RANGE) => continue,
                Err(Errno::NODATA) => return Ok(None),
                Err(e) => return Err(os("getxattr", path, e)),
            }
        }
    }

    fn set(&self, name: &OsStr, value: &[u8]) -> rustix::io::Result<()> {
        let flags = rfs::XattrFlags::empty();
        match self {
            XattrAt::Fd(fd) => rfs::fsetxattr(fd, name, value, flags),
            XattrAt::Proc(p) => rfs::lsetxattr(p, name, value, flags),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{open_dir, stat_at};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn copies_sparse_file_contents_and_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(8 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", (8 << 20) - 4).unwrap();
        drop(f);
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o4751)).unwrap();
        let dir = open_dir(tmp.path()).unwrap();
        let meta = stat_at(dir.as_fd(), OsStr::new("src"), &src).unwrap();
        let c = Copier::new();
        c.copy_node(
            dir.as_fd(),
            OsStr::new("src"),
            &meta,
            dir.as_fd(),
            OsStr::new("dst"),
            &src,
            &tmp.path().join("dst"),
        )
        .unwrap();
        let dst = tmp.path().join("dst");
        let data = std::fs::read(&dst).unwrap();
        assert_eq!(data.len(), 8 << 20);
        assert_eq!(&data[..4], b"head");
        assert_eq!(&data[data.len() - 4..], b"tail");
        let (a, b) = (
            std::fs::metadata(&src).unwrap(),
            std::fs::metadata(&dst).unwrap(),
        );
        assert_eq!(a.mode(), b.mode());
        assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()));
        // Sparse: far fewer blocks than 8 MiB of data would take.
        assert!(
            b.blocks() * 512 < 1 << 20,
            "copy is not sparse: {} blocks",
            b.blocks()
        );
    }
}
