//! What this strata can run: the registry of its built-in drivers and of the config's
//! plugins.
//!
//! The one module that knows both where factories come from (`builtin`, `plugin`) and where
//! they go (`registry`); those three know only the factory types, so no module imports one
//! that imports it back.

use std::path::Path;

use strata_driver_api::Result;

use crate::config::Config;
use crate::factory::DriverSource;
use crate::registry::{DriverInfo, PLANNED, Registry};

impl Registry {
    /// The drivers built into this strata.
    pub fn builtin() -> Registry {
        let mut registry = Registry::empty();
        for factory in crate::builtin::factories() {
            registry
                .register(factory)
                .expect("built-in driver names are distinct");
        }
        registry
    }

    /// Loads the config's `[[plugins]]` and registers their drivers. A library named twice is
    /// loaded once. With `strict`, the first plugin that cannot be loaded (or whose name is
    /// taken) is the error; without, it is kept as an unsupported entry of
    /// [`infos`](Registry::infos) with the reason.
    pub fn add_plugins(&mut self, config: &Config, strict: bool) -> Result<()> {
        for entry in crate::plugin::distinct(config) {
            let mut taken: Vec<&str> = self.names();
            taken.extend(PLANNED);
            let loaded = crate::plugin::load_entry(entry, &taken).and_then(|spec| {
                self.register(crate::plugin::factory(spec, entry.options.clone()))
            });
            match loaded {
                Ok(()) => {
                    tracing::debug!(plugin = %entry.path.display(), "plugin loaded");
                }
                Err(e) if strict => return Err(e),
                Err(e) => self.note_failed(DriverInfo {
                    name: plugin_label(&entry.path),
                    source: DriverSource::Plugin,
                    supported: false,
                    reason: Some(e.to_string()),
                    capabilities: None,
                }),
            }
        }
        Ok(())
    }
}

/// A plugin's label before it is loaded (its real name comes from its descriptor): the file
/// name without `lib` and the extension.
fn plugin_label(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    stem.strip_prefix("lib").map(str::to_string).unwrap_or(stem)
}
