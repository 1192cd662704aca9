//! Hard links through a copy-up: when one name of a multiply-linked lower file is copied up,
//! every other name of that inode in its branch that the view shows from that branch becomes
//! a link of the copy, so the names stay one file (as overlayfs with `index=on`).
//!
//! A branch's names of each multiply-linked inode are found by one walk of the branch, on the
//! first copy-up that needs them, and kept for the life of the mount (lower branches never
//! change).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, OFlags};
use rustix::io::Errno;

use crate::sys::{self, Kind};

use super::fs::{R, UnionFs, errno_of, lock};
use super::tree::ROOT;
use super::write::{restore_times, split};

/// One branch's multiply-linked files: (dev, ino) to their paths.
pub(crate) type LinkIndex = Arc<HashMap<(u64, u64), Vec<PathBuf>>>;

impl UnionFs {
    fn link_index(&self, layer: usize) -> R<LinkIndex> {
        if let Some(i) = lock(&self.links).get(&layer) {
            return Ok(Arc::clone(i));
        }
        let mut index: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
        let mut todo = vec![PathBuf::new()];
        while let Some(rel) = todo.pop() {
            let dir = self.open_in(layer, &rel, OFlags::RDONLY | OFlags::DIRECTORY)?;
            let path = self.branch_paths[layer].join(&rel);
            for ent in sys::list(dir.as_fd(), &path).map_err(|e| errno_of(&e))? {
                if sys::is_wh_name(&ent.name) {
                    continue;
                }
                if ent.kind == Kind::Dir {
                    todo.push(rel.join(&ent.name));
                    continue;
                }
                let st = rfs::statat(&dir, &ent.name, AtFlags::SYMLINK_NOFOLLOW)?;
                if st.st_nlink > 1 {
                    #[allow(clippy::unnecessary_cast)]
                    let key = (st.st_dev as u64, st.st_ino as u64);
                    index.entry(key).or_default().push(rel.join(&ent.name));
                }
            }
        }
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
            let times = rfs::fstat(&dir)?;
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
