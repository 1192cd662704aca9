//! The union rules: how the branches of one directory merge into the view.
//!
//! A layer's view is its own diff directory over its ancestors' diff directories, top first:
//! branch 0 is the layer's own. For one directory:
//!
//! - a name is taken from the first branch that has it;
//! - `.wh.<name>` in a branch hides `<name>` in every *lower* branch (a file and its whiteout in
//!   the same branch: the file wins, and the whiteout still hides the lower ones);
//! - `.wh..wh..opq` in a branch's directory hides every lower branch's children of that
//!   directory;
//! - a directory merges with the same directory in the branches below the one it was taken
//!   from, down to the first branch that hides it or holds a non-directory there (as overlayfs:
//!   a non-directory ends the merge);
//! - whiteouts, the opaque marker and other `.wh..wh.*` names never appear in the view.
//!
//! [`merge`] is pure; [`read_dirs`] is the I/O that feeds it.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use strata_archive::whiteout::{self, Name};
use strata_driver_api::Result;

use crate::sys::{self, Entry, Kind};

/// One branch's listing of one directory, classified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BranchDir {
    /// The branch's index in the layer's chain (0: the layer's own diff).
    pub branch: usize,
    /// The ordinary names, sorted, with their types.
    pub entries: Vec<(OsString, Kind)>,
    /// The names this branch whites out.
    pub whiteouts: Vec<OsString>,
    /// The directory holds the opaque marker.
    pub opaque: bool,
}

impl BranchDir {
    /// Classifies a directory listing. AUFS-internal names and malformed whiteouts (`.wh.`,
    /// `.wh..`) are ignored: they name nothing in the view.
    pub(crate) fn from_entries(branch: usize, listing: Vec<Entry>) -> BranchDir {
        let mut dir = BranchDir {
            branch,
            ..BranchDir::default()
        };
        for ent in listing {
            match whiteout::classify(&ent.name) {
                Name::Regular(_) => dir.entries.push((ent.name, ent.kind)),
                Name::Whiteout(target) => dir.whiteouts.push(target.to_os_string()),
                Name::Opaque => dir.opaque = true,
                Name::Meta | Name::Invalid => {}
            }
        }
        dir
    }
}

/// One name of a merged directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Merged {
    pub name: OsString,
    /// The branch the name is taken from.
    pub from: usize,
    /// Its type in that branch.
    pub kind: Kind,
    /// For a directory: the branches whose same-named directories merge into it, top first
    /// (starting with `from`). Its own opaque marker is applied when it is merged in turn.
    pub dir_branches: Vec<usize>,
    /// The name is also in the view without branch 0: removing branch 0's copy would leave a
    /// lower one showing, so deleting it from the view needs a whiteout.
    pub lower: bool,
}

/// Merges one directory's branch listings (top first, as the parent's `dir_branches` give
/// them) into the view's entries, sorted by name.
pub(crate) fn merge(dirs: &[BranchDir]) -> Vec<Merged> {
    // An opaque directory hides everything below it.
    let cut = dirs
        .iter()
        .position(|d| d.opaque)
        .map_or(dirs.len(), |i| i + 1);
    let dirs = &dirs[..cut];

    let mut out: BTreeMap<&OsStr, (Merged, bool)> = BTreeMap::new();
    // Names whited out by a branch above the one being read.
    let mut hidden: HashSet<&OsStr> = HashSet::new();
    // The same, counting only branches other than 0, for `lower`.
    let mut hidden_lower: HashSet<&OsStr> = HashSet::new();
    let mut lower: HashSet<&OsStr> = HashSet::new();

    for d in dirs {
        for (name, kind) in &d.entries {
            let name = name.as_os_str();
            if d.branch > 0 && !hidden_lower.contains(name) {
                lower.insert(name);
            }
            match out.get_mut(name) {
                None if !hidden.contains(name) => {
                    let is_dir = *kind == Kind::Dir;
                    let merged = Merged {
                        name: name.to_os_string(),
                        from: d.branch,
                        kind: *kind,
                        dir_branches: if is_dir { vec![d.branch] } else { Vec::new() },
                        lower: false,
                    };
                    // The bool: lower branches may still add to this directory.
                    out.insert(name, (merged, is_dir));
                }
                Some((m, open)) if *open => {
                    if *kind == Kind::Dir {
                        m.dir_branches.push(d.branch);
                    } else {
                        *open = false;
                    }
                }
                _ => {}
            }
        }
        for w in &d.whiteouts {
            let w = w.as_os_str();
            hidden.insert(w);
            if d.branch > 0 {
                hidden_lower.insert(w);
            }
            if let Some((_, open)) = out.get_mut(w) {
                *open = false;
            }
        }
    }
    out.into_iter()
        .map(|(name, (mut m, _))| {
            m.lower = lower.contains(name);
            m
        })
        .collect()
}

/// Reads directory `rel` of each branch in `sources` (indexes into `branches`): the listings to
/// [`merge`], and each directory's open fd to read the chosen entries through.
pub(crate) fn read_dirs(
    branches: &[PathBuf],
    rel: &Path,
    sources: &[usize],
) -> Result<Vec<(BranchDir, OwnedFd)>> {
    let mut out = Vec::with_capacity(sources.len());
    for &b in sources {
        let path = branches[b].join(rel);
        let fd = sys::open_dir(&path)?;
        let listing = sys::list(fd.as_fd(), &path)?;
        out.push((BranchDir::from_entries(b, listing), fd));
    }
    Ok(out)
}

/// The merged listing of directory `rel` over `sources`, by name.
pub(crate) fn merged_dir(
    branches: &[PathBuf],
    rel: &Path,
    sources: &[usize],
) -> Result<BTreeMap<OsString, Merged>> {
    let dirs: Vec<BranchDir> = read_dirs(branches, rel, sources)?
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    Ok(merge(&dirs)
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bd(branch: usize, names: &[&str]) -> BranchDir {
        let listing = names
            .iter()
            .map(|n| {
                let (name, kind) = match n.strip_suffix('/') {
                    Some(d) => (d, Kind::Dir),
                    None => (*n, Kind::File),
                };
                Entry {
                    name: name.into(),
                    kind,
                }
            })
            .collect();
        BranchDir::from_entries(branch, listing)
    }

    fn view(m: &[Merged]) -> Vec<String> {
        m.iter()
            .map(|m| {
                let slash = if m.kind == Kind::Dir { "/" } else { "" };
                format!("{}{slash}@{}", m.name.to_string_lossy(), m.from)
            })
            .collect()
    }

    fn find<'a>(m: &'a [Merged], name: &str) -> &'a Merged {
        m.iter().find(|m| m.name == name).unwrap()
    }

    #[test]
    fn first_branch_wins() {
        let m = merge(&[bd(0, &["a", "b"]), bd(1, &["b", "c"])]);
        assert_eq!(view(&m), ["a@0", "b@0", "c@1"]);
        assert!(!find(&m, "a").lower);
        assert!(find(&m, "b").lower);
        assert!(find(&m, "c").lower);
    }

    #[test]
    fn whiteout_hides_lower_only() {
        let m = merge(&[
            bd(0, &[".wh.b", ".wh.x"]),
            bd(1, &["b", "c"]),
            bd(2, &["x"]),
        ]);
        assert_eq!(view(&m), ["c@1"]);
    }

    #[test]
    fn file_beats_its_whiteout_in_the_same_branch() {
        let m = merge(&[bd(0, &["b", ".wh.b"]), bd(1, &["b/"])]);
        assert_eq!(view(&m), ["b@0"]);
        // The lower b is still visible without branch 0: deleting b needs a whiteout.
        assert!(find(&m, "b").lower);
        // A directory and its whiteout in one branch: the directory shows, unmerged.
        let m = merge(&[bd(0, &["d/", ".wh.d"]), bd(1, &["d/"])]);
        assert_eq!(find(&m, "d").dir_branches, [0]);
    }

    #[test]
    fn lower_whiteout_counts_for_lower() {
        // Branch 1 whites out branch 2's x: without branch 0, x is not visible.
        let m = merge(&[bd(0, &["x"]), bd(1, &[".wh.x"]), bd(2, &["x"])]);
        assert_eq!(view(&m), ["x@0"]);
        assert!(!find(&m, "x").lower);
    }

    #[test]
    fn opaque_cuts_lower_branches() {
        let m = merge(&[bd(0, &["a"]), bd(1, &[".wh..wh..opq", "b"]), bd(2, &["c"])]);
        assert_eq!(view(&m), ["a@0", "b@1"]);
        let m = merge(&[bd(0, &[".wh..wh..opq", "a"]), bd(1, &["a", "b"])]);
        assert_eq!(view(&m), ["a@0"]);
        assert!(!find(&m, "a").lower);
    }

    #[test]
    fn directories_merge_until_a_file_or_whiteout() {
        let m = merge(&[
            bd(0, &["d/"]),
            bd(1, &["e/"]),
            bd(2, &["d/"]),
            bd(3, &["d"]),
            bd(4, &["d/"]),
        ]);
        assert_eq!(find(&m, "d").dir_branches, [0, 2]);
        let m = merge(&[bd(0, &["d/"]), bd(1, &[".wh.d"]), bd(2, &["d/"])]);
        assert_eq!(find(&m, "d").dir_branches, [0]);
        // A file over a directory: the directory below does not show through.
        let m = merge(&[bd(0, &["d"]), bd(1, &["d/"])]);
        assert_eq!(view(&m), ["d@0"]);
        assert!(find(&m, "d").dir_branches.is_empty());
    }

    #[test]
    fn internal_names_never_show() {
        let m = merge(&[bd(0, &[".wh..wh.plnk/", ".wh..wh.aufs", ".wh.", "ok"])]);
        assert_eq!(view(&m), ["ok@0"]);
    }

    #[test]
    fn sorted_by_name() {
        let m = merge(&[bd(0, &["b", "z"]), bd(1, &["a", "c"])]);
        assert_eq!(view(&m), ["a@1", "b@0", "c@1", "z@0"]);
    }
}
