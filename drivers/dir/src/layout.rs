//! The driver's home on disk, and the life of a layer in it.
//!
//! ```text
//! <home>/                 0700
//!   layers/<id>           the ancestry: the direct parent first, one id a line; empty for a base
//!   diff/<id>/            the layer's own files in AUFS/OCI form (.wh.<name>, .wh..wh..opq)
//!   mnt/<id>/             the mountpoint: empty, the materialised view (copy mode) or the
//!                         FUSE mount (fuse mode) while mounted
//!   meta/<id>             small facts about the layer: `kind=image` or `kind=container`
//!   state/<id>.mount      the view is mounted (the commit point of a mount): `writable=..`,
//!                         and for a FUSE view `fuse=<server pid>`
//!   state/<id>.manifest   copy mode: what the view held when materialised, to find what changed
//!   state/<id>.fuse-work/ fuse mode: where copy-ups are built before they are renamed into diff
//!   state/<id>.fuse-log   fuse mode: the server's standard error
//! ```
//!
//! `layers/<id>` is written last when a layer is made and renamed away first when it is
//! removed: a layer exists exactly when that file does. Every file is written atomically
//! (temp, fsync, rename), every directory is built under a staging name and renamed into
//! place, and every staging name starts with a dot, which no [`LayerId`] can: so whatever a
//! crash leaves is either a dot name or a layer's part without its `layers/<id>`, and
//! [`Layout::sweep`] removes both, when the first driver instance attaches (`<home>/lock`,
//! held with `strata_driver_util::lock`; it sits beside the subdirectories, which are all a
//! sweep walks).
//!
//! This module knows paths and files only: it never mounts, serves or unmounts a view.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use strata_archive::atomic;
use strata_driver_api::{Error, ErrorKind, LayerId, LayerKind, Result};

use crate::sys;

const SUBDIRS: [&str; 5] = ["layers", "diff", "mnt", "meta", "state"];

/// Paths under the driver's home, and the operations that keep them consistent.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    home: PathBuf,
}

impl Layout {
    /// Creates `home` (0700) and its subdirectories if they are missing.
    pub(crate) fn open(home: PathBuf) -> Result<Layout> {
        if let Some(parent) = home.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::os("mkdir", parent, e))?;
        }
        mkdir_0700(&home)?;
        for sub in SUBDIRS {
            mkdir_0700(&home.join(sub))?;
        }
        Ok(Layout { home })
    }

    pub(crate) fn home(&self) -> &Path {
        &self.home
    }

    pub(crate) fn sub(&self, sub: &str) -> PathBuf {
        self.home.join(sub)
    }

    pub(crate) fn layer_file(&self, id: &LayerId) -> PathBuf {
        self.home.join("layers").join(id.as_str())
    }

    pub(crate) fn diff(&self, id: &LayerId) -> PathBuf {
        self.home.join("diff").join(id.as_str())
    }

    pub(crate) fn mnt(&self, id: &LayerId) -> PathBuf {
        self.home.join("mnt").join(id.as_str())
    }

    pub(crate) fn meta(&self, id: &LayerId) -> PathBuf {
        self.home.join("meta").join(id.as_str())
    }

    pub(crate) fn mount_state(&self, id: &LayerId) -> PathBuf {
        self.home.join("state").join(format!("{id}.mount"))
    }

    pub(crate) fn manifest(&self, id: &LayerId) -> PathBuf {
        self.home.join("state").join(format!("{id}.manifest"))
    }

    /// Where a FUSE view's copy-ups are built (on the same file system as `diff/<id>`).
    pub(crate) fn fuse_work(&self, id: &LayerId) -> PathBuf {
        self.home.join("state").join(format!("{id}.fuse-work"))
    }

    /// A FUSE view's server log (its standard error).
    pub(crate) fn fuse_log(&self, id: &LayerId) -> PathBuf {
        self.home.join("state").join(format!("{id}.fuse-log"))
    }

    /// A staging name for `id` in subdirectory `sub`: `<sub>/.<id>-<what>`.
    pub(crate) fn staging(&self, sub: &str, id: &LayerId, what: &str) -> PathBuf {
        self.home.join(sub).join(format!(".{id}-{what}"))
    }

    pub(crate) fn exists(&self, id: &LayerId) -> Result<bool> {
        Ok(sys::try_lstat(&self.layer_file(id))?.is_some())
    }

    fn require(&self, id: &LayerId) -> Result<()> {
        if self.exists(id)? {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::NotFound,
                format!("layer {id} not found"),
            ))
        }
    }

    /// The layer's ancestors, its direct parent first.
    pub(crate) fn ancestry(&self, id: &LayerId) -> Result<Vec<LayerId>> {
        let path = self.layer_file(id);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("layer {id} not found"),
                ));
            }
            Err(e) => return Err(Error::os("read", &path, e)),
        };
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                LayerId::new(l).map_err(|e| {
                    Error::with_source(
                        ErrorKind::Corrupt,
                        format!("bad ancestry in {}", path.display()),
                        e,
                    )
                })
            })
            .collect()
    }

    /// The layer's branches: its own diff directory, then its ancestors', top first.
    pub(crate) fn branches(&self, id: &LayerId) -> Result<Vec<PathBuf>> {
        let mut out = vec![self.diff(id)];
        out.extend(self.ancestry(id)?.iter().map(|a| self.diff(a)));
        Ok(out)
    }

    pub(crate) fn kind(&self, id: &LayerId) -> Result<LayerKind> {
        let path = self.meta(id);
        let text = fs::read_to_string(&path).map_err(|e| Error::os("read", &path, e))?;
        match text
            .lines()
            .find_map(|l| l.strip_prefix("kind="))
            .and_then(LayerKind::parse)
        {
            Some(kind) => Ok(kind),
            None => Err(Error::new(
                ErrorKind::Corrupt,
                format!("{}: no valid kind= line", path.display()),
            )),
        }
    }

    /// Makes a new, empty layer. Nothing is left behind on error.
    pub(crate) fn create_layer(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        kind: LayerKind,
    ) -> Result<()> {
        if self.exists(id)? {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("layer {id} already exists"),
            ));
        }
        let mut ancestry = Vec::new();
        if let Some(p) = parent {
            if !self.exists(p)? {
                return Err(Error::new(
                    ErrorKind::ParentNotFound,
                    format!("parent layer {p} not found"),
                ));
            }
            ancestry.push(p.clone());
            ancestry.extend(self.ancestry(p)?);
        }
        // Whatever is there without layers/<id> is a crashed operation's leftover.
        self.discard_parts(id)?;
        let result = self.build_layer(id, parent, kind, &ancestry);
        if result.is_err() {
            // Best effort: what is left now is an orphan without layers/<id>, which the next
            // sweep removes; the error worth reporting is the one that stopped the build.
            let _ = self.discard_parts(id);
            let _ = sys::remove_tree(&self.staging("diff", id, "creating"));
        }
        result
    }

    fn build_layer(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        kind: LayerKind,
        ancestry: &[LayerId],
    ) -> Result<()> {
        let staging = self.staging("diff", id, "creating");
        sys::remove_tree(&staging)?;
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&staging)
            .map_err(|e| Error::os("mkdir", &staging, e))?;
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::os("chmod", &staging, e))?;
        if let Some(p) = parent {
            // The new layer's view starts equal to its parent's, root attributes included.
            let src = sys::open_dir(&self.diff(p))?;
            let dst = sys::open_dir(&staging)?;
            crate::copy::Copier::new().copy_dir_meta(
                src.as_fd(),
                dst.as_fd(),
                &self.diff(p),
                &staging,
            )?;
        }
        let diff = self.diff(id);
        fs::rename(&staging, &diff).map_err(|e| Error::os("rename", &staging, e))?;
        mkdir_0700(&self.mnt(id))?;
        atomic::write_file(&self.meta(id), |w| {
            writeln!(w, "kind={}", kind.as_str()).map_err(|e| Error::io("write layer meta", e))
        })?;
        let text: String = ancestry.iter().map(|a| format!("{a}\n")).collect();
        atomic::write_file(&self.layer_file(id), |w| {
            w.write_all(text.as_bytes())
                .map_err(|e| Error::io("write layer ancestry", e))
        })
    }

    /// Removes the layer's files. The caller has already discarded its view.
    pub(crate) fn remove_layer(&self, id: &LayerId) -> Result<()> {
        self.require(id)?;
        let gone = self.staging("layers", id, "removing");
        rename(&self.layer_file(id), &gone)?;
        self.discard_parts(id)?;
        unlink(&gone)
    }

    /// Removes every part of `id` but `layers/<id>`: each directory renamed to a `-removing`
    /// name first, so a crash midway leaves a dot name for the sweep, never half a tree under
    /// the layer's own name.
    fn discard_parts(&self, id: &LayerId) -> Result<()> {
        for (sub, path) in [("diff", self.diff(id)), ("mnt", self.mnt(id))] {
            if sys::try_lstat(&path)?.is_some() {
                let gone = self.staging(sub, id, "removing");
                sys::remove_tree(&gone)?;
                rename(&path, &gone)?;
                sys::remove_tree(&gone)?;
            }
        }
        unlink(&self.mount_state(id))?;
        unlink(&self.manifest(id))?;
        self.discard_fuse_files(id)?;
        unlink(&self.meta(id))
    }

    /// Removes a FUSE view's work directory and log.
    pub(crate) fn discard_fuse_files(&self, id: &LayerId) -> Result<()> {
        sys::remove_tree(&self.fuse_work(id))?;
        unlink(&self.fuse_log(id))
    }

    /// Clears the leftovers of crashed operations; run before the driver is used, only while no
    /// other instance is attached (it runs under `strata_driver_util::lock::HomeLock::attach`).
    /// Never looks at mounts: the driver detaches dead FUSE views before (`mounts`).
    ///
    /// Removes dot names (staging directories, temp files, `-removing` trees), every layer part
    /// whose `layers/<id>` is missing, a manifest without its mount state, and the contents of a
    /// mountpoint whose view never committed. A fold that crashed between its two renames (on
    /// a file system without `RENAME_EXCHANGE`) is rolled back to the previous diff.
    pub(crate) fn sweep(&self) -> Result<()> {
        for sub in SUBDIRS {
            let dir = self.sub(sub);
            for name in names(&dir)? {
                let Some(rest) = name.strip_prefix('.') else {
                    continue;
                };
                let path = dir.join(&name);
                if sub == "diff" {
                    if let Some(id) = rest
                        .strip_suffix("-prev")
                        .and_then(|i| LayerId::new(i).ok())
                    {
                        if sys::try_lstat(&self.diff(&id))?.is_none() {
                            rename(&path, &self.diff(&id))?;
                            continue;
                        }
                    }
                }
                remove_any(&path)?;
            }
        }
        for sub in ["diff", "mnt", "meta"] {
            for name in names(&self.sub(sub))? {
                if let Ok(id) = LayerId::new(name.as_str()) {
                    if !self.exists(&id)? {
                        self.discard_parts(&id)?;
                    }
                }
            }
        }
        for name in names(&self.sub("state"))? {
            let (id, what) = match name.rsplit_once('.') {
                Some((id, what @ ("mount" | "manifest" | "fuse-work" | "fuse-log"))) => (id, what),
                _ => continue,
            };
            let Ok(id) = LayerId::new(id) else { continue };
            let mounted = sys::try_lstat(&self.mount_state(&id))?.is_some();
            if !self.exists(&id)? {
                self.discard_parts(&id)?;
            } else if what == "manifest" && !mounted {
                unlink(&self.manifest(&id))?;
            } else if what.starts_with("fuse-") && !mounted {
                self.discard_fuse_files(&id)?;
            }
        }
        for name in names(&self.sub("layers"))? {
            let Ok(id) = LayerId::new(name.as_str()) else {
                continue;
            };
            if sys::try_lstat(&self.mount_state(&id))?.is_none() {
                self.reset_mountpoint(&id)?;
            }
        }
        Ok(())
    }

    /// Makes `mnt/<id>` an empty directory again, discarding a view's files.
    pub(crate) fn reset_mountpoint(&self, id: &LayerId) -> Result<()> {
        let mnt = self.mnt(id);
        match fs::read_dir(&mnt) {
            Ok(mut it) => {
                if it.next().is_none() {
                    return Ok(());
                }
                let gone = self.staging("mnt", id, "discarding");
                sys::remove_tree(&gone)?;
                rename(&mnt, &gone)?;
                mkdir_0700(&mnt)?;
                sys::remove_tree(&gone)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => mkdir_0700(&mnt),
            Err(e) => Err(Error::os("opendir", &mnt, e)),
        }
    }
}

fn names(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for ent in fs::read_dir(dir).map_err(|e| Error::os("opendir", dir, e))? {
        let ent = ent.map_err(|e| Error::os("readdir", dir, e))?;
        // Names that are not UTF-8 are neither ids nor staging names of ours.
        if let Ok(name) = ent.file_name().into_string() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn mkdir_0700(path: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::os("mkdir", path, e)),
    }
}

pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::os("rename", from, e))
}

/// Removes a file; a missing one is fine.
pub(crate) fn unlink(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::os("unlink", path, e)),
    }
}

fn remove_any(path: &Path) -> Result<()> {
    match sys::try_lstat(path)? {
        Some(m) if m.kind() == sys::Kind::Dir => sys::remove_tree(path),
        Some(_) => unlink(path),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> LayerId {
        LayerId::new(s).unwrap()
    }

    #[test]
    fn create_writes_ancestry_and_kind() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout::open(tmp.path().join("dir")).unwrap();
        l.create_layer(&id("a"), None, LayerKind::Image).unwrap();
        l.create_layer(&id("b"), Some(&id("a")), LayerKind::Image)
            .unwrap();
        l.create_layer(&id("c"), Some(&id("b")), LayerKind::Container)
            .unwrap();
        assert_eq!(fs::read_to_string(l.layer_file(&id("a"))).unwrap(), "");
        assert_eq!(
            fs::read_to_string(l.layer_file(&id("c"))).unwrap(),
            "b\na\n"
        );
        assert_eq!(l.ancestry(&id("c")).unwrap(), [id("b"), id("a")]);
        assert_eq!(l.kind(&id("c")).unwrap(), LayerKind::Container);
        assert_eq!(l.kind(&id("a")).unwrap(), LayerKind::Image);
        let mode = fs::metadata(l.diff(&id("a"))).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
        let home_mode = fs::metadata(l.home()).unwrap().permissions().mode();
        assert_eq!(home_mode & 0o777, 0o700);
    }

    #[test]
    fn sweep_removes_leftovers_and_orphans() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout::open(tmp.path().join("dir")).unwrap();
        l.create_layer(&id("keep"), None, LayerKind::Image).unwrap();
        fs::write(l.diff(&id("keep")).join("f"), b"x").unwrap();
        // A crashed create (diff without layers/<id>), a crashed remove, temp files.
        fs::create_dir(l.diff(&id("orphan"))).unwrap();
        fs::create_dir(l.staging("diff", &id("x"), "creating")).unwrap();
        fs::create_dir_all(l.staging("mnt", &id("keep"), "removing").join("sub")).unwrap();
        fs::write(l.sub("layers").join(".y.tmp"), b"").unwrap();
        // A view that never committed.
        fs::write(l.mnt(&id("keep")).join("stale"), b"").unwrap();
        l.sweep().unwrap();
        assert!(!l.diff(&id("orphan")).exists());
        assert!(!l.staging("diff", &id("x"), "creating").exists());
        assert!(!l.staging("mnt", &id("keep"), "removing").exists());
        assert!(!l.sub("layers").join(".y.tmp").exists());
        assert!(l.diff(&id("keep")).join("f").exists());
        assert_eq!(fs::read_dir(l.mnt(&id("keep"))).unwrap().count(), 0);
    }

    #[test]
    fn sweep_rolls_back_a_half_done_swap() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout::open(tmp.path().join("dir")).unwrap();
        l.create_layer(&id("a"), None, LayerKind::Image).unwrap();
        fs::write(l.diff(&id("a")).join("f"), b"x").unwrap();
        rename(&l.diff(&id("a")), &l.staging("diff", &id("a"), "prev")).unwrap();
        l.sweep().unwrap();
        assert!(l.diff(&id("a")).join("f").exists());
    }
}
