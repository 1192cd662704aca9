//! The conformance suite against the overlay driver, with each mount API it has.

use std::path::Path;
use std::sync::Arc;

use strata_driver_api::Driver;
use strata_driver_overlay::{Config, MountApi, OverlayDriver};

fn make(home: &Path, mount_api: MountApi) -> strata_driver_api::Result<Arc<dyn Driver>> {
    let config = Config {
        mount_api,
        ..Config::default()
    };
    Ok(Arc::new(OverlayDriver::new(home.to_path_buf(), config)?) as Arc<dyn Driver>)
}

// `fsopen`/`fsconfig("lowerdir+")`: chains of 500 (deep_layer_read_max reads 499 layers on a
// base).
strata_conformance::suite!(overlay_fsconfig, |home: &Path| make(
    home,
    MountApi::Fsconfig
));

// The classic mount(2) fallback, with its page-bound depth.
strata_conformance::suite!(overlay_mount2, |home: &Path| make(home, MountApi::Mount2));
