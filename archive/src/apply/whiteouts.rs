//! Whiteout entries (`.wh.<name>`, `.wh..wh..opq`) in the three [`WhiteoutMode`]s.
//!
//! Whiteouts only affect lower layers: whatever this archive made (see `track`) survives its
//! own whiteouts and opaque markers, in any order. A whiteout of a directory that holds
//! something this archive made clears the directory's lower content instead of removing it
//! (in overlay form: makes it opaque), so what the layer made stays visible.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, XattrFlags};
use rustix::io::Errno;

use super::entries::{create_leaf, note_at, parent_dir, times};
use super::inroot::{self, MAX_DEPTH};
use super::names;
use super::track::{Origin, ino};
use super::{Applier, Meta, WhiteoutMode};
use crate::whiteout::OVERLAY_OPAQUE_XATTR;
use crate::{Error, ErrorKind, Result};

impl Applier<'_> {
    /// `.wh.<target>` in the directory `parent`; `name` is the whiteout's own name.
    pub(super) fn whiteout(
        &mut self,
        parent: &[u8],
        name: &[u8],
        target: &[u8],
        meta: &Meta,
    ) -> Result<()> {
        if self.opts.whiteouts == WhiteoutMode::Keep {
            return self.regular(&names::join(parent, name), None, meta, None);
        }
        let lexical = names::join(parent, target);
        // The directory as it really is (through symlinks), if it exists.
        let phys_parent = self
            .root
            .physical(parent)
            .map_err(|e| self.root.resolve_err("resolve", parent, e))?;
        let phys = phys_parent.as_deref().map(|p| names::join(p, target));
        // And the object itself, however the archive named it when it made it.
        let by_ino = match phys_parent.as_deref() {
            Some(p) => self.origin_at(p, target, &lexical)?,
            None => None,
        };
        let origin = match (
            self.track.get(&lexical),
            phys.as_deref().map(|p| self.track.get(p)),
            by_ino,
        ) {
            (Some(Origin::Fresh), _, _) | (_, Some(Some(Origin::Fresh)), _) => Some(Origin::Fresh),
            (_, _, Some(Origin::Fresh)) => Some(Origin::Fresh),
            (Some(Origin::Merged), _, _) | (_, Some(Some(Origin::Merged)), _) => {
                Some(Origin::Merged)
            }
            (_, _, Some(Origin::Merged)) => Some(Origin::Merged),
            _ => None,
        };
        match (self.opts.whiteouts, origin) {
            // Made by this archive: whiteouts only affect lower layers.
            (_, Some(Origin::Fresh)) => Ok(()),
            // A directory holding what this archive made: hide only its lower content.
            (WhiteoutMode::Overlay { user_xattr }, Some(Origin::Merged)) => {
                self.set_opaque(&lexical, user_xattr)
            }
            (_, Some(Origin::Merged)) => self.clear(&lexical),
            (WhiteoutMode::Remove, None) => {
                let Some(phys_parent) = phys_parent else {
                    return Ok(()); // nothing there to hide
                };
                let dir = match self
                    .root
                    .open_exact(&phys_parent, OFlags::PATH | OFlags::DIRECTORY)
                {
                    Ok(dir) => dir,
                    Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(self.root.resolve_err("openat2", parent, e)),
                };
                self.root
                    .remove_all(dir.as_fd(), target)
                    .map_err(|e| self.root.err("remove", &lexical, e))
            }
            // Overlay (Keep returned above): a 0/0 character device with the entry's
            // permission bits, owner and mtime, so writing it back gives the same entry;
            // nothing when nothing below has that name.
            (_, None) => {
                if !self.below(phys.as_deref().unwrap_or(&lexical), false)? {
                    return Ok(());
                }
                let dir = parent_dir(&self.root, &mut self.track, parent)?;
                create_leaf(&self.root, dir.as_fd(), target, &lexical, "mknodat", || {
                    rustix::fs::mknodat(
                        &dir,
                        target,
                        FileType::CharacterDevice,
                        Mode::from_raw_mode(meta.mode & 0o777),
                        rustix::fs::makedev(0, 0),
                    )
                })?;
                self.chown_at(dir.as_fd(), target, &lexical, meta)?;
                self.chmod_special(
                    dir.as_fd(),
                    target,
                    &lexical,
                    FileType::CharacterDevice,
                    meta.mode,
                )?;
                rustix::fs::utimensat(
                    &dir,
                    target,
                    &times(meta),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| self.root.err("utimensat", &lexical, e))?;
                note_at(
                    &self.root,
                    &mut self.track,
                    dir.as_fd(),
                    target,
                    &lexical,
                    parent,
                )?;
                drop(dir);
                self.track.mark(&lexical, Origin::Fresh);
                Ok(())
            }
        }
    }

    /// The entries of `dir` (open as `fd`), `depth` levels below where a walk started; a walk
    /// deeper than [`MAX_DEPTH`] is an error.
    fn level(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        dir: &[u8],
        depth: usize,
    ) -> Result<Vec<(Vec<u8>, FileType)>> {
        if depth > MAX_DEPTH {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{}: deeper than {MAX_DEPTH} levels",
                    self.root.display(dir).display()
                ),
            ));
        }
        inroot::read_names(fd).map_err(|e| self.root.err("getdents", dir, e))
    }

    /// Removes the whiteouts (0/0 character devices: only this archive's can be there) under
    /// the directory `fd`, named `dir` without symlinks, which was just made opaque. Subtrees
    /// made opaque before are skipped: their whiteouts went then, and none is written under an
    /// opaque directory since, so each directory is walked once.
    fn drop_whiteouts(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        dir: &[u8],
        depth: usize,
    ) -> Result<()> {
        let children = self.level(fd, dir, depth)?;
        for (name, ft) in children {
            let path = names::join(dir, &name);
            match ft {
                FileType::Directory => {
                    if self.track.is_cleared(&path) {
                        continue;
                    }
                    let sub = rustix::fs::openat(
                        fd,
                        name.as_slice(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| self.root.err("openat", &path, e))?;
                    self.drop_whiteouts(sub.as_fd(), &path, depth + 1)?;
                }
                FileType::CharacterDevice | FileType::Unknown => {
                    let st = inroot::lstat_at(fd, &name)
                        .map_err(|e| self.root.err("fstatat", &path, e))?;
                    if st.is_some_and(|st| {
                        inroot::file_type(&st) == FileType::CharacterDevice && st.st_rdev == 0
                    }) {
                        rustix::fs::unlinkat(fd, name.as_slice(), rustix::fs::AtFlags::empty())
                            .map_err(|e| self.root.err("unlink", &path, e))?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether the lower layers ([`super::ApplyOptions::lowers`]) show something at `path`
    /// (named without symlinks of this layer; a directory when `dir`), as overlayfs would
    /// merge them, and no directory above it in this layer is opaque. `true` when the lower
    /// layers are unknown.
    fn below(&self, path: &[u8], dir: bool) -> Result<bool> {
        let Some(lowers) = self.opts.lowers.as_ref() else {
            return Ok(true);
        };
        let user_xattr = matches!(
            self.opts.whiteouts,
            WhiteoutMode::Overlay { user_xattr: true }
        );
        let comps: Vec<&[u8]> = names::components(path).collect();
        let mut layers: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
        let mut rel = PathBuf::new();
        for (i, comp) in comps.iter().enumerate() {
            if self.upper_opaque(&comps[..i].join(&b'/'), user_xattr)? {
                return Ok(false);
            }
            rel.push(OsStr::from_bytes(comp));
            let last = i + 1 == comps.len();
            let mut next = Vec::new();
            let mut other = false;
            for layer in &layers {
                let p = layer.join(&rel);
                let st = match rustix::fs::lstat(&p) {
                    Ok(st) => st,
                    Err(Errno::NOENT | Errno::NOTDIR) => continue,
                    Err(e) => return Err(Error::io(format!("lstat {}", p.display()), e.into())),
                };
                match inroot::file_type(&st) {
                    // A whiteout: nothing further down shows.
                    FileType::CharacterDevice if st.st_rdev == 0 => break,
                    FileType::Directory => {
                        next.push(*layer);
                        if is_opaque(&p, user_xattr) {
                            break;
                        }
                    }
                    // Anything else hides what is below it; it is what shows if it is on top.
                    _ => {
                        other = next.is_empty();
                        break;
                    }
                }
            }
            if last {
                return Ok(!next.is_empty() || (other && !dir));
            }
            if next.is_empty() {
                return Ok(false);
            }
            layers = next;
        }
        // The root: there is one below when there is any lower layer.
        Ok(!layers.is_empty())
    }

    /// Whether this layer's directory `dir` (named without symlinks) is opaque already.
    fn upper_opaque(&self, dir: &[u8], user_xattr: bool) -> Result<bool> {
        match self
            .root
            .open_exact(dir, OFlags::RDONLY | OFlags::DIRECTORY)
        {
            Ok(fd) => Ok(is_opaque_fd(fd.as_fd(), user_xattr)),
            // Missing, or reached through a dangling symlink: not a directory of this layer.
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => Ok(false),
            Err(e) => Err(self.root.resolve_err("openat2", dir, e)),
        }
    }

    /// What is recorded for the object `name` in the directory `phys_parent` (named without
    /// symlinks), by identity; `None` when it is missing or unrecorded.
    fn origin_at(&self, phys_parent: &[u8], name: &[u8], lexical: &[u8]) -> Result<Option<Origin>> {
        if !self.track.enabled() {
            return Ok(None);
        }
        let dir = match self
            .root
            .open_exact(phys_parent, OFlags::PATH | OFlags::DIRECTORY)
        {
            Ok(dir) => dir,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(self.root.resolve_err("openat2", phys_parent, e)),
        };
        Ok(inroot::lstat_at(dir.as_fd(), name)
            .map_err(|e| self.root.err("fstatat", lexical, e))?
            .and_then(|st| self.track.by_ino(ino(&st))))
    }

    /// The opaque marker in the directory `dir`; `name` is the marker's own name.
    pub(super) fn opaque(&mut self, dir: &[u8], name: &[u8], meta: &Meta) -> Result<()> {
        match self.opts.whiteouts {
            WhiteoutMode::Keep => self.regular(&names::join(dir, name), None, meta, None),
            WhiteoutMode::Remove => self.clear(dir),
            WhiteoutMode::Overlay { user_xattr } => self.set_opaque(dir, user_xattr),
        }
    }

    /// Removes the lower content of the directory `dir`, recursively: everything this archive
    /// did not make. Done once per subtree (later markers there have nothing left to clear).
    fn clear(&mut self, dir: &[u8]) -> Result<()> {
        // Name the directory as it really is, so its children are named as the archive
        // names them when it does not go through symlinks (`d -> /` then `d/.wh..wh..opq`
        // clears the root, keeping what the archive made there).
        let phys = match self.root.physical(dir) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()),
            Err(e) => return Err(self.root.resolve_err("resolve", dir, e)),
        };
        if !self.track.claim_clear(&phys) {
            return Ok(());
        }
        let fd = match self
            .root
            .open_exact(&phys, OFlags::RDONLY | OFlags::DIRECTORY)
        {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
            Err(e) => return Err(self.root.resolve_err("openat2", dir, e)),
        };
        self.prune(fd.as_fd(), &phys, 0)
    }

    fn prune(&self, fd: std::os::fd::BorrowedFd<'_>, dir: &[u8], depth: usize) -> Result<()> {
        let children = self.level(fd, dir, depth)?;
        for (name, _) in children {
            let path = names::join(dir, &name);
            let origin = match self.track.get(&path) {
                Some(o) => Some(o),
                // Made or kept under another name (through a symlink)?
                None => inroot::lstat_at(fd, &name)
                    .map_err(|e| self.root.err("fstatat", &path, e))?
                    .and_then(|st| self.track.by_ino(ino(&st))),
            };
            match origin {
                Some(Origin::Fresh) => {}
                Some(Origin::Merged) => {
                    let sub = rustix::fs::openat(
                        fd,
                        name.as_slice(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    );
                    match sub {
                        Ok(sub) => self.prune(sub.as_fd(), &path, depth + 1)?,
                        Err(Errno::NOTDIR | Errno::LOOP | Errno::NOENT) => {}
                        Err(e) => return Err(self.root.err("openat", &path, e)),
                    }
                }
                None => self
                    .root
                    .remove_all(fd, &name)
                    .map_err(|e| self.root.err("remove", &path, e))?,
            }
        }
        Ok(())
    }

    /// Marks the directory `dir` opaque for overlayfs, making it (and its parents) if missing;
    /// only makes it when no lower layer has a directory there to hide.
    fn set_opaque(&mut self, dir: &[u8], user_xattr: bool) -> Result<()> {
        let d = parent_dir(&self.root, &mut self.track, dir)?;
        let phys = self
            .root
            .physical(dir)
            .map_err(|e| self.root.resolve_err("resolve", dir, e))?;
        if !self.below(phys.as_deref().unwrap_or(dir), true)? {
            return Ok(());
        }
        let fd = rustix::fs::openat(
            &d,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.root.err("openat", dir, e))?;
        drop(d);
        let xattr = opaque_xattr(user_xattr);
        rustix::fs::fsetxattr(&fd, xattr.as_str(), b"y", XattrFlags::empty())
            .map_err(|e| self.root.err("fsetxattr", dir, e))?;
        // Whiteouts written under it earlier hide nothing now, and overlayfs would list them.
        let phys = phys.unwrap_or_else(|| dir.to_vec());
        if self.track.claim_clear(&phys) {
            self.drop_whiteouts(fd.as_fd(), &phys, 0)?;
        }
        if self.track.get(dir).is_none() {
            self.track.mark(dir, Origin::Merged);
        }
        Ok(())
    }
}

/// The name of overlay's opaque xattr in the namespace in use.
fn opaque_xattr(user_xattr: bool) -> String {
    if user_xattr {
        format!("user.{OVERLAY_OPAQUE_XATTR}")
    } else {
        format!("trusted.{OVERLAY_OPAQUE_XATTR}")
    }
}

/// Whether the directory at `path` (a trusted lower layer's) is opaque.
fn is_opaque(path: &Path, user_xattr: bool) -> bool {
    let mut buf = [0u8; 8];
    matches!(
        rustix::fs::lgetxattr(path, opaque_xattr(user_xattr).as_str(), &mut buf),
        Ok(1) if buf[0] == b'y'
    )
}

/// Whether the directory open at `fd` is opaque.
fn is_opaque_fd(fd: std::os::fd::BorrowedFd<'_>, user_xattr: bool) -> bool {
    let mut buf = [0u8; 8];
    matches!(
        rustix::fs::fgetxattr(fd, opaque_xattr(user_xattr).as_str(), &mut buf),
        Ok(1) if buf[0] == b'y'
    )
}
