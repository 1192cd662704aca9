//! Creating each kind of entry inside the root, and setting its metadata.
//!
//! Every leaf is made with an `*at` call on its resolved parent that does not follow a symlink
//! in the last component (`O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat`, `symlinkat`, `mknodat`,
//! `linkat` without `AT_SYMLINK_FOLLOW`); when the name exists, what is there is removed first
//! and never written into (RUSTSEC-2018-0002, CVE-2021-32760). Metadata goes through the new
//! object's descriptor, or `*at` calls with `AT_SYMLINK_NOFOLLOW`; owner before mode.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

use super::inroot::{self, DirFd, Root};
use super::names;
use super::reader::{Entry, Kind, TarReader};
use super::track::{Origin, Tracker, ino};
use super::{Applier, DirFix, Meta, invalid};
use crate::Result;
use crate::whiteout;

/// The kernel's device number limits (`MKDEV`: 12-bit major, 20-bit minor); `mknod` would
/// silently truncate larger ones.
const MAJOR_LIMIT: i64 = 1 << 12;
const MINOR_LIMIT: i64 = 1 << 20;

/// Resolves `parent` in-root, making missing directories (recorded as made by this archive).
pub(super) fn parent_dir<'r>(
    root: &'r Root,
    track: &mut Tracker,
    parent: &[u8],
) -> Result<DirFd<'r>> {
    root.make_dir_all(parent, |p| {
        track.mark(p, Origin::Fresh);
        if track.enabled() {
            if let Ok(st) = root
                .open_in(p, OFlags::PATH | OFlags::DIRECTORY)
                .and_then(|fd| rustix::fs::fstat(&fd))
            {
                track.note(ino(&st), Origin::Fresh);
            }
        }
    })
}

/// Runs `make` to create `name` in `dir`; if the name is taken, removes what is there
/// (recursively for a directory, never following a symlink) and runs `make` once more.
pub(super) fn create_leaf<T>(
    root: &Root,
    dir: BorrowedFd<'_>,
    name: &[u8],
    path: &[u8],
    call: &str,
    mut make: impl FnMut() -> rustix::io::Result<T>,
) -> Result<T> {
    match make() {
        Err(Errno::EXIST) => {
            root.remove_all(dir, name)
                .map_err(|e| root.err("remove", path, e))?;
            make().map_err(|e| root.err(call, path, e))
        }
        other => other.map_err(|e| root.err(call, path, e)),
    }
}

/// Where xattrs go: an open descriptor, or a name in a directory that must not be followed.
#[derive(Clone, Copy)]
enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    /// A symlink, FIFO or device: set through `/proc/self/fd/<dir>/<name>` with `lsetxattr`.
    NoFollow(BorrowedFd<'a>, &'a [u8]),
}

pub(super) fn times(meta: &Meta) -> Timestamps {
    Timestamps {
        last_access: meta.mtime,
        last_modification: meta.mtime,
    }
}

impl Applier<'_> {
    /// A regular file: created anew, content copied, then owner, mode, xattrs, mtime.
    /// With `tar` `None`, an empty file (a whiteout kept as it is).
    pub(super) fn regular(
        &mut self,
        path: &[u8],
        entry: Option<&Entry>,
        meta: &Meta,
        tar: Option<&mut TarReader<'_>>,
    ) -> Result<()> {
        let (parent, name) = names::split(path);
        let dir = parent_dir(&self.root, &mut self.track, parent)?;
        let flags =
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC;
        let fd = create_leaf(&self.root, dir.as_fd(), name, path, "openat", || {
            rustix::fs::openat(&dir, name, flags, Mode::from_raw_mode(0o600))
        })?;
        let mut file = File::from(fd);
        if let Some(tar) = tar {
            let root = &self.root;
            let n =
                tar.copy_body(|buf| file.write_all(buf).map_err(|e| root.err("write", path, e)))?;
            self.stats.size += n;
        }
        let fd = file.as_fd();
        self.chown_fd(fd, path, meta)?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| self.root.err("fchmod", path, e))?;
        if let Some(entry) = entry {
            self.xattrs(XattrTarget::Fd(fd), path, entry, false)?;
        }
        rustix::fs::futimens(fd, &times(meta)).map_err(|e| self.root.err("futimens", path, e))?;
        self.track.mark(path, Origin::Fresh);
        note_fd(&self.root, &mut self.track, fd, path, Origin::Fresh)?;
        note_parents(&self.root, &mut self.track, dir.as_fd(), parent)
    }

    /// A directory: kept if one is there (its attributes replaced), else made anew.
    pub(super) fn dir(&mut self, path: &[u8], entry: &Entry, meta: &Meta) -> Result<()> {
        let (parent, name) = names::split(path);
        let dir = parent_dir(&self.root, &mut self.track, parent)?;
        let mkdir = || rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700));
        let origin = match mkdir() {
            Ok(()) => Origin::Fresh,
            Err(Errno::EXIST) => {
                let st = inroot::lstat_at(dir.as_fd(), name)
                    .map_err(|e| self.root.err("fstatat", path, e))?;
                match st {
                    Some(st) if inroot::file_type(&st) == FileType::Directory => {
                        match self.track.get(path) {
                            Some(Origin::Fresh) => Origin::Fresh,
                            _ => Origin::Merged,
                        }
                    }
                    _ => {
                        create_leaf(&self.root, dir.as_fd(), name, path, "mkdirat", mkdir)?;
                        Origin::Fresh
                    }
                }
            }
            Err(e) => return Err(self.root.err("mkdirat", path, e)),
        };
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.root.err("openat", path, e))?;
        // Kept, but made by this archive under another name (through a symlink).
        let origin = if origin == Origin::Merged
            && self.fd_origin(fd.as_fd(), path)? == Some(Origin::Fresh)
        {
            Origin::Fresh
        } else {
            origin
        };
        note_fd(&self.root, &mut self.track, fd.as_fd(), path, origin)?;
        note_parents(&self.root, &mut self.track, dir.as_fd(), parent)?;
        drop(dir);
        self.dir_attrs(fd, path, entry, meta)?;
        self.track.mark(path, origin);
        Ok(())
    }

    /// A directory entry naming the root: only the root's attributes change.
    pub(super) fn root_dir(&mut self, entry: &Entry, meta: &Meta) -> Result<()> {
        let fd = self
            .root
            .open_in(b"", OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| self.root.err("openat2", b"", e))?;
        self.dir_attrs(fd, b"", entry, meta)
    }

    /// Owner and xattrs of a directory now; mode and mtime recorded for [`Applier::finish`].
    fn dir_attrs(&mut self, fd: OwnedFd, path: &[u8], entry: &Entry, meta: &Meta) -> Result<()> {
        let st = rustix::fs::fstat(&fd).map_err(|e| self.root.err("fstat", path, e))?;
        self.chown_fd(fd.as_fd(), path, meta)?;
        self.xattrs(XattrTarget::Fd(fd.as_fd()), path, entry, false)?;
        // Without privilege the directory must stay writable and searchable until the end.
        if !self.is_root && st.st_mode & 0o700 != 0o700 {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode((st.st_mode & 0o7777) | 0o700))
                .map_err(|e| self.root.err("fchmod", path, e))?;
        }
        let fix = DirFix {
            path: path.to_vec(),
            dev: st.st_dev,
            ino: st.st_ino,
            mode: meta.mode,
            mtime: meta.mtime,
        };
        match self.dir_index.get(path) {
            Some(&i) => self.dirs[i] = fix,
            None => {
                self.dir_index.insert(path.to_vec(), self.dirs.len());
                self.dirs.push(fix);
            }
        }
        Ok(())
    }

    /// A symlink: its target is stored verbatim (it resolves in-root when later entries use
    /// it). Never chmod-ed.
    pub(super) fn symlink(&mut self, path: &[u8], entry: &Entry, meta: &Meta) -> Result<()> {
        let target = entry.link.as_slice();
        if target.is_empty() {
            return Err(names::invalid(
                &entry.path,
                "is a symlink with an empty target",
            ));
        }
        if target.len() > names::PATH_MAX {
            return Err(names::invalid(
                &entry.path,
                "is a symlink with a target over 4095 bytes",
            ));
        }
        let (parent, name) = names::split(path);
        let dir = parent_dir(&self.root, &mut self.track, parent)?;
        create_leaf(&self.root, dir.as_fd(), name, path, "symlinkat", || {
            rustix::fs::symlinkat(target, &dir, name)
        })?;
        self.chown_at(dir.as_fd(), name, path, meta)?;
        self.xattrs(XattrTarget::NoFollow(dir.as_fd(), name), path, entry, true)?;
        rustix::fs::utimensat(&dir, name, &times(meta), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.root.err("utimensat", path, e))?;
        note_at(&self.root, &mut self.track, dir.as_fd(), name, path, parent)?;
        drop(dir);
        self.track.mark(path, Origin::Fresh);
        Ok(())
    }

    /// A hardlink to something that already exists in the root. The link's own header carries
    /// no metadata that is applied (the inode is shared).
    pub(super) fn hardlink(&mut self, path: &[u8], entry: &Entry) -> Result<()> {
        let target = names::clean(&entry.link)?;
        if target.is_empty() {
            return Err(names::invalid(&entry.path, "is a hardlink to the root"));
        }
        if target == path {
            return Err(names::invalid(&entry.path, "is a hardlink to itself"));
        }
        let (tparent, tname) = names::split(&target);
        if matches!(
            whiteout::classify(std::ffi::OsStr::from_bytes(tname)),
            whiteout::Name::Whiteout(_) | whiteout::Name::Opaque
        ) {
            // Only a kept whiteout (WhiteoutMode::Keep) could be there: never a layer's file.
            return Err(names::invalid(&entry.path, "is a hardlink to a whiteout"));
        }
        let missing = || names::invalid(&entry.path, "is a hardlink to a missing target");
        let tdir = match self.root.resolve_dir(tparent) {
            Ok(d) => d,
            Err(Errno::NOENT | Errno::NOTDIR) => return Err(missing()),
            Err(e) => return Err(self.root.resolve_err("openat2", tparent, e)),
        };
        let tst = inroot::lstat_at(tdir.as_fd(), tname)
            .map_err(|e| self.root.err("fstatat", &target, e))?
            .ok_or_else(missing)?;
        if inroot::file_type(&tst) == FileType::Directory {
            return Err(names::invalid(&entry.path, "is a hardlink to a directory"));
        }
        // A 0/0 character device can only be a whiteout this archive wrote in overlay form
        // (such device entries are refused): a link to it would whiteout a second name the
        // archive never declared. In the other modes the whited-out target is simply missing.
        if inroot::file_type(&tst) == FileType::CharacterDevice && tst.st_rdev == 0 {
            return Err(names::invalid(&entry.path, "is a hardlink to a whiteout"));
        }
        let (parent, name) = names::split(path);
        let dir = parent_dir(&self.root, &mut self.track, parent)?;
        let link = || rustix::fs::linkat(&tdir, tname, &dir, name, AtFlags::empty());
        match link() {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let st = inroot::lstat_at(dir.as_fd(), name)
                    .map_err(|e| self.root.err("fstatat", path, e))?;
                // Already a link to the same inode (the same name reached twice): done.
                let same = st.is_some_and(|st| (st.st_dev, st.st_ino) == (tst.st_dev, tst.st_ino));
                if !same {
                    create_leaf(&self.root, dir.as_fd(), name, path, "linkat", link).map_err(
                        |e| match e.raw_os_error() {
                            // Removing the old entry removed the target (it was inside it).
                            Some(2) => missing(),
                            _ => e,
                        },
                    )?;
                }
            }
            Err(e) => return Err(self.root.err("linkat", path, e)),
        }
        // The inode is not recorded: a link to a lower file (when the tree has lower content)
        // does not make that file this layer's. A link to a file of the layer shares its record.
        note_parents(&self.root, &mut self.track, dir.as_fd(), parent)?;
        drop((dir, tdir));
        self.track.mark(path, Origin::Fresh);
        Ok(())
    }

    /// A FIFO, or a character or block device when [`super::ApplyOptions::devices`].
    pub(super) fn node(&mut self, path: &[u8], entry: &Entry, meta: &Meta) -> Result<()> {
        let (ft, dev) = match entry.kind {
            Kind::Fifo => (FileType::Fifo, 0),
            Kind::Char | Kind::Block => {
                let (major, minor) = (entry.dev_major, entry.dev_minor);
                if !(0..MAJOR_LIMIT).contains(&major) || !(0..MINOR_LIMIT).contains(&minor) {
                    return Err(names::invalid(
                        &entry.path,
                        "has out-of-range device numbers",
                    ));
                }
                if entry.kind == Kind::Char && major == 0 && minor == 0 {
                    return Err(names::invalid(
                        &entry.path,
                        "is a 0/0 character device (an undeclared overlay whiteout)",
                    ));
                }
                if !self.opts.devices {
                    return self.skip(path, "device (devices not enabled)");
                }
                let ft = if entry.kind == Kind::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                (ft, rustix::fs::makedev(major as u32, minor as u32))
            }
            _ => unreachable!("node() is only called for FIFOs and devices"),
        };
        let (parent, name) = names::split(path);
        let dir = parent_dir(&self.root, &mut self.track, parent)?;
        create_leaf(&self.root, dir.as_fd(), name, path, "mknodat", || {
            rustix::fs::mknodat(&dir, name, ft, Mode::from_raw_mode(meta.mode & 0o777), dev)
        })?;
        self.chown_at(dir.as_fd(), name, path, meta)?;
        self.chmod_special(dir.as_fd(), name, path, ft, meta.mode)?;
        self.xattrs(XattrTarget::NoFollow(dir.as_fd(), name), path, entry, true)?;
        rustix::fs::utimensat(&dir, name, &times(meta), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.root.err("utimensat", path, e))?;
        note_at(&self.root, &mut self.track, dir.as_fd(), name, path, parent)?;
        drop(dir);
        self.track.mark(path, Origin::Fresh);
        Ok(())
    }

    /// What is recorded for the object open at `fd`.
    fn fd_origin(&self, fd: BorrowedFd<'_>, path: &[u8]) -> Result<Option<Origin>> {
        if !self.track.enabled() {
            return Ok(None);
        }
        let st = rustix::fs::fstat(fd).map_err(|e| self.root.err("fstat", path, e))?;
        Ok(self.track.by_ino(ino(&st)))
    }

    /// Sets the mode of a FIFO or device just made (umask applied to `mknodat`'s mode) without
    /// opening it (that could block or reach a driver): through an `O_PATH` descriptor,
    /// checked to be the node, and `/proc/self/fd`.
    pub(super) fn chmod_special(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        ft: FileType,
        mode: u32,
    ) -> Result<()> {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.root.err("openat", path, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.root.err("fstat", path, e))?;
        if inroot::file_type(&st) != ft {
            return Err(self.root.err("mknodat", path, Errno::EXIST));
        }
        if st.st_mode & 0o7777 == mode {
            return Ok(());
        }
        let mode = Mode::from_raw_mode(mode);
        match rustix::fs::chmod(inroot::proc_fd(fd.as_fd()), mode) {
            Ok(()) => Ok(()),
            // No /proc: the name was just made and checked, chmod it by name.
            Err(Errno::NOENT) => rustix::fs::chmodat(dir, name, mode, AtFlags::empty())
                .map_err(|e| self.root.err("fchmodat", path, e)),
            Err(e) => Err(self.root.err("chmod", path, e)),
        }
    }

    fn chown_fd(&self, fd: BorrowedFd<'_>, path: &[u8], meta: &Meta) -> Result<()> {
        if !self.opts.same_owner {
            return Ok(());
        }
        rustix::fs::fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| self.root.err("fchown", path, e))
    }

    pub(super) fn chown_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        meta: &Meta,
    ) -> Result<()> {
        if !self.opts.same_owner {
            return Ok(());
        }
        rustix::fs::chownat(
            dir,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.root.err("fchownat", path, e))
    }

    /// Writes an entry's xattrs, by the rules on [`super::apply_tar`]. `special`: the target is
    /// not a regular file or directory (the kernel refuses `user.*` there).
    fn xattrs(
        &self,
        target: XattrTarget<'_>,
        path: &[u8],
        entry: &Entry,
        special: bool,
    ) -> Result<()> {
        if entry.xattrs.is_empty() {
            return Ok(());
        }
        let proc_path = match target {
            XattrTarget::NoFollow(dir, name) => inroot::proc_path(dir, name),
            XattrTarget::Fd(_) => Vec::new(),
        };
        for (name, value) in &entry.xattrs {
            let shown = String::from_utf8_lossy(name);
            if whiteout::is_overlay_xattr(name) {
                tracing::debug!(path = %names::show(path), xattr = %shown, "dropping overlay xattr from the archive");
                continue;
            }
            if name.starts_with(b"trusted.") && !self.is_root {
                tracing::warn!(path = %names::show(path), xattr = %shown, "not root: skipping trusted.* xattr");
                continue;
            }
            let res = match target {
                XattrTarget::Fd(fd) => {
                    rustix::fs::fsetxattr(fd, name.as_slice(), value, XattrFlags::empty())
                }
                XattrTarget::NoFollow(..) => rustix::fs::lsetxattr(
                    proc_path.as_slice(),
                    name.as_slice(),
                    value,
                    XattrFlags::empty(),
                ),
            };
            match res {
                Ok(()) => {}
                Err(Errno::NOTSUP) => {
                    tracing::warn!(path = %names::show(path), xattr = %shown, "filesystem does not support this xattr; skipped");
                }
                Err(Errno::PERM) if !self.is_root || (special && name.starts_with(b"user.")) => {
                    tracing::warn!(path = %names::show(path), xattr = %shown, "not permitted to set this xattr; skipped");
                }
                Err(Errno::INVAL | Errno::RANGE | Errno::NAMETOOLONG) => {
                    return Err(invalid(format!(
                        "entry {:?} has an xattr {shown:?} the kernel refuses",
                        names::show(&entry.path)
                    )));
                }
                Err(e) => return Err(self.root.err("setxattr", path, e)),
            }
        }
        Ok(())
    }
}

/// Sets a directory's deferred mode and mtime, if the path still names the same directory.
pub(super) fn fix_dir(root: &Root, d: &DirFix) -> Result<()> {
    let fd = match root.open_in(
        &d.path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
    ) {
        Ok(fd) => fd,
        // Replaced or removed by a later entry: that entry's attributes stand.
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(()),
        Err(e) => return Err(root.err("openat2", &d.path, e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| root.err("fstat", &d.path, e))?;
    if (st.st_dev, st.st_ino) != (d.dev, d.ino) {
        return Ok(());
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode))
        .map_err(|e| root.err("fchmod", &d.path, e))?;
    let ts = Timestamps {
        last_access: d.mtime,
        last_modification: d.mtime,
    };
    rustix::fs::futimens(&fd, &ts).map_err(|e| root.err("futimens", &d.path, e))
}

/// Records the object open at `fd` (named `path`) by identity with `origin`.
pub(super) fn note_fd(
    root: &Root,
    track: &mut Tracker,
    fd: BorrowedFd<'_>,
    path: &[u8],
    origin: Origin,
) -> Result<()> {
    if !track.enabled() {
        return Ok(());
    }
    let st = rustix::fs::fstat(fd).map_err(|e| root.err("fstat", path, e))?;
    track.note(ino(&st), origin);
    Ok(())
}

/// Records `name` in `dir` (just made, named `path`; `parent` names `dir`) as made by this
/// archive, and the directories above it as kept.
pub(super) fn note_at(
    root: &Root,
    track: &mut Tracker,
    dir: BorrowedFd<'_>,
    name: &[u8],
    path: &[u8],
    parent: &[u8],
) -> Result<()> {
    if !track.enabled() {
        return Ok(());
    }
    if let Some(st) = inroot::lstat_at(dir, name).map_err(|e| root.err("fstatat", path, e))? {
        track.note(ino(&st), Origin::Fresh);
    }
    note_parents(root, track, dir, parent)
}

/// Records the directory `dir` (named `parent`) and those above it, up to the root or to one
/// already recorded, as kept: they hold something this archive made, whatever names reach
/// them, so an opaque marker or a whiteout of this layer clears them instead of removing them.
pub(super) fn note_parents(
    root: &Root,
    track: &mut Tracker,
    dir: BorrowedFd<'_>,
    parent: &[u8],
) -> Result<()> {
    if !track.enabled() {
        return Ok(());
    }
    let err = |call: &str, e: Errno| root.err(call, parent, e);
    let mut id = ino(&rustix::fs::fstat(dir).map_err(|e| err("fstat", e))?);
    let mut up: Option<OwnedFd> = None;
    for _ in 0..=inroot::MAX_DEPTH {
        if track.is_root(id) || track.by_ino(id).is_some() {
            return Ok(());
        }
        track.note(id, Origin::Merged);
        let from = up.as_ref().map_or(dir, |f| f.as_fd());
        let next = rustix::fs::openat(
            from,
            "..",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err("openat ..", e))?;
        id = ino(&rustix::fs::fstat(&next).map_err(|e| err("fstat", e))?);
        up = Some(next);
    }
    Ok(())
}
