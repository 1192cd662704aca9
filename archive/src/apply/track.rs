//! What this archive has made so far: the bookkeeping behind the OCI rule that whiteouts only
//! affect lower layers (pure logic, no I/O).
//!
//! Paths are the cleaned names as the archive wrote them. Every path recorded has all its
//! ancestors recorded too: an ancestor that the archive did not make itself but that holds
//! something it made is `Merged` (it existed before, and it must survive an opaque marker or
//! a whiteout of the same layer), so lookups never walk up the tree.

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

/// The paths an archive made, and the directories an opaque marker already cleared.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    paths: HashMap<Vec<u8>, Origin>,
    cleared: HashSet<Vec<u8>>,
    /// Off when whiteouts are kept as files: then nothing asks, and a layer of millions of
    /// entries costs no memory here.
    disabled: bool,
}

impl Tracker {
    /// A tracker that records (`enabled`) or one that forgets everything.
    pub(super) fn new(enabled: bool) -> Tracker {
        Tracker {
            disabled: !enabled,
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

    /// What is recorded for `path`.
    pub(super) fn get(&self, path: &[u8]) -> Option<Origin> {
        self.paths.get(path).copied()
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
    fn disabled_tracker_records_nothing() {
        let mut t = Tracker::new(false);
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
