//! The manifest of a materialised view: what each path was when the view was made, so the
//! last `put` can tell what changed.
//!
//! A path is unchanged when its inode, type, mode, owner, size, mtime and ctime all match.
//! ctime is the one userspace cannot set back, so any write, chmod, chown, xattr change, link
//! or rename of the inode shows; inode and type tell a replaced path (deleted and made again,
//! or renamed over) from a changed one. Linux 6.13+ multigrain timestamps make a change right
//! after the manifest's `stat` visible in ctime even on coarse-clock file systems.
//!
//! On disk: a header line, then one binary record per path (little-endian), in path order.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use strata_driver_api::{Error, ErrorKind, Result};

use crate::sys::{Kind, Meta};
use strata_archive::atomic;

const MAGIC: &[u8] = b"strata-dir manifest 1\n";

/// What one path of the view was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rec {
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    /// A lower layer shows this path too (see [`Merged::lower`](crate::union::Merged)): taking
    /// it out of the view needs a whiteout.
    pub lower: bool,
}

impl Rec {
    pub(crate) fn new(m: &Meta, lower: bool) -> Rec {
        Rec {
            ino: m.ino,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            size: m.size,
            mtime: m.mtime,
            ctime: m.ctime,
            lower,
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        Kind::from_mode(self.mode)
    }
}

/// How a path in the view compares with its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing about the path itself changed (a directory's children may have).
    Same,
    /// The same inode, with changed contents or attributes.
    Changed,
    /// Another inode or another type: the old one was deleted or renamed over.
    Replaced,
}

pub(crate) fn compare(old: &Rec, now: &Meta) -> Verdict {
    if old.ino != now.ino || old.kind() != now.kind() {
        return Verdict::Replaced;
    }
    let same = old.mode == now.mode
        && old.uid == now.uid
        && old.gid == now.gid
        && old.size == now.size
        && old.mtime == now.mtime
        && old.ctime == now.ctime;
    if same {
        Verdict::Same
    } else {
        Verdict::Changed
    }
}

/// A view's manifest: relative path ("" for the root) → record.
pub(crate) type Manifest = BTreeMap<PathBuf, Rec>;

/// Writes records (in path order) atomically to `path`.
pub(crate) fn write<'a>(
    path: &Path,
    recs: impl Iterator<Item = (&'a PathBuf, &'a Rec)>,
) -> Result<()> {
    atomic::write_file(path, |w| {
        let io = |e| Error::io("write manifest", e);
        w.write_all(MAGIC).map_err(io)?;
        let mut buf = Vec::with_capacity(128);
        for (p, r) in recs {
            buf.clear();
            let name = p.as_os_str().as_bytes();
            let len = u32::try_from(name.len()).map_err(|_| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("path too long: {}", p.display()),
                )
            })?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(name);
            buf.push(u8::from(r.lower));
            buf.extend_from_slice(&r.ino.to_le_bytes());
            buf.extend_from_slice(&r.mode.to_le_bytes());
            buf.extend_from_slice(&r.uid.to_le_bytes());
            buf.extend_from_slice(&r.gid.to_le_bytes());
            buf.extend_from_slice(&r.size.to_le_bytes());
            buf.extend_from_slice(&r.mtime.0.to_le_bytes());
            buf.extend_from_slice(&r.mtime.1.to_le_bytes());
            buf.extend_from_slice(&r.ctime.0.to_le_bytes());
            buf.extend_from_slice(&r.ctime.1.to_le_bytes());
            w.write_all(&buf).map_err(io)?;
        }
        Ok(())
    })
}

/// Reads the manifest at `path`.
pub(crate) fn read(path: &Path) -> Result<Manifest> {
    let file = File::open(path).map_err(|e| Error::os("open", path, e))?;
    let mut r = BufReader::with_capacity(256 * 1024, file);
    let corrupt =
        |what: &str| Error::new(ErrorKind::Corrupt, format!("{}: {what}", path.display()));
    let mut magic = [0u8; MAGIC.len()];
    r.read_exact(&mut magic).map_err(|_| corrupt("no header"))?;
    if magic != MAGIC {
        return Err(corrupt("unknown header"));
    }
    let mut out = Manifest::new();
    loop {
        let mut len = [0u8; 4];
        match r.read(&mut len[..1]) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(Error::os("read", path, e)),
        }
        r.read_exact(&mut len[1..])
            .map_err(|_| corrupt("truncated"))?;
        let mut name = vec![0u8; u32::from_le_bytes(len) as usize];
        r.read_exact(&mut name).map_err(|_| corrupt("truncated"))?;
        let mut f = [0u8; 1 + 8 + 4 + 4 + 4 + 8 + 12 + 12];
        r.read_exact(&mut f).map_err(|_| corrupt("truncated"))?;
        let u32_at = |i: usize| u32::from_le_bytes(f[i..i + 4].try_into().unwrap_or_default());
        let u64_at = |i: usize| u64::from_le_bytes(f[i..i + 8].try_into().unwrap_or_default());
        let i64_at = |i: usize| i64::from_le_bytes(f[i..i + 8].try_into().unwrap_or_default());
        let rec = Rec {
            lower: f[0] != 0,
            ino: u64_at(1),
            mode: u32_at(9),
            uid: u32_at(13),
            gid: u32_at(17),
            size: u64_at(21),
            mtime: (i64_at(29), u32_at(37)),
            ctime: (i64_at(41), u32_at(49)),
        };
        out.insert(PathBuf::from(OsStr::from_bytes(&name)), rec);
    }
    Ok(out)
}

/// Removes `path` and everything below it from `m`, returning how many entries went.
pub(crate) fn take_subtree<V>(m: &mut BTreeMap<PathBuf, V>, path: &Path) -> usize {
    // Component-wise order puts a path's descendants right after it.
    let below: Vec<PathBuf> = m
        .range(path.to_path_buf()..)
        .take_while(|(p, _)| p.starts_with(path))
        .map(|(p, _)| p.clone())
        .collect();
    for p in &below {
        m.remove(p);
    }
    below.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ino: u64, mode: u32) -> Meta {
        Meta {
            dev: 1,
            ino,
            mode,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            size: 3,
            atime: (1, 2),
            mtime: (3, 4),
            ctime: (5, 6),
        }
    }

    #[test]
    fn round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m");
        let mut m = Manifest::new();
        m.insert(PathBuf::new(), Rec::new(&meta(1, 0o40755), false));
        m.insert("a b/\n".into(), Rec::new(&meta(2, 0o100644), true));
        write(&path, m.iter()).unwrap();
        assert_eq!(read(&path).unwrap(), m);
        std::fs::write(&path, b"garbage").unwrap();
        assert_eq!(read(&path).unwrap_err().kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn compares() {
        let old = Rec::new(&meta(7, 0o100644), false);
        assert_eq!(compare(&old, &meta(7, 0o100644)), Verdict::Same);
        assert_eq!(compare(&old, &meta(8, 0o100644)), Verdict::Replaced);
        assert_eq!(compare(&old, &meta(7, 0o40755)), Verdict::Replaced);
        assert_eq!(compare(&old, &meta(7, 0o100600)), Verdict::Changed);
        let mut touched = meta(7, 0o100644);
        touched.ctime.1 += 1;
        assert_eq!(compare(&old, &touched), Verdict::Changed);
        // atime is no change.
        let mut read = meta(7, 0o100644);
        read.atime = (99, 0);
        assert_eq!(compare(&old, &read), Verdict::Same);
    }

    #[test]
    fn takes_subtrees() {
        let r = Rec::new(&meta(1, 0o100644), false);
        let mut m: Manifest = ["a", "a/b", "a/b/c", "a-b", "a.b", "ab", "b"]
            .iter()
            .map(|p| (PathBuf::from(p), r))
            .collect();
        assert_eq!(take_subtree(&mut m, Path::new("a")), 3);
        let left: Vec<_> = m.keys().map(|p| p.to_str().unwrap().to_owned()).collect();
        assert_eq!(left, ["a-b", "a.b", "ab", "b"]);
    }
}
