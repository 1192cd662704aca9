//! `vfs`: a third-party strata driver, built as a shared library and loaded by path.
//!
//! Each layer is a plain directory holding its whole merged view: a new layer starts as a full
//! copy of its parent, made with `cp -a --reflink=<mode>` (a reflink, the `FICLONE` ioctl, on
//! filesystems that share extents — btrfs, xfs with reflink, bcachefs — and a real copy
//! elsewhere). `get` hands out that directory; nothing is ever mounted, so it works wherever
//! neither overlayfs nor FUSE does, at the cost of space and of O(image) layer creation.
//! `diff`, `apply_diff`, `changes` and `diff_size` are the trait's naive defaults.
//!
//! Layout under its home: `layers/<id>/` (the views), `mounted/<id>` (a marker while a view is
//! handed out, so a restarted process adopts it), `tmp/` (layers being made or removed).
//!
//! The plugin depends on `strata-driver-api` only; the last line of this file makes it
//! loadable.

#![deny(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use strata_driver_api::stream::run_blocking;
use strata_driver_api::{
    Capabilities, CreateOpts, Driver, Error, ErrorKind, LayerId, MountOpts, Result, async_trait,
};

/// The driver's name: its config name and home directory.
pub const NAME: &str = "vfs";

/// How a layer's copy of its parent is made (`[plugins.options] reflink`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reflink {
    /// A reflink where the filesystem allows, else a copy (the default).
    #[default]
    Auto,
    /// Always a reflink; creating a child fails where the filesystem cannot.
    Always,
    /// Always a full copy.
    Never,
}

impl Reflink {
    fn as_str(self) -> &'static str {
        match self {
            Reflink::Auto => "auto",
            Reflink::Always => "always",
            Reflink::Never => "never",
        }
    }
}

/// The plugin's options, from the config's `[plugins.options]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// How children copy their parent.
    pub reflink: Reflink,
}

impl Options {
    /// Parses `[plugins.options]`: only `reflink = "auto" | "always" | "never"`; an unknown
    /// key or value is a `Config` error that names it.
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Options> {
        let mut out = Options::default();
        for (key, value) in options {
            match key.as_str() {
                "reflink" => {
                    out.reflink = match value.as_str() {
                        "auto" => Reflink::Auto,
                        "always" => Reflink::Always,
                        "never" => Reflink::Never,
                        _ => {
                            return Err(Error::new(
                                ErrorKind::Config,
                                format!(
                                    "vfs: reflink = {value:?}: expected \"auto\", \"always\" or \"never\""
                                ),
                            ));
                        }
                    }
                }
                _ => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!("vfs: unknown option {key:?} (known: reflink)"),
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// The vfs driver.
#[derive(Debug)]
pub struct VfsDriver {
    home: PathBuf,
    options: Options,
    /// References handed out by `get`, per layer, in this process.
    counts: Arc<Mutex<HashMap<LayerId, u32>>>,
    /// Serialises the step that makes a layer visible, so two creates of one id cannot both
    /// succeed.
    publish: Arc<Mutex<()>>,
}

impl VfsDriver {
    /// Opens the driver over `home`, creating its directories.
    pub fn new(home: PathBuf, options: Options) -> Result<VfsDriver> {
        for d in ["layers", "mounted", "tmp"] {
            let dir = home.join(d);
            std::fs::create_dir_all(&dir).map_err(|e| Error::os("mkdir", &dir, e))?;
        }
        // Leftovers of a create or remove that crashed midway.
        let tmp = home.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(|e| Error::os("readdir", &tmp, e))? {
            let path = entry.map_err(|e| Error::os("readdir", &tmp, e))?.path();
            std::fs::remove_dir_all(&path).map_err(|e| Error::os("remove", &path, e))?;
        }
        Ok(VfsDriver {
            home,
            options,
            counts: Arc::default(),
            publish: Arc::default(),
        })
    }

    /// The plugin's constructor, as `export_driver!` calls it.
    pub fn open(home: PathBuf, options: BTreeMap<String, String>) -> Result<VfsDriver> {
        VfsDriver::new(home, Options::parse(&options)?)
    }

    fn paths(&self) -> Paths {
        Paths {
            home: self.home.clone(),
        }
    }

    async fn make(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        if let Some(key) = opts.storage_opts.keys().next() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("vfs takes no storage options ({key:?})"),
            ));
        }
        let (paths, id, parent) = (self.paths(), id.clone(), parent.cloned());
        let (reflink, publish) = (self.options.reflink, self.publish.clone());
        run_blocking(move || {
            let dir = paths.layer(&id);
            if dir.exists() {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("layer {id} exists"),
                ));
            }
            let tmp = paths.home.join("tmp").join(format!("new-{}", unique()));
            let made = build(&paths, &tmp, parent.as_ref(), reflink).and_then(|()| {
                let _one = publish.lock().unwrap_or_else(|p| p.into_inner());
                if dir.exists() {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("layer {id} exists"),
                    ));
                }
                std::fs::rename(&tmp, &dir).map_err(|e| Error::os("rename", &dir, e))
            });
            match &made {
                Ok(()) => strata_plugin_abi::tracing::debug!(layer = %id, "vfs: created"),
                Err(e) => {
                    strata_plugin_abi::tracing::debug!(layer = %id, "vfs: create failed: {e}")
                }
            }
            if made.is_err() && tmp.exists() {
                // The error that matters is the first; a leftover is swept at the next start.
                let _ = std::fs::remove_dir_all(&tmp);
            }
            made
        })
        .await
    }

    /// The in-process count of `id`, adopting a view handed out by an earlier process (its
    /// marker is still there) with a count of one.
    /// The references held on `id` (adopting, with a count of one, a view another process
    /// left mounted).
    fn count(&self, id: &LayerId) -> u32 {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        self.adopt(&mut counts, id);
        counts.get(id).copied().unwrap_or(0)
    }

    /// Gives `id` a count of one if this instance holds no reference but its marker says it is
    /// mounted (by an earlier process). Call with the counts locked.
    fn adopt(&self, counts: &mut HashMap<LayerId, u32>, id: &LayerId) {
        if !counts.contains_key(id) && self.paths().marker(id).exists() {
            counts.insert(id.clone(), 1);
        }
    }

    fn check_exists(&self, id: &LayerId) -> Result<()> {
        if self.paths().layer(id).is_dir() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::NotFound,
                format!("layer {id} not found"),
            ))
        }
    }
}

#[derive(Debug, Clone)]
struct Paths {
    home: PathBuf,
}

impl Paths {
    fn layer(&self, id: &LayerId) -> PathBuf {
        self.home.join("layers").join(id.as_str())
    }

    fn marker(&self, id: &LayerId) -> PathBuf {
        self.home.join("mounted").join(id.as_str())
    }
}

/// A name no other temporary directory of this process has.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes the new layer's tree at `tmp`: a copy of the parent's, or an empty 0755 root.
fn build(paths: &Paths, tmp: &Path, parent: Option<&LayerId>, reflink: Reflink) -> Result<()> {
    let Some(parent) = parent else {
        std::fs::create_dir(tmp).map_err(|e| Error::os("mkdir", tmp, e))?;
        use std::os::unix::fs::PermissionsExt;
        return std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::os("chmod", tmp, e));
    };
    let src = paths.layer(parent);
    if !src.is_dir() {
        return Err(Error::new(
            ErrorKind::ParentNotFound,
            format!("parent {parent} not found"),
        ));
    }
    // cp -a keeps owners, modes, times, xattrs, hardlinks and special files; --reflink makes
    // it clone extents (FICLONE) where the filesystem can.
    let out = Command::new("cp")
        .arg("-a")
        .arg(format!("--reflink={}", reflink.as_str()))
        .arg("--")
        .arg(&src)
        .arg(tmp)
        .output()
        .map_err(|e| Error::io("run cp", e))?;
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "cp -a {} {}: {}",
                src.display(),
                tmp.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

#[async_trait]
impl Driver for VfsDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            rootless: true,
            rename_dir: true,
            ..Capabilities::default()
        }
    }

    fn status(&self) -> Vec<(String, String)> {
        vec![
            ("home".to_string(), self.home.display().to_string()),
            (
                "reflink".to_string(),
                self.options.reflink.as_str().to_string(),
            ),
        ]
    }

    async fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        if opts.size.is_some() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a size applies to writable layers only",
            ));
        }
        self.make(id, parent, opts).await
    }

    async fn create_rw(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        if opts.size.is_some() {
            return Err(Error::new(ErrorKind::NotSupported, "vfs has no quota"));
        }
        self.make(id, parent, opts).await
    }

    async fn remove(&self, id: &LayerId, force: bool) -> Result<()> {
        self.check_exists(id)?;
        if self.count(id) > 0 {
            if !force {
                return Err(Error::new(ErrorKind::Busy, format!("layer {id} is in use")));
            }
            self.counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
        }
        let (paths, id) = (self.paths(), id.clone());
        run_blocking(move || {
            let marker = paths.marker(&id);
            match std::fs::remove_file(&marker) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::os("unlink", &marker, e));
                }
                _ => {}
            }
            // Out of sight first, so the id is free at once and a crash leaves only tmp/.
            let dir = paths.layer(&id);
            let doomed = paths.home.join("tmp").join(format!("del-{}", unique()));
            std::fs::rename(&dir, &doomed).map_err(|e| Error::os("rename", &dir, e))?;
            std::fs::remove_dir_all(&doomed).map_err(|e| Error::os("remove", &doomed, e))
        })
        .await
    }

    async fn get(&self, id: &LayerId, _opts: &MountOpts) -> Result<PathBuf> {
        self.check_exists(id)?;
        // The count and the marker change together under the lock (the marker is one tiny
        // file), so a get in flight is never mistaken for another process's mount.
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        self.adopt(&mut counts, id);
        let c = counts.entry(id.clone()).or_insert(0);
        if *c == 0 {
            let marker = self.paths().marker(id);
            std::fs::write(&marker, b"").map_err(|e| Error::os("write", &marker, e))?;
        }
        *c += 1;
        Ok(self.paths().layer(id))
    }

    async fn put(&self, id: &LayerId) -> Result<()> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        self.adopt(&mut counts, id);
        let Some(c) = counts.get_mut(id) else {
            return Ok(());
        };
        *c -= 1;
        if *c == 0 {
            counts.remove(id);
            let marker = self.paths().marker(id);
            match std::fs::remove_file(&marker) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::os("unlink", &marker, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn is_mounted(&self, id: &LayerId) -> Result<bool> {
        self.check_exists(id)?;
        Ok(self.paths().marker(id).exists())
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        Ok(self.paths().layer(id).is_dir())
    }

    async fn metadata(&self, id: &LayerId) -> Result<Vec<(String, String)>> {
        self.check_exists(id)?;
        Ok(vec![(
            "dir".to_string(),
            self.paths().layer(id).display().to_string(),
        )])
    }

    async fn cleanup(&self) -> Result<()> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let dir = self.home.join("mounted");
        run_blocking(move || {
            for e in std::fs::read_dir(&dir).map_err(|e| Error::os("readdir", &dir, e))? {
                let path = e.map_err(|e| Error::os("readdir", &dir, e))?.path();
                std::fs::remove_file(&path).map_err(|e| Error::os("unlink", &path, e))?;
            }
            Ok(())
        })
        .await
    }
}

strata_plugin_abi::export_driver!(NAME, VfsDriver, VfsDriver::open);

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_parse() {
        assert_eq!(Options::parse(&opts(&[])).unwrap().reflink, Reflink::Auto);
        assert_eq!(
            Options::parse(&opts(&[("reflink", "never")]))
                .unwrap()
                .reflink,
            Reflink::Never
        );
        for bad in [&[("reflink", "sometimes")][..], &[("size", "10G")][..]] {
            assert_eq!(
                Options::parse(&opts(bad)).unwrap_err().kind(),
                ErrorKind::Config
            );
        }
    }
}
