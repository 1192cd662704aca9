//! Layer tars the cases feed to `apply_diff`, written entry by entry from a spec, including
//! hostile ones (names with `..`, huge headers, bad checksums) that a careful writer refuses
//! to make; and checking a merged view against the spec it came from.
//!
//! Names and link targets are written raw (PAX `path`/`linkpath` past 100 bytes), so a case
//! says exactly which bytes the driver receives.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::check::{Context, Failure};
use crate::{ensure, ensure_eq};

/// The mtime entries get unless a case sets one (2020-09-13T12:26:40Z).
pub const DEFAULT_MTIME: u64 = 1_600_000_000;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with this content.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symlink to this target.
    Symlink(Vec<u8>),
    /// A hardlink to this earlier entry's name.
    Hardlink(Vec<u8>),
    /// A FIFO.
    Fifo,
    /// A character device (major, minor).
    Char(u32, u32),
    /// A block device (major, minor).
    Block(u32, u32),
}

/// One tar entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name, raw.
    pub path: Vec<u8>,
    /// What it is.
    pub kind: EntryKind,
    /// Mode bits (permissions with setuid, setgid, sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds.
    pub mtime: u64,
    /// Extended attributes, as `SCHILY.xattr.<name>` PAX records.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Other PAX records, raw.
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Entry {
    fn new(path: impl AsRef<[u8]>, kind: EntryKind, mode: u32) -> Entry {
        Entry {
            path: path.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            xattrs: Vec::new(),
            pax: Vec::new(),
        }
    }

    /// A regular file, 0644.
    pub fn file(path: impl AsRef<[u8]>, content: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, EntryKind::File(content.as_ref().to_vec()), 0o644)
    }

    /// A directory, 0755.
    pub fn dir(path: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, EntryKind::Dir, 0o755)
    }

    /// A symlink, 0777.
    pub fn symlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, EntryKind::Symlink(target.as_ref().to_vec()), 0o777)
    }

    /// A hardlink to an earlier entry.
    pub fn hardlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, EntryKind::Hardlink(target.as_ref().to_vec()), 0o644)
    }

    /// A FIFO, 0644.
    pub fn fifo(path: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, EntryKind::Fifo, 0o644)
    }

    /// A character device, 0666.
    pub fn char_dev(path: impl AsRef<[u8]>, major: u32, minor: u32) -> Entry {
        Entry::new(path, EntryKind::Char(major, minor), 0o666)
    }

    /// A block device, 0660.
    pub fn block_dev(path: impl AsRef<[u8]>, major: u32, minor: u32) -> Entry {
        Entry::new(path, EntryKind::Block(major, minor), 0o660)
    }

    /// The whiteout that hides `path` (`dir/.wh.name`), an empty 0600 file.
    pub fn whiteout(path: &str) -> Entry {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        Entry::new(
            format!("{dir}.wh.{name}"),
            EntryKind::File(Vec::new()),
            0o600,
        )
    }

    /// The opaque marker of directory `dir` (`dir/.wh..wh..opq`; `""` for the root).
    pub fn opaque(dir: &str) -> Entry {
        let name = if dir.is_empty() {
            ".wh..wh..opq".to_string()
        } else {
            format!("{}/.wh..wh..opq", dir.trim_end_matches('/'))
        };
        Entry::new(name, EntryKind::File(Vec::new()), 0o600)
    }

    /// With this mode.
    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }

    /// With this owner.
    pub fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// With this mtime.
    pub fn mtime(mut self, secs: u64) -> Entry {
        self.mtime = secs;
        self
    }

    /// With this xattr.
    pub fn xattr(mut self, name: &str, value: impl AsRef<[u8]>) -> Entry {
        self.xattrs
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// With this raw PAX record.
    pub fn pax(mut self, key: &str, value: impl AsRef<[u8]>) -> Entry {
        self.pax.push((key.to_string(), value.as_ref().to_vec()));
        self
    }

    /// Whether this entry is a whiteout or an opaque marker (by its last name component).
    pub fn is_whiteout(&self) -> bool {
        let name = self.path.rsplit(|b| *b == b'/').next().unwrap_or(&[]);
        name.starts_with(b".wh.")
    }
}

fn put_raw(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field.fill(0);
    field[..n].copy_from_slice(&value[..n]);
}

/// Writes `entries` as an uncompressed tar, followed by the end-of-archive blocks.
pub fn make_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        append(&mut b, e).expect("writing a tar to memory");
    }
    b.into_inner().expect("finishing a tar in memory")
}

fn append(b: &mut tar::Builder<Vec<u8>>, e: &Entry) -> std::io::Result<()> {
    let mut pax = e.pax.clone();
    for (k, v) in &e.xattrs {
        pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
    }
    if e.path.len() > 100 {
        pax.push(("path".into(), e.path.clone()));
    }
    let (ty, data, link): (tar::EntryType, &[u8], &[u8]) = match &e.kind {
        EntryKind::File(c) => (tar::EntryType::Regular, c, b""),
        EntryKind::Dir => (tar::EntryType::Directory, b"", b""),
        EntryKind::Symlink(t) => (tar::EntryType::Symlink, b"", t),
        EntryKind::Hardlink(t) => (tar::EntryType::Link, b"", t),
        EntryKind::Fifo => (tar::EntryType::Fifo, b"", b""),
        EntryKind::Char(..) => (tar::EntryType::Char, b"", b""),
        EntryKind::Block(..) => (tar::EntryType::Block, b"", b""),
    };
    if link.len() > 100 {
        pax.push(("linkpath".into(), link.to_vec()));
    }
    if !pax.is_empty() {
        b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    }
    let mut h = tar::Header::new_ustar();
    {
        let u = h.as_ustar_mut().expect("a ustar header");
        put_raw(&mut u.name, &e.path);
        put_raw(&mut u.linkname, link);
    }
    h.set_entry_type(ty);
    h.set_mode(e.mode);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mtime(e.mtime);
    h.set_size(data.len() as u64);
    if let EntryKind::Char(ma, mi) | EntryKind::Block(ma, mi) = e.kind {
        h.set_device_major(ma)?;
        h.set_device_minor(mi)?;
    }
    h.set_cksum();
    b.append(&h, data)
}

/// A raw entry with any type flag and body (a GNU `L` long name, an unknown type), without
/// the end-of-archive blocks: splice it into a tar made by [`make_tar`] with [`splice`].
pub fn raw_entry(name: &[u8], typeflag: u8, body: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    put_raw(&mut h.as_gnu_mut().expect("a gnu header").name, name);
    h.set_entry_type(tar::EntryType::new(typeflag));
    h.set_mode(0o644);
    h.set_mtime(DEFAULT_MTIME);
    h.set_size(body.len() as u64);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(body);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// `raw` put in front of the archive `tar`.
pub fn splice(raw: &[u8], tar: &[u8]) -> Vec<u8> {
    let mut out = raw.to_vec();
    out.extend_from_slice(tar);
    out
}

/// The archive with the checksum of its first header broken (a byte of the name changed after
/// the checksum was computed).
pub fn break_first_checksum(mut tar: Vec<u8>) -> Vec<u8> {
    tar[0] ^= 0x01;
    tar
}

/// An archive as an in-memory [`TarStream`](strata_driver_api::TarStream).
pub fn stream(tar: Vec<u8>) -> strata_driver_api::TarStream {
    Box::pin(std::io::Cursor::new(tar))
}

/// What the spec check looks at besides types, contents, modes and link targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verify {
    /// Owners (only meaningful as root).
    pub owners: bool,
    /// Modification times of files and directories.
    pub mtimes: bool,
}

/// Requires every non-whiteout entry of `entries` to be in the tree at `root` as the entry
/// says (blocking). Entries later in the list are not expected to replace earlier ones: use
/// it on archives without duplicates and whiteouts, or check by hand.
pub fn verify_entries(root: &Path, entries: &[Entry], how: Verify) -> Result<(), Failure> {
    for e in entries.iter().filter(|e| !e.is_whiteout()) {
        let rel = std::ffi::OsStr::from_bytes(&e.path);
        let rel = Path::new(rel);
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        let path = root.join(rel);
        let p = format!("/{}", rel.display());
        let md = fs::symlink_metadata(&path).ctx(format!("lstat {p}"))?;
        let ft = md.file_type();
        match &e.kind {
            EntryKind::File(c) => {
                ensure!(ft.is_file(), "{p} should be a regular file");
                let got = fs::read(&path).ctx(format!("read {p}"))?;
                ensure!(
                    got == *c,
                    "{p}: content differs ({} bytes, expected {})",
                    got.len(),
                    c.len()
                );
            }
            EntryKind::Dir => ensure!(ft.is_dir(), "{p} should be a directory"),
            EntryKind::Symlink(t) => {
                ensure!(ft.is_symlink(), "{p} should be a symlink");
                let got = fs::read_link(&path).ctx(format!("readlink {p}"))?;
                ensure!(
                    got.as_os_str().as_bytes() == t.as_slice(),
                    "{p}: symlink target {} but should be {}",
                    got.display(),
                    String::from_utf8_lossy(t)
                );
            }
            EntryKind::Hardlink(t) => {
                let tp = Path::new(std::ffi::OsStr::from_bytes(t));
                let target = root.join(tp.strip_prefix("/").unwrap_or(tp));
                let tmd = fs::symlink_metadata(&target).ctx(format!("lstat link target of {p}"))?;
                ensure!(
                    (md.dev(), md.ino()) == (tmd.dev(), tmd.ino()),
                    "{p} should be a hardlink to {}",
                    tp.display()
                );
                continue;
            }
            EntryKind::Fifo => ensure!(ft.is_fifo(), "{p} should be a fifo"),
            EntryKind::Char(ma, mi) => {
                ensure!(ft.is_char_device(), "{p} should be a char device");
                ensure_eq!(
                    md.rdev(),
                    rustix::fs::makedev(*ma, *mi),
                    "{p}: device number"
                );
            }
            EntryKind::Block(ma, mi) => {
                ensure!(ft.is_block_device(), "{p} should be a block device");
                ensure_eq!(
                    md.rdev(),
                    rustix::fs::makedev(*ma, *mi),
                    "{p}: device number"
                );
            }
        }
        if !ft.is_symlink() {
            ensure_eq!(
                md.mode() & 0o7777,
                e.mode & 0o7777,
                "{p}: mode (octal {:o})",
                e.mode
            );
        }
        if how.owners {
            ensure_eq!(
                (md.uid() as u64, md.gid() as u64),
                (e.uid, e.gid),
                "{p}: owner"
            );
        }
        if how.mtimes && (ft.is_file() || ft.is_dir()) {
            ensure_eq!(md.mtime(), e.mtime as i64, "{p}: mtime");
        }
        if !e.xattrs.is_empty() {
            let got = crate::tree::xattrs(&path).ctx(format!("xattrs of {p}"))?;
            for (k, v) in &e.xattrs {
                ensure!(
                    got.get(k.as_bytes()) == Some(v),
                    "{p}: xattr {k} should be {:?}, got {:?}",
                    String::from_utf8_lossy(v),
                    got.get(k.as_bytes())
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn entries_read_back_with_the_tar_crate() {
        let long = "d/".to_string() + &"n".repeat(150);
        let target = "t".repeat(300);
        let tar = make_tar(&[
            Entry::dir("d").mode(0o1777),
            Entry::file(&long, "x")
                .mode(0o4755)
                .owner(1, 2)
                .xattr("user.k", "v"),
            Entry::symlink("s", &target),
            Entry::hardlink("h", &long),
            Entry::whiteout("d/gone"),
            Entry::opaque("d"),
            Entry::file("../escape", "e"),
        ]);
        let mut a = tar::Archive::new(std::io::Cursor::new(tar));
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path_bytes().into_owned();
            let link = e.link_name_bytes().map(|l| l.into_owned());
            let mut xattr = None;
            if let Some(ext) = e.pax_extensions().unwrap() {
                for r in ext {
                    let r = r.unwrap();
                    if r.key().unwrap() == "SCHILY.xattr.user.k" {
                        xattr = Some(r.value_bytes().to_vec());
                    }
                }
            }
            let mode = e.header().mode().unwrap();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            seen.push((String::from_utf8(path).unwrap(), link, mode, body, xattr));
        }
        assert_eq!(seen.len(), 7);
        assert_eq!(seen[0].0, "d");
        assert_eq!(seen[0].2, 0o1777);
        assert_eq!(seen[1].0, long);
        assert_eq!(seen[1].2, 0o4755);
        assert_eq!(seen[1].3, b"x");
        assert_eq!(seen[1].4.as_deref(), Some(b"v".as_slice()));
        assert_eq!(seen[2].1.as_deref(), Some(target.as_bytes()));
        assert_eq!(seen[3].1.as_deref(), Some(long.as_bytes()));
        assert_eq!(seen[4].0, "d/.wh.gone");
        assert_eq!(seen[5].0, "d/.wh..wh..opq");
        assert_eq!(seen[6].0, "../escape");
        assert!(Entry::whiteout("a/b").is_whiteout());
        assert!(!Entry::file("a/b", "").is_whiteout());
    }

    #[test]
    fn broken_checksum_is_refused_by_a_reader() {
        let tar = break_first_checksum(make_tar(&[Entry::file("a", "x")]));
        let mut a = tar::Archive::new(std::io::Cursor::new(tar));
        let first = a.entries().unwrap().next().unwrap();
        assert!(first.is_err());
    }

    #[test]
    fn raw_entries_splice_in_front() {
        let raw = raw_entry(b"weird", b'Z', b"body");
        assert_eq!(raw.len(), 1024);
        let all = splice(&raw, &make_tar(&[Entry::file("a", "x")]));
        let mut a = tar::Archive::new(std::io::Cursor::new(all));
        let names: Vec<Vec<u8>> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().into_owned())
            .collect();
        assert_eq!(names, vec![b"weird".to_vec(), b"a".to_vec()]);
    }
}
