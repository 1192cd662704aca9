//! The drivers compiled into this strata, as factories.

use std::path::PathBuf;
use std::sync::Arc;

use strata_driver_api::{Capabilities, Driver, Result};
use strata_driver_block::BlockDriver;
use strata_driver_dir::DirDriver;
use strata_driver_overlay::OverlayDriver;

use crate::config::Config;
use crate::registry::{DriverFactory, DriverSource, trial_capabilities};

/// Every built-in driver this build has.
///
/// dir and overlay are probed by starting them over a throw-away home: whether they start
/// depends on the config (a mount mode or mount API this host lacks, mount options, d_type).
pub(crate) fn factories() -> Vec<DriverFactory> {
    vec![overlay(), dir(), block()]
}

fn dir() -> DriverFactory {
    DriverFactory::new(
        strata_driver_dir::NAME,
        DriverSource::Builtin,
        |config| {
            strata_driver_dir::probe()?;
            trial_dir(config).map(|_| ())
        },
        |config| trial_dir(config).unwrap_or_default(),
        start_dir,
    )
}

fn overlay() -> DriverFactory {
    DriverFactory::new(
        strata_driver_overlay::NAME,
        DriverSource::Builtin,
        |config| {
            strata_driver_overlay::probe()?;
            trial_overlay(config).map(|_| ())
        },
        |config| trial_overlay(config).unwrap_or_default(),
        start_overlay,
    )
}

/// The block driver: used only when named (never by `auto`, see `select`). Its capabilities do
/// not depend on the config, so no trial driver is made for them.
fn block() -> DriverFactory {
    DriverFactory::new(
        strata_driver_block::NAME,
        DriverSource::Builtin,
        |config| strata_driver_block::probe_config(&config.drivers.block),
        |_| strata_driver_block::capabilities(),
        |home, config| {
            let driver = BlockDriver::new(home, config.drivers.block.clone())?;
            Ok(Arc::new(driver) as Arc<dyn Driver>)
        },
    )
}

fn start_dir(home: PathBuf, config: &Config) -> Result<Arc<dyn Driver>> {
    let driver = DirDriver::new(home, config.drivers.dir.clone())?;
    Ok(Arc::new(driver) as Arc<dyn Driver>)
}

fn trial_dir(config: &Config) -> Result<Capabilities> {
    trial_capabilities(strata_driver_dir::NAME, |home| start_dir(home, config))
}

fn start_overlay(home: PathBuf, config: &Config) -> Result<Arc<dyn Driver>> {
    let driver = OverlayDriver::new(home, config.drivers.overlay.clone())?;
    Ok(Arc::new(driver) as Arc<dyn Driver>)
}

fn trial_overlay(config: &Config) -> Result<Capabilities> {
    trial_capabilities(strata_driver_overlay::NAME, |home| {
        start_overlay(home, config)
    })
}
