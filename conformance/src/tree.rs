//! Snapshots of a directory tree, and comparing two of them: the oracle for "this merged view
//! equals that flat directory" and for metadata round trips.
//!
//! It reads only (lstat, readlink, listxattr, file contents); it never follows a symlink.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::check::Failure;

/// What kind of file a node is, with what identifies it beyond its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file: its size and the SHA-256 of its bytes.
    File {
        /// Bytes.
        size: u64,
        /// SHA-256 of the content.
        sha256: [u8; 32],
    },
    /// A symlink and its target, as stored.
    Symlink(PathBuf),
    /// A FIFO.
    Fifo,
    /// A character device and its device number.
    Char(u64),
    /// A block device and its device number.
    Block(u64),
    /// A socket.
    Socket,
}

/// One path's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Type and identity.
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Extended attributes (never `security.selinux` or overlay's own).
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Modification time: seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// For a non-directory with other names in this tree: the first of its names (sorted),
    /// so link structure compares across trees.
    pub link_group: Option<PathBuf>,
}

/// A whole tree: `/` for the root, then absolute-within-the-tree paths, sorted.
/// A `lost+found` at the root is left out (a fresh ext4 image has one), as graphtest does.
pub type Tree = BTreeMap<PathBuf, Node>;

/// Reads the tree under `root` (blocking).
pub fn snapshot(root: &Path) -> Result<Tree, Failure> {
    let mut tree = Tree::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    walk(root, Path::new("/"), &mut tree, &mut inodes)
        .map_err(|e| Failure::failed(format!("reading the tree {}: {e}", root.display())))?;
    for mut names in inodes.into_values().filter(|n| n.len() > 1) {
        names.sort();
        let first = names[0].clone();
        for n in names {
            if let Some(node) = tree.get_mut(&n) {
                node.link_group = Some(first.clone());
            }
        }
    }
    Ok(tree)
}

fn walk(
    real: &Path,
    rel: &Path,
    tree: &mut Tree,
    inodes: &mut HashMap<(u64, u64), Vec<PathBuf>>,
) -> std::io::Result<()> {
    let md = fs::symlink_metadata(real)?;
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File {
            size: md.len(),
            sha256: hash_file(real)?,
        }
    } else if ft.is_symlink() {
        Kind::Symlink(fs::read_link(real)?)
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::Char(md.rdev())
    } else if ft.is_block_device() {
        Kind::Block(md.rdev())
    } else {
        Kind::Socket
    };
    if !ft.is_dir() && md.nlink() > 1 {
        inodes
            .entry((md.dev(), md.ino()))
            .or_default()
            .push(rel.to_path_buf());
    }
    tree.insert(
        rel.to_path_buf(),
        Node {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            xattrs: xattrs(real)?,
            mtime: (md.mtime(), md.mtime_nsec()),
            link_group: None,
        },
    );
    if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(real)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            if rel == Path::new("/") && name == "lost+found" {
                continue;
            }
            walk(&real.join(&name), &rel.join(&name), tree, inodes)?;
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Whether an xattr is one the comparison leaves out: labels the host adds
/// (`security.selinux`) and overlayfs's own, which never belong to a layer's content.
pub fn ignored_xattr(name: &[u8]) -> bool {
    name == b"security.selinux" || strata_archive::whiteout::is_overlay_xattr(name)
}

/// The xattrs of `path` (not following a symlink), minus the [ignored](ignored_xattr) ones.
pub fn xattrs(path: &Path) -> std::io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let len = match rustix::fs::llistxattr_query(path) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    if len == 0 {
        return Ok(out);
    }
    let mut list = vec![0u8; len];
    let n = rustix::fs::llistxattr(path, &mut list[..])?;
    list.truncate(n);
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if ignored_xattr(name) {
            continue;
        }
        let cname = std::ffi::OsStr::from_bytes(name);
        let vlen = rustix::fs::lgetxattr_query(path, cname)?;
        let mut value = vec![0u8; vlen];
        let got = if vlen == 0 {
            0
        } else {
            rustix::fs::lgetxattr(path, cname, &mut value[..])?
        };
        value.truncate(got);
        out.insert(name.to_vec(), value);
    }
    Ok(out)
}

/// What to compare beyond type, content, mode, owner and xattrs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compare {
    /// Compare modification times of regular files (whole seconds).
    pub file_mtimes: bool,
    /// Compare modification times of directories (whole seconds), the root excepted.
    pub dir_mtimes: bool,
    /// Compare hardlink structure.
    pub hardlinks: bool,
}

impl Compare {
    /// For a merged view against a flat directory built with the same steps at other moments:
    /// no times, but links.
    pub const FLAT: Compare = Compare {
        file_mtimes: false,
        dir_mtimes: false,
        hardlinks: true,
    };
    /// For a round trip through a tar: everything a tar carries.
    pub const ROUND_TRIP: Compare = Compare {
        file_mtimes: true,
        dir_mtimes: true,
        hardlinks: true,
    };
}

/// The differences between the tree `got` and the tree `want`, one line each; empty if equal.
pub fn differences(got: &Tree, want: &Tree, how: Compare) -> Vec<String> {
    let mut out = Vec::new();
    for (path, w) in want {
        let Some(g) = got.get(path) else {
            out.push(format!("{} is missing", path.display()));
            continue;
        };
        let p = path.display();
        if g.kind != w.kind {
            out.push(format!(
                "{p}: {} but should be {}",
                describe(&g.kind),
                describe(&w.kind)
            ));
        }
        if g.mode != w.mode {
            out.push(format!("{p}: mode {:o} but should be {:o}", g.mode, w.mode));
        }
        if (g.uid, g.gid) != (w.uid, w.gid) {
            out.push(format!(
                "{p}: owner {}:{} but should be {}:{}",
                g.uid, g.gid, w.uid, w.gid
            ));
        }
        if g.xattrs != w.xattrs {
            out.push(format!(
                "{p}: xattrs {} but should be {}",
                show_xattrs(&g.xattrs),
                show_xattrs(&w.xattrs)
            ));
        }
        let is_dir = w.kind == Kind::Dir;
        let times = if is_dir {
            how.dir_mtimes && path != Path::new("/")
        } else {
            how.file_mtimes && matches!(w.kind, Kind::File { .. })
        };
        if times && g.mtime.0 != w.mtime.0 {
            out.push(format!(
                "{p}: mtime {} but should be {}",
                g.mtime.0, w.mtime.0
            ));
        }
        if how.hardlinks && g.link_group != w.link_group {
            out.push(format!(
                "{p}: hardlinked with {:?} but should be with {:?}",
                g.link_group, w.link_group
            ));
        }
    }
    for path in got.keys() {
        if !want.contains_key(path) {
            out.push(format!("{} should not exist", path.display()));
        }
    }
    out
}

/// Fails with the differences (the first 30) if the trees differ.
pub fn ensure_same(got: &Tree, want: &Tree, how: Compare, what: &str) -> Result<(), Failure> {
    let diffs = differences(got, want, how);
    if diffs.is_empty() {
        return Ok(());
    }
    let n = diffs.len();
    let mut text = format!("{what}: {n} difference(s)");
    for d in diffs.iter().take(30) {
        text.push_str("\n  ");
        text.push_str(d);
    }
    Err(Failure::failed(text))
}

fn describe(k: &Kind) -> String {
    match k {
        Kind::Dir => "a directory".into(),
        Kind::File { size, sha256 } => format!(
            "a file of {size} bytes (sha256 {:02x}{:02x}{:02x}{:02x}..)",
            sha256[0], sha256[1], sha256[2], sha256[3]
        ),
        Kind::Symlink(t) => format!("a symlink to {}", t.display()),
        Kind::Fifo => "a fifo".into(),
        Kind::Char(d) => format!("char device {d:#x}"),
        Kind::Block(d) => format!("block device {d:#x}"),
        Kind::Socket => "a socket".into(),
    }
}

fn show_xattrs(x: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    let parts: Vec<String> = x
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            )
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn equal_trees_have_no_differences_and_changes_show() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            fs::create_dir(d.join("sub")).unwrap();
            fs::write(d.join("sub/f"), b"hello").unwrap();
            fs::hard_link(d.join("sub/f"), d.join("g")).unwrap();
            std::os::unix::fs::symlink("sub/f", d.join("l")).unwrap();
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let ta = snapshot(a.path()).unwrap();
        let tb = snapshot(b.path()).unwrap();
        assert_eq!(
            ta[Path::new("/g")].link_group.as_deref(),
            Some(Path::new("/g"))
        );
        assert_eq!(differences(&ta, &tb, Compare::FLAT), Vec::<String>::new());

        fs::write(b.path().join("sub/f"), b"hellO").unwrap();
        fs::remove_file(b.path().join("g")).unwrap();
        fs::set_permissions(b.path().join("sub"), fs::Permissions::from_mode(0o700)).unwrap();
        let tb = snapshot(b.path()).unwrap();
        let d = differences(&tb, &ta, Compare::FLAT);
        assert!(d.iter().any(|l| l.starts_with("/g is missing")), "{d:?}");
        assert!(d.iter().any(|l| l.starts_with("/sub: mode 700")), "{d:?}");
        assert!(d.iter().any(|l| l.starts_with("/sub/f: a file")), "{d:?}");
        assert!(ensure_same(&tb, &ta, Compare::FLAT, "x").is_err());
    }
}
