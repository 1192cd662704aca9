//! How to probe and build one driver: the [`DriverFactory`] type that built-in drivers,
//! plugins and an embedder's own drivers all take, so selection and the CLI treat them alike.
//!
//! This module knows no driver and imports none of its users: the `builtin` and `plugin`
//! modules make factories, `registry` holds them, and only `catalog` knows all of those.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use strata_driver_api::{Capabilities, Driver, Result};

use crate::config::Config;

/// Where a driver comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverSource {
    /// Compiled into this program.
    Builtin,
    /// Loaded from a shared library.
    Plugin,
}

type ProbeFn = dyn Fn(&Config) -> Result<Capabilities> + Send + Sync;
type BuildFn = dyn Fn(PathBuf, &Config) -> Result<Arc<dyn Driver>> + Send + Sync;

/// How to probe and build one driver.
#[derive(Clone)]
pub struct DriverFactory {
    name: String,
    source: DriverSource,
    probe: Arc<ProbeFn>,
    build: Arc<BuildFn>,
}

impl DriverFactory {
    /// A factory from its parts:
    /// - `probe` says whether the driver works on this host (its error message is the
    ///   reason shown to the user); it must not create anything;
    /// - `capabilities` reports the driver's static facts for this config, asked only when
    ///   `probe` succeeds;
    /// - `build` makes an instance whose home is `<root>/<name>/` (it may create it).
    pub fn new(
        name: impl Into<String>,
        source: DriverSource,
        probe: impl Fn(&Config) -> Result<()> + Send + Sync + 'static,
        capabilities: impl Fn(&Config) -> Capabilities + Send + Sync + 'static,
        build: impl Fn(PathBuf, &Config) -> Result<Arc<dyn Driver>> + Send + Sync + 'static,
    ) -> DriverFactory {
        DriverFactory::from_probe(
            name,
            source,
            move |config| {
                probe(config)?;
                Ok(capabilities(config))
            },
            build,
        )
    }

    /// A factory whose one `probe` answers both questions: whether the driver works on this
    /// host with this config (an error says why not) and, when it does, its capabilities.
    /// The probe must only read (never create, never mount); where a capability can only be
    /// learnt by starting the driver, it reports its best estimate. `build` is as in
    /// [`new`](DriverFactory::new).
    pub fn from_probe(
        name: impl Into<String>,
        source: DriverSource,
        probe: impl Fn(&Config) -> Result<Capabilities> + Send + Sync + 'static,
        build: impl Fn(PathBuf, &Config) -> Result<Arc<dyn Driver>> + Send + Sync + 'static,
    ) -> DriverFactory {
        DriverFactory {
            name: name.into(),
            source,
            probe: Arc::new(probe),
            build: Arc::new(build),
        }
    }

    /// The driver's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it comes from.
    pub fn source(&self) -> DriverSource {
        self.source
    }

    /// Whether it works on this host.
    pub fn probe(&self, config: &Config) -> Result<()> {
        self.assess(config).map(|_| ())
    }

    /// Its capabilities under `config`; none (the default) where it does not work.
    pub fn capabilities(&self, config: &Config) -> Capabilities {
        self.assess(config).unwrap_or_default()
    }

    /// Whether it works on this host and, if so, its capabilities under `config`: one probe
    /// for both (what `strata drivers` shows).
    pub fn assess(&self, config: &Config) -> Result<Capabilities> {
        let _span = tracing::debug_span!("probe", driver = %self.name).entered();
        let start = std::time::Instant::now();
        let outcome = (self.probe)(config);
        tracing::debug!(
            supported = outcome.is_ok(),
            elapsed = ?start.elapsed(),
            "probed"
        );
        outcome
    }

    /// Builds an instance over `home`.
    pub fn build(&self, home: PathBuf, config: &Config) -> Result<Arc<dyn Driver>> {
        let _span =
            tracing::debug_span!("start", driver = %self.name, home = %home.display()).entered();
        let start = std::time::Instant::now();
        let driver = (self.build)(home, config)?;
        tracing::debug!(elapsed = ?start.elapsed(), "driver started");
        Ok(driver)
    }
}

impl fmt::Debug for DriverFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverFactory")
            .field("name", &self.name)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}
