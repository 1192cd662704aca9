//! Filesystem steps, applied the same way to a layer's merged view and to a plain "flat"
//! directory, as containerd's testsuite does with fstest appliers: the flat directory is the
//! oracle a stack of layers must equal.
//!
//! Every mode is set with an explicit chmod after creation, so nothing depends on the umask.

use std::fs;
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use strata_driver_api::{CreateOpts, Driver, LayerId};

use crate::check::{Context, Failure};
use crate::fixtures::with_mounted;
use crate::tree::{self, Compare};

/// One step. Paths are relative to the tree's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write a file (replacing its content if it exists) and set its mode.
    File(&'static str, Vec<u8>, u32),
    /// Create a directory (and missing parents) and set its mode.
    Dir(&'static str, u32),
    /// Remove a path and everything under it; a missing path is an error.
    RemoveAll(&'static str),
    /// Change the owner (not following a symlink).
    Chown(&'static str, u32, u32),
    /// Change the mode.
    Chmod(&'static str, u32),
    /// Create a symlink `path` pointing at `target`: `Symlink(target, path)`.
    Symlink(&'static str, &'static str),
    /// Create a hardlink `new` to `old`: `Link(old, new)`.
    Link(&'static str, &'static str),
    /// Rename `from` to `to`, replacing `to` if it is a file.
    Rename(&'static str, &'static str),
    /// Write a file whose name or content is only known at run time.
    FileOwned(String, Vec<u8>, u32),
    /// Create a directory whose name is only known at run time.
    DirOwned(String, u32),
}

/// Shorthand for [`Op::File`] with text content.
pub fn file(path: &'static str, content: &str, mode: u32) -> Op {
    Op::File(path, content.as_bytes().to_vec(), mode)
}

/// Applies `ops` in order inside `root` (blocking).
pub fn apply(root: &Path, ops: &[Op]) -> Result<(), Failure> {
    for op in ops {
        apply_one(root, op).ctx(format!("{op:?}"))?;
    }
    Ok(())
}

fn chmod(p: &Path, mode: u32) -> std::io::Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

fn apply_one(root: &Path, op: &Op) -> std::io::Result<()> {
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    match op {
        Op::File(p, content, mode) => write_file(&at(p), content, *mode),
        Op::FileOwned(p, content, mode) => write_file(&at(p), content, *mode),
        Op::Dir(p, mode) => make_dir(&at(p), *mode),
        Op::DirOwned(p, mode) => make_dir(&at(p), *mode),
        Op::RemoveAll(p) => {
            let p = at(p);
            if fs::symlink_metadata(&p)?.is_dir() {
                fs::remove_dir_all(p)
            } else {
                fs::remove_file(p)
            }
        }
        Op::Chown(p, uid, gid) => std::os::unix::fs::lchown(at(p), Some(*uid), Some(*gid)),
        Op::Chmod(p, mode) => chmod(&at(p), *mode),
        Op::Symlink(target, p) => std::os::unix::fs::symlink(target, at(p)),
        Op::Link(old, new) => fs::hard_link(at(old), at(new)),
        Op::Rename(from, to) => fs::rename(at(from), at(to)),
    }
}

fn write_file(p: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    fs::write(p, content)?;
    chmod(p, mode)
}

fn make_dir(p: &Path, mode: u32) -> std::io::Result<()> {
    match fs::create_dir(p) {
        Ok(()) => {}
        Err(e) if e.kind() == IoKind::NotFound => fs::create_dir_all(p)?,
        Err(e) if e.kind() == IoKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    chmod(p, mode)
}

/// A plain directory outside the driver's home that receives the same steps as a stack of
/// layers, to compare each layer's merged view against.
#[derive(Debug)]
pub struct Flat {
    path: PathBuf,
}

impl Flat {
    /// Makes an empty flat directory `scratch/<name>` with the root of a fresh layer: 0755,
    /// owned by the process.
    pub fn new(scratch: &Path, name: &str) -> Result<Flat, Failure> {
        let path = scratch.join(name);
        fs::create_dir(&path).ctx(format!("mkdir {}", path.display()))?;
        chmod(&path, 0o755).ctx("chmod flat root")?;
        Ok(Flat { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies steps to it.
    pub async fn apply(&self, ops: &[Op]) -> Result<(), Failure> {
        let path = self.path.clone();
        let ops = ops.to_vec();
        crate::fixtures::blocking(move || apply(&path, &ops))
            .await
            .ctx("flat directory")
    }

    /// Requires the merged view of `id` to equal this directory (`how` says what besides
    /// types, contents, modes, owners and xattrs).
    pub async fn ensure_view(
        &self,
        d: &dyn Driver,
        id: &LayerId,
        how: Compare,
    ) -> Result<(), Failure> {
        let flat = self.path.clone();
        let what = format!("merged view of {id} against the flat directory");
        with_mounted(d, id, move |view| {
            let got = tree::snapshot(view)?;
            let want = tree::snapshot(&flat)?;
            tree::ensure_same(&got, &want, how, &what)
        })
        .await
    }
}

/// Creates a writable layer `id` on `parent` and applies `ops` to its merged view.
pub async fn rw_layer(
    d: &dyn Driver,
    id: &LayerId,
    parent: Option<&LayerId>,
    ops: &[Op],
) -> Result<(), Failure> {
    d.create_rw(id, parent, &CreateOpts::default())
        .await
        .ctx(format!("create_rw {id}"))?;
    write_ops(d, id, ops).await
}

/// Applies `ops` to the merged view of the existing layer `id`.
pub async fn write_ops(d: &dyn Driver, id: &LayerId, ops: &[Op]) -> Result<(), Failure> {
    let ops = ops.to_vec();
    with_mounted(d, id, move |view| apply(view, &ops))
        .await
        .ctx(format!("writing layer {id}"))
}

/// Builds a chain of writable layers `<prefix>-1`, `<prefix>-2`, ... one per step list, and
/// after each requires its merged view to equal a flat directory that got the same steps.
/// Then checks each layer again (children must not change parents) and rebuilds each from
/// `diff(layer, parent)` applied onto a fresh image layer on the parent, which must give the
/// same view. Returns the ids, bottom first.
pub async fn check_stack(
    d: &dyn Driver,
    scratch: &Path,
    prefix: &str,
    layers: &[Vec<Op>],
) -> Result<Vec<LayerId>, Failure> {
    let flat = Flat::new(scratch, &format!("flat-{prefix}"))?;
    let mut ids: Vec<LayerId> = Vec::new();
    for (i, ops) in layers.iter().enumerate() {
        let id = crate::check::id(&format!("{prefix}-{}", i + 1));
        rw_layer(d, &id, ids.last(), ops).await?;
        flat.apply(ops).await?;
        flat.ensure_view(d, &id, Compare::FLAT).await?;
        ids.push(id);
    }
    // Every layer again, now that all have children: a child must not change its parents.
    // And each layer's diff against its parent, applied onto a fresh image layer on that
    // parent, must give the same view: what was written survives export and import.
    let check = Flat::new(scratch, &format!("flat-{prefix}-again"))?;
    for (i, (id, ops)) in ids.iter().zip(layers).enumerate() {
        check.apply(ops).await?;
        check
            .ensure_view(d, id, Compare::FLAT)
            .await
            .ctx("after its children were made")?;
        let parent = if i == 0 { None } else { Some(&ids[i - 1]) };
        let copy = crate::check::id(&format!("{id}-rt"));
        d.create(&copy, parent, &CreateOpts::default())
            .await
            .ctx(format!("create {copy}"))?;
        let tar = d.diff(id, parent).await.ctx(format!("diff {id}"))?;
        d.apply_diff(&copy, parent, tar)
            .await
            .ctx(format!("apply_diff of diff {id} onto {copy}"))?;
        check
            .ensure_view(d, &copy, Compare::FLAT)
            .await
            .ctx(format!("{id} rebuilt from its diff"))?;
        d.remove(&copy, false).await.ctx(format!("remove {copy}"))?;
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_apply_in_order() {
        let t = tempfile::tempdir().unwrap();
        apply(
            t.path(),
            &[
                Op::Dir("a/b", 0o700),
                file("a/b/f", "x", 0o640),
                Op::Link("a/b/f", "a/g"),
                Op::Rename("a/g", "h"),
                Op::Symlink("h", "s"),
                Op::RemoveAll("a/b"),
            ],
        )
        .unwrap();
        assert!(!t.path().join("a/b").exists());
        assert_eq!(fs::read(t.path().join("s")).unwrap(), b"x");
        let mode = fs::metadata(t.path().join("h"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o640);
        assert!(apply(t.path(), &[Op::RemoveAll("nope")]).is_err());
    }
}
