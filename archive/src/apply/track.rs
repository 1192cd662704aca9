//! What this archive has made so far: the bookkeeping behind the OCI rule that whiteouts only
//! affect lower layers (pure logic, no I/O).
//!
//! Paths are the cleaned names as the archive wrote them. Every path recorded has all its
//! ancestors recorded too: an ancestor that the archive did not make itself but that holds
//! something it made is `Merged` (it existed before, and it must survive an opaque marker or
//! a whiteout of the same layer), so lookups never walk up the tree.
//!
//! Names alone miss aliases: `s -> d` then `s/f` makes `d/f`, and a later `d/.wh.f` must not
//! remove it. So what the archive made (and the directories it kept) is recorded by identity
//! too (`st_dev`, `st_ino`), and a whiteout or opaque marker asks about the object it would
//! hide, however the archive named it.

use std::collections::{HashMap, HashSet};

/// How a path recorded by [`Tracker`] came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Made by this archive: it and everything under it belong to this layer.
    Fresh,
    /// A directory that existed before this archive and that this archive kept (a directory
    /// entry over a directory, or a parent of something the archive made). Its other
    /// children are lower content.
    Merged,
}

/// An object's identity: `(st_dev, st_ino)`.
pub(super) type Ino = (u64, u64);

/// The identity of what `st` describes.
pub(super) fn ino(st: &rustix::fs::Stat) -> Ino {
    (st.st_dev, st.st_ino)
}

/// The paths an archive made, and the directories an opaque marker already cleared.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    paths: HashMap<Vec<u8>, Origin>,
    /// Objects made by this archive (hardlinks are not added: a link to a lower file does not
    /// make the lower file this layer's).
    made: HashSet<Ino>,
    /// Directories that existed before and hold something this archive made.
    kept: HashSet<Ino>,
    /// The root's identity: recording directories upwards stops there.
    root: Ino,
    cleared: HashSet<Vec<u8>>,
    /// Off when whiteouts are kept as files: then nothing asks, and a layer of millions of
    /// entries costs no memory here.
    disabled: bool,
}

impl Tracker {
    /// A tracker that records (`enabled`) or one that forgets everything; `root` is the
    /// identity of the root directory.
    pub(super) fn new(enabled: bool, root: Ino) -> Tracker {
        Tracker {
            disabled: !enabled,
            root,
            ..Tracker::default()
        }
    }

    /// Records `path` (non-empty) with `origin`, replacing what was recorded for it, and its
    /// unrecorded ancestors as `Merged`.
    pub(super) fn mark(&mut self, path: &[u8], origin: Origin) {
        if path.is_empty() || self.disabled {
            return;
        }
        self.paths.insert(path.to_vec(), origin);
        let mut cur = path;
        while let Some(i) = cur.iter().rposition(|&b| b == b'/') {
            cur = &cur[..i];
            if self.paths.contains_key(cur) {
                break;
            }
            self.paths.insert(cur.to_vec(), Origin::Merged);
        }
    }

    /// Whether anything is recorded (false when whiteouts are kept as files).
    pub(super) fn enabled(&self) -> bool {
        !self.disabled
    }

    /// Records the object `id` with `origin` (a `Merged` record never demotes a `Fresh` one).
    pub(super) fn note(&mut self, id: Ino, origin: Origin) {
        if self.disabled {
            return;
        }
        match origin {
            Origin::Fresh => {
                self.kept.remove(&id);
                self.made.insert(id);
            }
            Origin::Merged => {
                if !self.made.contains(&id) {
                    self.kept.insert(id);
                }
            }
        }
    }

    /// Whether `id` is the root directory.
    pub(super) fn is_root(&self, id: Ino) -> bool {
        id == self.root
    }

    /// What is recorded for the object `id`.
    pub(super) fn by_ino(&self, id: Ino) -> Option<Origin> {
        if self.made.contains(&id) {
            Some(Origin::Fresh)
        } else if self.kept.contains(&id) {
            Some(Origin::Merged)
        } else {
            None
        }
    }

    /// What is recorded for `path`.
    pub(super) fn get(&self, path: &[u8]) -> Option<Origin> {
        self.paths.get(path).copied()
    }

    /// Whether the directory `dir` itself was claimed by [`Tracker::claim_clear`].
    pub(super) fn is_cleared(&self, dir: &[u8]) -> bool {
        self.cleared.contains(dir)
    }

    /// Claims the directory `dir` for clearing by an opaque marker. `false` when `dir` or one of
    /// its ancestors was cleared already: everything there now was made by this archive, so
    /// there is nothing left to clear (this is what keeps many markers linear, CVE-2026-95838).
    pub(super) fn claim_clear(&mut self, dir: &[u8]) -> bool {
        if self.cleared.contains(dir) || self.cleared.contains(&b""[..]) {
            return false;
        }
        for (i, &b) in dir.iter().enumerate() {
            if b == b'/' && self.cleared.contains(&dir[..i]) {
                return false;
            }
        }
        self.cleared.insert(dir.to_vec());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_become_merged() {
        let mut t = Tracker::default();
        t.mark(b"a/b/c/foo", Origin::Fresh);
        assert_eq!(t.get(b"a/b/c/foo"), Some(Origin::Fresh));
        assert_eq!(t.get(b"a/b/c"), Some(Origin::Merged));
        assert_eq!(t.get(b"a"), Some(Origin::Merged));
        assert_eq!(t.get(b"a/x"), None);
        // A later mark overrides; ancestors already recorded keep their origin.
        t.mark(b"a/b", Origin::Fresh);
        assert_eq!(t.get(b"a/b"), Some(Origin::Fresh));
        t.mark(b"a/b/z", Origin::Fresh);
        assert_eq!(t.get(b"a/b"), Some(Origin::Fresh));
        t.mark(b"", Origin::Fresh);
        assert_eq!(t.get(b""), None);
    }

    #[test]
    fn identities_fresh_wins() {
        let mut t = Tracker::default();
        t.note((1, 2), Origin::Merged);
        assert_eq!(t.by_ino((1, 2)), Some(Origin::Merged));
        t.note((1, 2), Origin::Fresh);
        t.note((1, 2), Origin::Merged);
        assert_eq!(t.by_ino((1, 2)), Some(Origin::Fresh));
        assert_eq!(t.by_ino((1, 3)), None);
    }

    #[test]
    fn disabled_tracker_records_nothing() {
        let mut t = Tracker::new(false, (0, 0));
        t.note((1, 2), Origin::Fresh);
        assert_eq!(t.by_ino((1, 2)), None);
        t.mark(b"a/b", Origin::Fresh);
        assert_eq!(t.get(b"a/b"), None);
        assert_eq!(t.get(b"a"), None);
    }

    #[test]
    fn clearing_is_claimed_once_per_subtree() {
        let mut t = Tracker::default();
        assert!(t.claim_clear(b"a/b"));
        assert!(!t.claim_clear(b"a/b"));
        assert!(!t.claim_clear(b"a/b/c"));
        assert!(t.claim_clear(b"a/bc"));
        assert!(t.claim_clear(b"a"));
        assert!(t.claim_clear(b""));
        assert!(!t.claim_clear(b"x"));
    }
}
