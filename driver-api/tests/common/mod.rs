//! Helpers for the archive and naive-diff tests: building trees with exact metadata, and
//! reading tars back.
#![allow(dead_code)] // each test file uses its own part of this

use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timestamps, XattrFlags};
use rustix::fs::{Gid, Uid};
use strata_driver_api::archive::{WhiteoutFormat, WriteOptions, write_tar};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Prints why a test is skipped and says whether it must be.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        false
    } else {
        eprintln!("skipping {test}: needs root");
        true
    }
}

pub fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

pub fn mkdir(path: &Path) {
    std::fs::create_dir(path).unwrap();
}

pub fn ln_s(target: &str, path: &Path) {
    symlink(target, path).unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    rustix::fs::chmod(path, Mode::from_raw_mode(mode)).unwrap();
}

pub fn chown(path: &Path, uid: u32, gid: u32) {
    rustix::fs::chownat(
        CWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

pub fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

pub fn mknod(path: &Path, ty: FileType, mode: u32, major: u32, minor: u32) {
    rustix::fs::mknodat(
        CWD,
        path,
        ty,
        Mode::from_raw_mode(mode),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
    chmod(path, mode); // past the umask
}

pub fn setxattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()).unwrap();
}

/// A valid v2 `security.capability` value granting `cap` (a capability number below 32) as
/// permitted and effective.
pub fn capability(cap: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes()); // revision 2, effective
    v.extend_from_slice(&(1u32 << cap).to_le_bytes()); // permitted, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted, high word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, high word
    v
}

/// Sets the mtime of everything under `root` (and `root`) to `sec`, children first, so that
/// trees built separately compare equal.
pub fn freeze(root: &Path, sec: i64) {
    fn walk(p: &Path, sec: i64) {
        let md = std::fs::symlink_metadata(p).unwrap();
        if md.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), sec);
            }
        }
        set_mtime(p, sec, 0);
    }
    walk(root, sec);
}

pub fn tar_of(root: &Path, whiteouts: WhiteoutFormat) -> Vec<u8> {
    let mut out = Vec::new();
    let n = write_tar(root, &mut out, &WriteOptions { whiteouts }).unwrap();
    assert_eq!(n, out.len() as u64, "write_tar returns the bytes written");
    out
}

/// One entry as read back with the tar crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Option<Vec<u8>>,
    pub dev: Option<(u32, u32)>,
    /// Every PAX record, in order.
    pub pax: Vec<(String, Vec<u8>)>,
    pub data: Vec<u8>,
}

impl Entry {
    pub fn xattr(&self, name: &str) -> Option<&[u8]> {
        let key = format!("SCHILY.xattr.{name}");
        self.pax
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    pub fn xattr_names(&self) -> Vec<String> {
        self.pax
            .iter()
            .filter_map(|(k, _)| k.strip_prefix("SCHILY.xattr.").map(str::to_string))
            .collect()
    }
}

pub fn read_tar(bytes: &[u8]) -> Vec<Entry> {
    assert_eq!(bytes.len() % 512, 0, "a tar is whole blocks");
    assert!(bytes.len() >= 1024);
    assert!(
        bytes[bytes.len() - 1024..].iter().all(|&b| b == 0),
        "ends with two zero blocks"
    );
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
        let h = e.header().clone();
        let kind = h.entry_type();
        let dev = match kind {
            tar::EntryType::Char | tar::EntryType::Block => Some((
                h.device_major().unwrap().unwrap(),
                h.device_minor().unwrap().unwrap(),
            )),
            _ => None,
        };
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let link = e.link_name_bytes().map(|l| l.to_vec());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(Entry {
            path,
            kind,
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            link,
            dev,
            pax,
            data,
        });
    }
    out
}

pub fn names(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.path.as_str()).collect()
}

pub fn find<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no entry {path} in {:?}", names(entries)))
}
