//! The `Driver` trait for [`DirDriver`]: thin async glue, each method one blocking task.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use strata_archive::{ApplyOptions, WhiteoutFormat, WhiteoutMode, WriteOptions};
use strata_driver_api::stream::run_blocking_with;
use strata_driver_api::{
    Capabilities, Change, CreateOpts, Driver, Error, ErrorKind, LayerId, LayerKind, MountOpts,
    Result, TarStream, naive, stream,
};

use crate::{DirDriver, NAME, changes, mounts, sys};

impl DirDriver {
    async fn make(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
        kind: LayerKind,
    ) -> Result<()> {
        opts.check_plain(NAME, kind.writable())?;
        let (id, parent) = (id.clone(), parent.cloned());
        run_blocking_with(&self.inner, move |i| {
            i.mounts.creating(&id, parent.as_ref(), || {
                i.layout.create_layer(&id, parent.as_ref(), kind)
            })
        })
        .await
    }

    /// Whether `parent` is the direct parent of `id` (or both are base): the native diff.
    async fn is_direct(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<bool> {
        let (id, parent) = (id.clone(), parent.cloned());
        run_blocking_with(&self.inner, move |i| {
            Ok(i.layout.ancestry(&id)?.first() == parent.as_ref())
        })
        .await
    }
}

#[async_trait]
impl Driver for DirDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        self.caps()
    }

    fn status(&self) -> Vec<(String, String)> {
        let home = self.inner.layout.home();
        let backing =
            strata_driver_util::fsname::of(home).unwrap_or_else(|e| format!("unknown ({e:#})"));
        vec![
            ("Root Dir".into(), home.display().to_string()),
            ("Mount Mode".into(), self.mount_mode_status()),
            ("Backing Filesystem".into(), backing),
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
        run_blocking_with(&self.inner, move |i| i.mounts.remove(&i.layout, &id, force)).await
    }

    /// Mounts the view on the first get: a FUSE mount (fuse mode; `opts.read_only` views
    /// refuse writes with EROFS) or a materialised copy (copy mode; `opts.read_only` views are
    /// never folded back, though nothing stops a write to them). Mount options are not
    /// offered: any is `NotSupported`.
    async fn get(&self, id: &LayerId, opts: &MountOpts) -> Result<PathBuf> {
        if let Some(o) = opts.options.first() {
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!(
                    "dir driver ({} mode): mount option {o:?} cannot apply",
                    self.inner.mode.as_str()
                ),
            ));
        }
        let (id, ro) = (id.clone(), opts.read_only);
        run_blocking_with(&self.inner, move |i| i.mounts.get(&i.layout, &id, ro)).await
    }

    async fn put(&self, id: &LayerId) -> Result<()> {
        let id = id.clone();
        run_blocking_with(&self.inner, move |i| i.mounts.put(&i.layout, &id)).await
    }

    async fn is_mounted(&self, id: &LayerId) -> Result<bool> {
        let id = id.clone();
        run_blocking_with(&self.inner, move |i| {
            if !i.layout.exists(&id)? {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("layer {id} not found"),
                ));
            }
            mounts::is_mounted(&i.layout, &id)
        })
        .await
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        let id = id.clone();
        run_blocking_with(&self.inner, move |i| i.layout.exists(&id)).await
    }

    async fn metadata(&self, id: &LayerId) -> Result<Vec<(String, String)>> {
        let id = id.clone();
        run_blocking_with(&self.inner, move |i| {
            let l = &i.layout;
            let ancestry = l.ancestry(&id)?;
            let layers: Vec<&str> = ancestry.iter().map(LayerId::as_str).collect();
            Ok(vec![
                ("DiffDir".into(), l.diff(&id).display().to_string()),
                ("MountDir".into(), l.mnt(&id).display().to_string()),
                ("Layers".into(), layers.join(":")),
                ("Kind".into(), l.kind(&id)?.as_str().into()),
            ])
        })
        .await
    }

    async fn cleanup(&self) -> Result<()> {
        run_blocking_with(&self.inner, |i| i.mounts.cleanup(&i.layout)).await
    }

    /// Native when `parent` is the direct parent (or `None` for a base layer): a tar of
    /// `diff/<id>` as it is, after folding a mounted writable view's changes so far. Otherwise
    /// the naive diff.
    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        if !self.is_direct(id, parent).await? {
            return naive::diff(self, id, parent).await;
        }
        let id = id.clone();
        let diff = run_blocking_with(&self.inner, move |i| {
            i.mounts
                .with_synced(&i.layout, &id, || Ok(i.layout.diff(&id)))
        })
        .await?;
        Ok(stream::from_blocking(move |out| {
            let opts = WriteOptions {
                whiteouts: WhiteoutFormat::Aufs,
            };
            strata_archive::write_tar(&diff, out, &opts)?;
            Ok(())
        }))
    }

    /// Untars into `diff/<id>` with whiteouts kept as files; `Busy` while the layer is mounted.
    /// `parent` is not needed: the layer knows its parent.
    async fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: TarStream,
    ) -> Result<u64> {
        let _ = parent;
        let id = id.clone();
        let inner = Arc::clone(&self.inner);
        stream::read_blocking(diff, move |r| {
            let i = &inner;
            i.mounts.while_unmounted(&i.layout, &id, || {
                let dir = i.layout.diff(&id);
                strata_archive::apply_tar(&dir, r, &ApplyOptions::new(WhiteoutMode::Keep))?;
                // apply_tar leaves syncing to the caller: once for the layer.
                sys::syncfs(&dir)?;
                // The walk, not the apply's count, so that the answer is diff_size's by
                // construction (a tar may write a path twice).
                changes::diff_size(&dir)
            })
        })
        .await
    }

    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        if !self.is_direct(id, parent).await? {
            return naive::changes(self, id, parent).await;
        }
        let id = id.clone();
        run_blocking_with(&self.inner, move |i| {
            i.mounts.with_synced(&i.layout, &id, || {
                changes::changes(&i.layout.branches(&id)?)
            })
        })
        .await
    }

    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        if !self.is_direct(id, parent).await? {
            return naive::diff_size(self, id, parent).await;
        }
        let id = id.clone();
        run_blocking_with(&self.inner, move |i| {
            i.mounts
                .with_synced(&i.layout, &id, || changes::diff_size(&i.layout.diff(&id)))
        })
        .await
    }
}
