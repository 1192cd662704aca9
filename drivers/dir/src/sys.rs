//! The file-system primitives this driver is built from.
//!
//! Everything is relative to an open directory and never follows a symlink in the last
//! component, so a tree that changes underneath (a running container's view) cannot redirect a
//! read or a write outside it. Copying one node carries all its metadata: owner, mode, xattrs,
//! times with nanoseconds; file contents go by reflink (`FICLONE`) where the file system can,
//! else by `copy_file_range` over the data extents only, so sparse files stay sparse.
//!
//! Nothing here decides *what* to copy: that is the union, materialise and fold modules' job.
//! Every error names the call and the path.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, SeekFrom};
use rustix::io::Errno;
use strata_driver_api::archive::whiteout;
use strata_driver_api::{Error, ErrorKind, Result};

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
        let src = rfs::openat(src_dir, name, src_flags, Mode::empty())
            .map_err(|e| os("open", src_path, e))?;
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
        copy_data(&src, &dst, meta.size, src_path, dst_path)?;
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

fn uid(n: u32) -> rfs::Uid {
    rfs::Uid::from_raw(n)
}

fn gid(n: u32) -> rfs::Gid {
    rfs::Gid::from_raw(n)
}

fn timestamps(meta: &Meta) -> rfs::Timestamps {
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

/// Copies `size` bytes of contents: a reflink where the file system can, else the data
/// extents only (`SEEK_DATA`/`SEEK_HOLE`), each with `copy_file_range`, then the length.
fn copy_data(
    src: &OwnedFd,
    dst: &OwnedFd,
    size: u64,
    src_path: &Path,
    dst_path: &Path,
) -> Result<()> {
    if size == 0 {
        return Ok(());
    }
    // A failed reflink is the expected answer on file systems without shared extents (ext4,
    // tmpfs) or across mounts: any error here just means "copy the bytes", and a real I/O
    // problem shows up in the copy itself.
    if rfs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(());
    }
    let mut end = 0u64;
    let mut off = 0u64;
    loop {
        let data = match rfs::seek(src, SeekFrom::Data(off)) {
            Ok(d) => d,
            Err(Errno::NXIO) => break,
            // No SEEK_DATA on this file system: the whole file is data.
            Err(Errno::INVAL) if off == 0 => {
                end = copy_range(src, dst, 0, u64::MAX, src_path, dst_path)?;
                break;
            }
            Err(e) => return Err(os("lseek", src_path, e)),
        };
        let hole = rfs::seek(src, SeekFrom::Hole(data)).map_err(|e| os("lseek", src_path, e))?;
        end = end.max(copy_range(src, dst, data, hole, src_path, dst_path)?);
        if hole <= off {
            break;
        }
        off = hole;
    }
    rfs::ftruncate(dst, end.max(size)).map_err(|e| os("ftruncate", dst_path, e))
}

/// Copies bytes `[start, end)` (stopping early at end of file); returns the offset reached.
fn copy_range(
    src: &OwnedFd,
    dst: &OwnedFd,
    start: u64,
    end: u64,
    src_path: &Path,
    dst_path: &Path,
) -> Result<u64> {
    let mut pos = start;
    while pos < end {
        let want = usize::try_from((end - pos).min(1 << 30)).unwrap_or(1 << 30);
        let mut off_in = pos;
        let mut off_out = pos;
        match rfs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => break,
            Ok(n) => pos += n as u64,
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                return copy_range_rw(src, dst, pos, end, src_path, dst_path);
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(os("copy_file_range", dst_path, e)),
        }
    }
    Ok(pos)
}

fn copy_range_rw(
    src: &OwnedFd,
    dst: &OwnedFd,
    start: u64,
    end: u64,
    src_path: &Path,
    dst_path: &Path,
) -> Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut pos = start;
    while pos < end {
        let want = usize::try_from((end - pos).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = match rustix::io::pread(src, &mut buf[..want], pos) {
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(os("read", src_path, e)),
        };
        let mut done = 0;
        while done < n {
            match rustix::io::pwrite(dst, &buf[done..n], pos + done as u64) {
                Ok(w) => done += w,
                Err(Errno::INTR) => {}
                Err(e) => return Err(os("write", dst_path, e)),
            }
        }
        pos += n as u64;
    }
    Ok(pos)
}

/// Flushes the whole file system holding `path` to disk: once per layer, not once per file.
pub(crate) fn syncfs(path: &Path) -> Result<()> {
    let dir = open_dir(path)?;
    rfs::syncfs(&dir).map_err(|e| os("syncfs", path, e))
}

/// The name of the file system type behind `path`, from `statfs`'s magic number.
pub(crate) fn fs_name(path: &Path) -> Result<String> {
    let st = rfs::statfs(path).map_err(|e| os("statfs", path, e))?;
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64 as u64 & 0xffff_ffff;
    Ok(match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0xF2F5_2010 => "f2fs".into(),
        0xCA45_1A4E => "bcachefs".into(),
        0x6969 => "nfs".into(),
        0x6573_5546 => "fuse".into(),
        0x8584_58F6 => "ramfs".into(),
        0x7371_7368 => "squashfs".into(),
        0xF15F => "ecryptfs".into(),
        other => format!("unknown ({other:#x})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
