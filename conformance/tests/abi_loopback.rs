//! The plugin ABI in-process: the dir driver wrapped in the guest shims (as `export_driver!`
//! wraps a plugin's driver) and driven through the host's `PluginDriver`, with no shared
//! library. The whole suite runs through every shim and sink of ABI 1.1 (its in-place tar
//! streams; abi_faults also drives the 1.0 pipes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use strata_driver_api::{Driver, Result};
use strata_driver_dir::{Config, DirDriver, MountMode};
use strata_plugin_abi::guest::Plugin;
use strata_plugin_abi::host::{PluginDriver, PluginSpec};

/// The dir driver (copy mount mode) as a plugin.
struct DirPlugin;

impl Plugin for DirPlugin {
    type Driver = DirDriver;
    const NAME: &'static str = "dir";
    const VERSION: &'static str = "0.0.0-loopback";
    const FORWARD_LOGS: bool = false;
    fn construct(home: PathBuf, _options: BTreeMap<String, String>) -> Result<DirDriver> {
        DirDriver::new(
            home,
            Config {
                mount: MountMode::Copy,
                ..Config::default()
            },
        )
    }
}

fn spec() -> &'static PluginSpec {
    static SPEC: OnceLock<PluginSpec> = OnceLock::new();
    SPEC.get_or_init(|| PluginSpec::in_process::<DirPlugin>().expect("a valid descriptor"))
}

strata_conformance::suite!(abi_loopback, |home: &Path| {
    let d = PluginDriver::new(spec(), home.to_path_buf(), &BTreeMap::new())?;
    Ok(Arc::new(d) as Arc<dyn Driver>)
});
