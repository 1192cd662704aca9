//! A bounded, streaming reader for layer tars.
//!
//! Why this walks the 512-byte blocks itself instead of `tar::Archive::entries` (tar 0.4.46):
//! in raw mode the crate does not apply a PAX `size` record (the next header is found from the
//! ustar size, a parser differential: TARmageddon, CVE-2025-62518), and outside raw mode it reads
//! PAX and GNU long-name members wholly into memory with no cap. So this module reads the
//! blocks, uses [`tar::Header`] only to view fields (ustar prefix + name, link name, type flag),
//! and follows Go's `archive/tar` (what Docker and containerd use) wherever the formats leave
//! room for two readings:
//!
//! - PAX `x` and GNU `L`/`K` members are capped at [`MAX_META`] (1 MiB, as Go): a larger one is
//!   rejected from its header, before anything is read or allocated. Global `g` members are
//!   skipped unread.
//! - PAX `size`, `path`, `linkpath`, `uid`, `gid`, `mtime` (with nanoseconds) and
//!   `SCHILY.xattr.*` override the header; `atime`, `ctime`, `uname`, `gname` and unknown keys
//!   are ignored, and so are `LIBARCHIVE.xattr.*` (bsdtar writes `SCHILY.xattr.*` too) and
//!   `MSWINDOWS.*`, as Go and containerd do.
//! - A name given both by a GNU long name and a PAX `path` that disagree is rejected (Go would
//!   take the GNU one, other readers the PAX one).
//! - Numeric fields are octal or base-256 (negative values included); checksums are accepted
//!   in the unsigned or the signed sum.
//! - Type `7` (contiguous) is a regular file; `\0` with a trailing `/` is a directory; every
//!   other type outside `0`-`6` is rejected, sparse files (`S`, PAX `GNU.sparse.*`) included.
//! - Types that carry no data (links, devices, fifos, directories) must declare size 0.
//! - A truncated stream, a bad checksum, a malformed number or PAX record: rejected.
//! - The archive ends at two zero blocks (or a clean end of stream on a block boundary); a zero
//!   block followed by a header is rejected; nothing after the end marker is parsed, but the
//!   rest of the stream is read and discarded by [`TarReader::drain`], so a hashing reader
//!   underneath sees every byte: up to [`MAX_TRAILING`] (1 MiB) of it; more is an invalid
//!   archive (tools pad to 10 KiB records; gigabytes of zeros behind a small compressed file
//!   would otherwise be read to the end).

use std::io::{self, BufRead, BufReader, Read};

use super::fields::{Pax, parse_numeric, parse_octal, parse_pax};
use crate::{Error, ErrorKind, Result};

/// The tar block size.
const BLOCK: usize = 512;
/// The most that may follow the end-of-archive marker.
pub(super) const MAX_TRAILING: u64 = 1 << 20;

/// The largest PAX extended header or GNU long name/link member accepted.
pub(super) const MAX_META: u64 = 1 << 20;
/// Buffer size for reading the stream.
const BUF_SIZE: usize = 256 * 1024;

/// The kinds of entries that reach the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Regular,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

impl Kind {
    /// Whether entries of this kind carry file content.
    fn has_data(self) -> bool {
        self == Kind::Regular
    }
}

/// One entry, with PAX and GNU extensions merged in. Names are raw (not yet cleaned).
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub kind: Kind,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    /// The mode field as stored (type bits and all; the applier keeps `0o7777`).
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    /// Seconds and nanoseconds (`0..1e9`) since the epoch, not yet clamped.
    pub mtime: (i64, u32),
    /// Bytes of content (0 but for regular files).
    pub size: u64,
    pub dev_major: i64,
    pub dev_minor: i64,
    /// `SCHILY.xattr.*` records, in archive order, one per name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Reads entries from a tar stream; see the module docs for the rules.
pub(super) struct TarReader<'r> {
    inner: BufReader<&'r mut dyn Read>,
    /// Unread content bytes of the current entry.
    remaining: u64,
    /// Padding after the current entry's content.
    pad: u64,
    /// Set once the end of the archive was seen.
    ended: bool,
    block: [u8; BLOCK],
}

impl std::fmt::Debug for TarReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarReader")
            .field("remaining", &self.remaining)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

pub(super) fn bad(what: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArchive, what)
}

fn read_error(err: io::Error) -> Error {
    Error::io("reading layer tar", err)
}

fn truncated() -> Error {
    bad("truncated layer tar")
}

impl<'r> TarReader<'r> {
    pub(super) fn new(reader: &'r mut dyn Read) -> TarReader<'r> {
        TarReader {
            inner: BufReader::with_capacity(BUF_SIZE, reader),
            remaining: 0,
            pad: 0,
            ended: false,
            block: [0; BLOCK],
        }
    }

    /// Reads one block into `self.block`. `Ok(false)` at a clean end of stream.
    fn read_block(&mut self) -> Result<bool> {
        let mut filled = 0;
        while filled < BLOCK {
            match self.inner.read(&mut self.block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(truncated()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e)),
            }
        }
        Ok(true)
    }

    /// Skips `n` bytes of the stream.
    fn skip(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            let buf = self.inner.fill_buf().map_err(read_error)?;
            if buf.is_empty() {
                return Err(truncated());
            }
            let k = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            self.inner.consume(k);
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads a whole member of `size` bytes (already checked against [`MAX_META`]) and its
    /// padding.
    fn read_member(&mut self, size: u64) -> Result<Vec<u8>> {
        let mut data = vec![0; size as usize];
        self.inner.read_exact(&mut data).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                truncated()
            } else {
                read_error(e)
            }
        })?;
        self.skip(padding(size))?;
        Ok(data)
    }

    /// Passes the rest of the current entry's content to `write`, in chunks.
    /// Returns the number of bytes passed.
    pub(super) fn copy_body(&mut self, mut write: impl FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let mut copied = 0;
        while self.remaining > 0 {
            let buf = self.inner.fill_buf().map_err(read_error)?;
            if buf.is_empty() {
                return Err(truncated());
            }
            let k = buf
                .len()
                .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            write(&buf[..k])?;
            self.inner.consume(k);
            self.remaining -= k as u64;
            copied += k as u64;
        }
        Ok(copied)
    }

    /// Skips what is left of the current entry, content and padding.
    fn finish_entry(&mut self) -> Result<()> {
        let n = self.remaining + self.pad;
        self.remaining = 0;
        self.pad = 0;
        self.skip(n)
    }

    /// The next entry, or `None` at the end of the archive.
    pub(super) fn next_entry(&mut self) -> Result<Option<Entry>> {
        if self.ended {
            return Ok(None);
        }
        self.finish_entry()?;
        let mut pax: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let pending = |p: &Option<Pax>, n: &Option<Vec<u8>>, l: &Option<Vec<u8>>| {
            p.is_some() || n.is_some() || l.is_some()
        };
        loop {
            if !self.read_block()? {
                if pending(&pax, &long_name, &long_link) {
                    return Err(truncated());
                }
                self.ended = true;
                return Ok(None);
            }
            if self.block.iter().all(|&b| b == 0) {
                if pending(&pax, &long_name, &long_link) {
                    return Err(bad("extended header not followed by an entry"));
                }
                // One zero block must be followed by another (or by the end of the stream).
                if self.read_block()? && self.block.iter().any(|&b| b != 0) {
                    return Err(bad("zero block followed by a header"));
                }
                self.ended = true;
                return Ok(None);
            }
            verify_checksum(&self.block)?;
            let typeflag = self.block[156];
            let size = parse_numeric(&self.block[124..136])
                .and_then(|s| u64::try_from(s).ok())
                .ok_or_else(|| bad("invalid size field"))?;
            match typeflag {
                b'x' => {
                    if pax.is_some() {
                        return Err(bad("two PAX headers for one entry"));
                    }
                    check_meta_size(size, "PAX extended header")?;
                    let data = self.read_member(size)?;
                    pax = Some(parse_pax(&data)?);
                }
                b'g' => self.skip(size.checked_add(padding(size)).ok_or_else(too_big)?)?,
                b'L' | b'K' => {
                    let slot = if typeflag == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(bad("two GNU long names for one entry"));
                    }
                    check_meta_size(size, "GNU long name")?;
                    let mut data = self.read_member(size)?;
                    truncate_nul(&mut data);
                    let slot = if typeflag == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    *slot = Some(data);
                }
                _ => {
                    let entry = self.build_entry(typeflag, size, pax, long_name, long_link)?;
                    self.remaining = entry.size;
                    self.pad = padding(entry.size);
                    return Ok(Some(entry));
                }
            }
        }
    }

    /// Builds the entry from the header in `self.block` and the pending extensions.
    fn build_entry(
        &self,
        typeflag: u8,
        header_size: u64,
        pax: Option<Pax>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Entry> {
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(&self.block);
        let pax = pax.unwrap_or_default();
        if pax.sparse || typeflag == b'S' {
            return Err(bad(
                "sparse files (GNU or PAX sparse formats) are not supported",
            ));
        }
        let path = pick(
            long_name,
            pax.path,
            || header.path_bytes().into_owned(),
            "name",
        )?;
        let link = pick(
            long_link,
            pax.linkpath,
            || {
                header
                    .link_name_bytes()
                    .map_or_else(Vec::new, |c| c.into_owned())
            },
            "link name",
        )?;
        let kind = match typeflag {
            b'\0' if path.ends_with(b"/") => Kind::Dir,
            b'0' | b'\0' | b'7' => Kind::Regular,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            other => {
                return Err(bad(format!(
                    "entry {:?} has unsupported type flag {:?}",
                    String::from_utf8_lossy(&path),
                    char::from(other)
                )));
            }
        };
        let size = pax.size.unwrap_or(header_size);
        if !kind.has_data() && size != 0 {
            return Err(bad(format!(
                "entry {:?} of a type without content declares {size} bytes",
                String::from_utf8_lossy(&path)
            )));
        }
        let field = |range: std::ops::Range<usize>, what: &str| {
            parse_numeric(&self.block[range]).ok_or_else(|| bad(format!("invalid {what} field")))
        };
        let mode = field(100..108, "mode")?;
        let uid = match pax.uid {
            Some(v) => v,
            None => field(108..116, "uid")?,
        };
        let gid = match pax.gid {
            Some(v) => v,
            None => field(116..124, "gid")?,
        };
        let mtime = match pax.mtime {
            Some(t) => t,
            None => (field(136..148, "mtime")?, 0),
        };
        let (dev_major, dev_minor) = if matches!(kind, Kind::Char | Kind::Block) {
            let magic = &self.block[257..263];
            if magic != b"ustar\0" && magic != b"ustar " {
                return Err(bad("device entry in a pre-ustar header"));
            }
            (field(329..337, "devmajor")?, field(337..345, "devminor")?)
        } else {
            (0, 0)
        };
        Ok(Entry {
            kind,
            path,
            link,
            mode,
            uid,
            gid,
            mtime,
            size,
            dev_major,
            dev_minor,
            xattrs: pax.xattrs,
        })
    }

    /// Reads and discards the rest of the stream after the end of the archive: at most
    /// [`MAX_TRAILING`] bytes, or the archive is invalid.
    pub(super) fn drain(&mut self) -> Result<()> {
        let mut trailing = 0u64;
        loop {
            let n = self.inner.fill_buf().map_err(read_error)?.len();
            if n == 0 {
                return Ok(());
            }
            trailing += n as u64;
            if trailing > MAX_TRAILING {
                return Err(bad(format!(
                    "more than {MAX_TRAILING} bytes follow the end of the archive"
                )));
            }
            self.inner.consume(n);
        }
    }
}

fn too_big() -> Error {
    bad("member size overflows")
}

fn check_meta_size(size: u64, what: &str) -> Result<()> {
    if size > MAX_META {
        return Err(bad(format!(
            "{what} of {size} bytes is larger than the {MAX_META}-byte limit"
        )));
    }
    Ok(())
}

/// Chooses between a GNU long value and a PAX one (both given must agree), else the header's.
fn pick(
    gnu: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
    header: impl FnOnce() -> Vec<u8>,
    what: &str,
) -> Result<Vec<u8>> {
    match (gnu, pax) {
        (Some(g), Some(p)) if g != p => {
            Err(bad(format!("GNU long {what} and PAX {what} disagree")))
        }
        (Some(v), _) | (None, Some(v)) => Ok(v),
        (None, None) => Ok(header()),
    }
}

/// Padding after `size` bytes of content, up to the next block.
fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn truncate_nul(v: &mut Vec<u8>) {
    if let Some(i) = v.iter().position(|&b| b == 0) {
        v.truncate(i);
    }
}

/// Checks a header's checksum; either the unsigned or the signed byte sum is accepted.
fn verify_checksum(block: &[u8; BLOCK]) -> Result<()> {
    let stored = parse_octal(&block[148..156]).ok_or_else(|| bad("invalid checksum field"))?;
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    if stored != unsigned && stored != signed {
        return Err(bad("header checksum mismatch"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_signed_or_unsigned() {
        let mut h = tar::Header::new_ustar();
        h.set_path("a").unwrap();
        h.set_cksum();
        let mut block = *h.as_bytes();
        verify_checksum(&block).unwrap();
        block[0] = b'b';
        assert_eq!(
            verify_checksum(&block).unwrap_err().kind(),
            ErrorKind::InvalidArchive
        );
    }
}
