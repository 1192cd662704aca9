//! Path resolution inside the layer root, and the few tree operations built on it.
//!
//! Every name from the archive is resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! relative to the root's descriptor: symlinks in the layer resolve as in a chroot (`/` and
//! `..` clamp at the root), so absolute links such as `var/run -> /run` work and nothing can
//! point outside. Only the *parent* of an entry is resolved; the leaf operation is an `*at`
//! call on that parent's descriptor that never follows a symlink in the last component.
//! Resolved *paths* are never cached across entries (CVE-2025-47290); the descriptor of the
//! last parent is reused for the next entry in the same directory until anything is removed
//! (a removal is the only way this apply can change where a resolvable path leads). That
//! saves about 12% on tmpfs (50,000 files, `examples/apply_bench.rs`).
//!
//! This module must not use path-based `std::fs` calls on anything under the root.

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, ResolveFlags};
use rustix::io::Errno;

use super::{emulate, names};

use crate::{Error, ErrorKind, Result};

/// How often an `openat2` that failed with `EAGAIN` (a rename or mount raced somewhere on the
/// system) is retried, as libpathrs does.
const EAGAIN_RETRIES: usize = 128;
/// How deep [`remove_all`] and the opaque walk descend. Each level holds one descriptor.
pub(super) const MAX_DEPTH: usize = 512;
/// How many dangling symlinks [`Root::make_dir_all`] follows for one path (the kernel's
/// `MAXSYMLINKS`).
const MAX_SYMLINK_EXPANSIONS: usize = 40;

/// A directory descriptor: the root itself or one resolved inside it.
#[derive(Debug)]
pub(super) enum DirFd<'a> {
    Root(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl AsFd for DirFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DirFd::Root(fd) => *fd,
            DirFd::Owned(fd) => fd.as_fd(),
        }
    }
}

/// The layer root: an `O_PATH` descriptor and the path it was opened from (for messages).
///
/// It keeps the descriptor of the last parent directory [`Root::make_dir_all`] resolved, for
/// consecutive entries in one directory. That is a descriptor, never a path, and it is
/// dropped as soon as anything is removed under the root (through [`Root::remove_all`]):
/// only a removal can change what an already resolvable path resolves to.
#[derive(Debug)]
pub(super) struct Root {
    fd: OwnedFd,
    path: PathBuf,
    last_parent: RefCell<Option<(Vec<u8>, OwnedFd)>>,
    removed: Cell<bool>,
    /// `openat2` is unavailable (kernel before 5.6, or refused by a seccomp filter): resolve
    /// in userspace (see `emulate`).
    emulate: bool,
}

/// Set (to anything) to resolve in userspace even where `openat2` works: a testing knob, so
/// that the whole apply suite can run against the fallback.
pub(super) const NO_OPENAT2_ENV: &str = "STRATA_APPLY_NO_OPENAT2";

impl Root {
    /// Opens the root directory. The root path itself comes from the caller and is trusted.
    pub(super) fn open(path: &Path) -> Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::os("open", path, e))?;
        let probe = rustix::fs::openat2(
            &fd,
            ".",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        );
        let emulate = match probe {
            Ok(_) => std::env::var_os(NO_OPENAT2_ENV).is_some(),
            Err(Errno::NOSYS | Errno::PERM | Errno::INVAL) => true,
            Err(e) => return Err(Error::os("openat2", path, e)),
        };
        if emulate {
            tracing::debug!(root = %path.display(), "resolving in userspace (no openat2)");
        }
        Ok(Root {
            fd,
            path: path.to_path_buf(),
            last_parent: RefCell::new(None),
            removed: Cell::new(false),
            emulate,
        })
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `root/rel`, for messages only (never opened).
    pub(super) fn display(&self, rel: &[u8]) -> PathBuf {
        self.path.join(OsStr::from_bytes(rel))
    }

    /// A failed call on `rel`: the kind comes from the errno.
    pub(super) fn err(&self, call: &str, rel: &[u8], errno: impl Into<io::Error>) -> Error {
        Error::os(call, &self.display(rel), errno)
    }

    /// A failed resolution of `rel`: errors that the archive's own content causes (a symlink
    /// loop, a component that is not a directory, a dangling link) are `InvalidArchive`.
    pub(super) fn resolve_err(&self, call: &str, rel: &[u8], errno: Errno) -> Error {
        match errno {
            Errno::LOOP | Errno::NOTDIR | Errno::NOENT | Errno::NAMETOOLONG | Errno::XDEV => {
                Error::with_source(
                    ErrorKind::InvalidArchive,
                    format!("{call} {}", self.display(rel).display()),
                    io::Error::from(errno),
                )
            }
            _ => self.err(call, rel, errno),
        }
    }

    /// Opens `rel` (a cleaned path) inside the root with in-root resolution; `rel` may be empty
    /// (the root itself). Symlinks are followed in every component unless `oflags` holds
    /// `NOFOLLOW`, which then applies to the last one.
    pub(super) fn open_in(
        &self,
        rel: &[u8],
        oflags: OFlags,
    ) -> std::result::Result<OwnedFd, Errno> {
        self.openat2(rel, oflags, ResolveFlags::empty())
    }

    /// `openat2(root, rel, IN_ROOT | NO_MAGICLINKS | extra)`, retried on `EAGAIN`.
    fn openat2(
        &self,
        rel: &[u8],
        oflags: OFlags,
        extra: ResolveFlags,
    ) -> std::result::Result<OwnedFd, Errno> {
        if self.emulate {
            let no_symlinks = extra.contains(ResolveFlags::NO_SYMLINKS);
            return emulate::open_in_root(self.fd(), rel, oflags | OFlags::CLOEXEC, no_symlinks);
        }
        let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | extra;
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(
                &self.fd,
                rel,
                oflags | OFlags::CLOEXEC,
                Mode::empty(),
                resolve,
            ) {
                Err(Errno::AGAIN) if tries < EAGAIN_RETRIES => tries += 1,
                Err(Errno::INTR) => {}
                other => return other,
            }
        }
    }

    /// Resolves the directory `rel` (an `O_PATH` descriptor). Errors are the raw errno, for
    /// callers that treat a missing directory as a no-op.
    pub(super) fn resolve_dir(&self, rel: &[u8]) -> std::result::Result<DirFd<'_>, Errno> {
        if rel.is_empty() {
            return Ok(DirFd::Root(self.fd()));
        }
        self.open_in(rel, OFlags::PATH | OFlags::DIRECTORY)
            .map(DirFd::Owned)
    }

    /// Resolves the directory `rel`, creating missing components one at a time in-root
    /// (`0755`, owned as the process). `created` is told each path this made.
    ///
    /// A component that is a dangling symlink is followed as the kernel would (in-root): its
    /// target is spliced into the path and the walk starts again, at most
    /// [`MAX_SYMLINK_EXPANSIONS`] times; so `e -> /etc` then `e/cron.d/x` makes `etc/cron.d`
    /// in the root, as containerd does. Paths made that way are not reported to `created`
    /// (they are not names the archive used).
    pub(super) fn make_dir_all(&self, rel: &[u8], created: impl FnMut(&[u8])) -> Result<DirFd<'_>> {
        if rel.is_empty() {
            return Ok(DirFd::Root(self.fd()));
        }
        let mut cache = self.last_parent.borrow_mut();
        if self.removed.take() {
            *cache = None;
        }
        let dup = |fd: &OwnedFd| {
            rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(|e| self.err("fcntl", rel, e))
        };
        if let Some((path, fd)) = cache.as_ref() {
            if path == rel {
                return Ok(DirFd::Owned(dup(fd)?));
            }
        }
        let fd = match self.make_dir_all_uncached(rel, created)? {
            DirFd::Owned(fd) => fd,
            root @ DirFd::Root(_) => return Ok(root),
        };
        *cache = Some((rel.to_vec(), dup(&fd)?));
        Ok(DirFd::Owned(fd))
    }

    /// Removes `name` in `dir` whatever it is (see [`remove_all`]), and forgets the cached
    /// parent descriptor.
    pub(super) fn remove_all(&self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
        self.removed.set(true);
        remove_all(dir, name)
    }

    fn make_dir_all_uncached(
        &self,
        rel: &[u8],
        mut created: impl FnMut(&[u8]),
    ) -> Result<DirFd<'_>> {
        match self.resolve_dir(rel) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(self.resolve_err("openat2", rel, e)),
        }
        let mut path = rel.to_vec();
        let mut expansions = 0;
        'walk: loop {
            let mut cur = DirFd::Root(self.fd());
            let mut start = 0;
            while start < path.len() {
                let end = path[start..]
                    .iter()
                    .position(|&b| b == b'/')
                    .map_or(path.len(), |i| start + i);
                let comp = &path[start..end];
                if comp.is_empty() {
                    start = end + 1;
                    continue;
                }
                let prefix = &path[..end];
                match self.resolve_dir(prefix) {
                    Ok(fd) => cur = fd,
                    Err(Errno::NOENT) => {
                        match rustix::fs::mkdirat(&cur, comp, Mode::from_raw_mode(0o755)) {
                            Ok(()) if expansions == 0 => created(prefix),
                            Ok(()) => {}
                            Err(Errno::EXIST) => {
                                // Taken but not resolvable: a dangling symlink, followed here.
                                if let Ok(target) = rustix::fs::readlinkat(&cur, comp, Vec::new()) {
                                    expansions += 1;
                                    if expansions > MAX_SYMLINK_EXPANSIONS {
                                        return Err(self.resolve_err("openat2", rel, Errno::LOOP));
                                    }
                                    let target = target.as_bytes();
                                    let mut next = Vec::with_capacity(path.len() + target.len());
                                    if target.first() == Some(&b'/') {
                                        let i = target
                                            .iter()
                                            .position(|&b| b != b'/')
                                            .unwrap_or(target.len());
                                        next.extend_from_slice(&target[i..]);
                                    } else {
                                        next.extend_from_slice(&path[..start]);
                                        next.extend_from_slice(target);
                                    }
                                    next.extend_from_slice(&path[end..]);
                                    path = next;
                                    continue 'walk;
                                }
                            }
                            Err(e) => return Err(self.err("mkdirat", prefix, e)),
                        }
                        cur = self
                            .resolve_dir(prefix)
                            .map_err(|e| self.resolve_err("openat2", prefix, e))?;
                    }
                    Err(e) => return Err(self.resolve_err("openat2", prefix, e)),
                }
                start = end + 1;
            }
            return Ok(cur);
        }
    }
}

impl Root {
    /// The path of the directory `rel` inside the root with every symlink resolved (as the
    /// kernel resolves it in-root), or `None` if it does not exist or is not a directory.
    ///
    /// Used only to name things consistently (what the archive made is recorded by name); the
    /// operations themselves still go through `openat2`. A symlink loop is `ELOOP`.
    pub(super) fn physical(&self, rel: &[u8]) -> std::result::Result<Option<Vec<u8>>, Errno> {
        let mut todo: std::collections::VecDeque<Vec<u8>> =
            names::components(rel).map(<[u8]>::to_vec).collect();
        let mut phys: Vec<u8> = Vec::new();
        let mut expansions = 0;
        while let Some(comp) = todo.pop_front() {
            match comp.as_slice() {
                b"." => continue,
                b".." => {
                    let cut = phys.iter().rposition(|&b| b == b'/').unwrap_or(0);
                    phys.truncate(cut);
                    continue;
                }
                _ => {}
            }
            let dir = match self.open_exact(&phys, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
                Err(e) => return Err(e),
            };
            let st = match rustix::fs::statat(&dir, comp.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(e),
            };
            match file_type(&st) {
                FileType::Directory => {
                    if !phys.is_empty() {
                        phys.push(b'/');
                    }
                    phys.extend_from_slice(&comp);
                }
                FileType::Symlink => {
                    expansions += 1;
                    if expansions > MAX_SYMLINK_EXPANSIONS {
                        return Err(Errno::LOOP);
                    }
                    let target = rustix::fs::readlinkat(&dir, comp.as_slice(), Vec::new())?;
                    let target = target.as_bytes();
                    for c in names::components(target)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                    {
                        todo.push_front(c.to_vec());
                    }
                    if target.first() == Some(&b'/') {
                        phys.clear();
                    }
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(phys))
    }

    /// Opens `rel`, which must contain no symlink at all (`RESOLVE_NO_SYMLINKS`), in-root.
    pub(super) fn open_exact(
        &self,
        rel: &[u8],
        oflags: OFlags,
    ) -> std::result::Result<OwnedFd, Errno> {
        self.openat2(rel, oflags, ResolveFlags::NO_SYMLINKS)
    }
}

/// `/proc/self/fd/<fd>/<name>`: the way to reach a symlink or special file by descriptor for
/// calls that have no `*at` form with `AT_SYMLINK_NOFOLLOW` (`lsetxattr`). The directory part
/// is a magic link the kernel resolves to the descriptor's directory; `name` is then looked up
/// in it and, with the `l*` calls, not followed.
pub(super) fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    p
}

/// `/proc/self/fd/<fd>`: the object an `O_PATH` descriptor refers to.
pub(super) fn proc_fd(fd: BorrowedFd<'_>) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The names in a directory (without `.` and `..`), with their types as `getdents` reports
/// them (`Unknown` on some filesystems).
pub(super) fn read_names(dir: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, FileType)>> {
    let mut buf: Vec<MaybeUninit<u8>> = Vec::with_capacity(32 * 1024);
    buf.resize(32 * 1024, MaybeUninit::uninit());
    let mut out = Vec::new();
    let mut iter = RawDir::new(dir, &mut buf);
    while let Some(entry) = iter.next() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push((name.to_vec(), entry.file_type()));
    }
    Ok(out)
}

/// Removes `name` in `dir` whatever it is, never following a symlink: a directory with all its
/// content. A missing `name` is not an error.
fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    remove_at(dir, name, 0)
}

fn remove_at(dir: BorrowedFd<'_>, name: &[u8], depth: usize) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        // Linux says EISDIR for a directory (POSIX allows EPERM).
        Err(Errno::ISDIR | Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // Not a directory after all: the EPERM was real.
        Err(Errno::NOTDIR | Errno::LOOP) => return Err(Errno::PERM.into()),
        Err(e) => return Err(e.into()),
    };
    empty_dir(sub.as_fd(), depth + 1)?;
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes everything inside the directory `dir`.
pub(super) fn empty_dir(dir: BorrowedFd<'_>, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "directory tree deeper than {MAX_DEPTH} levels"
        )));
    }
    for (name, _) in read_names(dir)? {
        remove_at(dir, &name, depth)?;
    }
    Ok(())
}

/// `statat` without following a symlink in the last component; `None` if `name` is missing.
pub(super) fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The file type in a `Stat`.
pub(super) fn file_type(st: &rustix::fs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_all_never_follows_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d/e/f")).unwrap();
        std::fs::write(root.join("d/e/f/file"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d/link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("toplink")).unwrap();
        let r = Root::open(&root).unwrap();
        r.remove_all(r.fd(), b"d").unwrap();
        r.remove_all(r.fd(), b"toplink").unwrap();
        r.remove_all(r.fd(), b"missing").unwrap();
        assert!(!root.join("d").exists());
        assert!(root.join("toplink").symlink_metadata().is_err());
        assert!(outside.join("keep").exists());
    }

    #[test]
    fn make_dir_all_creates_in_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        // An absolute symlink resolves inside the root.
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        let r = Root::open(&root).unwrap();
        let mut made = Vec::new();
        r.make_dir_all(b"abs/x/y", |p| made.push(p.to_vec()))
            .unwrap();
        assert!(root.join("real/x/y").is_dir());
        assert_eq!(made, vec![b"abs/x".to_vec(), b"abs/x/y".to_vec()]);
        // A dangling symlink as a parent is followed in-root.
        std::os::unix::fs::symlink("/nowhere/../deep", root.join("dangling")).unwrap();
        std::os::unix::fs::symlink("../rel", root.join("real/x/dangling")).unwrap();
        made.clear();
        r.make_dir_all(b"dangling/z", |p| made.push(p.to_vec()))
            .unwrap();
        r.make_dir_all(b"real/x/dangling/z", |p| made.push(p.to_vec()))
            .unwrap();
        assert!(root.join("deep/z").is_dir());
        assert!(root.join("real/rel/z").is_dir());
        assert!(made.is_empty(), "{made:?}");
        assert!(!tmp.path().join("deep").exists());
        // Dangling loops end.
        std::os::unix::fs::symlink("loop2/x", root.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1/x", root.join("loop2")).unwrap();
        let err = r.make_dir_all(b"loop1/z", |_| {}).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArchive);
    }
}
