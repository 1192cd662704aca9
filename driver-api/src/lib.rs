//! The contract between strata and its storage drivers.
//!
//! A storage driver turns a chain of layers into something a container can use: a directory
//! holding the merged view of a layer and all its ancestors. This crate holds everything a
//! driver author needs, and nothing a driver author must not depend on (no engine, no CLI):
//!
//! - [`Driver`], the one trait every backend implements, built-in or loaded from a plugin. Its
//!   shape follows Docker's graphdriver, which users and tools already know: refcounted
//!   `get`/`put`, `create`/`create_rw`/`remove`, and the diff family. Only the storage half is
//!   required; `diff`, `apply_diff`, `changes` and `diff_size` have default bodies that compute
//!   them naively by mounting and walking (see [`naive`]), exactly as Docker's NaiveDiffDriver.
//! - [`LayerId`], a validated id that is safe as a path component and as a mount option.
//! - [`Error`] with [`ErrorKind`]: callers and the conformance suite match on the kind, never on
//!   message text.
//! - [`archive`]: the shared OCI layer tar code: reading (plain, gzip, zstd), applying inside a
//!   layer root with in-root path resolution, writing deterministic tars, and whiteout formats.
//! - [`naive`]: comparing two trees into [`Change`]s, exporting changes as a tar, measuring them.
//! - [`fsutil`]: reading trees through directory file descriptors, never following a symlink.
//! - [`abi`]: the plugin ABI (a versioned C ABI) and [`export_driver!`], which makes a
//!   loadable plugin of a driver in one line.
//! - [`stream`]: the bridge between the async [`TarStream`] at the trait and the one blocking
//!   task per operation that does the file work.

pub mod abi;
pub mod archive;
pub mod atomic;
mod driver;
mod error;
pub mod fsutil;
mod id;
pub mod naive;
pub mod size;
pub mod stream;
mod types;

/// The attribute that implements [`Driver`]'s async methods, re-exported so that a plugin can
/// depend on this crate alone.
pub use async_trait::async_trait;
pub use driver::Driver;
pub use error::{Error, ErrorKind, Result};
pub use id::LayerId;
pub use stream::TarStream;
/// `tracing`, re-exported so that a plugin logs through the same crate the ABI forwards from.
pub use tracing;
pub use types::{Capabilities, Change, ChangeKind, CreateOpts, MountOpts};
