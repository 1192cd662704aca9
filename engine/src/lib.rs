//! The strata engine: a layer store over one pluggable storage driver.
//!
//! strata keeps container image and container layers with a [`Driver`] chosen from a TOML
//! [`Config`]. The engine is what every user of strata talks to, the `strata` CLI included
//! (each command is one call here):
//!
//! - [`Config`]: `strata.toml`, its search path, defaults and overrides;
//! - [`select`]: which driver, by name, by the data already under the root, or by priority;
//! - [`Registry`]: the drivers that can be chosen, built-in or brought by an embedder;
//! - [`plugin`]: the loader of third-party drivers (`[[plugins]]` shared libraries);
//! - [`Engine`]: layers with records (`<root>/<driver>-layers/<id>.json`), crash recovery,
//!   cross-process locks and mount refcounts (`<runroot>/<key of the root>/<driver>-layers/mounts.json`).
//!
//! ```no_run
//! # async fn demo() -> strata_driver_api::Result<()> {
//! use strata_engine::{Config, Engine, ImportRequest, Overrides};
//!
//! let engine = Engine::open(Config::load(&Overrides::default())?).await?;
//! let tar = tokio::fs::File::open("layer.tar.gz").await.map_err(|e| {
//!     strata_driver_api::Error::io("open layer.tar.gz", e)
//! })?;
//! let layer = engine.import(tar, ImportRequest::default()).await?;
//! let view = engine.mount(&layer.id).await?;
//! println!("{}", view.path().display());
//! view.unmount().await?;
//! # Ok(()) }
//! ```
//!
//! The engine never prints: errors carry an [`ErrorKind`], and
//! recovery problems it can live with go to `tracing`.

#![deny(missing_docs)]

mod builtin;
mod catalog;
pub mod config;
mod engine;
mod factory;
mod fill;
mod layers;
pub mod lock;
mod mount;
pub mod mounts;
pub mod plugin;
pub mod registry;
pub mod select;
pub mod size;
mod sniff;
pub mod store;
mod timefmt;
mod trial;

pub use config::{Config, Environment, Limits, Overrides};
pub use engine::{Engine, Info, LayerInfo, StandaloneDriver};
pub use layers::{CreateRequest, ImportRequest};
pub use mount::MountGuard;
pub use registry::{DriverFactory, DriverInfo, DriverSource, Registry};
pub use store::LayerRecord;
pub use strata_driver_api::{Driver, Error, ErrorKind, LayerId, LayerKind, Result};
pub use timefmt::{ago, format_rfc3339, parse_rfc3339};

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod testing;
