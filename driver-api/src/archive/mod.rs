//! OCI layer archives: reading, applying inside a layer root, writing.
//!
//! Written once for every driver and every plugin. The rules come from the OCI image-spec
//! (`layer.md`) and from what Docker and containerd learned the hard way
//! (see `research/layer-security.md`):
//!
//! - every name from a tar is resolved inside the layer root with `openat2(RESOLVE_IN_ROOT)`
//!   semantics (symlinks in the layer resolve as in a chroot), once per entry, never cached as a
//!   path across entries; leaf operations are `*at` calls on the resolved parent directory;
//! - a name that is not local after cleaning (`../x`, `a/../../x`), a whiteout that names a
//!   parent (`.wh..`), an oversized header: the archive is rejected with
//!   [`ErrorKind::InvalidArchive`](crate::ErrorKind::InvalidArchive);
//! - overlay's own xattrs never come in from a tar and never go out in one.

pub mod compression;
pub mod whiteout;

mod apply;
pub(crate) mod entry;
pub(crate) mod header;
pub(crate) mod write;

pub use apply::{ApplyOptions, ApplyStats, WhiteoutMode, apply_tar};
pub use compression::{Compression, decompress};
pub use write::{WhiteoutFormat, WriteOptions, write_tar};
