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
    with(home, config)
}

fn with(home: &Path, config: Config) -> strata_driver_api::Result<Arc<dyn Driver>> {
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

// metacopy=on (which implies redirect_dir=on): a tar of the upper is no diff, so diff and
// diff_size are the naive ones.
strata_conformance::suite!(overlay_naive_diff, |home: &Path| {
    let config = Config {
        mount_options: vec!["metacopy=on".into()],
        ..Config::default()
    };
    with(home, config)
});
