//! Layer tars written entry by entry: the one tar builder of strata's tests. The cases feed
//! them to `apply_diff`; the archive, driver and CLI tests use them too. It writes hostile
//! archives a careful writer refuses to make (names with `..`, huge or contradictory
//! extension headers, unknown type flags, size fields that lie, bad checksums, truncation),
//! and checks a merged view against the spec it came from.
//!
//! Three levels, each built on the one below:
//! - [`make_tar`] writes a list of [`Entry`] values, the usual way to describe a layer;
//!   [`with_parents`] adds the directories a list leaves implicit.
//! - [`Tar`] appends entries, raw headers, PAX headers and raw bytes in any order, and
//!   finishes with or without the end-of-archive blocks.
//! - [`header`] and [`pax_record`] are the bytes themselves, for a test that edits a header
//!   field before the checksum (or after it, to break it).
//!
//! Names and link targets are written raw: the first 100 bytes in the ustar field, the whole
//! of a longer one in a PAX `path`/`linkpath` record, so a case says exactly which bytes the
//! reader receives. Extension headers are ustar `x` members named `././@PaxHeader`, mode
//! 0644, [`DEFAULT_MTIME`]; every header carries device numbers (zero but for devices) and
//! the ustar magic. It must not grow a reader: tests read tars back with the `tar` crate.

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

impl EntryKind {
    /// The type flag, body and link name this kind writes.
    fn parts(&self) -> (u8, &[u8], &[u8]) {
        match self {
            EntryKind::File(c) => (b'0', c, b""),
            EntryKind::Dir => (b'5', b"", b""),
            EntryKind::Symlink(t) => (b'2', b"", t),
            EntryKind::Hardlink(t) => (b'1', b"", t),
            EntryKind::Fifo => (b'6', b"", b""),
            EntryKind::Char(..) => (b'3', b"", b""),
            EntryKind::Block(..) => (b'4', b"", b""),
        }
    }

    fn dev(&self) -> (u32, u32) {
        match *self {
            EntryKind::Char(ma, mi) | EntryKind::Block(ma, mi) => (ma, mi),
            _ => (0, 0),
        }
    }
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
    /// PAX records written in an `x` header before the entry, in order; extended attributes
    /// are `SCHILY.xattr.<name>` records among them (see [`Entry::xattrs`]).
    pub pax: Vec<(String, Vec<u8>)>,
    /// The header's type flag when it must differ from the one `kind` writes (`7`, an
    /// old-style `\0`, an unknown `Z`); the body and link name still come from `kind`.
    pub typeflag: Option<u8>,
    /// The header's size field when it must differ from the body's length (the body written
    /// is the kind's all the same).
    pub size: Option<u64>,
}

impl Entry {
    /// An entry of this kind and mode, owned by 0:0, at [`DEFAULT_MTIME`].
    pub fn new(path: impl AsRef<[u8]>, kind: EntryKind, mode: u32) -> Entry {
        Entry {
            path: path.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            pax: Vec::new(),
            typeflag: None,
            size: None,
        }
    }

    /// An entry with this type flag and nothing else: no body, no link name, devices 0 (an
    /// unknown type, an old-style `\0` entry, a block device without numbers).
    pub fn raw(path: impl AsRef<[u8]>, typeflag: u8, mode: u32) -> Entry {
        Entry::new(path, EntryKind::File(Vec::new()), mode).typeflag(typeflag)
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

    /// A hardlink to an earlier entry, 0644.
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
        Entry::new(whiteout_path(path), EntryKind::File(Vec::new()), 0o600)
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

    /// With this mtime to the nanosecond: seconds in the header, and a PAX `mtime` record
    /// `secs.nnnnnnnnn` unless `nanos` is 0.
    pub fn mtime_ns(mut self, secs: u64, nanos: u32) -> Entry {
        self.mtime = secs;
        if nanos == 0 {
            self
        } else {
            self.pax("mtime", format!("{secs}.{nanos:09}"))
        }
    }

    /// With this xattr (a `SCHILY.xattr.<name>` PAX record).
    pub fn xattr(self, name: &str, value: impl AsRef<[u8]>) -> Entry {
        self.pax(&format!("SCHILY.xattr.{name}"), value)
    }

    /// With this raw PAX record.
    pub fn pax(mut self, key: &str, value: impl AsRef<[u8]>) -> Entry {
        self.pax.push((key.to_string(), value.as_ref().to_vec()));
        self
    }

    /// With this type flag in the header instead of the kind's.
    pub fn typeflag(mut self, typeflag: u8) -> Entry {
        self.typeflag = Some(typeflag);
        self
    }

    /// With this size field in the header instead of the body's length.
    pub fn size(mut self, size: u64) -> Entry {
        self.size = Some(size);
        self
    }

    /// The extended attributes among the PAX records, in order.
    pub fn xattrs(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.pax.iter().filter_map(|(k, v)| {
            k.strip_prefix("SCHILY.xattr.")
                .map(|name| (name, v.as_slice()))
        })
    }

    /// Whether this entry is a whiteout or an opaque marker (by its last name component).
    pub fn is_whiteout(&self) -> bool {
        let name = self.path.rsplit(|b| *b == b'/').next().unwrap_or(&[]);
        name.starts_with(b".wh.")
    }
}

/// `dir/.wh.name` for `dir/name`: the name of the whiteout that hides `path`.
pub fn whiteout_path(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((d, n)) => format!("{d}/.wh.{n}"),
        None => format!(".wh.{path}"),
    }
}

/// `entries` with the parent directories they leave implicit: each missing parent is an
/// [`Entry::dir`] (0755, [`DEFAULT_MTIME`]) just before the first entry under it. A
/// directory entry the list has already written counts as present.
pub fn with_parents(entries: &[Entry]) -> Vec<Entry> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let path = e.path.strip_suffix(b"/").unwrap_or(&e.path);
        for (i, _) in path.iter().enumerate().filter(|(_, b)| **b == b'/') {
            let parent = &path[..i];
            if !parent.is_empty() && seen.insert(parent.to_vec()) {
                out.push(Entry::dir(parent));
            }
        }
        if e.kind == EntryKind::Dir {
            seen.insert(path.to_vec());
        }
        out.push(e.clone());
    }
    out
}

/// Writes `entries` as an uncompressed tar, followed by the end-of-archive blocks.
pub fn make_tar(entries: &[Entry]) -> Vec<u8> {
    Tar::new().entries(entries).finish()
}

/// One PAX record, `"<len> key=value\n"`, its length counting itself.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len += 1;
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// A 512-byte ustar header at [`DEFAULT_MTIME`], owned by 0:0, checksum not yet set
/// ([`Tar::member`] sets it). The type flag is written raw (`0` stays a NUL byte); names and
/// link names longer than their 100-byte fields are cut.
pub fn header(name: &[u8], typeflag: u8, mode: u32, size: u64, link: &[u8]) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    put_raw(&mut h.as_old_mut().name, name);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(DEFAULT_MTIME);
    h.as_mut_bytes()[156] = typeflag;
    put_raw(&mut h.as_old_mut().linkname, link);
    h
}

fn put_raw(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field.fill(0);
    field[..n].copy_from_slice(&value[..n]);
}

/// A tar being written piece by piece; [`Tar::finish`] adds the end-of-archive blocks, and
/// `buf` is the archive without them (a stream that just stops).
#[derive(Debug, Default, Clone)]
pub struct Tar {
    /// What has been written so far.
    pub buf: Vec<u8>,
}

impl Tar {
    /// An empty archive.
    pub fn new() -> Tar {
        Tar::default()
    }

    /// Appends raw bytes (a zero block, half a header).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Tar {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Appends a header, with its checksum set here, and `data` padded to the block size.
    pub fn member(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Tar {
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.data(data)
    }

    /// Appends `data` padded to the block size.
    pub fn data(&mut self, data: &[u8]) -> &mut Tar {
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0, pad));
        self
    }

    /// Appends a PAX `x` member with `records`.
    pub fn pax(&mut self, records: &[(String, Vec<u8>)]) -> &mut Tar {
        let body: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let h = header(b"././@PaxHeader", b'x', 0o644, body.len() as u64, b"");
        self.member(h, &body)
    }

    /// Appends an entry, after a PAX member with its records when it has any (a name or link
    /// name over 100 bytes adds `path`/`linkpath` to them).
    pub fn push(&mut self, e: &Entry) -> &mut Tar {
        let (typeflag, data, link) = e.kind.parts();
        let mut pax = e.pax.clone();
        if e.path.len() > 100 {
            pax.push(("path".into(), e.path.clone()));
        }
        if link.len() > 100 {
            pax.push(("linkpath".into(), link.to_vec()));
        }
        if !pax.is_empty() {
            self.pax(&pax);
        }
        let typeflag = e.typeflag.unwrap_or(typeflag);
        let size = e.size.unwrap_or(data.len() as u64);
        let mut h = header(&e.path, typeflag, e.mode, size, link);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        let (major, minor) = e.kind.dev();
        h.set_device_major(major).expect("a ustar header");
        h.set_device_minor(minor).expect("a ustar header");
        self.member(h, data)
    }

    /// Appends every entry.
    pub fn entries<'a>(&mut self, es: impl IntoIterator<Item = &'a Entry>) -> &mut Tar {
        for e in es {
            self.push(e);
        }
        self
    }

    /// The archive with its end-of-archive blocks.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.buf.clone();
        out.extend(std::iter::repeat_n(0, 1024));
        out
    }
}

/// A raw entry in a GNU header with any type flag and body (a GNU `L` long name, an unknown
/// type), without the end-of-archive blocks: splice it into a tar made by [`make_tar`] with
/// [`splice`].
pub fn raw_entry(name: &[u8], typeflag: u8, body: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    put_raw(&mut h.as_gnu_mut().expect("a gnu header").name, name);
    h.set_entry_type(tar::EntryType::new(typeflag));
    h.set_mode(0o644);
    h.set_mtime(DEFAULT_MTIME);
    h.set_size(body.len() as u64);
    let mut t = Tar::new();
    t.member(h, body);
    t.buf
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
        if e.xattrs().next().is_some() {
            let got = crate::tree::xattrs(&path).ctx(format!("xattrs of {p}"))?;
            for (k, v) in e.xattrs() {
                ensure!(
                    got.get(k.as_bytes()).map(Vec::as_slice) == Some(v),
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

    #[test]
    fn overrides_land_in_the_header_and_the_body_stays_the_kinds() {
        let tar = make_tar(&[
            Entry::file("c", "abc").typeflag(b'7').size(0),
            Entry::raw("old/", 0, 0o755),
            Entry::block_dev("b", 7, 9),
        ]);
        let h = |at: usize| tar::Header::from_byte_slice(&tar[at..at + 512]).clone();
        assert_eq!(tar[156], b'7');
        assert_eq!(h(0).size().unwrap(), 0);
        assert_eq!(&tar[512..515], b"abc");
        assert_eq!(
            tar[1024 + 156],
            0,
            "an old-style type flag stays a NUL byte"
        );
        assert_eq!(h(1024).path_bytes().as_ref(), b"old/");
        assert_eq!(h(1536).device_major().unwrap(), Some(7));
        assert_eq!(h(1536).device_minor().unwrap(), Some(9));
        assert_eq!(tar.len(), 2048 + 1024);
        assert!(tar[2048..].iter().all(|b| *b == 0));
    }

    #[test]
    fn pieces_write_what_they_say() {
        assert_eq!(pax_record("path", b"x"), b"9 path=x\n");
        // The length counts its own digits: 99 bytes without them, 102 with.
        assert_eq!(pax_record("k", &[b'v'; 95]).len(), 102);
        let mut t = Tar::new();
        t.pax(&[("path".into(), b"x".to_vec())])
            .raw(&[1; 3])
            .data(b"");
        assert_eq!(t.buf.len(), 1024 + 3);
        assert_eq!(t.buf[156], b'x');
        assert_eq!(&t.buf[..14], b"././@PaxHeader");
        let mut h = header(b"n", b'0', 0o600, 5, b"");
        h.set_cksum();
        assert!(h.cksum().is_ok());
        assert_eq!(h.mtime().unwrap(), DEFAULT_MTIME);
        assert_eq!(Tar::new().finish(), vec![0; 1024]);
    }

    #[test]
    fn nanosecond_mtimes_are_a_pax_record() {
        assert!(Entry::file("f", "").mtime_ns(5, 0).pax.is_empty());
        let e = Entry::file("f", "").mtime_ns(5, 7);
        assert_eq!(e.mtime, 5);
        assert_eq!(e.pax, vec![("mtime".to_string(), b"5.000000007".to_vec())]);
        let e = Entry::file("f", "").xattr("user.a", "1").pax("k", "v");
        assert_eq!(e.xattrs().collect::<Vec<_>>(), vec![("user.a", &b"1"[..])]);
    }

    #[test]
    fn parents_come_once_before_their_children() {
        let es = with_parents(&[
            Entry::dir("a").mode(0o700),
            Entry::file("a/b/c", ""),
            Entry::file("a/b/d", ""),
            Entry::symlink("x/y/", "t"),
            Entry::file("top", ""),
        ]);
        let names: Vec<&[u8]> = es.iter().map(|e| e.path.as_slice()).collect();
        let want: [&[u8]; 7] = [b"a", b"a/b", b"a/b/c", b"a/b/d", b"x", b"x/y/", b"top"];
        assert_eq!(names, want);
        assert_eq!(es[0].mode, 0o700, "an entry the list has is kept as it is");
        assert_eq!((es[1].kind.clone(), es[1].mode), (EntryKind::Dir, 0o755));
        assert_eq!(whiteout_path("a/b"), "a/.wh.b");
        assert_eq!(whiteout_path("b"), ".wh.b");
    }
}
