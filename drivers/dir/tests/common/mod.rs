//! Helpers shared by the dir driver's tests: a driver in a temp dir, and trees described as
//! text so a whole view can be compared in one assertion.
#![allow(dead_code)]

pub mod modes;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use strata_driver_api::{CreateOpts, Driver, LayerId, MountOpts};
use strata_driver_dir::{Config, DirDriver, MountMode};

pub fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

/// Creates `layer` on `parent` with default options: an image layer, or a container layer
/// when `rw`.
pub async fn create(drv: &DirDriver, layer: &str, parent: Option<&str>, rw: bool) {
    let parent = parent.map(id);
    let opts = CreateOpts::default();
    if rw {
        drv.create_rw(&id(layer), parent.as_ref(), &opts).await
    } else {
        drv.create(&id(layer), parent.as_ref(), &opts).await
    }
    .unwrap();
}

/// The layer's view as `d`, a fresh driver instance, materialises it (read-only, released
/// again).
pub async fn fresh_view(d: &DirDriver, layer: &str) -> BTreeMap<String, String> {
    let ro = MountOpts {
        read_only: true,
        ..MountOpts::default()
    };
    let path = d.get(&id(layer), &ro).await.unwrap();
    let tree = describe(&path);
    d.put(&id(layer)).await.unwrap();
    assert!(!d.is_mounted(&id(layer)).await.unwrap());
    tree
}

/// The names in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub drv: DirDriver,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let drv = DirDriver::new(tmp.path().join("dir"), copy_mode()).unwrap();
        Fixture { tmp, drv }
    }

    pub fn home(&self) -> PathBuf {
        self.tmp.path().join("dir")
    }

    /// Another driver instance on the same home, as a second process would open it.
    pub fn reopen(&self) -> DirDriver {
        DirDriver::new(self.home(), copy_mode()).unwrap()
    }

    pub fn diff(&self, layer: &str) -> PathBuf {
        self.home().join("diff").join(layer)
    }

    pub fn mnt(&self, layer: &str) -> PathBuf {
        self.home().join("mnt").join(layer)
    }

    pub async fn image(&self, layer: &str, parent: Option<&str>) {
        create(&self.drv, layer, parent, false).await;
    }

    pub async fn container(&self, layer: &str, parent: Option<&str>) {
        create(&self.drv, layer, parent, true).await;
    }

    pub async fn get(&self, layer: &str) -> PathBuf {
        self.drv
            .get(&id(layer), &MountOpts::default())
            .await
            .unwrap()
    }

    pub async fn get_ro(&self, layer: &str) -> PathBuf {
        let ro = MountOpts {
            read_only: true,
            ..MountOpts::default()
        };
        self.drv.get(&id(layer), &ro).await.unwrap()
    }

    pub async fn put(&self, layer: &str) {
        self.drv.put(&id(layer)).await.unwrap()
    }

    /// The layer's view as a fresh driver instance materialises it (read-only, released again).
    pub async fn fresh_view(&self, layer: &str) -> BTreeMap<String, String> {
        fresh_view(&self.reopen(), layer).await
    }
}

/// Writes `text` to `root/rel`, making parent directories.
pub fn put_file(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

pub fn mkdir(root: &Path, rel: &str) {
    fs::create_dir_all(root.join(rel)).unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every path under `root` (not the root itself) → a one-line description: type, mode,
/// owner, and contents (files), target (symlinks) or device numbers. Hardlinked files say
/// which path they are linked to (the first in order).
pub fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
    inodes: &mut BTreeMap<u64, String>,
) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let perm = m.mode() & 0o7777;
        let owner = format!("{}:{}", m.uid(), m.gid());
        let desc = if ft.is_dir() {
            format!("dir {perm:o} {owner}")
        } else if ft.is_symlink() {
            format!("link -> {}", fs::read_link(&p).unwrap().display())
        } else if ft.is_file() {
            let link = if m.nlink() > 1 {
                match inodes.get(&m.ino()) {
                    Some(first) => format!(" =={first}"),
                    None => {
                        inodes.insert(m.ino(), rel.clone());
                        String::new()
                    }
                }
            } else {
                String::new()
            };
            let text = String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned();
            format!("file {perm:o} {owner} {text:?}{link}")
        } else {
            use std::os::unix::fs::FileTypeExt;
            let t = if ft.is_fifo() {
                "fifo"
            } else if ft.is_char_device() {
                "char"
            } else if ft.is_block_device() {
                "block"
            } else {
                "socket"
            };
            format!("{t} {perm:o} {owner} {}", m.rdev())
        };
        out.insert(rel, desc);
        if ft.is_dir() {
            walk(root, &p, out, inodes);
        }
    }
}

/// The names in `root`'s tree, sorted: for asserting what a diff directory holds. Reads no
/// file (so it changes no atime).
pub fn names(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[allow(unused_imports)] // not every test binary asks
pub use strata_conformance::skip::is_root;

/// These tests are of the copy mode (the fuse mode's are in union*.rs and the conformance
/// suite); `auto` would pick fuse where it works.
pub fn copy_mode() -> Config {
    Config {
        mount: MountMode::Copy,
        ..Config::default()
    }
}
