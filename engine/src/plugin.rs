//! `[[plugins]]`: the configured plugin libraries as driver factories.
//!
//! Loading and checking a library is `strata-plugin-abi`'s ([`load`]); this module turns the
//! config's entries into factories the registry can hold.

use std::path::Path;
use std::sync::Arc;

use strata_driver_api::{Driver, Error, ErrorKind, Result};
pub use strata_plugin_abi::host::{PluginDriver, PluginSpec};
pub use strata_plugin_abi::load;

use crate::config::{Config, PluginConfig};
use crate::factory::{DriverFactory, DriverSource};
use crate::trial;

/// The factory of a loaded plugin: `<root>/<name>/` is its home, `options` its
/// `[plugins.options]`.
pub fn factory(
    spec: PluginSpec,
    options: std::collections::BTreeMap<String, String>,
) -> DriverFactory {
    let spec = Arc::new(spec);
    let options = Arc::new(options);
    let (caps_spec, caps_options) = (spec.clone(), options.clone());
    DriverFactory::new(
        spec.name().to_string(),
        DriverSource::Plugin,
        |_| Ok(()),
        move |config: &Config| {
            let records = trial::records_dir(&config.root, caps_spec.name());
            trial::capabilities(caps_spec.name(), &records, |home| {
                let d = PluginDriver::new(&caps_spec, home, &caps_options)?;
                Ok(Arc::new(d) as Arc<dyn Driver>)
            })
            .unwrap_or_default()
        },
        move |home, _| {
            let d = PluginDriver::new(&spec, home, &options)?;
            Ok(Arc::new(d) as Arc<dyn Driver>)
        },
    )
}

/// Loads one `[[plugins]]` entry and checks that its name is free: not `taken` (built-in,
/// planned or another plugin's) and not `auto`.
pub fn load_entry(entry: &PluginConfig, taken: &[&str]) -> Result<PluginSpec> {
    let spec = load(&entry.path)?;
    let name = spec.name();
    if name == crate::config::AUTO || taken.contains(&name) {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "plugin {}: its driver name {name:?} is already taken by another driver",
                entry.path.display()
            ),
        ));
    }
    Ok(spec)
}

/// Whether two entries name the same library file.
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The configured plugins' entries, without duplicates of one file.
pub(crate) fn distinct(config: &Config) -> Vec<&PluginConfig> {
    let mut out: Vec<&PluginConfig> = Vec::new();
    for p in &config.plugins {
        if !out.iter().any(|q| same_file(&q.path, &p.path)) {
            out.push(p);
        }
    }
    out
}
