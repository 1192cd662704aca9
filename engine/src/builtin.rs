//! The drivers compiled into this strata, as factories.
//!
//! Each is probed by its crate's `probe_config`, which only reads (it stats devices, finds
//! programs, reads module parameters and the file system of the would-be home under the
//! root): no throw-away driver is started, nothing is created or mounted anywhere. What only a
//! real start can learn (overlay's native-diff test mount) is the probe's best estimate.

use std::path::PathBuf;
use std::sync::Arc;

use strata_driver_api::Driver;
use strata_driver_block::BlockDriver;
use strata_driver_dir::DirDriver;
use strata_driver_overlay::OverlayDriver;

use crate::config::Config;
use crate::factory::{DriverFactory, DriverSource};

/// Every built-in driver this build has.
pub(crate) fn factories() -> Vec<DriverFactory> {
    vec![overlay(), dir(), block()]
}

/// The home `config` gives the driver `name`: `<root>/<name>`.
fn home(config: &Config, name: &str) -> PathBuf {
    config.root.join(name)
}

fn overlay() -> DriverFactory {
    let name = strata_driver_overlay::NAME;
    DriverFactory::from_probe(
        name,
        DriverSource::Builtin,
        move |config| {
            strata_driver_overlay::probe_config(&home(config, name), &config.drivers.overlay)
        },
        |home, config| {
            let driver = OverlayDriver::new(home, config.drivers.overlay.clone())?;
            Ok(Arc::new(driver) as Arc<dyn Driver>)
        },
    )
}

fn dir() -> DriverFactory {
    let name = strata_driver_dir::NAME;
    DriverFactory::from_probe(
        name,
        DriverSource::Builtin,
        move |config| strata_driver_dir::probe_config(&home(config, name), &config.drivers.dir),
        |home, config| {
            let driver = DirDriver::new(home, config.drivers.dir.clone())?;
            Ok(Arc::new(driver) as Arc<dyn Driver>)
        },
    )
}

/// The block driver: used only when named (never by `auto`, see `select`).
fn block() -> DriverFactory {
    let name = strata_driver_block::NAME;
    DriverFactory::from_probe(
        name,
        DriverSource::Builtin,
        move |config| strata_driver_block::probe_config(&home(config, name), &config.drivers.block),
        |home, config| {
            let driver = BlockDriver::new(home, config.drivers.block.clone())?;
            Ok(Arc::new(driver) as Arc<dyn Driver>)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Environment;

    /// The probes make nothing under the root (nor anywhere: they have no temporary home).
    #[test]
    fn probes_create_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = Config::defaults(&Environment {
            uid: 0,
            ..Environment::default()
        })
        .unwrap();
        config.root = tmp.path().join("root");
        config.runroot = tmp.path().join("run");
        for factory in factories() {
            // Supported or not, whatever this host is: only that nothing appears matters.
            let _ = factory.assess(&config);
        }
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "a probe made {left:?}");
        assert!(!config.root.exists());
    }
}
