//! The `Driver` trait.

use std::path::PathBuf;

use async_trait::async_trait;

use crate::{Capabilities, Change, CreateOpts, LayerId, MountOpts, Result, TarStream, naive};

/// A storage backend for container layers.
///
/// A driver keeps layers under its own home directory (`<root>/<driver-name>/`, given to its
/// constructor) and nothing else. Each layer has at most one parent; a layer's *merged view* is
/// its own changes over its parent's merged view. The engine above keeps the records (names,
/// digests, which layer is whose parent for removal checks), serialises writers and holds
/// mount refcounts across processes; a driver answers for its own on-disk state and for
/// in-process refcounts.
///
/// The trait is object-safe and `Send + Sync`; the engine holds it as `Arc<dyn Driver>`. File
/// work happens in one blocking task per operation (`tokio::task::spawn_blocking`), never as one
/// async call per file.
///
/// The four diff methods have default bodies: the naive ones of [`naive`], built only on `get`
/// and `put`, exactly as Docker's NaiveDiffDriver. A driver with a native diff overrides all four
/// and sets [`Capabilities::native_diff`].
///
/// Every method that takes a [`LayerId`] gets an already-validated id. A missing layer is
/// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound).
#[async_trait]
pub trait Driver: Send + Sync + std::fmt::Debug {
    /// The driver's name, as used in configs and as its home directory's name.
    fn name(&self) -> &str;

    /// Static facts about this driver on this host.
    fn capabilities(&self) -> Capabilities;

    /// Ordered key/value pairs for `strata info`: backing filesystem, mount mode, and so on.
    fn status(&self) -> Vec<(String, String)>;

    /// Creates an image layer, empty until filled by [`apply_diff`](Driver::apply_diff).
    ///
    /// The new layer's merged view equals its parent's (or is an empty 0755 root directory
    /// owned by 0:0 for a base layer). An existing `id` is `AlreadyExists` and changes nothing;
    /// a missing parent is `ParentNotFound`. `opts.size` on an image layer is `InvalidInput`
    /// (as Docker: size applies to writable layers only). On error nothing is left behind.
    async fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts)
    -> Result<()>;

    /// Creates a writable container layer; otherwise the same contract as
    /// [`create`](Driver::create). `opts.size` sets a quota where [`Capabilities::quota`], and is
    /// `NotSupported` elsewhere.
    async fn create_rw(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()>;

    /// Removes the layer and all its data.
    ///
    /// A mounted layer is `Busy` unless `force`, which unmounts it first. A missing layer is
    /// `NotFound`. The driver does not check for children: the engine does.
    async fn remove(&self, id: &LayerId, force: bool) -> Result<()>;

    /// Returns the absolute path of the layer's merged view, mounting it if needed.
    ///
    /// Refcounted: the first `get` mounts, each `get` needs one [`put`](Driver::put), the last
    /// `put` unmounts. The count survives a restart of the process: the first `get` or `put` of
    /// a layer that is already mounted (seen in the mount table or the driver's own state)
    /// adopts the mount with a count of one.
    async fn get(&self, id: &LayerId, opts: &MountOpts) -> Result<PathBuf>;

    /// Releases one reference taken by [`get`](Driver::get); the last one unmounts.
    ///
    /// `put` of a layer that is not mounted is a no-op (`Ok`), so a crashed caller can always
    /// release.
    async fn put(&self, id: &LayerId) -> Result<()>;

    /// Whether the layer's merged view is set up right now, as the system sees it (the mount
    /// table, a live FUSE server, a materialised copy), not as this instance's counter says.
    async fn is_mounted(&self, id: &LayerId) -> Result<bool>;

    /// Whether the layer exists.
    async fn exists(&self, id: &LayerId) -> Result<bool>;

    /// Driver-specific facts about one layer for `inspect` (its paths, its mount spec).
    async fn metadata(&self, id: &LayerId) -> Result<Vec<(String, String)>>;

    /// Unmounts everything this driver mounted; called on shutdown.
    async fn cleanup(&self) -> Result<()>;

    /// The changes from `parent` to `id` as an uncompressed OCI layer tar (AUFS whiteouts).
    ///
    /// With `parent` `None` the tar holds the layer's whole merged view. The stream fails with
    /// an error (never a short tar that looks whole) if producing it fails midway.
    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        naive::diff(self, id, parent).await
    }

    /// Applies an uncompressed OCI layer tar to layer `id` (whose parent is `parent`) and
    /// returns the size of the layer's content: the bytes of regular files it holds, hardlinked
    /// files counted once, which equals [`diff_size`](Driver::diff_size) afterwards.
    ///
    /// A hostile or malformed tar is `InvalidArchive`; nothing is written outside the layer,
    /// and the caller removes the partly-applied layer.
    async fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: TarStream,
    ) -> Result<u64> {
        naive::apply_diff(self, id, parent, diff).await
    }

    /// The paths that differ between `parent` and `id`, sorted by path.
    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        naive::changes(self, id, parent).await
    }

    /// The size of the changes from `parent` to `id`: bytes of added and modified regular
    /// files, hardlinks counted once.
    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        naive::diff_size(self, id, parent).await
    }
}
