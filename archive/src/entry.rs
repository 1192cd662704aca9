//! The entry writer shared by [`write_tar`](super::write_tar) and the naive
//! [`export_changes`](crate::export_changes): one call writes one file of a tree as a tar
//! entry, built from what `lstat`/`fstat` say, remembering hardlinks and counting bytes.
//!
//! Files are opened relative to their directory with `O_NOFOLLOW | O_NONBLOCK`, and the entry
//! is built from `fstat` of the open file: a file swapped for a symlink or a FIFO during the
//! walk is an error, never a read of something else. Overlay's own xattrs and the host's
//! SELinux label (`security.selinux`, a property of this host's policy, not of the image;
//! containers/storage leaves it out too) are never written.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};

use super::header::{self, Kind, Meta};
use super::whiteout;
use crate::fsutil::{self, Dir, FileType, Stat};
use crate::{Error, ErrorKind, Result};

/// Content is copied through a buffer this big.
const COPY_BUFFER: usize = 1 << 20;

/// Whether an xattr goes into a tar.
pub(crate) fn exported_xattr(name: &[u8]) -> bool {
    !whiteout::is_overlay_xattr(name) && name != b"security.selinux"
}

/// The header attributes of a file.
pub(crate) fn meta_of(st: &Stat) -> Meta {
    Meta {
        mode: st.permissions(),
        uid: u64::from(st.uid),
        gid: u64::from(st.gid),
        mtime: st.mtime,
    }
}

/// What writing a node produced.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// For a directory: the directory, open, for the caller to descend into (or drop).
    pub dir: Option<Dir>,
    /// For a directory: it carries the overlay opaque xattr (`…overlay.opaque=y`) that the
    /// writer was told to look for.
    pub opaque: bool,
}

/// Writes tar entries to `out`.
pub(crate) struct TarWriter<'w> {
    out: &'w mut dyn Write,
    written: u64,
    /// (dev, ino) of every multiply-linked non-directory written, to the name it was written as.
    links: HashMap<(u64, u64), Vec<u8>>,
    head: Vec<u8>,
    buf: Vec<u8>,
    opaque_xattr: Option<&'static [u8]>,
}

impl<'w> TarWriter<'w> {
    /// A writer to `out`. `opaque_xattr`: the xattr that marks an overlay opaque directory,
    /// when the tree is an overlay upper directory.
    pub(crate) fn new(out: &'w mut dyn Write, opaque_xattr: Option<&'static [u8]>) -> Self {
        TarWriter {
            out,
            written: 0,
            links: HashMap::new(),
            head: Vec::with_capacity(1024),
            buf: Vec::new(),
            opaque_xattr,
        }
    }

    /// Whether these xattrs mark an opaque directory for this writer.
    pub(crate) fn is_opaque(&self, xattrs: &fsutil::Xattrs) -> bool {
        self.opaque_xattr
            .is_some_and(|key| xattrs.iter().any(|(n, v)| n == key && v == b"y"))
    }

    /// Writes the file `name` of `parent`, whose `lstat` is `st`, as the entry `path` (no
    /// trailing `/`; the writer adds it for a directory). Sockets are skipped.
    pub(crate) fn write_node(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        st: &Stat,
        path: &[u8],
    ) -> Result<Written> {
        match st.file_type() {
            FileType::Directory => {
                let dir = parent.open_dir(name)?;
                let dst = dir.stat()?;
                let xattrs = dir.xattrs()?;
                let opaque = self.is_opaque(&xattrs);
                let mut p = Vec::with_capacity(path.len() + 1);
                p.extend_from_slice(path);
                p.push(b'/');
                self.entry(&p, Kind::Dir, &meta_of(&dst), &xattrs)?;
                Ok(Written {
                    dir: Some(dir),
                    opaque,
                })
            }
            FileType::RegularFile => {
                if self.write_link(st, path)? {
                    return Ok(Written::default());
                }
                let mut file = parent.open_file(name)?;
                let fst: Stat = rustix::fs::fstat(&file)
                    .map(Stat::from)
                    .map_err(|e| Error::os("stat", &parent.child_path(name), e))?;
                if fst.file_type() != FileType::RegularFile {
                    return Err(changed(parent, name));
                }
                let xattrs = fsutil::file_xattrs(&file, &parent.child_path(name))?;
                self.remember(&fst, path);
                self.entry(
                    path,
                    Kind::Regular { size: fst.size },
                    &meta_of(&fst),
                    &xattrs,
                )?;
                self.copy_content(&mut file, fst.size, parent, name)?;
                Ok(Written::default())
            }
            FileType::Symlink => {
                if !self.write_link(st, path)? {
                    let target = parent.read_link(name)?;
                    let xattrs = parent.xattrs_at(name)?;
                    self.remember(st, path);
                    self.entry(
                        path,
                        Kind::Symlink { target: &target },
                        &meta_of(st),
                        &xattrs,
                    )?;
                }
                Ok(Written::default())
            }
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                if !self.write_link(st, path)? {
                    let (major, minor) = (rustix::fs::major(st.rdev), rustix::fs::minor(st.rdev));
                    let kind = match st.file_type() {
                        FileType::Fifo => Kind::Fifo,
                        FileType::CharacterDevice => Kind::Char { major, minor },
                        _ => Kind::Block { major, minor },
                    };
                    let xattrs = parent.xattrs_at(name)?;
                    self.remember(st, path);
                    self.entry(path, kind, &meta_of(st), &xattrs)?;
                }
                Ok(Written::default())
            }
            FileType::Socket | FileType::Unknown => Ok(Written::default()),
        }
    }

    /// Writes an empty regular entry: a whiteout (`.wh.<name>` or the opaque marker).
    pub(crate) fn write_whiteout(&mut self, path: &[u8], meta: &Meta) -> Result<()> {
        self.entry(path, Kind::Regular { size: 0 }, meta, &[])
    }

    /// Ends the archive (two zero blocks), flushes, and returns the bytes written in all.
    pub(crate) fn finish(mut self) -> Result<u64> {
        self.write(&[0u8; 1024])?;
        self.out
            .flush()
            .map_err(|e| Error::io("write tar stream", e))?;
        Ok(self.written)
    }

    /// If `st` is a second name of an inode already written, writes the link entry and says so.
    fn write_link(&mut self, st: &Stat, path: &[u8]) -> Result<bool> {
        if st.nlink < 2 {
            return Ok(false);
        }
        let Some(target) = self.links.get(&st.id()) else {
            return Ok(false);
        };
        let target = target.clone();
        self.entry(path, Kind::Link { target: &target }, &meta_of(st), &[])?;
        Ok(true)
    }

    fn remember(&mut self, st: &Stat, path: &[u8]) {
        if st.nlink > 1 {
            self.links.entry(st.id()).or_insert_with(|| path.to_vec());
        }
    }

    fn entry(
        &mut self,
        path: &[u8],
        kind: Kind<'_>,
        meta: &Meta,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        let exported: Vec<(&[u8], &[u8])> = xattrs
            .iter()
            .filter(|(n, _)| exported_xattr(n))
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        let mut head = std::mem::take(&mut self.head);
        head.clear();
        header::encode(path, kind, meta, &exported, &mut head);
        let res = self.write(&head);
        self.head = head;
        res
    }

    fn copy_content(
        &mut self,
        file: &mut File,
        size: u64,
        parent: &Dir,
        name: &OsStr,
    ) -> Result<()> {
        if self.buf.is_empty() {
            self.buf = vec![0; COPY_BUFFER];
        }
        let mut buf = std::mem::take(&mut self.buf);
        let res = (|| {
            let mut left = size;
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let n = match file.read(&mut buf[..want]) {
                    Ok(0) => return Err(changed(parent, name)),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::os("read", &parent.child_path(name), e)),
                };
                self.write(&buf[..n])?;
                left -= n as u64;
            }
            self.write(&[0u8; 512][..header::padding(size)])
        })();
        self.buf = buf;
        res
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("write tar stream", e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

fn changed(parent: &Dir, name: &OsStr) -> Error {
    Error::new(
        ErrorKind::Io,
        format!(
            "{} changed while it was being archived",
            parent.child_path(name).display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regular_stat() -> Stat {
        Stat {
            dev: 0,
            ino: 0,
            mode: 0o100644,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            size: 5,
            mtime: 0,
            mtime_nsec: 0,
        }
    }

    /// A file seen as regular by the walk but swapped for a symlink or a FIFO before it is
    /// opened: an error, nothing read through the link, no hang on the FIFO, nothing written.
    #[test]
    fn a_file_swapped_during_the_walk_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            tmp.path().join("fifo"),
            FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        for name in ["link", "fifo"] {
            let mut out = Vec::new();
            let mut w = TarWriter::new(&mut out, None);
            let res = w.write_node(&dir, OsStr::new(name), &regular_stat(), name.as_bytes());
            assert!(res.is_err(), "{name}");
            drop(w);
            assert!(out.is_empty(), "{name}: nothing written");
        }
    }

    /// A file that shrinks after its header is decided is an error, not a short entry.
    #[test]
    fn a_file_shorter_than_its_header_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"12345").unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        let mut file = dir.open_file(OsStr::new("f")).unwrap();
        let mut out = Vec::new();
        let mut w = TarWriter::new(&mut out, None);
        let err = w
            .copy_content(&mut file, 10, &dir, OsStr::new("f"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
    }

    #[test]
    fn selinux_labels_and_overlay_xattrs_stay_home() {
        assert!(exported_xattr(b"security.capability"));
        assert!(exported_xattr(b"user.foo"));
        assert!(exported_xattr(b"trusted.foo"));
        assert!(!exported_xattr(b"security.selinux"));
        assert!(!exported_xattr(b"trusted.overlay.opaque"));
        assert!(!exported_xattr(b"user.overlay.redirect"));
    }
}
