//! OCI layer archives for strata: applying a layer tar inside a layer root, writing a tree as
//! a deterministic layer tar, comparing two trees into changes, and the small file-system
//! plumbing those need (reading trees through directory descriptors, atomic state files).
//!
//! Written once for every driver and every plugin, and usable without them: it knows nothing
//! of drivers, layers ids or mounts. The rules come from the OCI image-spec (`layer.md`) and
//! from what Docker and containerd learned the hard way (see `research/layer-security.md`):
//!
//! - every name from a tar is resolved inside the layer root with `openat2(RESOLVE_IN_ROOT)`
//!   semantics (symlinks in the layer resolve as in a chroot), once per entry, never cached as a
//!   path across entries; leaf operations are `*at` calls on the resolved parent directory;
//! - a name that is not local after cleaning (`../x`, `a/../../x`), a whiteout that names a
//!   parent (`.wh..`), an oversized header: the archive is rejected with
//!   [`ErrorKind::InvalidArchive`];
//! - overlay's own xattrs never come in from a tar and never go out in one.
//!
//! What is here:
//!
//! - [`apply_tar`]: untar a layer into a directory, with whiteouts kept, applied, or turned into
//!   overlayfs's form ([`WhiteoutMode`]);
//! - [`write_tar`]: a tree as a layer tar, deterministic, whiteouts in OCI or overlayfs form;
//! - [`changes_dirs`], [`export_changes`], [`changes_size`]: the naive diff (Docker's
//!   `pkg/archive` `ChangesDirs`/`ExportChanges`), as [`Change`]s, a tar, a size;
//! - [`whiteout`]: the whiteout names and overlayfs's whiteout forms;
//! - [`fsutil`]: reading trees through directory file descriptors, never following a symlink;
//! - [`atomic`]: small files written so that a crash leaves the old contents or the new;
//! - `compression` (feature `compression`): sniffing and decoding gzip and zstd streams.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod apply;
pub mod atomic;
mod changes;
#[cfg(feature = "compression")]
pub mod compression;
mod entry;
mod error;
pub mod fsutil;
mod header;
pub mod whiteout;
mod write;

pub use apply::{ApplyOptions, ApplyStats, WhiteoutMode, apply_tar};
pub use changes::{Change, ChangeKind, changes_dirs, changes_size, export_changes};
#[cfg(feature = "compression")]
pub use compression::{Compression, decompress};
pub use error::{BoxError, Error, ErrorKind, Result, os_error_in, write_chain};
pub use write::{WhiteoutFormat, WriteOptions, write_tar};
