//! The `Driver` trait for [`OverlayDriver`]: thin async glue, each method one blocking task.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use strata_archive::{ApplyOptions, WhiteoutFormat, WhiteoutMode, WriteOptions};
use strata_driver_api::stream::run_blocking_with;
use strata_driver_api::{
    Capabilities, Change, CreateOpts, Driver, Error, LayerId, LayerKind, MountOpts, Result,
    TarStream, naive, stream,
};

use crate::{NAME, OverlayDriver, sys};

impl OverlayDriver {
    async fn make(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
        kind: LayerKind,
    ) -> Result<()> {
        opts.check_plain(NAME, kind.writable())?;
        let (id, parent) = (id.clone(), parent.cloned());
        run_blocking_with(&self.inner, move |i| i.create(&id, parent.as_ref(), kind)).await
    }

    /// Whether the native diff applies to the pair: native diff is safe here and `parent` is
    /// `id`'s direct parent (or both are base).
    async fn native_pair(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<bool> {
        if !self.inner.native_diff {
            return Ok(false);
        }
        let (id, parent) = (id.clone(), parent.cloned());
        run_blocking_with(&self.inner, move |i| {
            i.layout.ensure(&id)?;
            Ok(i.layout.ancestors(&id)?.first() == parent.as_ref())
        })
        .await
    }
}

/// The bytes of regular files under `dir`, each inode once: a layer's content size.
fn tree_size(dir: &Path) -> Result<u64> {
    let mut total = 0u64;
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::os("readdir", &d, e))? {
            let entry = entry.map_err(|e| Error::os("readdir", &d, e))?;
            let path = entry.path();
            let md = std::fs::symlink_metadata(&path).map_err(|e| Error::os("lstat", &path, e))?;
            if md.is_dir() {
                stack.push(path);
            } else if md.is_file() && (md.nlink() == 1 || seen.insert((md.dev(), md.ino()))) {
                total += md.len();
            }
        }
    }
    Ok(total)
}

#[async_trait]
impl Driver for OverlayDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        self.caps()
    }

    fn status(&self) -> Vec<(String, String)> {
        let i = &self.inner;
        vec![
            ("Root Dir".into(), i.layout.home().display().to_string()),
            ("Backing Filesystem".into(), i.backing.clone()),
            ("Supports d_type".into(), "true".into()),
            ("Native Overlay Diff".into(), i.native_diff.to_string()),
            ("Rootless (userxattr)".into(), i.user_xattr.to_string()),
            ("Mount API".into(), i.api.as_str().into()),
            ("Max Depth".into(), i.max_depth.to_string()),
            (
                "Mount Options".into(),
                format!("index=off{}", {
                    let p = i.opts.param_string();
                    if p.is_empty() { p } else { format!(",{p}") }
                }),
            ),
        ]
    }

    async fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        self.make(id, parent, opts, LayerKind::Image).await
    }

    async fn create_rw(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        self.make(id, parent, opts, LayerKind::Container).await
    }

    async fn remove(&self, id: &LayerId, force: bool) -> Result<()> {
        let id = id.clone();
        run_blocking_with(&self.inner, move |i| i.remove(&id, force)).await
    }

    async fn get(&self, id: &LayerId, opts: &MountOpts) -> Result<PathBuf> {
        let (id, opts) = (id.clone(), opts.clone());
        run_blocking_with(&self.inner, move |i| i.get(&id, &opts)).await
    }

    async fn put(&self, id: &LayerId) -> Result<()> {
        let id = id.clone();
        run_blocking_with(&self.inner, move |i| i.put(&id)).await
    }

    async fn is_mounted(&self, id: &LayerId) -> Result<bool> {
        let id = id.clone();
        run_blocking_with(&self.inner, move |i| i.is_mounted(&id)).await
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        let id = id.clone();
        run_blocking_with(&self.inner, move |i| i.layout.exists(&id)).await
    }

    async fn metadata(&self, id: &LayerId) -> Result<Vec<(String, String)>> {
        let id = id.clone();
        run_blocking_with(&self.inner, move |i| {
            let l = &i.layout;
            l.ensure(&id)?;
            let lowers: Vec<String> = l
                .ancestors(&id)?
                .iter()
                .map(|a| l.diff(a).display().to_string())
                .collect();
            let mut out = vec![
                ("UpperDir".into(), l.diff(&id).display().to_string()),
                ("WorkDir".into(), l.work(&id).display().to_string()),
                ("MergedDir".into(), l.merged(&id).display().to_string()),
            ];
            if !lowers.is_empty() {
                out.push(("LowerDir".into(), lowers.join(":")));
            }
            out.push(("Link".into(), l.lid(&id)?));
            out.push(("ReadOnly".into(), l.committed(&id).to_string()));
            Ok(out)
        })
        .await
    }

    async fn cleanup(&self) -> Result<()> {
        run_blocking_with(&self.inner, |i| i.cleanup()).await
    }

    /// Native for a layer and its direct parent: a tar of `diff/` with overlay whiteouts
    /// converted to OCI ones. Otherwise the naive diff.
    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        if !self.native_pair(id, parent).await? {
            return naive::diff(self, id, parent).await;
        }
        let diff = self.inner.layout.diff(id);
        let user_xattr = self.inner.user_xattr;
        Ok(stream::from_blocking(move |out| {
            let opts = WriteOptions {
                whiteouts: WhiteoutFormat::Overlay { user_xattr },
            };
            strata_archive::write_tar(&diff, out, &opts)?;
            Ok(())
        }))
    }

    /// Untars into `diff/`, whiteouts converted to overlay's form; `Busy` while the layer is
    /// mounted. Always native: what overlayfs itself would write (redirects, metacopy) does not
    /// matter to a tar written straight into the upper, and an image layer's view is
    /// read-only, so the naive apply through it could not work.
    async fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: TarStream,
    ) -> Result<u64> {
        let _ = parent; // the layer knows its parent
        let id = id.clone();
        let inner = Arc::clone(&self.inner);
        stream::read_blocking(diff, move |r| {
            inner.ensure_unmounted(&id)?;
            let dir = inner.layout.diff(&id);
            // Whiteouts with nothing below to hide are not written: in a directory overlayfs
            // does not merge they would show as entries that cannot be lstat'ed.
            let opts = ApplyOptions {
                lowers: Some(inner.lower_dirs(&id)?),
                ..ApplyOptions::new(WhiteoutMode::Overlay {
                    user_xattr: inner.user_xattr,
                })
            };
            strata_archive::apply_tar(&dir, r, &opts)?;
            // apply_tar leaves syncing to the caller: once for the layer.
            let fd = rustix::fs::open(
                &dir,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| sys::os("open", &dir, e))?;
            rustix::fs::syncfs(&fd).map_err(|e| sys::os("syncfs", &dir, e))?;
            tree_size(&dir)
        })
        .await
    }

    /// Always the naive changes, as moby's overlay2.
    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        naive::changes(self, id, parent).await
    }

    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        if !self.native_pair(id, parent).await? {
            return naive::diff_size(self, id, parent).await;
        }
        let id = id.clone();
        run_blocking_with(&self.inner, move |i| tree_size(&i.layout.diff(&id))).await
    }
}
