//! Writing a list of changes as a layer tar ([`export_changes`]) and measuring it
//! ([`changes_size`]).
//!
//! Entries are written by the same entry writer as [`archive::write_tar`], in the same order
//! (a directory before its children, within a directory the opaque marker, then whiteouts, then
//! the rest, bytewise), so exporting every path of a tree as Add gives exactly `write_tar`'s
//! bytes. As in Docker's `ExportChanges`, only the changed paths are written: a reader creates
//! missing parents, and [`changes_dirs`](super::changes_dirs) reports the directories of every
//! change anyway. A Delete becomes an empty regular `.wh.<name>` entry with fixed attributes
//! ([`DELETED`]: mode 0600, owner 0:0, mtime 0; Docker uses the current time, which would make
//! the tar differ from run to run). Hard links among the written names are written as links to
//! the first one; `changes_dirs` reports every name of a changed multiply-linked file, so the tar
//! never depends on a file it does not carry.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::WhiteoutFormat;
use crate::entry::{TarWriter, meta_of};
use crate::fsutil::{self, Dir, DirCursor, FileType};
use crate::header::Meta;
use crate::whiteout;
use crate::write::{Plan, plan, rank};
use crate::{Change, ChangeKind, Result};

/// The attributes of the whiteout entry written for a Delete.
pub(crate) const DELETED: Meta = Meta {
    mode: 0o600,
    uid: 0,
    gid: 0,
    mtime: 0,
};

/// Writes `changes` of the tree `root` as an OCI layer tar: each Delete as a `.wh.` entry,
/// every other change as the entry from `root`, in sorted order, deterministic as
/// [`archive::write_tar`](crate::write_tar). Returns the number of bytes written.
///
/// A change of the root itself (`/`) has no entry and is left out; a path with `.` or `..`
/// components is an `InvalidInput` error.
pub fn export_changes(root: &Path, changes: &[Change], out: &mut dyn Write) -> Result<u64> {
    let mut items = Vec::with_capacity(changes.len());
    for change in changes {
        let comps = fsutil::components(&change.path)?;
        if comps.is_empty() {
            continue;
        }
        items.push((sort_key(&comps, change.kind), comps, change.kind));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items.dedup_by(|a, b| a.0 == b.0);

    let mut cursor = DirCursor::new(Dir::open(root)?);
    let mut w = TarWriter::new(out, None);
    let mut path = Vec::new();
    for (_, comps, kind) in &items {
        let (name, parents) = comps.split_last().expect("not the root");
        path.clear();
        for p in parents {
            path.extend_from_slice(p.as_bytes());
            path.push(b'/');
        }
        if *kind == ChangeKind::Delete {
            path.extend_from_slice(whiteout::whiteout_name(name).as_bytes());
            w.write_whiteout(&path, &DELETED)?;
            continue;
        }
        let dir = cursor.open(parents)?;
        if !matches!(whiteout::classify(name), whiteout::Name::Regular(_)) {
            // A `.wh.` name in the tree (possible only in an AUFS-form tree): as write_tar.
            let st = dir.stat_at(name)?;
            if let Plan::Whiteout(out) = plan(name, &st, WhiteoutFormat::Aufs, false) {
                path.extend_from_slice(&out);
                w.write_whiteout(&path, &meta_of(&st))?;
            }
            continue;
        }
        let st = dir.stat_at(name)?;
        path.extend_from_slice(name.as_bytes());
        let written = w.write_node(dir, name, &st, &path)?;
        if let Some(d) = written.dir {
            cursor.descend(name, d)?;
        }
    }
    w.finish()
}

/// The bytes of added and modified regular files among `changes` in `root`, each inode once.
pub fn changes_size(root: &Path, changes: &[Change]) -> Result<u64> {
    let mut cursor = DirCursor::new(Dir::open(root)?);
    let mut seen = HashSet::new();
    let mut sorted: Vec<&Change> = changes
        .iter()
        .filter(|c| c.kind != ChangeKind::Delete)
        .collect();
    sorted.sort();
    let mut size = 0u64;
    for change in sorted {
        let comps = fsutil::components(&change.path)?;
        let Some((name, parents)) = comps.split_last() else {
            continue;
        };
        let st = cursor.open(parents)?.stat_at(name)?;
        if st.file_type() == FileType::RegularFile && (st.nlink < 2 || seen.insert(st.id())) {
            size += st.size;
        }
    }
    Ok(size)
}

/// The order of a change in the tar: component by component, each as its rank among siblings
/// (opaque marker, whiteouts, the rest) and its bytes, a Delete's last component being its
/// whiteout name. Each component ends in a 0 byte, which no name contains, so a directory
/// sorts before its children and `a/x` before `a.b`.
fn sort_key(comps: &[&OsStr], kind: ChangeKind) -> Vec<u8> {
    let mut key = Vec::new();
    let last = comps.len() - 1;
    for (i, c) in comps.iter().enumerate() {
        let name = if i == last && kind == ChangeKind::Delete {
            whiteout::whiteout_name(c).as_bytes().to_vec()
        } else {
            c.as_bytes().to_vec()
        };
        key.push(rank(&name) + 1);
        key.extend_from_slice(&name);
        key.push(0);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(paths: &[(&str, ChangeKind)]) -> Vec<String> {
        let mut v: Vec<_> = paths
            .iter()
            .map(|(p, k)| {
                let comps = fsutil::components(Path::new(p)).unwrap();
                (sort_key(&comps, *k), p.to_string())
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }

    #[test]
    fn orders_like_write_tar() {
        use ChangeKind::*;
        let got = order(&[
            ("/a.b", Add),
            ("/a/z", Add),
            ("/a", Modify),
            ("/a/y", Delete),
            ("/b", Delete),
            ("/a/.wh.q", Add),
            ("/A", Add),
        ]);
        // "/b" deleted is ".wh.b": a whiteout, first at the top level.
        assert_eq!(got, ["/b", "/A", "/a", "/a/.wh.q", "/a/y", "/a/z", "/a.b"]);
    }
}
