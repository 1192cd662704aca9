//! Mounting layers through the cross-process refcount table, and the guard that releases.

use std::path::{Path, PathBuf};

use strata_driver_api::{ErrorKind, LayerId, MountOpts, Result};

use crate::engine::Engine;
use crate::layers::usable;
use crate::mounts::{MountStep, UnmountStep};
use strata_driver_api::LayerKind;

/// A reference to a layer's merged view, released when dropped.
///
/// Prefer [`unmount`](MountGuard::unmount)`.await`, which reports errors. Since `Drop` cannot
/// wait, dropping a guard spawns the release on the current tokio runtime (or, outside any
/// runtime, runs it to completion on a short-lived one); a release that fails or never runs
/// (the runtime shut down first) leaves one reference recorded, which `strata umount` or a
/// later [`Engine::unmount`] releases. [`keep`](MountGuard::keep) hands the reference over
/// deliberately: the view stays mounted after the guard, and after the process.
#[derive(Debug)]
#[must_use = "dropping the guard releases the mount at once"]
pub struct MountGuard {
    engine: Engine,
    id: LayerId,
    path: PathBuf,
    armed: bool,
}

impl MountGuard {
    /// The merged view.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The layer.
    pub fn id(&self) -> &LayerId {
        &self.id
    }

    /// Releases the reference and reports how that went.
    pub async fn unmount(mut self) -> Result<()> {
        self.armed = false;
        self.engine.unmount(&self.id).await
    }

    /// Keeps the reference: the view stays mounted until an [`Engine::unmount`] of the layer.
    pub fn keep(mut self) -> PathBuf {
        self.armed = false;
        std::mem::take(&mut self.path)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let engine = self.engine.clone();
        let id = self.id.clone();
        let release = async move {
            if let Err(e) = engine.unmount(&id).await {
                tracing::warn!(layer = %id, error = %e, "releasing a dropped mount failed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(release);
            }
            Err(_) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(rt) => rt.block_on(release),
                    Err(e) => {
                        tracing::warn!(layer = %self.id, error = %e, "no runtime to release a dropped mount")
                    }
                }
            }
        }
    }
}

impl Engine {
    /// Mounts the layer's merged view (image layers read-only) and returns a guard over it.
    ///
    /// Refcounted across processes: if the view is mounted and referenced already, this takes
    /// one more reference without calling the driver. A missing layer is `NotFound`.
    #[tracing::instrument(name = "mount", level = "debug", skip_all, fields(layer = %id))]
    pub async fn mount(&self, id: &LayerId) -> Result<MountGuard> {
        let _layers = self.layers_lock(false).await?;
        let records = self.load_records().await?;
        let record = usable(&records, id)?;
        let _m = self.mounts_lock().await?;
        let mut table = self.load_mounts().await?;
        let driver = &self.inner.driver;
        let mut recorded = table.count(id);
        if let Some(entry) = table.get(id) {
            // A path from the runroot is trusted only inside the driver's home: the table is a
            // file anyone with access to the runroot could have edited.
            if recorded > 0 && !entry.path.starts_with(&self.inner.home) {
                tracing::warn!(path = %entry.path.display(), "the mount table names a view outside the driver's home: ignored");
                table.forget(id);
                recorded = 0;
            }
        }
        let still_mounted =
            recorded > 0 && self.call("is_mounted", id, driver.is_mounted(id)).await?;
        if recorded > 0 && !still_mounted {
            tracing::debug!(
                refs = recorded,
                "the recorded view is gone: mounting afresh"
            );
        }
        let step = table.mount_step(id, still_mounted);
        let path = match &step {
            MountStep::Reuse(path) => path.clone(),
            MountStep::Get => {
                // The intent first: a process killed between the driver's get and the save
                // below leaves a view that nobody holds, which recovery then releases.
                table.getting(id);
                self.save_mounts(table.clone()).await?;
                let opts = MountOpts {
                    read_only: record.kind == LayerKind::Image,
                    ..MountOpts::default()
                };
                match self.call("get", id, driver.get(id, &opts)).await {
                    Ok(path) => path,
                    Err(e) => {
                        table.forget(id);
                        if let Err(save) = self.save_mounts(table).await {
                            tracing::warn!(layer = %id, error = %format_args!("{save:#}"), "could not drop the intent of a failed mount; the next start does");
                        }
                        return Err(e);
                    }
                }
            }
        };
        table.mounted(id, path.clone(), &step);
        let refs = table.count(id);
        if let Err(e) = self.save_mounts(table).await {
            if step == MountStep::Get {
                if let Err(put) = self.call("put", id, driver.put(id)).await {
                    tracing::warn!(layer = %id, error = %put, "could not undo a mount");
                }
            }
            return Err(e);
        }
        tracing::debug!(
            refs,
            reused = step != MountStep::Get,
            path = %path.display(),
            "view referenced"
        );
        Ok(MountGuard {
            engine: self.clone(),
            id: id.clone(),
            path,
            armed: true,
        })
    }

    /// Releases one reference on the layer's view; the last one unmounts it. A layer with
    /// no recorded reference is unmounted if the driver still has it mounted (left from a
    /// lost runroot), else this does nothing. A missing layer is `NotFound`.
    #[tracing::instrument(name = "unmount", level = "debug", skip_all, fields(layer = %id))]
    pub async fn unmount(&self, id: &LayerId) -> Result<()> {
        let _layers = self.layers_lock(false).await?;
        let records = self.load_records().await?;
        usable(&records, id)?;
        let _m = self.mounts_lock().await?;
        let mut table = self.load_mounts().await?;
        let driver = &self.inner.driver;
        match table.unmount_step(id) {
            UnmountStep::Decremented => {
                let refs = table.count(id);
                self.save_mounts(table).await?;
                tracing::debug!(refs, "reference released; the view stays mounted");
                Ok(())
            }
            UnmountStep::Put => {
                match self.call("put", id, driver.put(id)).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                table.forget(id);
                self.save_mounts(table).await?;
                tracing::debug!(refs = 0, "last reference released; the view is unmounted");
                Ok(())
            }
            UnmountStep::NotRecorded => {
                if self.call("is_mounted", id, driver.is_mounted(id)).await? {
                    tracing::debug!("no reference recorded, but the driver has it mounted");
                    self.call("put", id, driver.put(id)).await?;
                }
                Ok(())
            }
        }
    }
}
