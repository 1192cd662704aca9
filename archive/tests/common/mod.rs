//! Helpers for the archive tests: a test environment with canaries outside the root, a tree
//! dump to compare exact results, trees built with exact metadata, and tars read back. Tars
//! are written with `strata_conformance::tarfile`, the one builder of the workspace.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::io::Read;
use std::os::unix::fs::symlink;
use strata_archive::{ApplyOptions, ApplyStats, WhiteoutMode, apply_tar};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timestamps, XattrFlags};
use rustix::fs::{Gid, Uid};
use strata_archive::{ErrorKind, Result};
use strata_archive::{WhiteoutFormat, WriteOptions, write_tar};

pub use strata_conformance::skip::is_root;

/// A temporary directory with the layer root at `root` and canaries beside it, in `outside`.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    /// A directory outside the root with a file `passwd` and a directory `d` in it.
    pub outside: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("passwd"), b"host passwd").unwrap();
        std::fs::set_permissions(outside.join("passwd"), PermissionsExt::from_mode(0o640)).unwrap();
        std::fs::create_dir(outside.join("d")).unwrap();
        std::fs::write(outside.join("d/keep"), b"keep").unwrap();
        std::fs::write(tmp.path().join("x"), b"beside root").unwrap();
        let mut env = Env {
            tmp,
            root,
            outside,
            before: BTreeMap::new(),
        };
        env.before = env.snapshot_outside();
        env
    }

    /// The absolute path of the outside directory, as bytes (a hostile link target).
    pub fn outside_bytes(&self) -> Vec<u8> {
        self.outside.as_os_str().as_encoded_bytes().to_vec()
    }

    /// Everything under the temp dir except the root: path → kind, mode, owner, mtime,
    /// link count, content.
    fn snapshot_outside(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.tmp.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p == self.root {
                    continue;
                }
                let m = std::fs::symlink_metadata(&p).unwrap();
                let content = if m.is_file() {
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
                } else {
                    String::new()
                };
                out.insert(
                    p.clone(),
                    format!(
                        "{:o} {}:{} mtime={}.{} nlink={} {content}",
                        m.mode(),
                        m.uid(),
                        m.gid(),
                        m.mtime(),
                        m.mtime_nsec(),
                        m.nlink()
                    ),
                );
                if m.is_dir() {
                    stack.push(p);
                }
            }
        }
        // The temp dir itself.
        let m = std::fs::metadata(self.tmp.path()).unwrap();
        out.insert(self.tmp.path().to_path_buf(), format!("{:o}", m.mode()));
        out
    }

    /// Asserts nothing outside the root changed or appeared.
    pub fn check_outside(&self) {
        assert_eq!(
            self.snapshot_outside(),
            self.before,
            "something outside the root changed"
        );
    }

    pub fn apply(&self, tar: &[u8], mode: WhiteoutMode) -> Result<ApplyStats> {
        apply_tar(&self.root, &mut &tar[..], &ApplyOptions::new(mode))
    }

    pub fn apply_opts(&self, tar: &[u8], opts: &ApplyOptions) -> Result<ApplyStats> {
        apply_tar(&self.root, &mut &tar[..], opts)
    }

    /// Applies and expects an `InvalidArchive` rejection, and nothing changed outside.
    pub fn reject(&self, tar: &[u8], mode: WhiteoutMode) {
        let err = self
            .apply(tar, mode)
            .expect_err("the archive should be rejected");
        assert_eq!(err.kind(), ErrorKind::InvalidArchive, "{err}");
        self.check_outside();
    }

    pub fn tree(&self) -> BTreeMap<String, String> {
        tree(&self.root)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

/// A dump of the tree under `root`: relative path → `"<kind> <mode> <uid>:<gid> <detail>"`,
/// where detail is the content (files), the target (symlinks) or the device numbers.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let owner = format!("{}:{}", m.uid(), m.gid());
            let mode = m.mode() & 0o7777;
            let desc = if ft.is_dir() {
                stack.push(p.clone());
                format!("d {mode:o} {owner}")
            } else if ft.is_file() {
                let data = std::fs::read(&p).unwrap();
                format!("f {mode:o} {owner} {}", String::from_utf8_lossy(&data))
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                format!("l {owner} -> {}", t.display())
            } else if ft.is_fifo() {
                format!("p {mode:o} {owner}")
            } else if ft.is_char_device() || ft.is_block_device() {
                let rdev = m.rdev();
                let k = if ft.is_char_device() { 'c' } else { 'b' };
                format!(
                    "{k} {mode:o} {owner} {}:{}",
                    rustix::fs::major(rdev),
                    rustix::fs::minor(rdev)
                )
            } else {
                format!("? {mode:o} {owner}")
            };
            out.insert(rel, desc);
        }
    }
    out
}

/// The expected tree from `(path, description)` pairs.
pub fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(p, d)| (p.to_string(), d.to_string()))
        .collect()
}

/// The process's uid:gid, as the tree dump shows owners of what the apply made itself.
pub fn me() -> String {
    format!(
        "{}:{}",
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw()
    )
}

/// Reads an xattr of `path` without following a symlink; `None` if absent.
pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 70 * 1024];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("lgetxattr {} {name}: {e}", path.display()),
    }
}

/// All the whiteout modes, for tests that must hold in each.
pub const MODES: [WhiteoutMode; 3] = [
    WhiteoutMode::Keep,
    WhiteoutMode::Remove,
    WhiteoutMode::Overlay { user_xattr: false },
];

// ---- from the write branch: building trees with exact metadata, reading tars back ----

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

pub fn tar_of_dir(root: &Path, whiteouts: WhiteoutFormat) -> Vec<u8> {
    let mut out = Vec::new();
    let n = write_tar(root, &mut out, &WriteOptions { whiteouts }).unwrap();
    assert_eq!(n, out.len() as u64, "write_tar returns the bytes written");
    out
}

/// One entry as read back with the tar crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
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

impl ReadEntry {
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

pub fn read_tar(bytes: &[u8]) -> Vec<ReadEntry> {
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
        out.push(ReadEntry {
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

pub fn names(entries: &[ReadEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.path.as_str()).collect()
}

pub fn find<'a>(entries: &'a [ReadEntry], path: &str) -> &'a ReadEntry {
    entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no entry {path} in {:?}", names(entries)))
}
