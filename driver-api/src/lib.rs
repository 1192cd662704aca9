//! The contract between strata and its storage drivers.
//!
//! A storage driver turns a chain of layers into something a container can use: a directory
//! holding the merged view of a layer and all its ancestors. This crate holds what a driver
//! author needs to implement one, and nothing a driver author must not depend on (no engine,
//! no CLI, no plugin loader, no compression):
//!
//! - [`Driver`], the one trait every backend implements, built-in or loaded from a plugin. Its
//!   shape follows Docker's graphdriver, which users and tools already know: refcounted
//!   `get`/`put`, `create`/`create_rw`/`remove`, and the diff family. Only the storage half is
//!   required; `diff`, `apply_diff`, `changes` and `diff_size` have default bodies that compute
//!   them naively by mounting and walking (see [`naive`]), exactly as Docker's NaiveDiffDriver.
//! - [`LayerId`], a validated id that is safe as a path component and as a mount option.
//! - [`Error`] with [`ErrorKind`]: callers and the conformance suite match on the kind, never on
//!   message text.
//! - [`Capabilities`], [`CreateOpts`], [`MountOpts`], [`LayerKind`], and [`Change`]s.
//! - [`random`]: random bytes from the kernel, for ids and unique names.
//! - [`stream`]: the bridge between the async [`TarStream`] at the trait and the one blocking
//!   task per operation that does the file work.
//!
//! The tar code (apply inside a layer root, deterministic write, whiteouts, tree comparison)
//! is `strata-archive`'s, which a driver uses directly; a loadable plugin is made with
//! `strata-plugin-abi`'s `export_driver!`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod driver;
mod error;
mod id;
pub mod naive;
pub mod random;
pub mod stream;
mod types;

/// The attribute that implements [`Driver`]'s async methods, re-exported so that a driver can
/// depend on this crate alone for the trait.
pub use async_trait::async_trait;
pub use driver::Driver;
pub use error::{Error, ErrorKind, Result};
pub use id::LayerId;
pub use strata_archive::{Change, ChangeKind};
pub use stream::TarStream;
pub use types::{Capabilities, CreateOpts, LayerKind, MountOpts};
