//! Graphtest's fixtures (moby `daemon/graphdriver/graphtest/testutil*.go`), ported with their
//! names, sizes, seeds and modes, and the plumbing they share.
//!
//! Writing into a layer always goes through `driver.get(id)`, plain file calls on the returned
//! path on a blocking thread, then `driver.put(id)`, whatever happened. One difference from
//! graphtest: a layer that is written through `get` is made with `create_rw`, since a driver
//! may mount image layers read-only ([`Capabilities::read_only_images`]); image layers are
//! filled by `apply_diff` only.
//!
//! [`Capabilities::read_only_images`]: strata_driver_api::Capabilities::read_only_images

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use strata_driver_api::{Change, ChangeKind, CreateOpts, Driver, LayerId, MountOpts};

use crate::check::{Context, Failure};
use crate::{ensure, ensure_eq};

/// Runs blocking file work on a blocking thread; a panic there becomes a failure.
pub async fn blocking<T, F>(f: F) -> Result<T, Failure>
where
    F: FnOnce() -> Result<T, Failure> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(Failure::failed(format!("blocking work failed: {e}"))),
    }
}

/// Mounts `id` with `get`, runs `f` on its merged view on a blocking thread, and `put`s it
/// again whether `f` succeeded or not.
pub async fn with_mounted<T, F>(d: &dyn Driver, id: &LayerId, f: F) -> Result<T, Failure>
where
    F: FnOnce(&Path) -> Result<T, Failure> + Send + 'static,
    T: Send + 'static,
{
    let path = d
        .get(id, &MountOpts::default())
        .await
        .ctx(format!("get {id}"))?;
    let result = blocking(move || f(&path)).await;
    let put = d.put(id).await.ctx(format!("put {id}"));
    let value = result?;
    put?;
    Ok(value)
}

/// Deterministic pseudo-random bytes for `seed` (splitmix64). graphtest uses Go's math/rand;
/// the bytes differ, the sizes and seeds are graphtest's.
pub fn random_content(size: usize, seed: i64) -> Vec<u8> {
    let mut state = seed as u64;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(size);
    out
}

fn write_mode(path: &Path, content: &[u8], mode: u32) -> Result<(), Failure> {
    fs::write(path, content).ctx(format!("write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .ctx(format!("chmod {}", path.display()))
}

fn mkdir_mode(path: &Path, mode: u32) -> Result<(), Failure> {
    fs::create_dir_all(path).ctx(format!("mkdir {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .ctx(format!("chmod {}", path.display()))
}

fn expect_content(path: &Path, want: &[u8]) -> Result<(), Failure> {
    let got = fs::read(path).ctx(format!("read {}", path.display()))?;
    ensure!(
        got == want,
        "{}: content differs ({} bytes, expected {})",
        path.display(),
        got.len(),
        want.len()
    );
    Ok(())
}

/// graphtest `addFiles`: `file-a` (64 B, seed), `dir-b/`, `dir-b/file-b` (128 B, seed+1),
/// `file-c` (16384 B, seed+2); files 0755.
pub async fn add_files(d: &dyn Driver, id: &LayerId, seed: i64) -> Result<(), Failure> {
    with_mounted(d, id, move |root| {
        write_mode(&root.join("file-a"), &random_content(64, seed), 0o755)?;
        mkdir_mode(&root.join("dir-b"), 0o755)?;
        write_mode(
            &root.join("dir-b/file-b"),
            &random_content(128, seed + 1),
            0o755,
        )?;
        write_mode(
            &root.join("file-c"),
            &random_content(16384, seed + 2),
            0o755,
        )
    })
    .await
}

/// graphtest `checkFile`-s over what [`add_files`] wrote.
pub async fn check_files(d: &dyn Driver, id: &LayerId, seed: i64) -> Result<(), Failure> {
    with_mounted(d, id, move |root| {
        expect_content(&root.join("file-a"), &random_content(64, seed))?;
        expect_content(&root.join("dir-b/file-b"), &random_content(128, seed + 1))?;
        expect_content(&root.join("file-c"), &random_content(16384, seed + 2))
    })
    .await
}

/// graphtest `addManyFiles`: for each block of 100, `directory-<i>/` holding `file-<n>` (64 B,
/// `random_content(64, seed + n)`, mode 0755), `count` files in all.
pub async fn add_many_files(
    d: &dyn Driver,
    id: &LayerId,
    count: usize,
    seed: i64,
) -> Result<(), Failure> {
    with_mounted(d, id, move |root| {
        for i in (0..count).step_by(100) {
            let dir = root.join(format!("directory-{i}"));
            mkdir_mode(&dir, 0o755)?;
            for j in 0..100.min(count - i) {
                let n = i + j;
                write_mode(
                    &dir.join(format!("file-{n}")),
                    &random_content(64, seed + n as i64),
                    0o755,
                )?;
            }
        }
        Ok(())
    })
    .await
}

/// graphtest `checkManyFiles`: the files of [`add_many_files`] with that seed, byte for byte.
pub async fn check_many_files(
    d: &dyn Driver,
    id: &LayerId,
    count: usize,
    seed: i64,
) -> Result<(), Failure> {
    with_mounted(d, id, move |root| {
        for i in (0..count).step_by(100) {
            for j in 0..100.min(count - i) {
                let n = i + j;
                expect_content(
                    &root.join(format!("directory-{i}/file-{n}")),
                    &random_content(64, seed + n as i64),
                )?;
            }
        }
        Ok(())
    })
    .await
}

/// graphtest `changeManyFiles`: per block, `/directory-<i>` is Modify; then file `j` of the
/// block is rewritten (`j % 3 == 0`, Modify), joined by `file-<seed>-<n>` (`== 1`, Add) or
/// deleted (`== 2`, Delete). Returns the expected changes.
pub async fn change_many_files(
    d: &dyn Driver,
    id: &LayerId,
    count: usize,
    seed: i64,
) -> Result<Vec<Change>, Failure> {
    with_mounted(d, id, move |root| {
        let mut changes = Vec::new();
        for i in (0..count).step_by(100) {
            let dir = format!("/directory-{i}");
            mkdir_mode(&root.join(&dir[1..]), 0o755)?;
            for j in 0..100.min(count - i) {
                let n = i + j;
                if j == 0 {
                    changes.push(Change {
                        path: PathBuf::from(&dir),
                        kind: ChangeKind::Modify,
                    });
                }
                let content = random_content(64, seed + n as i64);
                let (path, kind) = match j % 3 {
                    0 => (format!("{dir}/file-{n}"), ChangeKind::Modify),
                    1 => (format!("{dir}/file-{seed}-{n}"), ChangeKind::Add),
                    _ => (format!("{dir}/file-{n}"), ChangeKind::Delete),
                };
                let real = root.join(&path[1..]);
                if kind == ChangeKind::Delete {
                    fs::remove_file(&real).ctx(format!("remove {}", real.display()))?;
                } else {
                    write_mode(&real, &content, 0o755)?;
                }
                changes.push(Change {
                    path: PathBuf::from(path),
                    kind,
                });
            }
        }
        Ok(changes)
    })
    .await
}

/// graphtest `checkChanges`: the same set of `{path, kind}` (both sorted by path, then kind).
pub fn check_changes(got: &[Change], want: &[Change]) -> Result<(), Failure> {
    let mut got = got.to_vec();
    let mut want = want.to_vec();
    got.sort();
    want.sort();
    if got == want {
        return Ok(());
    }
    let show = |c: &[Change]| {
        c.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(Failure::failed(format!(
        "expected {} changes, got {}\n  expected: {}\n  got:      {}",
        want.len(),
        got.len(),
        show(&want),
        show(&got)
    )))
}

/// graphtest `addManyLayers`: stacks `count` writable layers on `base`, layer `i` (1-based)
/// writing `top-id` (its id), `layer-<i>/layer-id` and `layer-<i>/parent-id`. Returns the top.
pub async fn add_many_layers(
    d: &dyn Driver,
    base: &LayerId,
    count: usize,
) -> Result<LayerId, Failure> {
    let mut last = base.clone();
    for i in 1..=count {
        let id = LayerId::random();
        d.create_rw(&id, Some(&last), &CreateOpts::default())
            .await
            .ctx(format!("create layer {i} of {count}"))?;
        let (layer, parent) = (id.to_string(), last.to_string());
        with_mounted(d, &id, move |root| {
            write_mode(&root.join("top-id"), layer.as_bytes(), 0o755)?;
            let dir = root.join(format!("layer-{i}"));
            mkdir_mode(&dir, 0o755)?;
            write_mode(&dir.join("layer-id"), layer.as_bytes(), 0o755)?;
            write_mode(&dir.join("parent-id"), parent.as_bytes(), 0o755)
        })
        .await
        .ctx(format!("layer {i} of {count}"))?;
        last = id;
    }
    Ok(last)
}

/// graphtest `checkManyLayers`: `top-id` names the top, and following `parent-id` down from
/// `layer-<count>` visits every layer in order.
pub async fn check_many_layers(d: &dyn Driver, top: &LayerId, count: usize) -> Result<(), Failure> {
    let top_s = top.to_string();
    with_mounted(d, top, move |root| {
        let read = |p: PathBuf| fs::read_to_string(&p).ctx(format!("read {}", p.display()));
        ensure_eq!(read(root.join("top-id"))?, top_s, "top-id");
        let mut expect = top_s.clone();
        for i in (1..=count).rev() {
            let dir = root.join(format!("layer-{i}"));
            ensure_eq!(read(dir.join("layer-id"))?, expect, "layer-{i}/layer-id");
            expect = read(dir.join("parent-id"))?;
        }
        Ok(())
    })
    .await
}

/// The owner a file created by this process gets: 0:0 as root.
pub fn own_ids() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

/// graphtest `createBase`: a writable base layer holding `a subdir` (0705 + sticky, owned 1:2
/// when root) and `a file` ("Some data", 0222 + setuid).
pub async fn create_base(d: &dyn Driver, id: &LayerId) -> Result<(), Failure> {
    d.create_rw(id, None, &CreateOpts::default())
        .await
        .ctx(format!("create_rw {id}"))?;
    with_mounted(d, id, |root| {
        let sub = root.join("a subdir");
        fs::create_dir(&sub).ctx("mkdir a subdir")?;
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o1705)).ctx("chmod a subdir")?;
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::lchown(&sub, Some(1), Some(2)).ctx("lchown a subdir")?;
        }
        write_mode(&root.join("a file"), b"Some data", 0o4222)
    })
    .await
}

/// graphtest `verifyFile`: type, permission bits, sticky/setuid/setgid and owner.
pub fn verify_file(path: &Path, dir: bool, mode: u32, uid: u32, gid: u32) -> Result<(), Failure> {
    let md = fs::symlink_metadata(path).ctx(format!("lstat {}", path.display()))?;
    let p = path.display();
    ensure!(
        md.is_dir() == dir,
        "{p}: is_dir {} but expected {dir}",
        md.is_dir()
    );
    ensure!(dir || md.is_file(), "{p}: not a regular file");
    ensure_eq!(md.mode() & 0o777, mode & 0o777, "{p}: permission bits");
    ensure_eq!(md.mode() & 0o1000, mode & 0o1000, "{p}: sticky bit");
    ensure_eq!(md.mode() & 0o4000, mode & 0o4000, "{p}: setuid bit");
    ensure_eq!(md.mode() & 0o2000, mode & 0o2000, "{p}: setgid bit");
    ensure_eq!((md.uid(), md.gid()), (uid, gid), "{p}: owner");
    Ok(())
}

/// The names in a directory, `lost+found` left out (graphtest `readDir`), sorted.
pub fn read_dir_names(path: &Path) -> Result<Vec<String>, Failure> {
    let mut names = Vec::new();
    for e in fs::read_dir(path).ctx(format!("readdir {}", path.display()))? {
        let name = e
            .ctx("readdir entry")?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name != "lost+found" {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// graphtest `verifyBase`: what [`create_base`] made, and exactly those two entries.
pub async fn verify_base(d: &dyn Driver, id: &LayerId) -> Result<(), Failure> {
    with_mounted(d, id, |root| {
        let (uid, gid) = own_ids();
        let (sub_uid, sub_gid) = if uid == 0 { (1, 2) } else { (uid, gid) };
        verify_file(&root.join("a subdir"), true, 0o1705, sub_uid, sub_gid)?;
        verify_file(&root.join("a file"), false, 0o4222, uid, gid)?;
        if uid == 0 {
            // 0222 is write-only: only root reads it back.
            expect_content(&root.join("a file"), b"Some data")?;
        }
        let names = read_dir_names(root)?;
        ensure_eq!(names.len(), 2, "entries in the root ({names:?})");
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_content_is_deterministic_and_seeded() {
        assert_eq!(random_content(64, 3), random_content(64, 3));
        assert_ne!(random_content(64, 3), random_content(64, 4));
        assert_eq!(random_content(13, 1).len(), 13);
        assert_eq!(random_content(16384, 5)[..64], random_content(64, 5)[..]);
    }
}
