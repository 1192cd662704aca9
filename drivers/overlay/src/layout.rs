//! The on-disk layout under the driver's home (`<root>/overlay`), as overlay2's:
//!
//! ```text
//! l/<LID> -> ../<id>/diff   one short link a layer (26 base32 characters), for mount(2) data
//! .empty/                   an empty directory: the lower of a base layer's writable mount
//! lock                      held shared by every instance (the sweep runs only when free;
//!                           `strata_driver_util::lock`); an earlier version's `.lock` is ignored
//! <id>/diff/                the layer's upper directory: its changes, in overlayfs form
//! <id>/work/                overlayfs's work directory
//! <id>/merged/              the mount point, made on mount, removed on unmount
//! <id>/link                 the layer's LID
//! <id>/lower                only with a parent: `l/<parent LID>:l/<grandparent LID>:...`
//! <id>/committed            the layer mounts read-only (an image layer, or one with children)
//! ```
//!
//! The ids `l` and `lock` are reserved (`InvalidInput` at create); the driver's other names
//! start with a dot, which no layer id can.
//!
//! A layer is built under `.tmp-<id>-<rand>` and renamed into place, its small files written
//! and fsync'd first, so `<id>` never exists with an empty `link` or `lower` (moby #42964). A
//! removal renames `<id>` to `.removing-<id>-<rand>` first. Dot names are swept on start.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::RenameFlags;
use rustix::io::Errno;
use strata_archive::atomic;
use strata_driver_api::{Error, ErrorKind, LayerId, LayerKind, Result};
use strata_driver_util::lock::LOCK_FILE;

use crate::opts::{self, LID_LEN};
use crate::sys::{self, os};

/// Names in the home that are not layers, so not usable as layer ids.
pub(crate) const RESERVED: &[&str] = &["l", LOCK_FILE];

/// The driver's home and the paths in it.
#[derive(Debug)]
pub(crate) struct Layout {
    home: PathBuf,
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            // Exactly `mode`, whatever the umask.
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| Error::os("chmod", path, e))
        }
        Err(e) => Err(Error::os("mkdir", path, e)),
    }
}

fn mkdir_exist_ok(path: &Path, mode: u32) -> Result<()> {
    match mkdir(path, mode) {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// A fresh short link name (17 random bytes, base32).
fn random_lid() -> Result<String> {
    Ok(opts::lid_from(strata_driver_api::random::bytes::<17>()?))
}

/// Writes the small file `dir/name` atomically (`strata_archive::atomic`: temp, fsync, rename,
/// fsync the directory) and gives it `mode`. A power cut leaves the old content or the new,
/// never an empty file.
fn write_small(dir: &Path, name: &str, data: &[u8], mode: u32) -> Result<()> {
    let path = dir.join(name);
    atomic::write_bytes(&path, data)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::os("chmod", &path, e))
}

impl Layout {
    /// Opens (creating) the home: 0710, `l/` 0700, `empty/` 0755.
    pub(crate) fn open(home: PathBuf) -> Result<Layout> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o710)
            .create(&home)
            .map_err(|e| Error::os("mkdir", &home, e))?;
        mkdir_exist_ok(&home.join("l"), 0o700)?;
        mkdir_exist_ok(&home.join(".empty"), 0o755)?;
        Ok(Layout { home })
    }

    pub(crate) fn home(&self) -> &Path {
        &self.home
    }
    pub(crate) fn dir(&self, id: &LayerId) -> PathBuf {
        self.home.join(id.as_str())
    }
    pub(crate) fn diff(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("diff")
    }
    pub(crate) fn work(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("work")
    }
    pub(crate) fn merged(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("merged")
    }
    pub(crate) fn empty(&self) -> PathBuf {
        self.home.join(".empty")
    }

    /// Whether the layer exists (its directory with its `link`).
    pub(crate) fn exists(&self, id: &LayerId) -> Result<bool> {
        if RESERVED.contains(&id.as_str()) {
            return Ok(false);
        }
        let link = self.dir(id).join("link");
        match fs::symlink_metadata(&link) {
            Ok(_) => Ok(true),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) =>
            {
                Ok(false)
            }
            Err(e) => Err(Error::os("lstat", &link, e)),
        }
    }

    /// `NotFound` unless the layer exists.
    pub(crate) fn ensure(&self, id: &LayerId) -> Result<()> {
        if self.exists(id)? {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::NotFound,
                format!("layer {id} not found"),
            ))
        }
    }

    /// The layer's short link name, checked.
    pub(crate) fn lid(&self, id: &LayerId) -> Result<String> {
        let path = self.dir(id).join("link");
        let lid = sys::read_small(&path)?;
        if !opts::valid_lid(&lid) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{}: not a short link name", path.display()),
            ));
        }
        Ok(lid)
    }

    /// The LIDs of the layer's ancestors, parent first (empty for a base layer).
    pub(crate) fn lower_lids(&self, id: &LayerId) -> Result<Vec<String>> {
        let path = self.dir(id).join("lower");
        let text = match sys::read_small(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for part in text.split(':') {
            match part.strip_prefix("l/") {
                Some(lid) if opts::valid_lid(lid) => out.push(lid.to_string()),
                _ => {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        format!("{}: bad entry {part:?}", path.display()),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The id a short link points at (`l/<LID> -> ../<id>/diff`).
    pub(crate) fn id_of_lid(&self, lid: &str) -> Result<LayerId> {
        let path = self.home.join("l").join(lid);
        let target = fs::read_link(&path).map_err(|e| Error::os("readlink", &path, e))?;
        let id = target
            .strip_prefix("..")
            .ok()
            .and_then(|t| t.parent())
            .and_then(|t| t.to_str())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Corrupt,
                    format!("{}: unexpected target {}", path.display(), target.display()),
                )
            })?;
        LayerId::new(id).map_err(|e| e.context(format!("{}", path.display())))
    }

    /// The path of a short link, absolute.
    pub(crate) fn lid_path(&self, lid: &str) -> PathBuf {
        self.home.join("l").join(lid)
    }

    /// The ids of the layer's ancestors, parent first.
    pub(crate) fn ancestors(&self, id: &LayerId) -> Result<Vec<LayerId>> {
        self.lower_lids(id)?
            .iter()
            .map(|l| self.id_of_lid(l))
            .collect()
    }

    /// Whether the layer mounts read-only.
    pub(crate) fn committed(&self, id: &LayerId) -> bool {
        self.dir(id).join("committed").exists()
    }

    /// Marks the layer read-only (it got a child, or it is an image layer).
    pub(crate) fn commit(&self, id: &LayerId) -> Result<()> {
        if self.committed(id) {
            return Ok(());
        }
        write_small(&self.dir(id), "committed", b"", 0o600)
    }

    /// Makes layer `id` over `parent` (whose ancestors' LIDs are `parent_lowers`), all or
    /// nothing. `AlreadyExists` if `id` exists.
    pub(crate) fn create(
        &self,
        id: &LayerId,
        parent: Option<(&LayerId, &str, &[String])>,
        kind: LayerKind,
    ) -> Result<()> {
        if RESERVED.contains(&id.as_str()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("layer id {id:?} is reserved by the overlay driver's layout"),
            ));
        }
        if self.exists(id)? || self.dir(id).exists() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("layer {id} already exists"),
            ));
        }
        let tmp = self.home.join(format!(".tmp-{id}-{}", &random_lid()?[..8]));
        mkdir(&tmp, 0o710)?;
        let built = self.build(&tmp, id, parent, kind);
        let lid = match built {
            Ok(lid) => lid,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let finish = rustix::fs::renameat_with(
            rustix::fs::CWD,
            &tmp,
            rustix::fs::CWD,
            self.dir(id),
            RenameFlags::NOREPLACE,
        );
        if let Err(e) = finish {
            let _ = fs::remove_file(self.lid_path(&lid));
            let _ = fs::remove_dir_all(&tmp);
            return Err(match e {
                Errno::EXIST | Errno::NOTEMPTY => Error::new(
                    ErrorKind::AlreadyExists,
                    format!("layer {id} already exists"),
                ),
                e => os("rename", &self.dir(id), e),
            });
        }
        Ok(())
    }

    /// Fills the staging directory `tmp` and makes the short link; returns the LID.
    fn build(
        &self,
        tmp: &Path,
        id: &LayerId,
        parent: Option<(&LayerId, &str, &[String])>,
        kind: LayerKind,
    ) -> Result<String> {
        let diff = tmp.join("diff");
        mkdir(&diff, 0o755)?;
        if let Some((p, _, _)) = parent {
            // The merged root is the top layer's diff root: start as the parent's.
            let pd = self.diff(p);
            let st = fs::symlink_metadata(&pd).map_err(|e| Error::os("lstat", &pd, e))?;
            std::os::unix::fs::chown(&diff, Some(st.uid()), Some(st.gid()))
                .map_err(|e| Error::os("chown", &diff, e))?;
            fs::set_permissions(&diff, fs::Permissions::from_mode(st.mode() & 0o7777))
                .map_err(|e| Error::os("chmod", &diff, e))?;
        }
        mkdir(&tmp.join("work"), 0o700)?;
        if let Some((_, plid, plowers)) = parent {
            let mut lower = format!("l/{plid}");
            for l in plowers {
                lower.push_str(":l/");
                lower.push_str(l);
            }
            write_small(tmp, "lower", lower.as_bytes(), 0o644)?;
        }
        if kind == LayerKind::Image {
            write_small(tmp, "committed", b"", 0o600)?;
        }
        // A fresh LID (a collision with an existing one is astronomically unlikely, and
        // symlink's EEXIST catches it).
        let target = PathBuf::from("..").join(id.as_str()).join("diff");
        let mut lid = random_lid()?;
        loop {
            match std::os::unix::fs::symlink(&target, self.lid_path(&lid)) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => lid = random_lid()?,
                Err(e) => return Err(Error::os("symlink", &self.lid_path(&lid), e)),
            }
        }
        debug_assert_eq!(lid.len(), LID_LEN);
        if let Err(e) = write_small(tmp, "link", lid.as_bytes(), 0o644) {
            let _ = fs::remove_file(self.lid_path(&lid));
            return Err(e);
        }
        Ok(lid)
    }

    /// Removes the layer's files (it must not be mounted here): renames it away, drops its
    /// short link, then removes the tree, retrying while something holds it busy.
    pub(crate) fn remove(&self, id: &LayerId) -> Result<()> {
        let lid = self.lid(id).ok();
        let dir = self.dir(id);
        let tomb = self
            .home
            .join(format!(".removing-{id}-{}", &random_lid()?[..8]));
        fs::rename(&dir, &tomb).map_err(|e| Error::os("rename", &dir, e))?;
        if let Some(lid) = lid {
            let link = self.lid_path(&lid);
            match fs::remove_file(&link) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::os("unlink", &link, e)),
            }
        }
        remove_all_retry(&tomb)
    }

    /// Clears what crashed operations left: dot names (staging and removed layers, temp
    /// files) and short links whose layer is gone; makes missing short links again. Run only
    /// while no other instance is attached.
    pub(crate) fn sweep(&self) -> Result<()> {
        for entry in fs::read_dir(&self.home).map_err(|e| Error::os("readdir", &self.home, e))? {
            let entry = entry.map_err(|e| Error::os("readdir", &self.home, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".tmp-")
                || name.starts_with(".removing-")
                || name.starts_with(".probe-")
            {
                remove_all_retry(&entry.path())?;
            }
        }
        let l = self.home.join("l");
        for entry in fs::read_dir(&l).map_err(|e| Error::os("readdir", &l, e))? {
            let entry = entry.map_err(|e| Error::os("readdir", &l, e))?;
            let path = entry.path();
            // A link whose diff is gone (fs::metadata follows it).
            if fs::metadata(&path).is_err() {
                fs::remove_file(&path).map_err(|e| Error::os("unlink", &path, e))?;
            }
        }
        // A layer whose short link is missing (deleted by hand, or a file system repair)
        // would not mount: make it again, as containers/storage's recreateSymlinks.
        for id in self.ids()? {
            let Ok(lid) = self.lid(&id) else { continue };
            let link = self.lid_path(&lid);
            if fs::symlink_metadata(&link).is_err() {
                let target = PathBuf::from("..").join(id.as_str()).join("diff");
                std::os::unix::fs::symlink(&target, &link)
                    .map_err(|e| Error::os("symlink", &link, e))?;
            }
        }
        Ok(())
    }

    /// Every layer id in the home.
    pub(crate) fn ids(&self) -> Result<Vec<LayerId>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.home).map_err(|e| Error::os("readdir", &self.home, e))? {
            let entry = entry.map_err(|e| Error::os("readdir", &self.home, e))?;
            if let Some(Ok(id)) = entry.file_name().to_str().map(LayerId::new) {
                if self.exists(&id)? {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }
}

/// `remove_dir_all` after detaching every mount inside (so nothing is deleted through a
/// leaked bind mount), retrying EBUSY (a mount point held in another namespace: detach again
/// and retry, up to 50 times, 100 ms apart, as moby's EnsureRemoveAll).
fn remove_all_retry(path: &Path) -> Result<()> {
    // Never delete through a mount: detach whatever is mounted inside first.
    strata_driver_util::mountinfo::detach_under(path)?;
    let mut tries = 0;
    loop {
        match fs::remove_dir_all(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(Errno::BUSY.raw_os_error()) && tries < 50 => {
                tries += 1;
                strata_driver_util::mountinfo::detach_under(path)?;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(Error::os("remove", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> LayerId {
        LayerId::new(s).unwrap()
    }

    #[test]
    fn lock_is_a_reserved_id_and_old_lock_files_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout::open(tmp.path().join("overlay")).unwrap();
        fs::write(l.home().join(LOCK_FILE), b"").unwrap();
        fs::write(l.home().join(".lock"), b"").unwrap();
        let err = l.create(&id("lock"), None, LayerKind::Image).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(!l.exists(&id("lock")).unwrap());
        l.create(&id("a"), None, LayerKind::Container).unwrap();
        fs::create_dir(l.home().join(".tmp-x-1")).unwrap();
        l.sweep().unwrap();
        assert!(!l.home().join(".tmp-x-1").exists());
        assert!(l.home().join(LOCK_FILE).exists());
        assert!(l.home().join(".lock").exists());
        assert_eq!(l.ids().unwrap(), [id("a")]);
        let link = fs::metadata(l.dir(&id("a")).join("link")).unwrap();
        assert_eq!(link.permissions().mode() & 0o777, 0o644);
    }
}
