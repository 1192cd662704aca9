//! The operations that change the view's names, and copy-up, all in branch 0 (the layer's own
//! diff directory), in AUFS form: copy-up before any change to a lower node, `.wh.<name>` for
//! a removed lower name, `.wh..wh..opq` in a directory made over a whiteout.
//!
//! Every change of branch 0's names runs under the `ns` mutex, so the cached listings and the
//! inode table move from one consistent state to the next; reads and writes of open files
//! never take it. A copy-up is built in the work directory and renamed into place, so a crash
//! leaves either the lower file showing or the whole copy, never half of one.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use fuser::FileAttr;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use strata_archive::whiteout;

use crate::copy;
use crate::sys::{self, Kind, Meta};
use crate::union::Merged;

use super::fs::{R, UnionFs, errno_of, lock, visible_name};
use super::tree::ROOT;

/// Who asked: a node made through the mount is given to them (when the server may).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// A new node's kind and how to make it.
#[derive(Debug)]
pub(crate) enum Make<'a> {
    Dir(u32),
    File(u32),
    Symlink(&'a Path),
    Node(u32, u64),
}

pub(super) fn split(rel: &Path) -> (&Path, &OsStr) {
    (
        rel.parent().unwrap_or(Path::new("")),
        rel.file_name().unwrap_or(OsStr::new(".")),
    )
}

impl UnionFs {
    /// Copies node `ino` (and the directories above it) up into branch 0 unless it is there.
    pub(crate) fn copy_up(&self, ino: u64) -> R<()> {
        if self.locate(ino)?.1 == 0 {
            return Ok(());
        }
        let _ns = lock(&self.ns);
        self.copy_up_locked(ino)
    }

    pub(super) fn copy_up_locked(&self, ino: u64) -> R<()> {
        let chain = {
            let tree = lock(&self.tree);
            let mut chain = Vec::new();
            let mut at = ino;
            while at != ROOT {
                let node = tree.get(at).ok_or(Errno::NOENT)?;
                if node.layer == 0 {
                    break;
                }
                chain.push(at);
                at = node.links.first().ok_or(Errno::NOENT)?.0;
            }
            chain
        };
        for n in chain.into_iter().rev() {
            self.copy_up_one(n)?;
        }
        Ok(())
    }

    /// Copies one node whose parent directory is in branch 0 already.
    fn copy_up_one(&self, ino: u64) -> R<()> {
        let (rel, layer, kind) = self.locate(ino)?;
        if layer == 0 {
            return Ok(());
        }
        let origin = lock(&self.tree).get(ino).and_then(|n| n.origin);
        let (parent_rel, name) = split(&rel);
        let upper_parent = self.upper_dir(parent_rel)?;
        let src_parent = self.open_in(layer, parent_rel, OFlags::RDONLY | OFlags::DIRECTORY)?;
        let src_path = self.branch_paths[layer].join(&rel);
        let dst_path = self.branch_paths[0].join(&rel);
        // A copy-up is not a change of the parent directory: its times stay (as overlayfs).
        let parent_times = times_of(&upper_parent)?;
        if kind == Kind::Dir {
            rfs::mkdirat(&upper_parent, name, Mode::from_raw_mode(0o700))?;
            let made = rfs::openat(&upper_parent, name, dir_flags(), Mode::empty())?;
            let src = rfs::openat(&src_parent, name, dir_flags(), Mode::empty())?;
            self.copier
                .copy_dir_meta(src.as_fd(), made.as_fd(), &src_path, &dst_path)
                .map_err(|e| errno_of(&e))?;
        } else {
            let meta =
                sys::stat_at(src_parent.as_fd(), name, &src_path).map_err(|e| errno_of(&e))?;
            let tmp = OsString::from(self.tmp_name());
            let tmp_path = self.work.path.join(&tmp);
            let copied = self
                .copier
                .copy_node(
                    src_parent.as_fd(),
                    name,
                    &meta,
                    self.work.fd.as_fd(),
                    &tmp,
                    &src_path,
                    &tmp_path,
                )
                .map_err(|e| errno_of(&e))
                .and_then(|()| rfs::renameat(&self.work.fd, &tmp, &upper_parent, name));
            if let Err(e) = copied {
                let _ = rfs::unlinkat(&self.work.fd, &tmp, AtFlags::empty());
                return Err(e);
            }
        }
        restore_times(&upper_parent, &parent_times)?;
        if let Some(origin) = origin {
            // The file's other names in its branch become links of the copy.
            self.copy_up_links(ino, &rel, origin)?;
        }
        lock(&self.tree).copied_up(ino);
        Ok(())
    }

    /// The parent's path and branch-0 directory, for a change of `name` in it.
    fn upper_parent(&self, parent: u64) -> R<(PathBuf, OwnedFd)> {
        self.copy_up_locked(parent)?;
        let rel = self.locate(parent)?.0;
        let fd = self.upper_dir(&rel)?;
        Ok((rel, fd))
    }

    /// Makes `name` in directory `parent`.
    pub(crate) fn make(
        &self,
        parent: u64,
        name: &OsStr,
        what: Make<'_>,
        caller: Caller,
    ) -> R<(u64, FileAttr)> {
        self.check_writable()?;
        if !visible_name(name) {
            // AUFS refuses to make names it would take for its own.
            return Err(Errno::PERM);
        }
        let _ns = lock(&self.ns);
        if self.listing(parent)?.contains_key(name) {
            return Err(Errno::EXIST);
        }
        let (_, dir) = self.upper_parent(parent)?;
        let wh = whiteout::whiteout_name(name);
        let had_whiteout = rfs::statat(&dir, &wh, AtFlags::SYMLINK_NOFOLLOW).is_ok();
        let mode = match what {
            Make::Dir(m) | Make::File(m) | Make::Node(m, _) => m & 0o7777,
            Make::Symlink(_) => 0o777,
        };
        let kind = match what {
            Make::Dir(mode) => {
                rfs::mkdirat(&dir, name, Mode::from_raw_mode(mode & 0o7777))?;
                if had_whiteout {
                    // Over a whiteout: the lower directory of that name stays hidden.
                    if let Err(e) = mark_opaque(&dir, name) {
                        let _ = rfs::unlinkat(&dir, name, AtFlags::REMOVEDIR);
                        return Err(e);
                    }
                }
                Kind::Dir
            }
            Make::File(mode) => {
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
                rfs::openat(
                    &dir,
                    name,
                    flags | OFlags::CLOEXEC,
                    Mode::from_raw_mode(mode & 0o7777),
                )?;
                Kind::File
            }
            Make::Symlink(target) => {
                rfs::symlinkat(target, &dir, name)?;
                Kind::Symlink
            }
            Make::Node(mode, rdev) => {
                let ftype = rfs::FileType::from_raw_mode(mode);
                rfs::mknodat(&dir, name, ftype, Mode::from_raw_mode(mode & 0o7777), rdev)?;
                Kind::from_mode(mode)
            }
        };
        if self.root {
            // Inside a set-group-ID directory the file system gave the directory's group.
            let setgid = rfs::fstat(&dir).is_ok_and(|st| st.st_mode & 0o2000 != 0);
            let gid = (!setgid).then(|| rfs::Gid::from_raw(caller.gid));
            let owned = rfs::chownat(
                &dir,
                name,
                Some(rfs::Uid::from_raw(caller.uid)),
                gid,
                AtFlags::SYMLINK_NOFOLLOW,
            );
            // A chown clears the set-user-ID and set-group-ID bits of a file: put them back.
            let owned = owned.and_then(|()| {
                if kind != Kind::Dir && kind != Kind::Symlink && mode & 0o6000 != 0 {
                    rfs::chmodat(&dir, name, Mode::from_raw_mode(mode), AtFlags::empty())
                } else {
                    Ok(())
                }
            });
            if let Err(e) = owned {
                let flag = if kind == Kind::Dir {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                let _ = remove_upper_dir_contents(&dir, name, kind);
                let _ = rfs::unlinkat(&dir, name, flag);
                return Err(e);
            }
        }
        if had_whiteout {
            unlink_quiet(&dir, &wh)?;
        }
        let ino = {
            let mut tree = lock(&self.tree);
            if let Some(l) = tree.listing_mut(parent) {
                l.insert(name.to_os_string(), new_entry(name, kind, had_whiteout));
            }
            tree.insert_new(parent, name, kind)
        };
        Ok((ino, self.attr(ino)?))
    }

    /// Removes the non-directory `name` (`dir == false`) or the empty directory `name`.
    pub(crate) fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> R<()> {
        self.check_writable()?;
        if !visible_name(name) {
            return Err(Errno::NOENT);
        }
        let _ns = lock(&self.ns);
        let m = self.entry(parent, name)?;
        match (dir, m.kind == Kind::Dir) {
            (false, true) => return Err(Errno::ISDIR),
            (true, false) => return Err(Errno::NOTDIR),
            _ => {}
        }
        if dir {
            let child = self.child_node(parent, name, &m);
            if !self.listing(child)?.is_empty() {
                return Err(Errno::NOTEMPTY);
            }
        }
        let (_, upper) = self.upper_parent(parent)?;
        if m.from == 0 {
            if dir {
                remove_upper_dir_contents(&upper, name, Kind::Dir)?;
                rfs::unlinkat(&upper, name, AtFlags::REMOVEDIR)?;
            } else {
                rfs::unlinkat(&upper, name, AtFlags::empty())?;
            }
        }
        if m.lower {
            write_whiteout(&upper, name)?;
        }
        let mut tree = lock(&self.tree);
        if let Some(l) = tree.listing_mut(parent) {
            l.remove(name);
        }
        tree.unlink(parent, name);
        Ok(())
    }

    /// The merged entry `name` of directory `parent`.
    fn entry(&self, parent: u64, name: &OsStr) -> R<Merged> {
        self.listing(parent)?.get(name).cloned().ok_or(Errno::NOENT)
    }

    /// The node of entry `m` (`name` in `parent`), entered without counting a lookup if the
    /// kernel has not looked it up.
    pub(super) fn child_node(&self, parent: u64, name: &OsStr, m: &Merged) -> u64 {
        let mut tree = lock(&self.tree);
        if let Some(c) = tree.child(parent, name) {
            return c;
        }
        let c = tree.enter(parent, name, m, None);
        tree.forget(c, 1);
        c
    }

    /// Renames `name` of `parent` to `new_name` of `new_parent`. A directory that is not
    /// wholly in branch 0 cannot move (EXDEV: the caller copies it, as with overlayfs without
    /// `redirect_dir`). `noreplace`: EEXIST if the target exists.
    pub(crate) fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        noreplace: bool,
    ) -> R<()> {
        self.check_writable()?;
        if !visible_name(name) {
            return Err(Errno::NOENT);
        }
        if !visible_name(new_name) {
            return Err(Errno::PERM);
        }
        let _ns = lock(&self.ns);
        let m = self.entry(parent, name)?;
        let target = self.listing(new_parent)?.get(new_name).cloned();
        if target.is_some() && noreplace {
            return Err(Errno::EXIST);
        }
        if parent == new_parent && name == new_name {
            return Ok(());
        }
        let src = self.child_node(parent, name, &m);
        if m.kind == Kind::Dir {
            let only_upper = m.from == 0
                && !m.lower
                && lock(&self.tree)
                    .get(src)
                    .and_then(|n| n.dir.as_ref())
                    .is_some_and(|d| d.branches == [0]);
            if !only_upper {
                return Err(Errno::XDEV);
            }
            // Not into itself or below it.
            let mut at = new_parent;
            let tree = lock(&self.tree);
            while at != ROOT {
                if at == src {
                    return Err(Errno::INVAL);
                }
                at = tree
                    .get(at)
                    .and_then(|n| n.links.first())
                    .map_or(ROOT, |l| l.0);
            }
        }
        if let Some(t) = &target {
            match (m.kind == Kind::Dir, t.kind == Kind::Dir) {
                (false, true) => return Err(Errno::ISDIR),
                (true, false) => return Err(Errno::NOTDIR),
                (true, true) => {
                    let t_node = self.child_node(new_parent, new_name, t);
                    if !self.listing(t_node)?.is_empty() {
                        return Err(Errno::NOTEMPTY);
                    }
                }
                (false, false) => {}
            }
        }
        self.copy_up_locked(src)?;
        let (_, from_dir) = self.upper_parent(parent)?;
        let (_, to_dir) = self.upper_parent(new_parent)?;
        let wh_new = whiteout::whiteout_name(new_name);
        let had_whiteout = rfs::statat(&to_dir, &wh_new, AtFlags::SYMLINK_NOFOLLOW).is_ok();
        let lower_new = target.as_ref().map_or(had_whiteout, |t| t.lower);
        if m.kind == Kind::Dir {
            if let Some(t) = &target {
                if t.from == 0 {
                    remove_upper_dir_contents(&to_dir, new_name, Kind::Dir)?;
                }
            }
            if lower_new {
                // What a lower directory of the new name holds stays hidden.
                mark_opaque(&from_dir, name)?;
            }
        }
        rfs::renameat(&from_dir, name, &to_dir, new_name)?;
        if m.lower {
            write_whiteout(&from_dir, name)?;
        }
        if had_whiteout {
            unlink_quiet(&to_dir, &wh_new)?;
        }
        let mut tree = lock(&self.tree);
        if let Some(l) = tree.listing_mut(parent) {
            l.remove(name);
        }
        if let Some(l) = tree.listing_mut(new_parent) {
            l.insert(
                new_name.to_os_string(),
                new_entry(new_name, m.kind, lower_new),
            );
        }
        tree.rename(parent, name, new_parent, new_name);
        Ok(())
    }

    /// A hard link `new_name` in `new_parent` to node `ino`, both in branch 0.
    pub(crate) fn link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> R<(u64, FileAttr)> {
        self.check_writable()?;
        if !visible_name(new_name) {
            return Err(Errno::PERM);
        }
        let _ns = lock(&self.ns);
        if self.listing(new_parent)?.contains_key(new_name) {
            return Err(Errno::EXIST);
        }
        let (_, _, kind) = self.locate(ino)?;
        if kind == Kind::Dir {
            return Err(Errno::PERM);
        }
        self.copy_up_locked(ino)?;
        let (_, to_dir) = self.upper_parent(new_parent)?;
        let rel = self.locate(ino)?.0;
        let (src_parent, src_name) = split(&rel);
        let from_dir = self.upper_dir(src_parent)?;
        rfs::linkat(&from_dir, src_name, &to_dir, new_name, AtFlags::empty())?;
        let wh = whiteout::whiteout_name(new_name);
        let had_whiteout = rfs::statat(&to_dir, &wh, AtFlags::SYMLINK_NOFOLLOW).is_ok();
        if had_whiteout {
            unlink_quiet(&to_dir, &wh)?;
        }
        {
            let mut tree = lock(&self.tree);
            if let Some(l) = tree.listing_mut(new_parent) {
                l.insert(
                    new_name.to_os_string(),
                    new_entry(new_name, kind, had_whiteout),
                );
            }
            tree.add_link(ino, new_parent, new_name);
            if let Some(n) = tree.get_mut(ino) {
                n.lookups += 1;
            }
        }
        Ok((ino, self.attr(ino)?))
    }
}

/// Puts back a directory's access and modification times (`st`, from before an entry was
/// placed in it).
pub(super) fn restore_times(dir: &OwnedFd, st: &Meta) -> R<()> {
    rfs::futimens(dir, &copy::timestamps(st))
}

/// The `lstat` of an open directory of branch 0, to restore its times later.
pub(super) fn times_of(dir: &OwnedFd) -> R<Meta> {
    sys::fstat(dir.as_fd(), Path::new(".")).map_err(|e| errno_of(&e))
}

/// Puts the opaque marker in directory `name` of `parent`.
fn mark_opaque(parent: &OwnedFd, name: &OsStr) -> R<()> {
    let dir = rfs::openat(parent, name, dir_flags(), Mode::empty())?;
    let opq = OsStr::from_bytes(whiteout::OPAQUE.as_bytes());
    sys::make_marker(dir.as_fd(), opq, Path::new(opq)).map_err(|e| errno_of(&e))
}

/// Writes `.wh.<name>` in `dir`.
fn write_whiteout(dir: &OwnedFd, name: &OsStr) -> R<()> {
    let wh = whiteout::whiteout_name(name);
    sys::make_marker(dir.as_fd(), &wh, Path::new(&wh)).map_err(|e| errno_of(&e))
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn new_entry(name: &OsStr, kind: Kind, lower: bool) -> Merged {
    Merged {
        name: name.to_os_string(),
        from: 0,
        kind,
        dir_branches: if kind == Kind::Dir {
            vec![0]
        } else {
            Vec::new()
        },
        lower,
    }
}

fn unlink_quiet(dir: &OwnedFd, name: &OsStr) -> R<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Empties branch 0's directory `name` of what the view does not show (whiteouts and
/// markers), so that it can be removed or replaced. The view showed it empty: nothing else is
/// in it.
fn remove_upper_dir_contents(parent: &OwnedFd, name: &OsStr, kind: Kind) -> R<()> {
    if kind != Kind::Dir {
        return Ok(());
    }
    let dir = rfs::openat(parent, name, dir_flags(), Mode::empty())?;
    let listing = sys::list(dir.as_fd(), Path::new(name)).map_err(|e| errno_of(&e))?;
    for ent in listing {
        if !sys::is_wh_name(&ent.name) || ent.kind == Kind::Dir {
            return Err(Errno::NOTEMPTY);
        }
        unlink_quiet(&dir, &ent.name)?;
    }
    Ok(())
}
