//! The file-system primitives this driver is built from.
//!
//! Everything is relative to an open directory and never follows a symlink in the last
//! component, so a tree that changes underneath (a running container's view) cannot redirect a
//! read or a write outside it (copying a node is the `copy` module's job). Nothing here decides
//! what to read or write: that is the union, view and fold modules' job. Every error names the
//! call and the path.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use strata_archive::whiteout;
use strata_driver_api::{Error, Result};

/// The type of a file-system node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
}

impl Kind {
    pub(crate) fn from_mode(mode: u32) -> Kind {
        match FileType::from_raw_mode(mode) {
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::CharacterDevice => Kind::Char,
            FileType::BlockDevice => Kind::Block,
            FileType::Socket => Kind::Socket,
            _ => Kind::File,
        }
    }

    fn from_file_type(t: FileType) -> Option<Kind> {
        match t {
            FileType::Unknown => None,
            other => Some(Kind::from_mode(other.as_raw_mode())),
        }
    }
}

/// The `lstat` facts this driver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub dev: u64,
    pub ino: u64,
    /// Type and permission bits, as `st_mode`.
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
}

impl Meta {
    pub(crate) fn kind(&self) -> Kind {
        Kind::from_mode(self.mode)
    }

    /// The permission bits, with setuid, setgid and sticky.
    pub(crate) fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

// The field types of `struct stat` differ between architectures; the casts are exact on each.
#[allow(clippy::unnecessary_cast)]
fn meta_from(st: &rfs::Stat) -> Meta {
    Meta {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        mode: st.st_mode as u32,
        nlink: st.st_nlink as u64,
        uid: st.st_uid as u32,
        gid: st.st_gid as u32,
        rdev: st.st_rdev as u64,
        size: st.st_size as u64,
        atime: (st.st_atime as i64, st.st_atime_nsec as u32),
        mtime: (st.st_mtime as i64, st.st_mtime_nsec as u32),
        ctime: (st.st_ctime as i64, st.st_ctime_nsec as u32),
    }
}

/// An `Error::os` for a rustix call.
pub(crate) fn os(call: &str, path: &Path, errno: Errno) -> Error {
    Error::os(call, path, std::io::Error::from(errno))
}

/// `lstat` of `name` in `dir`; `path` names it in errors.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<Meta> {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| meta_from(&st))
        .map_err(|e| os("lstat", path, e))
}

/// `lstat` of `name` in `dir`, or `None` if there is nothing there.
pub(crate) fn try_stat_at(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<Option<Meta>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(meta_from(&st))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(os("lstat", path, e)),
    }
}

/// `lstat` of an absolute path, or `None` if there is nothing there.
pub(crate) fn try_lstat(path: &Path) -> Result<Option<Meta>> {
    match rfs::statat(rfs::CWD, path, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(meta_from(&st))),
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(os("lstat", path, e)),
    }
}

/// `fstat` of an open file.
pub(crate) fn fstat(fd: BorrowedFd<'_>, path: &Path) -> Result<Meta> {
    rfs::fstat(fd)
        .map(|st| meta_from(&st))
        .map_err(|e| os("fstat", path, e))
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the directory at `path` (the driver's own trees), not following a final symlink.
pub(crate) fn open_dir(path: &Path) -> Result<OwnedFd> {
    rfs::open(path, DIR_FLAGS, Mode::empty()).map_err(|e| os("open", path, e))
}

/// Opens the directory `name` in `dir`, not following a symlink.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<OwnedFd> {
    rfs::openat(dir, name, DIR_FLAGS, Mode::empty()).map_err(|e| os("open", path, e))
}

/// Opens `rel` below `root` without following any symlink and without leaving `root`'s
/// mount: for reading a tree someone else may be changing (a live view).
pub(crate) fn open_beneath(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    path: &Path,
) -> Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let rel_or_dot = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let resolve = ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV;
    match rfs::openat2(root, rel_or_dot, flags, Mode::empty(), resolve) {
        Err(Errno::NOSYS) => {}
        other => return other.map_err(|e| os("openat2", path, e)),
    }
    // Kernels before 5.6: one component at a time, each opened without following symlinks.
    let mut dir =
        rfs::openat(root, ".", DIR_FLAGS, Mode::empty()).map_err(|e| os("open", path, e))?;
    let comps: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let Some((last, parents)) = comps.split_last() else {
        return rfs::openat(root, ".", flags, Mode::empty()).map_err(|e| os("open", path, e));
    };
    for comp in parents {
        dir =
            rfs::openat(&dir, *comp, DIR_FLAGS, Mode::empty()).map_err(|e| os("open", path, e))?;
    }
    rfs::openat(&dir, *last, flags, Mode::empty()).map_err(|e| os("open", path, e))
}

/// One directory entry: its name and, when the directory told, its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub name: OsString,
    pub kind: Kind,
}

/// The entries of the open directory `dir`, sorted by name, without `.` and `..`.
pub(crate) fn list(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<Entry>> {
    let mut reader = rfs::Dir::read_from(dir).map_err(|e| os("opendir", path, e))?;
    let mut out = Vec::new();
    while let Some(ent) = reader.read() {
        let ent = ent.map_err(|e| os("readdir", path, e))?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name).to_os_string();
        let kind = match Kind::from_file_type(ent.file_type()) {
            Some(k) => k,
            None => stat_at(dir, &name, &path.join(&name))?.kind(),
        };
        out.push(Entry { name, kind });
    }
    out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

/// Creates the directory `name` in `dir` with mode 0700: its real mode is applied once its
/// children are in place (so an unprivileged user can fill a read-only directory).
pub(crate) fn make_dir(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<()> {
    rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).map_err(|e| os("mkdir", path, e))
}

/// Creates an empty marker file (a whiteout or the opaque marker) if it is not there.
pub(crate) fn make_marker(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<()> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::openat(dir, name, flags, Mode::from_raw_mode(0o444)) {
        Ok(_) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(os("create", path, e)),
    }
}

/// Removes whatever is at `name` in `dir` (a whole tree for a directory); nothing there is fine.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, dir_path: &Path, name: &OsStr) -> Result<()> {
    let path = dir_path.join(name);
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => remove_tree(&path),
        Err(e) => Err(os("unlink", &path, e)),
    }
}

/// Removes the tree at `path` without following symlinks; a missing path is fine.
///
/// An unprivileged user cannot empty a directory without write permission, so when removal is
/// refused the tree's directories are made writable first and removal tried once more.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            make_writable(path)?;
            std::fs::remove_dir_all(path).map_err(|e| Error::os("remove", path, e))
        }
        Err(e) => Err(Error::os("remove", path, e)),
    }
}

fn make_writable(path: &Path) -> Result<()> {
    let fd = match rfs::open(path, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(os("open", path, e)),
    };
    let meta = fstat(fd.as_fd(), path)?;
    rfs::fchmod(&fd, Mode::from_raw_mode((meta.perm() | 0o700) & 0o7777))
        .map_err(|e| os("chmod", path, e))?;
    for ent in list(fd.as_fd(), path)? {
        if ent.kind == Kind::Dir {
            make_writable(&path.join(&ent.name))?;
        }
    }
    Ok(())
}

/// Whether `name` is one this driver never shows in a view or takes from one: a whiteout,
/// the opaque marker, or another AUFS-internal `.wh..wh.*` name.
pub(crate) fn is_wh_name(name: &OsStr) -> bool {
    !matches!(whiteout::classify(name), whiteout::Name::Regular(_))
}

/// Flushes the whole file system holding `path` to disk: once per layer, not once per file.
pub(crate) fn syncfs(path: &Path) -> Result<()> {
    let dir = open_dir(path)?;
    rfs::syncfs(&dir).map_err(|e| os("syncfs", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_driver_api::ErrorKind;

    #[test]
    fn open_beneath_refuses_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("d/f"), b"x").unwrap();
        std::os::unix::fs::symlink("d", tmp.path().join("l")).unwrap();
        let root = open_dir(tmp.path()).unwrap();
        let ok = open_beneath(root.as_fd(), Path::new("d/f"), OFlags::RDONLY, tmp.path());
        assert!(ok.is_ok());
        let err =
            open_beneath(root.as_fd(), Path::new("l/f"), OFlags::RDONLY, tmp.path()).unwrap_err();
        assert_ne!(err.kind(), ErrorKind::NotFound);
    }
}
