//! Folding a view's changes back into the layer's diff directory.
//!
//! [`plan`] walks the view and compares each path with the manifest recorded when the view was
//! materialised, and turns the differences into [`Op`]s that make `diff/<id>` again exactly
//! "this layer's changes over its parent" in AUFS form:
//!
//! - a changed file (contents or attributes: same inode, new ctime) is copied up whole;
//! - a directory whose own attributes changed gets them in the diff (created there if it was
//!   only in a lower layer: the usual copy-up of parent directories);
//! - a new path, or one whose inode or type changed (deleted and made again, renamed over), is
//!   copied up; a new *directory* replaces the diff's one with a copy of the view's tree, made
//!   opaque (`.wh..wh..opq`) when a lower layer has a directory there to hide;
//! - a path gone from the view is removed from the diff, and gets a `.wh.` whiteout when a lower
//!   layer would otherwise show through.
//!
//! [`fold`] runs a plan crash-safely: the diff is cloned by hardlinks into a staging directory
//! (O(entries), no data copied), the plan applied there (never writing to a shared inode: a
//! changed file is always a new copy), the file system synced, and the staging directory
//! swapped with the diff by one `RENAME_EXCHANGE`. Until the swap the previous diff is
//! untouched; a crash before it leaves a staging dot-name that the sweep removes, and the view
//! and its manifest stay, so the next `put` folds again (the ops are idempotent).
//!
//! Names a layer cannot hold (`.wh.*` files made in the view) and sockets are not folded.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, OFlags, RenameFlags};
use rustix::io::Errno;
use strata_archive::whiteout;
use strata_driver_api::{Error, ErrorKind, LayerId, Result};

use crate::copy::Copier;
use crate::layout::{self, Layout};
use crate::manifest::{self, Manifest, Rec, Verdict};
use crate::sys::{self, Kind};
use crate::view;

/// One change to make in the diff directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// The view's directory at this path has new attributes.
    DirMeta(PathBuf),
    /// Copy the view's non-directory here, replacing whatever the diff has.
    CopyUp(PathBuf),
    /// Replace the diff's path with a copy of the view's directory tree; `opaque` hides the
    /// lower directory.
    Fresh { path: PathBuf, opaque: bool },
    /// The path is gone from the view: remove the diff's copy; `whiteout` hides a lower one.
    Delete { path: PathBuf, whiteout: bool },
}

/// What a fold will do, and the view's manifest once it is done.
#[derive(Debug)]
pub(crate) struct Plan {
    pub ops: Vec<Op>,
    pub manifest: Vec<(PathBuf, Rec)>,
}

/// The op for one path of the view, from its record (if it had one) and its `lstat` now.
/// `lower` says whether a lower layer shows the path (the record's bit, or for a path new to
/// the view, whether the diff whites it out). `None`: nothing to do for the path itself.
pub(crate) fn decide(path: &Path, old: Option<&Rec>, now: &sys::Meta, lower: bool) -> Option<Op> {
    let verdict = old.map_or(Verdict::Replaced, |r| manifest::compare(r, now));
    let is_dir = now.kind() == Kind::Dir;
    let root = path.as_os_str().is_empty();
    match verdict {
        Verdict::Same => None,
        Verdict::Changed if is_dir => Some(Op::DirMeta(path.to_path_buf())),
        // The root is the mountpoint itself: it can change, never be replaced.
        Verdict::Replaced if is_dir && root => Some(Op::DirMeta(path.to_path_buf())),
        Verdict::Replaced if is_dir => Some(Op::Fresh {
            path: path.to_path_buf(),
            opaque: lower,
        }),
        Verdict::Changed | Verdict::Replaced => Some(Op::CopyUp(path.to_path_buf())),
    }
}

/// Compares the view at `view_root` with `old` (its manifest) and plans the fold into the diff
/// directory `diff`.
pub(crate) fn plan(view_root: &Path, diff: &Path, mut old: Manifest) -> Result<Plan> {
    let mut ops = Vec::new();
    let mut recs = Vec::new();
    let mut fresh: Option<PathBuf> = None;
    view::walk(view_root, &mut |v| {
        if v.other_mount {
            // Someone mounted over this path: not the layer's business.
            if let Some(r) = old.get(v.path) {
                recs.push((v.path.to_path_buf(), *r));
            }
            manifest::take_subtree(&mut old, v.path);
            return Ok(false);
        }
        if let Some(f) = &fresh {
            if v.path.starts_with(f) {
                recs.push((v.path.to_path_buf(), Rec::new(v.meta, false)));
                return Ok(true);
            }
            fresh = None;
        }
        let prev = old.remove(v.path);
        let lower = match &prev {
            Some(r) => r.lower,
            None => whited_out(diff, v.path)?,
        };
        let op = decide(v.path, prev.as_ref(), v.meta, lower);
        let rec = match (&op, prev) {
            (None, Some(r)) => r,
            _ => Rec::new(v.meta, lower),
        };
        recs.push((v.path.to_path_buf(), rec));
        let enter = match &op {
            None | Some(Op::DirMeta(_)) => true,
            Some(Op::Fresh { path, .. }) => {
                fresh = Some(path.clone());
                manifest::take_subtree(&mut old, path);
                true
            }
            Some(Op::CopyUp(path)) => {
                // What was below a replaced directory went with it.
                manifest::take_subtree(&mut old, path);
                false
            }
            Some(Op::Delete { .. }) => false,
        };
        ops.extend(op);
        Ok(enter)
    })?;
    let mut gone: Option<PathBuf> = None;
    for (path, rec) in old {
        if gone.as_ref().is_some_and(|g| path.starts_with(g)) || path.as_os_str().is_empty() {
            continue;
        }
        ops.push(Op::Delete {
            path: path.clone(),
            whiteout: rec.lower,
        });
        gone = Some(path);
    }
    Ok(Plan {
        ops,
        manifest: recs,
    })
}

/// Whether the diff holds a whiteout for `path`: a lower layer has something there, hidden.
fn whited_out(diff: &Path, path: &Path) -> Result<bool> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(false);
    };
    Ok(sys::try_lstat(&diff.join(parent).join(whiteout::whiteout_name(name)))?.is_some())
}

/// Folds the view of `id` into its diff directory; returns the view's manifest as it now is.
pub(crate) fn fold(layout: &Layout, id: &LayerId) -> Result<Vec<(PathBuf, Rec)>> {
    let diff = layout.diff(id);
    let view_root = layout.mnt(id);
    let old = manifest::read(&layout.manifest(id))?;
    let plan = plan(&view_root, &diff, old)?;
    if plan.ops.is_empty() {
        return Ok(plan.manifest);
    }
    let staging = layout.staging("diff", id, "folding");
    sys::remove_tree(&staging)?;
    execute(&plan.ops, &diff, &view_root, &staging)?;
    sys::syncfs(&staging)?;
    swap(&diff, &staging, &layout.staging("diff", id, "prev"))?;
    sys::remove_tree(&staging)?;
    Ok(plan.manifest)
}

/// Puts `staging` in the place of `diff`, leaving the old diff at `staging`.
fn swap(diff: &Path, staging: &Path, prev: &Path) -> Result<()> {
    match rfs::renameat_with(rfs::CWD, diff, rfs::CWD, staging, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(()),
        // No RENAME_EXCHANGE here: two renames; a crash between them leaves `prev`, which the
        // sweep puts back (the fold is then redone).
        Err(Errno::INVAL | Errno::NOSYS) => {
            layout::rename(diff, prev)?;
            layout::rename(staging, diff)?;
            layout::rename(prev, staging)
        }
        Err(e) => Err(sys::os("renameat2", diff, e)),
    }
}

/// Where a directory of the staging tree takes its attributes from, once all ops are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    /// The previous diff's directory (unchanged attributes).
    Old,
    /// The view's directory.
    View,
}

struct Exec<'a> {
    diff: &'a Path,
    view_root: &'a Path,
    view: OwnedFd,
    staging: &'a Path,
    staging_fd: OwnedFd,
    dirs: BTreeMap<PathBuf, Src>,
    /// The view's (dev, ino) of a multiply-linked file copied in this fold → its staging path.
    links: HashMap<(u64, u64), PathBuf>,
    copier: Copier,
}

/// Builds the new diff at `staging`: a hardlink clone of `diff` with `ops` applied.
pub(crate) fn execute(ops: &[Op], diff: &Path, view_root: &Path, staging: &Path) -> Result<()> {
    let copier = Copier::new();
    let mut dirs = BTreeMap::new();
    clone_tree(diff, staging, &copier, &mut dirs)?;
    let mut x = Exec {
        diff,
        view_root,
        view: sys::open_dir(view_root)?,
        staging,
        staging_fd: sys::open_dir(staging)?,
        dirs,
        links: HashMap::new(),
        copier,
    };
    for op in ops {
        x.apply(op)?;
    }
    x.finish()
}

impl Exec<'_> {
    fn apply(&mut self, op: &Op) -> Result<()> {
        match op {
            Op::DirMeta(path) => {
                if !path.as_os_str().is_empty() {
                    let (parent, name) = self.parent_of(path)?;
                    if !self.dirs.contains_key(path) {
                        sys::remove_at(parent.as_fd(), &self.staging.join(path), name)?;
                        sys::make_dir(parent.as_fd(), name, &self.staging.join(path))?;
                    }
                }
                self.dirs.insert(path.clone(), Src::View);
            }
            Op::CopyUp(path) => {
                let (parent, name) = self.clear_for(path)?;
                self.copy_up(path, parent.as_fd(), name)?;
            }
            Op::Fresh { path, opaque } => {
                let (parent, name) = self.clear_for(path)?;
                let dst_path = self.staging.join(path);
                sys::make_dir(parent.as_fd(), name, &dst_path)?;
                let dst = sys::open_dir_at(parent.as_fd(), name, &dst_path)?;
                if *opaque {
                    sys::make_marker(dst.as_fd(), OsStr::new(whiteout::OPAQUE), &dst_path)?;
                }
                let src_path = self.view_root.join(path);
                let src = sys::open_beneath(
                    self.view.as_fd(),
                    path,
                    OFlags::RDONLY | OFlags::DIRECTORY,
                    &src_path,
                )?;
                self.copy_contents(src.as_fd(), &src_path, dst.as_fd(), path)?;
                self.copier
                    .copy_dir_meta(src.as_fd(), dst.as_fd(), &src_path, &dst_path)?;
            }
            Op::Delete { path, whiteout: wh } => {
                manifest::take_subtree(&mut self.dirs, path);
                let Some(name) = path.file_name() else {
                    return Ok(());
                };
                let parent_rel = path.parent().unwrap_or(Path::new(""));
                if *wh {
                    self.ensure_dir(parent_rel)?;
                }
                if !self.dirs.contains_key(parent_rel) {
                    // Neither the diff nor the lower layers have it: nothing to remove or hide.
                    return Ok(());
                }
                let parent_path = self.staging.join(parent_rel);
                let parent = self.open_staging_dir(parent_rel)?;
                sys::remove_at(parent.as_fd(), &parent_path, name)?;
                if *wh {
                    let wh_name = whiteout::whiteout_name(name);
                    sys::make_marker(parent.as_fd(), &wh_name, &parent_path.join(&wh_name))?;
                }
            }
        }
        Ok(())
    }

    /// Opens the staging parent of `path` (making it and its ancestors as the view has them),
    /// and removes whatever the diff had at `path` and any whiteout of it.
    fn clear_for<'p>(&mut self, path: &'p Path) -> Result<(OwnedFd, &'p OsStr)> {
        manifest::take_subtree(&mut self.dirs, path);
        let (parent, name) = self.parent_of(path)?;
        let parent_path = self.staging.join(path.parent().unwrap_or(Path::new("")));
        sys::remove_at(parent.as_fd(), &parent_path, name)?;
        sys::remove_at(parent.as_fd(), &parent_path, &whiteout::whiteout_name(name))?;
        Ok((parent, name))
    }

    fn parent_of<'p>(&mut self, path: &'p Path) -> Result<(OwnedFd, &'p OsStr)> {
        let name = path.file_name().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("no file name in {}", path.display()),
            )
        })?;
        let parent_rel = path.parent().unwrap_or(Path::new(""));
        self.ensure_dir(parent_rel)?;
        Ok((self.open_staging_dir(parent_rel)?, name))
    }

    /// Makes sure the staging tree has directory `rel`, creating the missing ones as the view
    /// has them (the copy-up of parent directories).
    fn ensure_dir(&mut self, rel: &Path) -> Result<()> {
        if self.dirs.contains_key(rel) {
            return Ok(());
        }
        if let Some(parent) = rel.parent() {
            self.ensure_dir(parent)?;
        }
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Ok(());
        };
        let dir = self.open_staging_dir(parent)?;
        let path = self.staging.join(rel);
        // A non-directory of the diff in the way cannot be in the view (it would hide the
        // directory); remove it all the same rather than fail.
        sys::remove_at(dir.as_fd(), &self.staging.join(parent), name)?;
        sys::make_dir(dir.as_fd(), name, &path)?;
        self.dirs.insert(rel.to_path_buf(), Src::View);
        Ok(())
    }

    fn open_staging_dir(&self, rel: &Path) -> Result<OwnedFd> {
        sys::open_beneath(
            self.staging_fd.as_fd(),
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY,
            &self.staging.join(rel),
        )
    }

    /// Copies the view's non-directory `path` to `name` in the staging directory `dst_dir`.
    fn copy_up(&mut self, path: &Path, dst_dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
        let parent_rel = path.parent().unwrap_or(Path::new(""));
        let src_path = self.view_root.join(path);
        let src_dir = sys::open_beneath(
            self.view.as_fd(),
            parent_rel,
            OFlags::RDONLY | OFlags::DIRECTORY,
            &src_path,
        )?;
        self.copy_one(src_dir.as_fd(), name, &src_path, dst_dir, path)
    }

    fn copy_one(
        &mut self,
        src_dir: BorrowedFd<'_>,
        name: &OsStr,
        src_path: &Path,
        dst_dir: BorrowedFd<'_>,
        rel: &Path,
    ) -> Result<()> {
        let meta = sys::stat_at(src_dir, name, src_path)?;
        let dst_path = self.staging.join(rel);
        match meta.kind() {
            Kind::Socket => return Ok(()),
            Kind::Dir => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("{} became a directory during the fold", src_path.display()),
                ));
            }
            _ => {}
        }
        if meta.nlink > 1 {
            if let Some(first) = self.links.get(&(meta.dev, meta.ino)) {
                return rfs::linkat(
                    self.staging_fd.as_fd(),
                    first,
                    dst_dir,
                    name,
                    AtFlags::empty(),
                )
                .map_err(|e| sys::os("link", &dst_path, e));
            }
            self.links.insert((meta.dev, meta.ino), rel.to_path_buf());
        }
        self.copier
            .copy_node(src_dir, name, &meta, dst_dir, name, src_path, &dst_path)
    }

    /// Copies the children of the view's directory `src` into the new staging directory `dst`
    /// (`rel` below the staging root), recursively.
    fn copy_contents(
        &mut self,
        src: BorrowedFd<'_>,
        src_path: &Path,
        dst: BorrowedFd<'_>,
        rel: &Path,
    ) -> Result<()> {
        let dev = sys::fstat(src, src_path)?.dev;
        for ent in sys::list(src, src_path)? {
            if sys::is_wh_name(&ent.name) {
                continue;
            }
            let child_src_path = src_path.join(&ent.name);
            let child_rel = rel.join(&ent.name);
            let Some(meta) = sys::try_stat_at(src, &ent.name, &child_src_path)? else {
                continue;
            };
            if meta.dev != dev {
                continue;
            }
            if meta.kind() != Kind::Dir {
                self.copy_one(src, &ent.name, &child_src_path, dst, &child_rel)?;
                continue;
            }
            let dst_path = self.staging.join(&child_rel);
            sys::make_dir(dst, &ent.name, &dst_path)?;
            let s = sys::open_dir_at(src, &ent.name, &child_src_path)?;
            let d = sys::open_dir_at(dst, &ent.name, &dst_path)?;
            self.copy_contents(s.as_fd(), &child_src_path, d.as_fd(), &child_rel)?;
            self.copier
                .copy_dir_meta(s.as_fd(), d.as_fd(), &child_src_path, &dst_path)?;
        }
        Ok(())
    }

    /// Gives every staging directory its attributes, children before parents.
    fn finish(self) -> Result<()> {
        for (rel, src) in self.dirs.iter().rev() {
            let dst_path = self.staging.join(rel);
            let dst = self.open_staging_dir(rel)?;
            let src_path = match src {
                Src::Old => self.diff.join(rel),
                Src::View => self.view_root.join(rel),
            };
            let src_fd = match src {
                Src::Old => sys::open_dir(&src_path)?,
                Src::View => sys::open_beneath(
                    self.view.as_fd(),
                    rel,
                    OFlags::RDONLY | OFlags::DIRECTORY,
                    &src_path,
                )?,
            };
            self.copier
                .copy_dir_meta(src_fd.as_fd(), dst.as_fd(), &src_path, &dst_path)?;
        }
        Ok(())
    }
}

/// Clones the tree `src` to `dst` (which must not exist): directories made anew (mode 0700
/// until [`Exec::finish`]), everything else hardlinked. Records every directory in `dirs`.
fn clone_tree(
    src: &Path,
    dst: &Path,
    copier: &Copier,
    dirs: &mut BTreeMap<PathBuf, Src>,
) -> Result<()> {
    layout::mkdir_0700(dst)?;
    let s = sys::open_dir(src)?;
    let d = sys::open_dir(dst)?;
    dirs.insert(PathBuf::new(), Src::Old);
    clone_dir(s.as_fd(), src, d.as_fd(), dst, Path::new(""), copier, dirs)
}

fn clone_dir(
    src: BorrowedFd<'_>,
    src_root: &Path,
    dst: BorrowedFd<'_>,
    dst_root: &Path,
    rel: &Path,
    copier: &Copier,
    dirs: &mut BTreeMap<PathBuf, Src>,
) -> Result<()> {
    for ent in sys::list(src, &src_root.join(rel))? {
        let child = rel.join(&ent.name);
        let dst_path = dst_root.join(&child);
        if ent.kind == Kind::Dir {
            sys::make_dir(dst, &ent.name, &dst_path)?;
            let s = sys::open_dir_at(src, &ent.name, &src_root.join(&child))?;
            let d = sys::open_dir_at(dst, &ent.name, &dst_path)?;
            dirs.insert(child.clone(), Src::Old);
            clone_dir(
                s.as_fd(),
                src_root,
                d.as_fd(),
                dst_root,
                &child,
                copier,
                dirs,
            )?;
            continue;
        }
        match rfs::linkat(src, &ent.name, dst, &ent.name, AtFlags::empty()) {
            Ok(()) => {}
            // Too many links, or not allowed to link (protected_hardlinks): copy instead.
            Err(Errno::MLINK | Errno::PERM) => {
                let src_path = src_root.join(&child);
                let meta = sys::stat_at(src, &ent.name, &src_path)?;
                copier.copy_node(src, &ent.name, &meta, dst, &ent.name, &src_path, &dst_path)?;
            }
            Err(e) => return Err(sys::os("link", &dst_path, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ino: u64, mode: u32, ctime: i64) -> sys::Meta {
        sys::Meta {
            dev: 1,
            ino,
            mode,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            size: 0,
            atime: (0, 0),
            mtime: (0, 0),
            ctime: (ctime, 0),
        }
    }

    const DIR: u32 = 0o40755;
    const FILE: u32 = 0o100644;

    #[test]
    fn decides() {
        let p = Path::new("a/b");
        let file = Rec::new(&meta(5, FILE, 1), true);
        let dir = Rec::new(&meta(6, DIR, 1), true);
        assert_eq!(decide(p, Some(&file), &meta(5, FILE, 1), true), None);
        assert_eq!(
            decide(p, Some(&file), &meta(5, FILE, 2), true),
            Some(Op::CopyUp(p.into()))
        );
        assert_eq!(
            decide(p, Some(&file), &meta(9, FILE, 1), true),
            Some(Op::CopyUp(p.into()))
        );
        assert_eq!(
            decide(p, None, &meta(9, FILE, 1), false),
            Some(Op::CopyUp(p.into()))
        );
        assert_eq!(
            decide(p, Some(&dir), &meta(6, DIR, 2), true),
            Some(Op::DirMeta(p.into()))
        );
        assert_eq!(
            decide(p, Some(&dir), &meta(7, DIR, 1), true),
            Some(Op::Fresh {
                path: p.into(),
                opaque: true
            })
        );
        assert_eq!(
            decide(p, None, &meta(7, DIR, 1), false),
            Some(Op::Fresh {
                path: p.into(),
                opaque: false
            })
        );
        // A file replaced by a directory.
        assert_eq!(
            decide(p, Some(&file), &meta(5, DIR, 1), true),
            Some(Op::Fresh {
                path: p.into(),
                opaque: true
            })
        );
        // The root never becomes fresh.
        assert_eq!(
            decide(Path::new(""), Some(&dir), &meta(8, DIR, 1), false),
            Some(Op::DirMeta("".into()))
        );
    }
}
