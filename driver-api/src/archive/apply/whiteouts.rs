//! Whiteout entries (`.wh.<name>`, `.wh..wh..opq`) in the three [`WhiteoutMode`]s.
//!
//! Whiteouts only affect lower layers: whatever this archive made (see `track`) survives its
//! own whiteouts and opaque markers, in any order. A whiteout of a directory that holds
//! something this archive made clears the directory's lower content instead of removing it
//! (in overlay form: makes it opaque), so what the layer made stays visible.

use std::os::fd::AsFd;

use rustix::fs::{FileType, Gid, Mode, OFlags, Uid, XattrFlags};
use rustix::io::Errno;

use super::entries::{create_leaf, parent_dir};
use super::inroot::{self, MAX_DEPTH};
use super::names;
use super::track::Origin;
use super::{Applier, Meta, WhiteoutMode};
use crate::archive::whiteout::OVERLAY_OPAQUE_XATTR;
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
        let tpath = names::join(parent, target);
        match self.opts.whiteouts {
            WhiteoutMode::Keep => self.regular(&names::join(parent, name), None, meta, None),
            WhiteoutMode::Remove => match self.track.get(&tpath) {
                Some(Origin::Fresh) => Ok(()),
                Some(Origin::Merged) => self.clear(&tpath),
                None => {
                    let dir = match self.root.resolve_dir(parent) {
                        Ok(dir) => dir,
                        // Nothing there to hide.
                        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
                        Err(e) => return Err(self.root.resolve_err("openat2", parent, e)),
                    };
                    inroot::remove_all(dir.as_fd(), target)
                        .map_err(|e| self.root.err("remove", &tpath, e))
                }
            },
            WhiteoutMode::Overlay { user_xattr } => match self.track.get(&tpath) {
                Some(Origin::Fresh) => Ok(()),
                Some(Origin::Merged) => self.set_opaque(&tpath, user_xattr),
                None => {
                    let dir = parent_dir(&self.root, &mut self.track, parent)?;
                    create_leaf(&self.root, dir.as_fd(), target, &tpath, "mknodat", || {
                        rustix::fs::mknodat(
                            &dir,
                            target,
                            FileType::CharacterDevice,
                            Mode::empty(),
                            rustix::fs::makedev(0, 0),
                        )
                    })?;
                    if self.opts.same_owner {
                        rustix::fs::chownat(
                            &dir,
                            target,
                            Some(Uid::from_raw(meta.uid)),
                            Some(Gid::from_raw(meta.gid)),
                            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| self.root.err("fchownat", &tpath, e))?;
                    }
                    drop(dir);
                    self.track.mark(&tpath, Origin::Fresh);
                    Ok(())
                }
            },
        }
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
        if !self.track.claim_clear(dir) {
            return Ok(());
        }
        let fd = match self.root.open_in(dir, OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
            Err(e) => return Err(self.root.resolve_err("openat2", dir, e)),
        };
        self.prune(fd.as_fd(), dir, 0)
    }

    fn prune(&self, fd: std::os::fd::BorrowedFd<'_>, dir: &[u8], depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{}: deeper than {MAX_DEPTH} levels",
                    self.root.display(dir).display()
                ),
            ));
        }
        let children = inroot::read_names(fd).map_err(|e| self.root.err("getdents", dir, e))?;
        for (name, _) in children {
            let path = names::join(dir, &name);
            match self.track.get(&path) {
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
                None => {
                    inroot::remove_all(fd, &name).map_err(|e| self.root.err("remove", &path, e))?
                }
            }
        }
        Ok(())
    }

    /// Marks the directory `dir` opaque for overlayfs, making it (and its parents) if missing.
    fn set_opaque(&mut self, dir: &[u8], user_xattr: bool) -> Result<()> {
        let d = parent_dir(&self.root, &mut self.track, dir)?;
        let fd = rustix::fs::openat(
            &d,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.root.err("openat", dir, e))?;
        drop(d);
        let xattr = if user_xattr {
            format!("user.{OVERLAY_OPAQUE_XATTR}")
        } else {
            format!("trusted.{OVERLAY_OPAQUE_XATTR}")
        };
        rustix::fs::fsetxattr(&fd, xattr.as_str(), b"y", XattrFlags::empty())
            .map_err(|e| self.root.err("fsetxattr", dir, e))?;
        if self.track.get(dir).is_none() {
            self.track.mark(dir, Origin::Merged);
        }
        Ok(())
    }
}
