//! The conformance suite against the dir driver, in each mount mode it has.

use std::path::Path;
use std::sync::Arc;

use strata_driver_api::Driver;
use strata_driver_dir::{Config, DirDriver, MountMode};

strata_conformance::suite!(dir_copy, |home: &Path| {
    let config = Config {
        mount: MountMode::Copy,
        ..Config::default()
    };
    Ok(Arc::new(DirDriver::new(home.to_path_buf(), config)?) as Arc<dyn Driver>)
});

// The FUSE mount mode: every case is skipped ("driver not supported here") until the driver
// implements it, and runs from then on.
strata_conformance::suite!(dir_fuse, |home: &Path| {
    let config = Config {
        mount: MountMode::Fuse,
        ..Config::default()
    };
    Ok(Arc::new(DirDriver::new(home.to_path_buf(), config)?) as Arc<dyn Driver>)
});
