//! Hard links through a copy-up: when one name of a multiply-linked lower file is copied up,
//! every other name of that inode in its branch that the view shows from that branch becomes
//! a link of the copy, so the names stay one file (as overlayfs with `index=on`).
//!
//! A branch's names of each multiply-linked inode are found by one walk of the branch, on the
//! first copy-up that needs them, and kept for the life of the mount (lower branches never
//! change).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags};
use rustix::io::Errno;

use crate::sys::Kind;
use crate::view;

use super::fs::{R, UnionFs, errno_of, lock};
use super::tree::ROOT;
use super::write::{restore_times, split, times_of};

/// One branch's multiply-linked files: (dev, ino) to their paths.
pub(crate) type LinkIndex = Arc<HashMap<(u64, u64), Vec<PathBuf>>>;

impl UnionFs {
    fn link_index(&self, layer: usize) -> R<LinkIndex> {
        if let Some(i) = lock(&self.links).get(&layer) {
            return Ok(Arc::clone(i));
        }
        let mut index: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
        view::walk(&self.branch_paths[layer], &mut |v| {
            if v.meta.kind() != Kind::Dir && v.meta.nlink > 1 {
                let key = (v.meta.dev, v.meta.ino);
                index.entry(key).or_default().push(v.path.to_path_buf());
            }
            Ok(!v.other_mount)
        })
        .map_err(|e| errno_of(&e))?;
        let index = Arc::new(index);
        lock(&self.links).insert(layer, Arc::clone(&index));
        Ok(index)
    }

    /// Links node `ino`, just copied up to `rel` in branch 0 from branch `origin.0`, at each
    /// other visible name of the same branch inode.
    pub(super) fn copy_up_links(&self, ino: u64, rel: &Path, origin: (usize, u64, u64)) -> R<()> {
        let (layer, dev, inode) = origin;
        let index = self.link_index(layer)?;
        let Some(paths) = index.get(&(dev, inode)) else {
            return Ok(());
        };
        let (parent_rel, name) = split(rel);
        let from = self.upper_dir(parent_rel)?;
        for other in paths.iter().filter(|p| p.as_path() != rel) {
            let Some((parent, other_name)) = self.visible_from(other, layer)? else {
                continue;
            };
            self.copy_up_locked(parent)?;
            let dir_rel = self.locate(parent)?.0;
            let dir = self.upper_dir(&dir_rel)?;
            let times = times_of(&dir)?;
            match rfs::linkat(&from, name, &dir, other_name, AtFlags::empty()) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
            restore_times(&dir, &times)?;
            let mut tree = lock(&self.tree);
            if tree.child(parent, other_name) != Some(ino) {
                tree.add_link(ino, parent, other_name);
            }
        }
        Ok(())
    }

    /// The parent node and name of view path `rel`, if the view shows it from branch `layer`
    /// (not whited out, not hidden by another branch's file of that name).
    fn visible_from<'p>(&self, rel: &'p Path, layer: usize) -> R<Option<(u64, &'p OsStr)>> {
        let mut at = ROOT;
        let names: Vec<&OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let Some((last, dirs)) = names.split_last() else {
            return Ok(None);
        };
        for d in dirs {
            let Some(m) = self.listing(at)?.get(*d).cloned() else {
                return Ok(None);
            };
            if m.kind != Kind::Dir {
                return Ok(None);
            }
            at = self.child_node(at, d, &m);
        }
        match self.listing(at)?.get(*last) {
            Some(m) if m.from == layer && m.kind != Kind::Dir => Ok(Some((at, *last))),
            _ => Ok(None),
        }
    }
}
