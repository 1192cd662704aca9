//! The inode table of a mounted view: which node the kernel means by an inode number, where
//! in the view it is, and which branch holds it now.
//!
//! Inode numbers are handed out once per node and kept for the life of the mount (a node stays
//! in the table until its last name is gone and the kernel has forgotten it), so `st_ino` is
//! stable across lookups, cache evictions and copy-ups. Names of one multiply-linked file of a
//! branch share one node, as they share one inode there.
//!
//! The table never does I/O; [`UnionFs`](super::fs::UnionFs) holds it under one mutex for
//! short map operations only.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::Arc;

use crate::sys::Kind;
use crate::union::Merged;

/// The root directory's inode number (FUSE's `FUSE_ROOT_ID`).
pub(crate) const ROOT: u64 = 1;

/// A merged directory's entries by name, as the union rules give them.
pub(crate) type Listing = Arc<BTreeMap<OsString, Merged>>;

/// What a directory node knows beyond a file's.
#[derive(Debug, Clone)]
pub(crate) struct DirInfo {
    /// The branches whose same-named directories merge into this one, top first.
    pub branches: Vec<usize>,
    /// The merged listing, read on first use and kept up to date by every change made
    /// through the mount (nothing else changes the branches while it is mounted).
    pub listing: Option<Listing>,
    /// Counts the changes made to the directory, so that a listing read while one was made
    /// is not kept.
    pub version: u64,
}

/// One file-system node of the view.
#[derive(Debug)]
pub(crate) struct Node {
    /// The names the node has in the view, as (parent inode, name); the first is the one its
    /// path is built from. Empty once the node has been unlinked (it may still be open).
    pub links: Vec<(u64, OsString)>,
    pub kind: Kind,
    /// The branch that holds the node now (0: the layer's own, after a copy-up or a create).
    pub layer: usize,
    pub dir: Option<DirInfo>,
    /// The kernel's lookup count.
    pub lookups: u64,
    /// For a multiply-linked file of a branch: (branch, dev, ino) there.
    pub origin: Option<(usize, u64, u64)>,
}

/// The inode table.
#[derive(Debug)]
pub(crate) struct Tree {
    nodes: HashMap<u64, Node>,
    names: HashMap<(u64, OsString), u64>,
    origins: HashMap<(usize, u64, u64), u64>,
    next: u64,
}

impl Tree {
    /// A table holding the root, merged from `branches`.
    pub(crate) fn new(branches: usize) -> Tree {
        let root = Node {
            links: Vec::new(),
            kind: Kind::Dir,
            layer: 0,
            dir: Some(DirInfo {
                branches: (0..branches).collect(),
                listing: None,
                version: 0,
            }),
            lookups: 1,
            origin: None,
        };
        Tree {
            nodes: HashMap::from([(ROOT, root)]),
            names: HashMap::new(),
            origins: HashMap::new(),
            next: ROOT + 1,
        }
    }

    pub(crate) fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub(crate) fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// The node `name` in directory `parent`, if it has been looked up.
    pub(crate) fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.names.get(&(parent, name.to_os_string())).copied()
    }

    /// The node's path in the view, relative (empty for the root); `None` for an unlinked node.
    pub(crate) fn path(&self, ino: u64) -> Option<PathBuf> {
        let mut names: Vec<&OsStr> = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let (parent, name) = self.nodes.get(&at)?.links.first()?;
            names.push(name);
            at = *parent;
            if names.len() > 4096 {
                return None;
            }
        }
        Some(names.iter().rev().collect())
    }

    /// The node for `name` in `parent`, made from the merged entry `m` if it is new (or joined
    /// to the node of another name of the same branch inode, `origin`). Counts a lookup.
    pub(crate) fn enter(
        &mut self,
        parent: u64,
        name: &OsStr,
        m: &Merged,
        origin: Option<(usize, u64, u64)>,
    ) -> u64 {
        if let Some(ino) = self.child(parent, name) {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.lookups += 1;
                return ino;
            }
        }
        if let Some(ino) = origin.and_then(|o| self.origins.get(&o).copied()) {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.lookups += 1;
                n.links.push((parent, name.to_os_string()));
                self.names.insert((parent, name.to_os_string()), ino);
                return ino;
            }
        }
        let dir = (m.kind == Kind::Dir).then(|| DirInfo {
            branches: m.dir_branches.clone(),
            listing: None,
            version: 0,
        });
        let ino = self.insert(Node {
            links: vec![(parent, name.to_os_string())],
            kind: m.kind,
            layer: m.from,
            dir,
            lookups: 1,
            origin,
        });
        if let Some(o) = origin {
            self.origins.insert(o, ino);
        }
        ino
    }

    /// Adds a node made through the mount (in branch 0) as `name` in `parent`, replacing
    /// whatever node had that name. Counts a lookup.
    pub(crate) fn insert_new(&mut self, parent: u64, name: &OsStr, kind: Kind) -> u64 {
        self.unlink(parent, name);
        let dir = (kind == Kind::Dir).then(|| DirInfo {
            branches: vec![0],
            listing: None,
            version: 0,
        });
        self.insert(Node {
            links: vec![(parent, name.to_os_string())],
            kind,
            layer: 0,
            dir,
            lookups: 1,
            origin: None,
        })
    }

    fn insert(&mut self, node: Node) -> u64 {
        let ino = self.next;
        self.next += 1;
        for (p, n) in &node.links {
            self.names.insert((*p, n.clone()), ino);
        }
        self.nodes.insert(ino, node);
        ino
    }

    /// Gives node `ino` the extra name `name` in `parent` (a hard link made through the mount).
    pub(crate) fn add_link(&mut self, ino: u64, parent: u64, name: &OsStr) {
        self.unlink(parent, name);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.links.push((parent, name.to_os_string()));
            self.names.insert((parent, name.to_os_string()), ino);
        }
    }

    /// Removes the name `name` of `parent` from its node; a node left without names and
    /// without lookups is dropped.
    pub(crate) fn unlink(&mut self, parent: u64, name: &OsStr) {
        let Some(ino) = self.names.remove(&(parent, name.to_os_string())) else {
            return;
        };
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.links.retain(|(p, l)| !(*p == parent && l == name));
        }
        self.drop_if_gone(ino);
    }

    /// Moves the name `name` of `parent` to `new_name` of `new_parent` (replacing any node
    /// there).
    pub(crate) fn rename(&mut self, parent: u64, name: &OsStr, new_parent: u64, new_name: &OsStr) {
        let Some(ino) = self.names.remove(&(parent, name.to_os_string())) else {
            self.unlink(new_parent, new_name);
            return;
        };
        self.unlink(new_parent, new_name);
        if let Some(n) = self.nodes.get_mut(&ino) {
            for link in n.links.iter_mut() {
                if link.0 == parent && link.1 == name {
                    *link = (new_parent, new_name.to_os_string());
                }
            }
        }
        self.names
            .insert((new_parent, new_name.to_os_string()), ino);
    }

    /// The kernel forgot `count` lookups of `ino`.
    pub(crate) fn forget(&mut self, ino: u64, count: u64) {
        if ino == ROOT {
            return;
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.lookups = n.lookups.saturating_sub(count);
        }
        self.drop_if_gone(ino);
    }

    fn drop_if_gone(&mut self, ino: u64) {
        let gone = self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.links.is_empty() && n.lookups == 0);
        if gone {
            if let Some(n) = self.nodes.remove(&ino) {
                if let Some(o) = n.origin {
                    self.origins.remove(&o);
                }
            }
        }
    }

    /// The cached listing of directory `ino`, to change in place (copy-on-write); counts a
    /// change of the directory whether or not a listing is cached.
    pub(crate) fn listing_mut(&mut self, ino: u64) -> Option<&mut BTreeMap<OsString, Merged>> {
        let info = self.nodes.get_mut(&ino)?.dir.as_mut()?;
        info.version += 1;
        info.listing.as_mut().map(Arc::make_mut)
    }

    /// Records that node `ino` now lives in branch 0 (copied up); a directory also merges
    /// branch 0's copy from now on. Every name of the node is in branch 0 now.
    pub(crate) fn copied_up(&mut self, ino: u64) {
        let links = match self.nodes.get_mut(&ino) {
            Some(n) => {
                n.layer = 0;
                if let Some(d) = n.dir.as_mut() {
                    if d.branches.first() != Some(&0) {
                        d.branches.insert(0, 0);
                    }
                }
                if let Some(o) = n.origin.take() {
                    self.origins.remove(&o);
                }
                n.links.clone()
            }
            None => return,
        };
        for (parent, name) in links {
            if let Some(l) = self.listing_mut(parent) {
                if let Some(m) = l.get_mut(&name) {
                    m.from = 0;
                    if m.kind == Kind::Dir && m.dir_branches.first() != Some(&0) {
                        m.dir_branches.insert(0, 0);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(name: &str, kind: Kind, from: usize) -> Merged {
        Merged {
            name: name.into(),
            from,
            kind,
            dir_branches: if kind == Kind::Dir {
                vec![from]
            } else {
                vec![]
            },
            lower: from > 0,
        }
    }

    #[test]
    fn paths_follow_renames_and_inodes_stay() {
        let mut t = Tree::new(2);
        let a = t.enter(ROOT, OsStr::new("a"), &merged("a", Kind::Dir, 1), None);
        let f = t.enter(a, OsStr::new("f"), &merged("f", Kind::File, 1), None);
        assert_eq!(t.path(f).unwrap(), PathBuf::from("a/f"));
        assert_eq!(t.path(ROOT).unwrap(), PathBuf::new());
        // A second lookup is the same node.
        assert_eq!(
            t.enter(a, OsStr::new("f"), &merged("f", Kind::File, 1), None),
            f
        );
        assert_eq!(t.get(f).unwrap().lookups, 2);
        t.rename(a, OsStr::new("f"), ROOT, OsStr::new("g"));
        assert_eq!(t.path(f).unwrap(), PathBuf::from("g"));
        assert_eq!(t.child(ROOT, OsStr::new("g")), Some(f));
        assert_eq!(t.child(a, OsStr::new("f")), None);
        t.copied_up(f);
        assert_eq!(t.get(f).unwrap().layer, 0);
    }

    #[test]
    fn links_of_one_branch_inode_share_a_node() {
        let mut t = Tree::new(2);
        let o = Some((1, 7, 42));
        let x = t.enter(ROOT, OsStr::new("x"), &merged("x", Kind::File, 1), o);
        let y = t.enter(ROOT, OsStr::new("y"), &merged("y", Kind::File, 1), o);
        assert_eq!(x, y);
        assert_eq!(t.get(x).unwrap().links.len(), 2);
        t.unlink(ROOT, OsStr::new("x"));
        assert_eq!(t.path(y).unwrap(), PathBuf::from("y"));
    }

    #[test]
    fn unlinked_nodes_live_until_forgotten() {
        let mut t = Tree::new(1);
        let f = t.insert_new(ROOT, OsStr::new("f"), Kind::File);
        t.unlink(ROOT, OsStr::new("f"));
        assert!(t.get(f).is_some(), "still looked up: kept");
        assert!(t.path(f).is_none());
        t.forget(f, 1);
        assert!(t.get(f).is_none());
        // A new node never reuses an inode number.
        let g = t.insert_new(ROOT, OsStr::new("f"), Kind::File);
        assert_ne!(f, g);
    }
}
