//! The drivers compiled into this strata, as factories.

use std::sync::Arc;

use strata_driver_api::{Driver, Error, Result};
use strata_driver_block::BlockDriver;
use strata_driver_dir::DirDriver;
use strata_driver_overlay::OverlayDriver;

use crate::config::Config;
use crate::registry::{DriverFactory, DriverSource};

/// Every built-in driver this build has.
pub(crate) fn factories() -> Vec<DriverFactory> {
    vec![overlay(), dir(), block()]
}

fn dir() -> DriverFactory {
    DriverFactory::new(
        strata_driver_dir::NAME,
        DriverSource::Builtin,
        |config| {
            strata_driver_dir::probe()?;
            // Whether this config can start (e.g. a mount mode this host lacks).
            trial_dir(config).map(|_| ())
        },
        |config| trial_dir(config).unwrap_or_default(),
        |home, config| {
            let driver = DirDriver::new(home, config.drivers.dir.clone())?;
            Ok(Arc::new(driver) as Arc<dyn Driver>)
        },
    )
}

/// Starts the dir driver over a throw-away home to learn whether it starts with this config
/// and what it can do, without touching the real root.
fn trial_dir(config: &Config) -> Result<strata_driver_api::Capabilities> {
    let tmp = tempfile::tempdir().map_err(|e| Error::io("create a temporary directory", e))?;
    let driver = DirDriver::new(
        tmp.path().join(strata_driver_dir::NAME),
        config.drivers.dir.clone(),
    )?;
    let caps = driver.caps();
    drop(driver);
    Ok(caps)
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
        |home, config| {
            let driver = OverlayDriver::new(home, config.drivers.overlay.clone())?;
            Ok(Arc::new(driver) as Arc<dyn Driver>)
        },
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

/// Starts the overlay driver over a throw-away home to learn whether it starts with this
/// config (mount options, mount API, d_type) and what it can do, without touching the real
/// root.
fn trial_overlay(config: &Config) -> Result<strata_driver_api::Capabilities> {
    let tmp = tempfile::tempdir().map_err(|e| Error::io("create a temporary directory", e))?;
    let driver = OverlayDriver::new(
        tmp.path().join(strata_driver_overlay::NAME),
        config.drivers.overlay.clone(),
    )?;
    let caps = driver.caps();
    drop(driver);
    Ok(caps)
}
