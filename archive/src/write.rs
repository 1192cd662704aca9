//! Writing deterministic OCI layer tars from a directory.
//!
//! One blocking pass over the tree through directory file descriptors ([`crate::fsutil`]).
//! The same tree always gives the same bytes:
//! - entries in depth-first order, a directory before its children, the children of a
//!   directory sorted by their name in the tar: the opaque marker first, then the other
//!   whiteouts (`.wh.*`), then everything else, each group bytewise;
//! - names relative, without `./` or `/` in front, directories ending in `/`; the root itself is
//!   not an entry (Docker leaves it out too);
//! - headers as [`header`](super::header) builds them (whole-second mtimes, numeric owners, no
//!   user or group names, PAX for what ustar cannot hold, xattrs as `SCHILY.xattr.*`);
//! - the second and later names of a multiply-linked file are hard links to the first;
//! - sockets are left out, as are names an OCI layer cannot hold (the AUFS internals
//!   `.wh..wh.*` other than the opaque marker, and `.wh.`, `.wh..`, `.wh...`).
//!
//! Whiteouts, in either on-disk form, become empty regular entries that keep the
//! permission bits, owner and mtime of what stood for them on disk (a `.wh.` file, or an
//! overlay 0/0 character device). So an OCI tar applied to a dir-driver diff directory (which
//! stores `.wh.` files with the entry's attributes) comes back byte for byte, and so does one
//! applied to an overlay upper directory, as far as the apply side gives each 0/0 device the
//! entry's permission bits, owner and mtime. An overlay opaque directory has no file of its
//! own for the marker: its `.wh..wh..opq` entry takes the directory's permission bits (without
//! setuid/setgid/sticky), its owner, and mtime 0 — what Docker's overlay2 writes — and round
//! trips exactly when the marker in the tar had those.
//!
//! A directory of the tree is open while the walk is below it, within
//! [`MAX_OPEN`](crate::fsutil::MAX_OPEN) descriptors however deep the tree (see
//! [`DirStack`]).

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use super::entry::{TarWriter, meta_of};
use super::header::Meta;
use super::whiteout::{self, Name};
use crate::Result;
use crate::fsutil::{Dir, DirStack, FileType, Stat};

/// How whiteouts are stored in the directory being written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// AUFS/OCI form on disk (`.wh.<name>` files, `.wh..wh..opq`): exported as they are;
    /// other `.wh..wh.*` names are skipped. Also right for a plain tree with no whiteouts.
    Aufs,
    /// overlayfs form (0/0 character devices, `*.overlay.opaque` xattr): converted to AUFS form,
    /// the opaque marker placed before its siblings.
    Overlay {
        /// The opaque xattr is `user.overlay.opaque` rather than `trusted.overlay.opaque`.
        user_xattr: bool,
    },
}

impl WhiteoutFormat {
    /// The xattr that marks an opaque directory in this format, if it has one.
    pub(crate) fn opaque_xattr(self) -> Option<&'static [u8]> {
        match self {
            WhiteoutFormat::Aufs => None,
            WhiteoutFormat::Overlay { user_xattr: false } => Some(b"trusted.overlay.opaque"),
            WhiteoutFormat::Overlay { user_xattr: true } => Some(b"user.overlay.opaque"),
        }
    }
}

/// How to write a tar.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// How the directory stores whiteouts.
    pub whiteouts: WhiteoutFormat,
}

/// Writes the whole tree under `root` as an uncompressed OCI layer tar to `out`.
///
/// Deterministic: entries sorted by name (a directory before its children, whiteouts before
/// their siblings), hardlinks as links to the first path seen, no atime/ctime, no user or group
/// names, overlay xattrs never written. Returns the number of bytes written.
pub fn write_tar(root: &Path, out: &mut dyn Write, opts: &WriteOptions) -> Result<u64> {
    let format = opts.whiteouts;
    let mut w = TarWriter::new(out, format.opaque_xattr());
    let root = Dir::open(root)?;
    let opaque = format.opaque_xattr().is_some() && w.is_opaque(&root.xattrs()?);
    let first = children(&root, format, opaque)?;
    // The open directories, within a bounded number of descriptors however deep the tree.
    let mut dirs = DirStack::new(root);
    let mut frames = vec![Frame {
        children: first,
        next: 0,
        path_len: 0,
    }];
    let mut path: Vec<u8> = Vec::new();
    while let Some(top) = frames.last_mut() {
        let Some(child) = top.children.get_mut(top.next) else {
            frames.pop();
            dirs.pop();
            continue;
        };
        top.next += 1;
        path.truncate(top.path_len);
        path.extend_from_slice(&child.out);
        match child.what {
            What::Whiteout(meta) => w.write_whiteout(&path, &meta)?,
            What::Node(st) => {
                let name = std::mem::take(&mut child.name);
                let written = w.write_node(dirs.current()?, &name, &st, &path)?;
                if let Some(dir) = written.dir {
                    let kids = children(&dir, format, written.opaque)?;
                    dirs.push(&name, dir)?;
                    path.push(b'/');
                    frames.push(Frame {
                        children: kids,
                        next: 0,
                        path_len: path.len(),
                    });
                }
            }
        }
    }
    w.finish()
}

/// A directory being written: its children in tar order, and where the walk is in them.
struct Frame {
    children: Vec<Child>,
    next: usize,
    /// Length of the directory's tar path, `/` included (0 at the root).
    path_len: usize,
}

struct Child {
    /// The name on disk (empty for a synthesised opaque marker).
    name: OsString,
    /// The name in the tar.
    out: Vec<u8>,
    what: What,
}

enum What {
    Whiteout(Meta),
    Node(Stat),
}

/// How one directory entry goes into the tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// As a whiteout entry with this name.
    Whiteout(Vec<u8>),
    /// As the file itself, under its own name.
    Node,
    /// Not at all.
    Skip,
}

/// Decides how the entry `name` (with `lstat` `st`) of a directory goes into the tar.
/// `parent_opaque`: the directory is an overlay opaque one, whose marker is synthesised.
pub(crate) fn plan(name: &OsStr, st: &Stat, format: WhiteoutFormat, parent_opaque: bool) -> Plan {
    match whiteout::classify(name) {
        Name::Meta | Name::Invalid => Plan::Skip,
        // An overlay opaque directory gets its marker from the xattr; a stray marker file
        // beside it would be a duplicate.
        Name::Opaque if parent_opaque => Plan::Skip,
        Name::Opaque | Name::Whiteout(_) => Plan::Whiteout(name.as_bytes().to_vec()),
        Name::Regular(_) => match st.file_type() {
            FileType::Socket => Plan::Skip,
            FileType::CharacterDevice
                if st.rdev == 0 && matches!(format, WhiteoutFormat::Overlay { .. }) =>
            {
                Plan::Whiteout(whiteout::whiteout_name(name).into_vec())
            }
            _ => Plan::Node,
        },
    }
}

/// Where a name sorts among its siblings: the opaque marker, then whiteouts, then the rest.
pub(crate) fn rank(name: &[u8]) -> u8 {
    if name == whiteout::OPAQUE.as_bytes() {
        0
    } else if name.starts_with(whiteout::WHITEOUT_PREFIX.as_bytes()) {
        1
    } else {
        2
    }
}

/// The header attributes of the opaque marker synthesised for an overlay opaque directory.
fn opaque_marker_meta(dir: &Stat) -> Meta {
    Meta {
        mode: dir.permissions() & 0o777,
        mtime: 0,
        ..meta_of(dir)
    }
}

/// The children of `dir` in tar order, with what each becomes.
fn children(dir: &Dir, format: WhiteoutFormat, opaque: bool) -> Result<Vec<Child>> {
    let entries = dir.entries()?;
    let mut out = Vec::with_capacity(entries.len() + usize::from(opaque));
    if opaque {
        out.push(Child {
            name: OsString::new(),
            out: whiteout::OPAQUE.as_bytes().to_vec(),
            what: What::Whiteout(opaque_marker_meta(&dir.stat()?)),
        });
    }
    for e in entries {
        if matches!(whiteout::classify(&e.name), Name::Meta | Name::Invalid) {
            continue; // no need to stat what is never written
        }
        let st = dir.stat_at(&e.name)?;
        match plan(&e.name, &st, format, opaque) {
            Plan::Skip => {}
            Plan::Node => out.push(Child {
                out: e.name.as_bytes().to_vec(),
                name: e.name,
                what: What::Node(st),
            }),
            Plan::Whiteout(name) => out.push(Child {
                name: e.name,
                out: name,
                what: What::Whiteout(meta_of(&st)),
            }),
        }
    }
    sort_children(&mut out, |c| &c.out);
    Ok(out)
}

/// Sorts siblings into tar order by their tar name and drops later duplicates of a name (an
/// overlay device `x` and a stray `.wh.x` file would both be `.wh.x`).
fn sort_children<T>(items: &mut Vec<T>, name: impl Fn(&T) -> &[u8]) {
    items.sort_by(|a, b| {
        let (a, b) = (name(a), name(b));
        (rank(a), a).cmp(&(rank(b), b))
    });
    items.dedup_by(|a, b| name(a) == name(b));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(mode: u32, rdev: u64) -> Stat {
        Stat {
            dev: 1,
            ino: 2,
            mode,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
        }
    }

    const REG: u32 = 0o100644;
    const CHR: u32 = 0o020000;
    const SOCK: u32 = 0o140755;
    const OVERLAY: WhiteoutFormat = WhiteoutFormat::Overlay { user_xattr: false };

    #[test]
    fn plans_aufs_names() {
        let p = |n: &str| plan(OsStr::new(n), &stat(REG, 0), WhiteoutFormat::Aufs, false);
        assert_eq!(p("a"), Plan::Node);
        assert_eq!(p(".wh.a"), Plan::Whiteout(b".wh.a".to_vec()));
        assert_eq!(p(".wh..wh..opq"), Plan::Whiteout(b".wh..wh..opq".to_vec()));
        assert_eq!(p(".wh..wh.plnk"), Plan::Skip);
        assert_eq!(p(".wh.."), Plan::Skip);
        let sock = plan(OsStr::new("s"), &stat(SOCK, 0), WhiteoutFormat::Aufs, false);
        assert_eq!(sock, Plan::Skip);
        // A 0/0 device is only a whiteout in overlay form.
        let dev = plan(OsStr::new("x"), &stat(CHR, 0), WhiteoutFormat::Aufs, false);
        assert_eq!(dev, Plan::Node);
    }

    #[test]
    fn plans_overlay_whiteouts() {
        assert_eq!(
            plan(OsStr::new("x"), &stat(CHR, 0), OVERLAY, false),
            Plan::Whiteout(b".wh.x".to_vec())
        );
        let null = rustix::fs::makedev(1, 3);
        assert_eq!(
            plan(OsStr::new("null"), &stat(CHR, null), OVERLAY, false),
            Plan::Node
        );
        assert_eq!(
            plan(OsStr::new(".wh..wh..opq"), &stat(REG, 0), OVERLAY, true),
            Plan::Skip
        );
    }

    #[test]
    fn sorts_opaque_then_whiteouts_then_names() {
        let mut v: Vec<Vec<u8>> = [
            "b",
            ".wh.z",
            "a",
            ".wh..wh..opq",
            ".wh..a",
            "A",
            ".a",
            ".wh.z",
            "a.b",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        sort_children(&mut v, |s| s);
        let v: Vec<_> = v
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        assert_eq!(
            v,
            [
                ".wh..wh..opq",
                ".wh..a",
                ".wh.z",
                ".a",
                "A",
                "a",
                "a.b",
                "b"
            ]
        );
    }

    #[test]
    fn opaque_marker_takes_dir_owner_and_plain_permissions() {
        let mut d = stat(0o043775, 0);
        d.uid = 7;
        d.gid = 8;
        d.mtime = 99;
        let m = opaque_marker_meta(&d);
        assert_eq!((m.mode, m.uid, m.gid, m.mtime), (0o775, 7, 8, 0));
    }
}
