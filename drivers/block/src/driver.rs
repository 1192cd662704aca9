//! The `Driver` trait for [`BlockDriver`]: thin async glue, each method one blocking task.
//! `diff`, `changes` and `diff_size` are the trait's naive defaults.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use strata_driver_api::stream::run_blocking_with;
use strata_driver_api::{
    Capabilities, CreateOpts, Driver, LayerId, LayerKind, MountOpts, Result, TarStream, stream,
};

use crate::{BlockDriver, NAME, image};

impl BlockDriver {
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
            i.create(&id, parent.as_ref(), kind).map(|_| ())
        })
        .await
    }
}

#[async_trait]
impl Driver for BlockDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        self.caps()
    }

    fn status(&self) -> Vec<(String, String)> {
        let i = &self.inner;
        let clone = if i.reflink {
            image::CloneMethod::Reflink
        } else {
            image::CloneMethod::SparseCopy
        };
        vec![
            ("Root Dir".into(), i.layout.home().display().to_string()),
            ("Filesystem".into(), i.fs.as_str().into()),
            ("Image Size".into(), i.size.to_string()),
            ("Clone".into(), clone.as_str().into()),
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

    /// Image layers always mount read-only. The first get decides the mode and options; later
    /// gets share that mount.
    async fn get(&self, id: &LayerId, opts: &MountOpts) -> Result<PathBuf> {
        let (id, ro, extra) = (id.clone(), opts.read_only, opts.options.clone());
        run_blocking_with(&self.inner, move |i| i.get(&id, ro, &extra)).await
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

    /// The mount spec (`Image`, `FsType`, `ReadOnly`, `Options`), and `Kind`, `Parent`,
    /// `MountDir`, `Size` (apparent bytes) and `Allocated` (bytes on disk).
    async fn metadata(&self, id: &LayerId) -> Result<Vec<(String, String)>> {
        let id = id.clone();
        run_blocking_with(&self.inner, move |i| {
            let meta = i.layout.meta(&id)?;
            let spec = i.mount_spec(&id)?;
            Ok(vec![
                ("Image".into(), spec.image.display().to_string()),
                ("FsType".into(), spec.fs_type),
                ("ReadOnly".into(), spec.read_only.to_string()),
                ("Options".into(), spec.options.join(",")),
                ("Kind".into(), meta.kind.as_str().into()),
                (
                    "Parent".into(),
                    meta.parent.map(|p| p.to_string()).unwrap_or_default(),
                ),
                ("MountDir".into(), i.layout.mnt(&id).display().to_string()),
                ("Size".into(), image::apparent(&spec.image)?.to_string()),
                (
                    "Allocated".into(),
                    image::allocated(&spec.image)?.to_string(),
                ),
            ])
        })
        .await
    }

    async fn cleanup(&self) -> Result<()> {
        run_blocking_with(&self.inner, |i| i.cleanup()).await
    }

    /// Mounts the image read-write, untars with whiteouts applied (the image holds the parent's
    /// files already), syncs the filesystem and unmounts. `Busy` while the layer is mounted.
    async fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: TarStream,
    ) -> Result<u64> {
        let _ = parent;
        let id = id.clone();
        let inner = Arc::clone(&self.inner);
        stream::read_blocking(diff, move |r| inner.apply(&id, r)).await
    }
}
