//! Reading directory trees through directory file descriptors.
//!
//! Every lookup below an open [`Dir`] is one `*at` call relative to it, and no symlink is ever
//! followed below the directory a walk starts from: a tree that changes while it is read (a
//! directory swapped for a symlink to `/etc`, a file swapped for a FIFO) cannot make a reader
//! describe or read anything outside it. Errors name the call and the full path.
//!
//! - [`Dir`]: an open directory: its sorted entries, `lstat`/`readlink`/xattrs of a child,
//!   opening a child directory or file (never through a symlink);
//! - [`DirStack`]: the directories of a depth-first walk, at most [`MAX_OPEN`] of them open
//!   however deep it goes; [`DirCursor`]: the parent directories of a sorted list of paths;
//! - [`Stat`]: `lstat` in plain integers.
//!
//! The archive writer and the naive diff walk trees with these helpers; drivers can too.
//! Xattrs of a child that cannot be opened (a symlink, a device) are read through
//! `/proc/self/fd/<dir>/<name>`, so nothing above the open directory is looked up again; where
//! `/proc` is not mounted, through the full path. This module only reads: it never creates,
//! changes or removes anything.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

pub use rustix::fs::FileType;

use crate::{Error, Result};

mod stack;
mod xattr;

pub use stack::{DirCursor, DirStack, MAX_OPEN, components};
use xattr::{Target, get_xattr, read_xattrs};

/// What `lstat` says about a file, in plain integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The device of the filesystem holding the file.
    pub dev: u64,
    /// The inode number.
    pub ino: u64,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    /// Number of hard links.
    pub nlink: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The device number a character or block device stands for.
    pub rdev: u64,
    /// Size in bytes (the target's length for a symlink).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
}

impl Stat {
    /// The file type from the mode.
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    /// The permission bits with setuid, setgid and sticky (`mode & 0o7777`).
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }

    /// The (device, inode) pair that identifies the file.
    pub fn id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

impl From<rustix::fs::Stat> for Stat {
    #[allow(clippy::unnecessary_cast)] // field widths differ between architectures
    fn from(st: rustix::fs::Stat) -> Stat {
        Stat {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            nlink: st.st_nlink as u64,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            rdev: st.st_rdev as u64,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as u32,
        }
    }
}

/// One name in a directory, as `getdents` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name (never `.` or `..`).
    pub name: OsString,
    /// The inode number from the directory entry (`d_ino`).
    pub ino: u64,
    /// The type from the directory entry (`d_type`); `Unknown` on filesystems without it.
    pub file_type: FileType,
}

/// Extended attributes as (name, value) pairs, sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// An open directory and its path (the path is only for error messages).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Dir {
    /// Opens the directory at `path`. Symlinks in `path` itself are followed: it is the
    /// caller's, trusted; nothing below it will be.
    pub fn open(path: &Path) -> Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::os("open", path, e))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory's path, as given to [`Dir::open`] and extended by [`Dir::open_dir`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory, for messages.
    pub fn child_path(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Opens the subdirectory `name`; a symlink is refused (`ELOOP`/`ENOTDIR`).
    pub fn open_dir(&self, name: &OsStr) -> Result<Dir> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::os("open", &self.child_path(name), e))?;
        Ok(Dir {
            fd,
            path: self.child_path(name),
        })
    }

    /// Opens `name` for reading without following a symlink and without blocking on a FIFO
    /// or a device (`O_NOFOLLOW | O_NONBLOCK | O_NOCTTY`). Check the type with `fstat` after.
    pub fn open_file(&self, name: &OsStr) -> Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::os("open", &self.child_path(name), e))?;
        Ok(File::from(fd))
    }

    /// Every name in the directory except `.` and `..`, sorted bytewise.
    pub fn entries(&self) -> Result<Vec<DirEntry>> {
        let err = |e: Errno| Error::os("readdir", &self.path, e);
        let mut dir = rustix::fs::Dir::read_from(&self.fd).map_err(err)?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(err)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            out.push(DirEntry {
                name: OsString::from_vec(name.to_vec()),
                ino: entry.ino(),
                file_type: entry.file_type(),
            });
        }
        out.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(out)
    }

    /// `fstat` of the directory itself.
    pub fn stat(&self) -> Result<Stat> {
        rustix::fs::fstat(&self.fd)
            .map(Stat::from)
            .map_err(|e| Error::os("stat", &self.path, e))
    }

    /// `lstat` of `name` in this directory (a symlink is described, not followed).
    pub fn stat_at(&self, name: &OsStr) -> Result<Stat> {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map(Stat::from)
            .map_err(|e| Error::os("lstat", &self.child_path(name), e))
    }

    /// The target of the symlink `name`, as raw bytes.
    pub fn read_link(&self, name: &OsStr) -> Result<Vec<u8>> {
        rustix::fs::readlinkat(&self.fd, name, Vec::new())
            .map(|t| t.into_bytes())
            .map_err(|e| Error::os("readlink", &self.child_path(name), e))
    }

    /// The extended attributes of the directory itself.
    pub fn xattrs(&self) -> Result<Xattrs> {
        read_xattrs(Target::Fd(self.fd.as_fd())).map_err(|e| Error::os("listxattr", &self.path, e))
    }

    /// The extended attributes of `name` in this directory, without following a symlink.
    pub fn xattrs_at(&self, name: &OsStr) -> Result<Xattrs> {
        let path = self.at_path(name);
        read_xattrs(Target::Path(&path))
            .map_err(|e| Error::os("llistxattr", &self.child_path(name), e))
    }

    /// One extended attribute of `name` in this directory (no symlink followed); `None` if
    /// the file does not have it or the filesystem has no xattrs.
    pub fn xattr_at(&self, name: &OsStr, xattr: &str) -> Result<Option<Vec<u8>>> {
        let path = self.at_path(name);
        get_xattr(Target::Path(&path), xattr.as_bytes())
            .map_err(|e| Error::os("lgetxattr", &self.child_path(name), e))
    }

    /// A path naming `name` in this directory for the path-only `l*xattr` calls:
    /// `/proc/self/fd/<fd>/<name>` (resolved through the open directory, so nothing above it
    /// is looked up again), or the full path where `/proc` is not mounted.
    fn at_path(&self, name: &OsStr) -> PathBuf {
        static PROC_FD: OnceLock<bool> = OnceLock::new();
        if *PROC_FD.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
            use std::os::fd::AsRawFd;
            let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
            p.push(name);
            p
        } else {
            self.child_path(name)
        }
    }
}

/// The extended attributes of an open file.
pub fn file_xattrs(file: &File, path: &Path) -> Result<Xattrs> {
    read_xattrs(Target::Fd(file.as_fd())).map_err(|e| Error::os("flistxattr", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn entries_are_sorted_bytewise_without_dots() {
        let tmp = tempfile::tempdir().unwrap();
        for n in ["b", "a", "B", ".wh.x", "a.b", "ä"] {
            std::fs::write(tmp.path().join(n), b"").unwrap();
        }
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        let names: Vec<_> = dir.entries().unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, [".wh.x", "B", "a", "a.b", "b", "d", "ä"]);
    }

    #[test]
    fn open_dir_refuses_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", tmp.path().join("l")).unwrap();
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        assert!(dir.open_dir(OsStr::new("l")).is_err());
        assert!(dir.open_file(OsStr::new("l")).is_err());
        assert!(dir.open_file(OsStr::new("f")).is_ok());
        let st = dir.stat_at(OsStr::new("l")).unwrap();
        assert_eq!(st.file_type(), FileType::Symlink);
        assert_eq!(dir.read_link(OsStr::new("l")).unwrap(), b"/etc");
    }

    #[test]
    fn missing_name_is_not_found() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        let err = dir.stat_at(OsStr::new("nope")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn reads_user_xattrs() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, b"").unwrap();
        if let Err(e) = rustix::fs::setxattr(&f, "user.b", b"2", rustix::fs::XattrFlags::empty()) {
            eprintln!("SKIP reads_user_xattrs: user xattrs not supported here: {e}");
            return;
        }
        rustix::fs::setxattr(&f, "user.a", b"1", rustix::fs::XattrFlags::empty()).unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        let x = dir.xattrs_at(OsStr::new("f")).unwrap();
        let user: Vec<_> = x.iter().filter(|(n, _)| n.starts_with(b"user.")).collect();
        assert_eq!(
            user,
            [
                &(b"user.a".to_vec(), b"1".to_vec()),
                &(b"user.b".to_vec(), b"2".to_vec())
            ]
        );
        assert_eq!(
            dir.xattr_at(OsStr::new("f"), "user.a").unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(dir.xattr_at(OsStr::new("f"), "user.zz").unwrap(), None);
        let file = dir.open_file(OsStr::new("f")).unwrap();
        assert_eq!(file_xattrs(&file, &f).unwrap(), x);
    }
}
