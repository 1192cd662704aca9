//! The native `changes` and `diff_size`: read straight from the layer's diff directory, so
//! they cost O(size of the layer) plus a look at the parent's directories that the layer
//! touches, never a walk of the whole image.
//!
//! `changes` reports what the naive comparison of the parent's view with the layer's view
//! would (Docker's `ChangesDirs` rules), with one aufs rule for files:
//!
//! - a path in the diff that the parent's view lacks is `Add`, and so is everything below it;
//! - a non-directory in the diff that the parent's view has is `Modify` (it is in the layer, so
//!   the layer changed it: Docker's aufs rule);
//! - a directory in both is `Modify` when its mode or owner differs, or when anything below it
//!   is reported (mtime alone is no change for a directory, as in Docker);
//! - a path that changed type is `Modify`; a new directory's children are `Add`, an old
//!   directory's children are not reported;
//! - `.wh.<name>` is `Delete` of `<name>` when the parent's view has it and the diff does not
//!   also hold `<name>` (the file wins); `.wh..wh.*` names are never reported;
//! - an opaque directory (`.wh..wh..opq`) deletes every child the parent's view had there and
//!   the diff does not hold again: each is reported `Delete` (not their descendants); the kept
//!   ones are compared as above, against the parent's view.
//!
//! Paths are absolute in the layer ("/etc/passwd") and sorted.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use strata_driver_api::{Change, ChangeKind, Result};

use crate::sys::{self, Kind};
use crate::union::{self, BranchDir, Merged};

/// The changes of the layer whose branches are `branches` (its own diff first) over its
/// direct parent (the rest).
pub(crate) fn changes(branches: &[PathBuf]) -> Result<Vec<Change>> {
    let lower: Vec<usize> = (1..branches.len()).collect();
    let mut out = Vec::new();
    let root = sys::open_dir(&branches[0])?;
    compare_dir(
        branches,
        root.as_fd(),
        Path::new(""),
        &lower,
        false,
        &mut out,
    )?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn push(out: &mut Vec<Change>, rel: &Path, kind: ChangeKind) {
    out.push(change(rel, kind));
}

/// Compares the diff's directory `rel` (open as `dir`) with the parent's view of it, merged
/// from `lower` (empty: the parent has no directory there). `hidden`: the parent's children
/// of this directory do not show in the layer's view (an opaque or whited-out ancestor).
/// Returns whether anything was reported at or below `rel`.
fn compare_dir(
    branches: &[PathBuf],
    dir: BorrowedFd<'_>,
    rel: &Path,
    lower: &[usize],
    hidden: bool,
    out: &mut Vec<Change>,
) -> Result<bool> {
    let dir_path = branches[0].join(rel);
    let ours = BranchDir::from_entries(0, sys::list(dir, &dir_path)?);
    let old: BTreeMap<OsString, Merged> = if lower.is_empty() {
        BTreeMap::new()
    } else {
        union::merged_dir(branches, rel, lower)?
    };
    let hidden_here = hidden || ours.opaque;
    let whiteouts: HashSet<&OsStr> = ours.whiteouts.iter().map(|w| w.as_os_str()).collect();
    let names: HashSet<&OsStr> = ours.entries.iter().map(|(n, _)| n.as_os_str()).collect();
    let before = out.len();

    for name in old.keys() {
        if !names.contains(name.as_os_str())
            && (hidden_here || whiteouts.contains(name.as_os_str()))
        {
            push(out, &rel.join(name), ChangeKind::Delete);
        }
    }
    for (name, kind) in &ours.entries {
        let path = rel.join(name);
        let child_path = branches[0].join(&path);
        let Some(o) = old.get(name) else {
            push(out, &path, ChangeKind::Add);
            if *kind == Kind::Dir {
                let child = sys::open_dir_at(dir, name, &child_path)?;
                compare_dir(branches, child.as_fd(), &path, &[], true, out)?;
            }
            continue;
        };
        match (*kind == Kind::Dir, o.kind == Kind::Dir) {
            (true, true) => {
                let child = sys::open_dir_at(dir, name, &child_path)?;
                let child_hidden = hidden_here || whiteouts.contains(name.as_os_str());
                let at = out.len();
                let below = compare_dir(
                    branches,
                    child.as_fd(),
                    &path,
                    &o.dir_branches,
                    child_hidden,
                    out,
                )?;
                let new = sys::fstat(child.as_fd(), &child_path)?;
                let old_meta = sys::try_lstat(&branches[o.from].join(&path))?;
                let attrs_differ =
                    old_meta.is_none_or(|m| (m.mode, m.uid, m.gid) != (new.mode, new.uid, new.gid));
                if below || attrs_differ {
                    // Before the children, as it sorts.
                    out.insert(at, change(&path, ChangeKind::Modify));
                }
            }
            (true, false) => {
                push(out, &path, ChangeKind::Modify);
                let child = sys::open_dir_at(dir, name, &child_path)?;
                compare_dir(branches, child.as_fd(), &path, &[], true, out)?;
            }
            // A non-directory over anything: its old children (if it was a directory) are
            // not reported, as in Docker (a change of type counts for the whole subtree).
            (false, _) => push(out, &path, ChangeKind::Modify),
        }
    }
    Ok(out.len() > before)
}

fn change(rel: &Path, kind: ChangeKind) -> Change {
    Change {
        path: Path::new("/").join(rel),
        kind,
    }
}

/// The bytes of regular files in the diff directory `diff`, each inode once; whiteouts and
/// AUFS-internal names do not count.
pub(crate) fn diff_size(diff: &Path) -> Result<u64> {
    let root = sys::open_dir(diff)?;
    let mut seen = HashSet::new();
    size_dir(root.as_fd(), diff, &mut seen)
}

fn size_dir(dir: BorrowedFd<'_>, path: &Path, seen: &mut HashSet<(u64, u64)>) -> Result<u64> {
    let mut total = 0;
    for ent in sys::list(dir, path)? {
        if sys::is_wh_name(&ent.name) {
            continue;
        }
        let child = path.join(&ent.name);
        match ent.kind {
            Kind::Dir => {
                let fd = sys::open_dir_at(dir, &ent.name, &child)?;
                total += size_dir(fd.as_fd(), &child, seen)?;
            }
            Kind::File => {
                let m = sys::stat_at(dir, &ent.name, &child)?;
                if m.nlink > 1 && !seen.insert((m.dev, m.ino)) {
                    continue;
                }
                total += m.size;
            }
            _ => {}
        }
    }
    Ok(total)
}
