//! Comparing two trees: [`changes_dirs`] (its documentation has the rules). Reads only.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::fsutil::{Dir, DirEntry, DirStack, Stat};
use crate::{Change, ChangeKind, Result};

const CAPABILITY: &str = "security.capability";

/// The changes that turn the tree `old` (none: empty) into the tree `new`, sorted by path.
///
/// Both trees are walked together, one directory pair at a time: each directory is read once
/// (`getdents`), the two sorted name lists are merged, and every name is `lstat`ed relative
/// to its open directory. A name whose directory entries carry the same inode number on the
/// same device in both trees is the same file and is skipped with its whole subtree, without
/// a stat (this is what makes comparing trees that share inodes, like hardlinked copies,
/// cheap). The rules are Docker's (`ChangesDirs`, `addChanges`, `statDifferent`):
///
/// - a name only in the new tree is Add, and so is everything below it;
/// - a name only in the old tree is Delete, reported once for a whole deleted subtree;
/// - a name in both is Modify when its type or permission bits, owner, group or device number
///   differ, or, for a non-directory, its size or mtime (with Docker's leniency: equal seconds
///   are enough when either side has no nanoseconds, as after a round trip through a tar), or
///   its `security.capability`; a directory's own mtime and size are never compared;
/// - a name that changed type is Modify; when it became a directory, its children are Adds (the
///   old file had none); when it stopped being one, the old children are not reported;
/// - a directory with any change below it is Modify (Docker reports it so that its
///   attributes travel with the changes), except the root, which is never reported.
///
/// One addition to Docker, so that an exported diff keeps hard links whole: when a changed
/// non-directory shares its inode with names that did not change (a new hard link to a file of
/// the old tree), those names are reported as Modify too — their link count did change — with
/// their directories. The tar then carries the file once and every name as a link to it,
/// rather than the new name as an unrelated copy.
pub fn changes_dirs(new: &Path, old: Option<&Path>) -> Result<Vec<Change>> {
    let new = Dir::open(new)?;
    let old = old.map(Dir::open).transpose()?;
    let mut walk = Walk::default();
    let first = walk.frame(&new, old.as_ref(), 0, false)?;
    // The open directories of both trees, within a bounded number of descriptors. The old
    // stack only follows while the old tree has a directory at the same place.
    let mut news = DirStack::new(new);
    let mut olds = old.map(DirStack::new);
    let mut frames = vec![first];
    let mut path: Vec<u8> = Vec::new();
    while let Some(top) = frames.last_mut() {
        let Some((name, side)) = top.names.get_mut(top.next) else {
            let (path_len, report, at_entry, with_old) =
                (top.path_len, top.report, top.at_entry, top.with_old);
            frames.pop();
            news.pop();
            if let (Some(olds), true) = (olds.as_mut(), with_old) {
                olds.pop();
            }
            path.truncate(path_len);
            if report && walk.changes.len() > at_entry {
                walk.push(&path, ChangeKind::Modify);
            }
            continue;
        };
        top.next += 1;
        let name = std::mem::take(name);
        let side = *side;
        let with_old = top.with_old;
        path.truncate(top.path_len);
        path.push(b'/');
        path.extend_from_slice(name.as_bytes());
        // The old directory here, if the old tree has one.
        let mut old_dir = match (olds.as_mut(), with_old) {
            (Some(olds), true) => Some(olds),
            _ => None,
        };
        let new_st = match side {
            Side::Old => None,
            Side::New | Side::Both => Some(news.current()?.stat_at(&name)?),
        };
        let old_st = match (side, old_dir.as_mut()) {
            (Side::Old | Side::Both, Some(olds)) => Some(olds.current()?.stat_at(&name)?),
            _ => None,
        };
        let descend = match (new_st, old_st) {
            (None, None) => None,
            (None, Some(_)) => {
                walk.push(&path, ChangeKind::Delete);
                None
            }
            (Some(n), None) => {
                walk.push(&path, ChangeKind::Add);
                walk.link(&n, &path, true);
                n.is_dir().then_some((false, false))
            }
            (Some(n), Some(o)) => {
                let changed = differs(&n, &o) || {
                    let new_cap = news.current()?.xattr_at(&name, CAPABILITY)?;
                    let old_cap = match old_dir.as_mut() {
                        Some(olds) => olds.current()?.xattr_at(&name, CAPABILITY)?,
                        None => None,
                    };
                    new_cap != old_cap
                };
                if changed {
                    walk.push(&path, ChangeKind::Modify);
                }
                walk.link(&n, &path, changed);
                // Into a directory: with its old counterpart when that was a directory too
                // (reporting the directory if something below changes and it did not itself),
                // else everything below is new.
                n.is_dir().then_some((o.is_dir(), o.is_dir() && !changed))
            }
        };
        if let Some((both, report)) = descend {
            let new_sub = news.current()?.open_dir(&name)?;
            let old_sub = match (old_dir, both) {
                (Some(olds), true) => Some(olds.current()?.open_dir(&name)?),
                _ => None,
            };
            let frame = walk.frame(&new_sub, old_sub.as_ref(), path.len(), report)?;
            news.push(&name, new_sub)?;
            if let (Some(olds), Some(sub)) = (olds.as_mut(), old_sub) {
                olds.push(&name, sub)?;
            }
            frames.push(frame);
        }
    }
    Ok(walk.finish())
}

/// Which tree a name is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    New,
    Old,
    Both,
}

struct Frame {
    /// The old tree has this directory too (the old stack is at it).
    with_old: bool,
    /// The names to look at, in order (the same file on both sides is already left out).
    names: Vec<(OsString, Side)>,
    next: usize,
    /// Length of this directory's path ("" for the root, "/a/b" below it).
    path_len: usize,
    /// The number of changes before this directory was entered.
    at_entry: usize,
    /// Report the directory as Modify if anything below it changed.
    report: bool,
}

/// A multiply-linked file of the new tree: whether any of its names changed, and the names
/// that did not.
#[derive(Default)]
struct LinkGroup {
    changed: bool,
    unchanged: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Walk {
    changes: Vec<Change>,
    links: HashMap<(u64, u64), LinkGroup>,
}

impl Walk {
    fn frame(&self, new: &Dir, old: Option<&Dir>, path_len: usize, report: bool) -> Result<Frame> {
        let new_entries = new.entries()?;
        let names = match old {
            None => merge(new_entries, Vec::new(), false),
            Some(old) => {
                let same_dev = new.stat()?.dev == old.stat()?.dev;
                merge(new_entries, old.entries()?, same_dev)
            }
        };
        Ok(Frame {
            with_old: old.is_some(),
            names,
            next: 0,
            path_len,
            at_entry: self.changes.len(),
            report,
        })
    }

    fn push(&mut self, path: &[u8], kind: ChangeKind) {
        self.changes.push(Change {
            path: PathBuf::from(OsString::from_vec(path.to_vec())),
            kind,
        });
    }

    /// Notes a name of a multiply-linked non-directory of the new tree.
    fn link(&mut self, st: &Stat, path: &[u8], changed: bool) {
        if st.is_dir() || st.nlink < 2 {
            return;
        }
        let group = self.links.entry(st.id()).or_default();
        if changed {
            group.changed = true;
        } else {
            group.unchanged.push(path.to_vec());
        }
    }

    /// Adds the unchanged names of changed multiply-linked files (and their directories), and
    /// sorts.
    fn finish(mut self) -> Vec<Change> {
        let extra: Vec<Vec<u8>> = self
            .links
            .into_values()
            .filter(|g| g.changed)
            .flat_map(|g| g.unchanged)
            .collect();
        if !extra.is_empty() {
            let mut seen: HashSet<PathBuf> = self.changes.iter().map(|c| c.path.clone()).collect();
            for path in extra {
                // Up from the name until a path already reported: every change the walk made
                // has its directories reported already.
                let mut p = PathBuf::from(OsString::from_vec(path));
                while p != Path::new("/") && seen.insert(p.clone()) {
                    self.changes.push(Change {
                        path: p.clone(),
                        kind: ChangeKind::Modify,
                    });
                    p.pop();
                }
            }
        }
        self.changes.sort();
        self.changes
    }
}

/// Merges two sorted directory listings into the names to compare, leaving out a name whose
/// entries have the same inode number on the same device (the same file: nothing below it can
/// differ).
pub(crate) fn merge(
    new: Vec<DirEntry>,
    old: Vec<DirEntry>,
    same_dev: bool,
) -> Vec<(OsString, Side)> {
    let mut out = Vec::with_capacity(new.len().max(old.len()));
    let mut new = new.into_iter().peekable();
    let mut old = old.into_iter().peekable();
    loop {
        let order = match (new.peek(), old.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(n), Some(o)) => n.name.as_bytes().cmp(o.name.as_bytes()),
        };
        match order {
            std::cmp::Ordering::Less => {
                let n = new.next().expect("peeked");
                out.push((n.name, Side::New));
            }
            std::cmp::Ordering::Greater => {
                let o = old.next().expect("peeked");
                out.push((o.name, Side::Old));
            }
            std::cmp::Ordering::Equal => {
                let n = new.next().expect("peeked");
                let o = old.next().expect("peeked");
                if !(same_dev && n.ino == o.ino && n.ino != 0) {
                    out.push((n.name, Side::Both));
                }
            }
        }
    }
    out
}

/// Docker's `statDifferent`: type and permission bits, owner, group and device number; for a
/// non-directory also size and mtime.
pub(crate) fn differs(new: &Stat, old: &Stat) -> bool {
    new.mode != old.mode
        || new.uid != old.uid
        || new.gid != old.gid
        || new.rdev != old.rdev
        || (!old.is_dir() && (!same_mtime(new, old) || new.size != old.size))
}

/// Equal mtimes; equal seconds are enough when either side has no nanoseconds (a tar carries
/// whole seconds, so a file that went through one compares equal to its source).
pub(crate) fn same_mtime(a: &Stat, b: &Stat) -> bool {
    a.mtime == b.mtime && (a.mtime_nsec == b.mtime_nsec || a.mtime_nsec == 0 || b.mtime_nsec == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::FileType;

    fn e(name: &str, ino: u64) -> DirEntry {
        DirEntry {
            name: name.into(),
            ino,
            file_type: FileType::RegularFile,
        }
    }

    fn st(mode: u32, size: u64, mtime: i64, nsec: u32) -> Stat {
        Stat {
            dev: 1,
            ino: 1,
            mode,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            size,
            mtime,
            mtime_nsec: nsec,
        }
    }

    #[test]
    fn merge_interleaves_and_skips_same_inode() {
        let new = vec![e("a", 1), e("b", 2), e("d", 4)];
        let old = vec![e("b", 2), e("c", 3), e("d", 9)];
        let m = merge(new.clone(), old.clone(), true);
        assert_eq!(
            m,
            [
                ("a".into(), Side::New),
                ("c".into(), Side::Old),
                ("d".into(), Side::Both)
            ]
        );
        // On different devices equal inode numbers mean nothing.
        let m = merge(new, old, false);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1], ("b".into(), Side::Both));
    }

    #[test]
    fn stat_rules() {
        let base = st(0o100644, 10, 100, 500);
        assert!(!differs(&base, &base));
        assert!(differs(&st(0o100755, 10, 100, 500), &base));
        assert!(differs(&st(0o100644, 11, 100, 500), &base));
        assert!(differs(&st(0o100644, 10, 101, 500), &base));
        assert!(differs(&st(0o100644, 10, 100, 600), &base));
        // Whole-second leniency when one side has no nanoseconds.
        assert!(!differs(&st(0o100644, 10, 100, 0), &base));
        assert!(!differs(&base, &st(0o100644, 10, 100, 0)));
        // Directories: size and mtime do not count, mode does.
        let dir = st(0o040755, 4096, 100, 1);
        assert!(!differs(&st(0o040755, 8192, 200, 2), &dir));
        assert!(differs(&st(0o040700, 4096, 100, 1), &dir));
        // A type change is a mode change.
        assert!(differs(&st(0o040644, 10, 100, 500), &base));
        let mut owned = base;
        owned.uid = 1;
        assert!(differs(&owned, &base));
        let mut dev = base;
        dev.rdev = 5;
        assert!(differs(&dev, &base));
    }
}
