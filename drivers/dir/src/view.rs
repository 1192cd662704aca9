//! The materialised view: building it from a layer's branches, and walking it afterwards.
//!
//! [`materialise`] copies the merged chain (see [`union`](crate::union)) into a fresh
//! directory: one pass over the view's directories, each merged once from the branches that
//! hold it; files are copied with their metadata (reflinked where the file system can), links
//! of one inode within a branch stay links, and directory attributes are applied once their
//! children are in place. At most one fd per branch and the destination are open at a time.
//!
//! [`walk`] goes over a view that its user may be changing, by fd and without following a
//! symlink, and never into another file system mounted inside it.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags};
use strata_driver_api::Result;

use crate::copy::Copier;
use crate::sys::{self, Kind, Meta};
use crate::union::{self, BranchDir};

/// Copies the merged view of `branches` (top first) into the empty directory `dst`. Returns
/// the paths (relative) that a lower branch shows too, for the manifest's `lower` bit.
pub(crate) fn materialise(branches: &[PathBuf], dst: &Path) -> Result<HashSet<PathBuf>> {
    let copier = Copier::new();
    let dst_root = sys::open_dir(dst)?;
    let mut lower = HashSet::new();
    // (branch, dev, ino) of a multiply-linked file → the view path of its first copy.
    let mut links: HashMap<(usize, u64, u64), PathBuf> = HashMap::new();
    // Directories in the order they were made (each after its parent), with their source.
    let mut made: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    let mut todo: Vec<(PathBuf, Vec<usize>)> =
        vec![(PathBuf::new(), (0..branches.len()).collect())];

    while let Some((rel, sources)) = todo.pop() {
        let dirs = union::read_dirs(branches, &rel, &sources)?;
        let fds: HashMap<usize, &OwnedFd> = dirs.iter().map(|(d, fd)| (d.branch, fd)).collect();
        let listings: Vec<BranchDir> = dirs.iter().map(|(d, _)| d.clone()).collect();
        let dst_dir_path = dst.join(&rel);
        let dst_dir = sys::open_dir(&dst_dir_path)?;
        for m in union::merge(&listings) {
            let path = rel.join(&m.name);
            if m.lower {
                lower.insert(path.clone());
            }
            let dst_path = dst.join(&path);
            if m.kind == Kind::Dir {
                sys::make_dir(dst_dir.as_fd(), &m.name, &dst_path)?;
                made.push((path.clone(), m.from));
                todo.push((path, m.dir_branches));
                continue;
            }
            let src_dir = fds[&m.from].as_fd();
            let src_path = branches[m.from].join(&path);
            let meta = sys::stat_at(src_dir, &m.name, &src_path)?;
            if meta.kind() == Kind::Socket {
                continue;
            }
            if meta.nlink > 1 && meta.kind() != Kind::Dir {
                let key = (m.from, meta.dev, meta.ino);
                if let Some(first) = links.get(&key) {
                    rfs::linkat(
                        dst_root.as_fd(),
                        first,
                        dst_dir.as_fd(),
                        &m.name,
                        AtFlags::empty(),
                    )
                    .map_err(|e| sys::os("link", &dst_path, e))?;
                    continue;
                }
                links.insert(key, path.clone());
            }
            copier.copy_node(
                src_dir,
                &m.name,
                &meta,
                dst_dir.as_fd(),
                &m.name,
                &src_path,
                &dst_path,
            )?;
        }
    }
    // Children before parents, so each directory keeps the times it is given.
    for (rel, from) in made.iter().rev() {
        let src_path = branches[*from].join(rel);
        let dst_path = dst.join(rel);
        let src = sys::open_dir(&src_path)?;
        let d = sys::open_dir(&dst_path)?;
        copier.copy_dir_meta(src.as_fd(), d.as_fd(), &src_path, &dst_path)?;
    }
    Ok(lower)
}

/// One path met by [`walk`].
#[derive(Debug)]
pub(crate) struct Visit<'a> {
    /// Relative to the view's root ("" for the root).
    pub path: &'a Path,
    pub meta: &'a Meta,
    /// The path is the root of another file system mounted inside the view: never entered.
    pub other_mount: bool,
}

/// Walks the view at `root` in path order (a directory before its children), calling `visit`
/// for each path; `visit` returns whether to enter a directory. Whiteout-like names (which no
/// layer can hold as files) and sockets (which no tar can hold) are passed over.
pub(crate) fn walk(root: &Path, visit: &mut dyn FnMut(Visit<'_>) -> Result<bool>) -> Result<()> {
    let fd = sys::open_dir(root)?;
    let meta = sys::fstat(fd.as_fd(), root)?;
    let rel = PathBuf::new();
    let enter = visit(Visit {
        path: &rel,
        meta: &meta,
        other_mount: false,
    })?;
    if enter {
        walk_dir(fd.as_fd(), root, &rel, meta.dev, visit)?;
    }
    Ok(())
}

fn walk_dir(
    dir: BorrowedFd<'_>,
    root: &Path,
    rel: &Path,
    dev: u64,
    visit: &mut dyn FnMut(Visit<'_>) -> Result<bool>,
) -> Result<()> {
    let dir_path = root.join(rel);
    for ent in sys::list(dir, &dir_path)? {
        if sys::is_wh_name(&ent.name) {
            continue;
        }
        let path = rel.join(&ent.name);
        let Some(meta) = sys::try_stat_at(dir, &ent.name, &root.join(&path))? else {
            continue;
        };
        if meta.kind() == Kind::Socket {
            continue;
        }
        let other_mount = meta.dev != dev;
        let enter = visit(Visit {
            path: &path,
            meta: &meta,
            other_mount,
        })?;
        if enter && !other_mount && meta.kind() == Kind::Dir {
            let child = sys::open_dir_at(dir, &ent.name, &root.join(&path))?;
            walk_dir(child.as_fd(), root, &path, dev, visit)?;
        }
    }
    Ok(())
}

/// Every path of the view at `root` with its `lstat`, in path order.
pub(crate) fn scan(root: &Path) -> Result<Vec<(PathBuf, Meta)>> {
    let mut out = Vec::new();
    walk(root, &mut |v| {
        if !v.other_mount {
            out.push((v.path.to_path_buf(), *v.meta));
        }
        Ok(true)
    })?;
    Ok(out)
}
