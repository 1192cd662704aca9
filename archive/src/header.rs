//! Encoding one tar entry's header: a ustar block, preceded by a PAX extended header when a
//! field does not fit. Pure: bytes in, bytes out.
//!
//! The choices follow Docker (`FileInfoHeader` with `Format = PAX`), so the tars look like the
//! ones the ecosystem already makes and reads:
//! - mtime in whole seconds (Docker truncates too; the naive diff's whole-second leniency is
//!   built on it), negative times clamped to 0, no atime/ctime;
//! - mode is the permission bits with setuid/setgid/sticky, no type bits;
//! - uid/gid numeric, uname/gname empty;
//! - a name or link target longer than 100 bytes goes into a PAX `path`/`linkpath` record (the
//!   ustar field holds its first 100 bytes), xattrs into `SCHILY.xattr.<name>`, and numbers too
//!   large for the octal fields into PAX `size`/`uid`/`gid`/`mtime` records;
//! - PAX records sorted by key; the extended header is named `<dir>/PaxHeaders.0/<file>` as Go
//!   names it, with every other field fixed, so the bytes depend on the entry alone.

use tar::{EntryType, Header};

/// What kind of entry, with what only that kind has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    /// A regular file of `size` bytes (the content follows the header).
    Regular { size: u64 },
    /// A directory.
    Dir,
    /// A symbolic link to `target`.
    Symlink { target: &'a [u8] },
    /// A hard link to the earlier entry `target`.
    Link { target: &'a [u8] },
    /// A named pipe.
    Fifo,
    /// A character device.
    Char { major: u32, minor: u32 },
    /// A block device.
    Block { major: u32, minor: u32 },
}

/// The attributes every entry has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
}

const BLOCK: usize = 512;
const NAME_LEN: usize = 100;
/// The largest value an 8-byte octal field holds (uid, gid).
const MAX_OCTAL_8: u64 = 0o7777777;
/// The largest value a 12-byte octal field holds (size, mtime).
const MAX_OCTAL_12: u64 = 0o77777777777;

/// Appends the header blocks for one entry named `path` (a directory's name ends with `/`)
/// to `out`. The caller writes the content (for a regular file) and pads it to 512 bytes.
pub(crate) fn encode(
    path: &[u8],
    kind: Kind<'_>,
    meta: &Meta,
    xattrs: &[(&[u8], &[u8])],
    out: &mut Vec<u8>,
) {
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mtime = u64::try_from(meta.mtime).unwrap_or(0);
    let size = match kind {
        Kind::Regular { size } => size,
        _ => 0,
    };
    if path.len() > NAME_LEN {
        pax.push((b"path".to_vec(), path.to_vec()));
    }
    if let Kind::Symlink { target } | Kind::Link { target } = kind {
        if target.len() > NAME_LEN {
            pax.push((b"linkpath".to_vec(), target.to_vec()));
        }
    }
    if size > MAX_OCTAL_12 {
        pax.push((b"size".to_vec(), size.to_string().into_bytes()));
    }
    if mtime > MAX_OCTAL_12 {
        pax.push((b"mtime".to_vec(), mtime.to_string().into_bytes()));
    }
    if meta.uid > MAX_OCTAL_8 {
        pax.push((b"uid".to_vec(), meta.uid.to_string().into_bytes()));
    }
    if meta.gid > MAX_OCTAL_8 {
        pax.push((b"gid".to_vec(), meta.gid.to_string().into_bytes()));
    }
    for (name, value) in xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(name);
        pax.push((key, value.to_vec()));
    }
    if !pax.is_empty() {
        pax.sort();
        encode_pax(path, &pax, out);
    }

    let mut h = Header::new_ustar();
    set_bytes(&mut h.as_old_mut().name, path);
    h.set_mode(meta.mode & 0o7777);
    h.set_uid(meta.uid);
    h.set_gid(meta.gid);
    h.set_size(size);
    h.set_mtime(mtime);
    let entry_type = match kind {
        Kind::Regular { .. } => EntryType::Regular,
        Kind::Dir => EntryType::Directory,
        Kind::Symlink { .. } => EntryType::Symlink,
        Kind::Link { .. } => EntryType::Link,
        Kind::Fifo => EntryType::Fifo,
        Kind::Char { .. } => EntryType::Char,
        Kind::Block { .. } => EntryType::Block,
    };
    h.set_entry_type(entry_type);
    if let Kind::Symlink { target } | Kind::Link { target } = kind {
        set_bytes(&mut h.as_old_mut().linkname, target);
    }
    if let Kind::Char { major, minor } | Kind::Block { major, minor } = kind {
        if let Some(ustar) = h.as_ustar_mut() {
            ustar.set_device_major(major);
            ustar.set_device_minor(minor);
        }
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
}

/// Writes as much of `value` as fits into a NUL-padded header field.
fn set_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record, itself
/// included.
fn pax_record(key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while rest + len.to_string().len() != len {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn encode_pax(path: &[u8], records: &[(Vec<u8>, Vec<u8>)], out: &mut Vec<u8>) {
    let mut data = Vec::new();
    for (k, v) in records {
        pax_record(k, v, &mut data);
    }
    // Go's name for the extended header: "<dir>/PaxHeaders.0/<file>".
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    let (dir, file) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    let mut name = dir.to_vec();
    name.extend_from_slice(b"PaxHeaders.0/");
    name.extend_from_slice(file);

    let mut h = Header::new_ustar();
    set_bytes(&mut h.as_old_mut().name, &name);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(data.len() as u64);
    h.set_entry_type(EntryType::XHeader);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&data);
    out.resize(out.len() + padding(data.len() as u64), 0);
}

/// The zero bytes that pad `len` bytes of content to a whole block.
pub(crate) fn padding(len: u64) -> usize {
    let rem = (len % BLOCK as u64) as usize;
    if rem == 0 { 0 } else { BLOCK - rem }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            mode: 0o4755,
            uid: 1000,
            gid: 100,
            mtime: 1_700_000_000,
        }
    }

    /// Path, type, link name and PAX records of each entry.
    type Read = (Vec<u8>, EntryType, Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

    fn read(bytes: &[u8]) -> Vec<Read> {
        let mut ar = tar::Archive::new(bytes);
        let mut out = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut pax = Vec::new();
            if let Some(exts) = e.pax_extensions().unwrap() {
                for ext in exts {
                    let ext = ext.unwrap();
                    pax.push((ext.key().unwrap().to_string(), ext.value_bytes().to_vec()));
                }
            }
            out.push((
                e.path_bytes().to_vec(),
                e.header().entry_type(),
                e.link_name_bytes().map(|l| l.to_vec()),
                pax,
            ));
        }
        out
    }

    fn finish(mut v: Vec<u8>) -> Vec<u8> {
        v.resize(v.len() + 1024, 0);
        v
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(b"path", b"x", &mut out);
        assert_eq!(out, b"9 path=x\n");
        // 9 + 1 digit would be 10, which takes two digits: 11.
        let mut out = Vec::new();
        pax_record(b"path", b"xx", &mut out);
        assert_eq!(out, b"11 path=xx\n");
        let mut out = Vec::new();
        let v = vec![b'a'; 95];
        pax_record(b"path", &v, &mut out);
        assert_eq!(out.len(), 105);
        assert!(out.starts_with(b"105 "));
    }

    #[test]
    fn short_entry_is_one_ustar_block() {
        let mut out = Vec::new();
        encode(
            b"etc/passwd",
            Kind::Regular { size: 0 },
            &meta(),
            &[],
            &mut out,
        );
        assert_eq!(out.len(), 512);
        let h = Header::from_byte_slice(&out);
        assert_eq!(h.path_bytes().as_ref(), b"etc/passwd");
        assert_eq!(h.mode().unwrap(), 0o4755);
        assert_eq!(h.uid().unwrap(), 1000);
        assert_eq!(h.gid().unwrap(), 100);
        assert_eq!(h.mtime().unwrap(), 1_700_000_000);
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(&h.as_bytes()[257..265], b"ustar\x0000");
        assert_eq!(h.cksum().unwrap(), {
            let mut c = h.clone();
            c.set_cksum();
            c.cksum().unwrap()
        });
    }

    #[test]
    fn long_names_and_xattrs_go_to_pax() {
        let long = vec![b'n'; 150];
        let mut path = b"dir/".to_vec();
        path.extend_from_slice(&long);
        let target = vec![b't'; 300];
        let mut out = Vec::new();
        let xattrs: [(&[u8], &[u8]); 2] = [
            (b"security.capability", b"\x01\x00\x00\x02"),
            (b"user.k", b"v"),
        ];
        encode(
            &path,
            Kind::Symlink { target: &target },
            &meta(),
            &xattrs,
            &mut out,
        );
        let entries = read(&finish(out));
        assert_eq!(entries.len(), 1);
        let (p, ty, link, pax) = &entries[0];
        assert_eq!(p, &path);
        assert_eq!(*ty, EntryType::Symlink);
        assert_eq!(link.as_deref(), Some(&target[..]));
        let keys: Vec<_> = pax.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "SCHILY.xattr.security.capability",
                "SCHILY.xattr.user.k",
                "linkpath",
                "path"
            ]
        );
        assert_eq!(pax[0].1, b"\x01\x00\x00\x02");
    }

    #[test]
    fn devices_carry_numbers() {
        let mut out = Vec::new();
        encode(
            b"dev/sda",
            Kind::Block { major: 8, minor: 1 },
            &meta(),
            &[],
            &mut out,
        );
        let h = Header::from_byte_slice(&out);
        assert_eq!(h.entry_type(), EntryType::Block);
        assert_eq!(h.device_major().unwrap(), Some(8));
        assert_eq!(h.device_minor().unwrap(), Some(1));
    }

    #[test]
    fn big_numbers_get_pax_records_and_negative_mtime_clamps() {
        let m = Meta {
            mode: 0o644,
            uid: 4_000_000_000,
            gid: 3,
            mtime: -5,
        };
        let mut out = Vec::new();
        encode(b"f", Kind::Regular { size: 0 }, &m, &[], &mut out);
        let entries = read(&finish(out.clone()));
        let keys: Vec<_> = entries[0].3.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["uid"]);
        let h = Header::from_byte_slice(&out[out.len() - 512..]);
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(h.uid().unwrap(), 4_000_000_000);
    }

    #[test]
    fn pax_header_name_follows_go() {
        let mut path = b"a/b/".to_vec();
        path.extend_from_slice(&[b'x'; 120]);
        path.push(b'/');
        let mut out = Vec::new();
        encode(&path, Kind::Dir, &meta(), &[], &mut out);
        let x = Header::from_byte_slice(&out[..512]);
        assert_eq!(x.entry_type(), EntryType::XHeader);
        assert!(x.path_bytes().starts_with(b"a/b/PaxHeaders.0/xxx"));
    }

    #[test]
    fn padding_rounds_to_blocks() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(513), 511);
    }
}
