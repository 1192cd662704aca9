//! The drivers this strata can run, and how to build one.
//!
//! A [`DriverFactory`] knows a driver's name and where it comes from, can say whether it works
//! on this host (`probe`, cheap and without side effects), what it can do (`capabilities`),
//! and builds an instance over its home directory. Built-in drivers, plugins (loaded by
//! [`crate::plugin`]) and drivers an embedding program brings along all take the same shape, so
//! selection and the CLI treat them alike.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use strata_driver_api::{Capabilities, Driver, Error, ErrorKind, Result};

use crate::config::Config;

/// Drivers strata knows of that this build does not have yet: named in errors and in
/// `strata drivers`, and recognised as prior data under a root.
pub const PLANNED: &[&str] = &[];

/// Starts a driver over a throw-away home (named `name` in a temporary directory) and returns
/// its capabilities: how a factory learns whether a config starts and what the driver can do,
/// without touching the real root.
pub(crate) fn trial_capabilities(
    name: &str,
    start: impl FnOnce(PathBuf) -> Result<Arc<dyn Driver>>,
) -> Result<Capabilities> {
    let tmp = tempfile::tempdir().map_err(|e| Error::io("create a temporary directory", e))?;
    let driver = start(tmp.path().join(name))?;
    let caps = driver.capabilities();
    drop(driver);
    Ok(caps)
}

/// Where a driver comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverSource {
    /// Compiled into this program.
    Builtin,
    /// Loaded from a shared library.
    Plugin,
}

type ProbeFn = dyn Fn(&Config) -> Result<()> + Send + Sync;
type CapabilitiesFn = dyn Fn(&Config) -> Capabilities + Send + Sync;
type BuildFn = dyn Fn(PathBuf, &Config) -> Result<Arc<dyn Driver>> + Send + Sync;

/// How to probe and build one driver.
#[derive(Clone)]
pub struct DriverFactory {
    name: String,
    source: DriverSource,
    probe: Arc<ProbeFn>,
    capabilities: Arc<CapabilitiesFn>,
    build: Arc<BuildFn>,
}

impl DriverFactory {
    /// A factory from its parts:
    /// - `probe` says whether the driver works on this host (its error message is the
    ///   reason shown to the user); it must not create anything;
    /// - `capabilities` reports the driver's static facts for this config;
    /// - `build` makes an instance whose home is `<root>/<name>/` (it may create it).
    pub fn new(
        name: impl Into<String>,
        source: DriverSource,
        probe: impl Fn(&Config) -> Result<()> + Send + Sync + 'static,
        capabilities: impl Fn(&Config) -> Capabilities + Send + Sync + 'static,
        build: impl Fn(PathBuf, &Config) -> Result<Arc<dyn Driver>> + Send + Sync + 'static,
    ) -> DriverFactory {
        DriverFactory {
            name: name.into(),
            source,
            probe: Arc::new(probe),
            capabilities: Arc::new(capabilities),
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
        (self.probe)(config)
    }

    /// Its capabilities under `config`.
    pub fn capabilities(&self, config: &Config) -> Capabilities {
        (self.capabilities)(config)
    }

    /// Builds an instance over `home`.
    pub fn build(&self, home: PathBuf, config: &Config) -> Result<Arc<dyn Driver>> {
        (self.build)(home, config)
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

/// One line of `strata drivers`; its JSON shape is a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverInfo {
    /// The driver's name.
    pub name: String,
    /// `"builtin"` or `"plugin"`.
    pub source: DriverSource,
    /// Whether it works on this host.
    pub supported: bool,
    /// Why not, when it does not.
    pub reason: Option<String>,
    /// Its capabilities, when it is supported.
    pub capabilities: Option<Capabilities>,
}

/// The set of drivers an engine chooses from.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    factories: Vec<DriverFactory>,
    /// Configured plugins that could not be loaded, for `strata drivers`.
    failed: Vec<DriverInfo>,
}

impl Registry {
    /// A registry with nothing in it (for embedders that bring their own drivers).
    pub fn empty() -> Registry {
        Registry::default()
    }

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

    /// Adds a driver. A name already registered is `AlreadyExists`.
    pub fn register(&mut self, factory: DriverFactory) -> Result<()> {
        if self.get(factory.name()).is_some() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("driver {} is registered twice", factory.name()),
            ));
        }
        self.factories.push(factory);
        Ok(())
    }

    /// The factory of the driver called `name`.
    pub fn get(&self, name: &str) -> Option<&DriverFactory> {
        self.factories.iter().find(|f| f.name() == name)
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.factories.iter().map(|f| f.name()).collect()
    }

    /// Loads the config's `[[plugins]]` and registers their drivers. A library named twice is
    /// loaded once. With `strict`, the first plugin that cannot be loaded (or whose name is
    /// taken) is the error; without, it is kept as an unsupported entry of
    /// [`infos`](Registry::infos) with the reason.
    pub fn add_plugins(&mut self, config: &Config, strict: bool) -> Result<()> {
        for entry in crate::plugin::distinct(config) {
            let mut taken: Vec<&str> = self.names();
            taken.extend(PLANNED);
            match crate::plugin::load_entry(entry, &taken) {
                Ok(spec) => {
                    let factory = crate::plugin::factory(spec, entry.options.clone());
                    self.factories.push(factory);
                }
                Err(e) if strict => return Err(e),
                Err(e) => self.failed.push(DriverInfo {
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

    /// Every driver this strata knows of, for `strata drivers`: the registered ones (plugins
    /// included) with their probe result and capabilities, then the planned ones, which this
    /// build cannot run yet, and the configured plugins that failed to load.
    pub fn infos(&self, config: &Config) -> Vec<DriverInfo> {
        let mut out: Vec<DriverInfo> = self
            .factories
            .iter()
            .map(|f| match f.probe(config) {
                Ok(()) => DriverInfo {
                    name: f.name().to_string(),
                    source: f.source(),
                    supported: true,
                    reason: None,
                    capabilities: Some(f.capabilities(config)),
                },
                Err(e) => DriverInfo {
                    name: f.name().to_string(),
                    source: f.source(),
                    supported: false,
                    reason: Some(e.to_string()),
                    capabilities: None,
                },
            })
            .collect();
        for name in PLANNED {
            if self.get(name).is_none() {
                out.push(DriverInfo {
                    name: name.to_string(),
                    source: DriverSource::Builtin,
                    supported: false,
                    reason: Some("not built into this strata yet".to_string()),
                    capabilities: None,
                });
            }
        }
        out.extend(self.failed.iter().cloned());
        out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Environment, PluginConfig};

    fn config() -> Config {
        Config::defaults(&Environment {
            uid: 0,
            ..Environment::default()
        })
        .unwrap()
    }

    fn factory(name: &str, supported: bool) -> DriverFactory {
        DriverFactory::new(
            name,
            DriverSource::Builtin,
            move |_| {
                if supported {
                    Ok(())
                } else {
                    Err(Error::new(ErrorKind::NotSupported, "needs a unicorn"))
                }
            },
            |_| Capabilities {
                rootless: true,
                ..Capabilities::default()
            },
            |_, _| Err(Error::new(ErrorKind::NotSupported, "not in this test")),
        )
    }

    #[test]
    fn duplicate_names_are_refused() {
        let mut r = Registry::empty();
        r.register(factory("a", true)).unwrap();
        let err = r.register(factory("a", true)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(r.names(), ["a"]);
    }

    #[test]
    fn infos_cover_registered_planned_and_plugins() {
        let mut r = Registry::empty();
        r.register(factory("good", true)).unwrap();
        r.register(factory("overlay", false)).unwrap();
        let mut c = config();
        c.plugins.push(PluginConfig {
            path: "/usr/lib/libstrata_driver_vfs.so".into(),
            options: Default::default(),
        });
        r.add_plugins(&c, false).unwrap();
        let infos = r.infos(&c);
        let names: Vec<_> = infos.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["good", "overlay", "strata_driver_vfs"]);
        assert!(infos[0].supported && infos[0].reason.is_none());
        assert_eq!(
            infos[0].capabilities.as_ref().map(|c| c.rootless),
            Some(true)
        );
        assert!(!infos[1].supported && infos[1].capabilities.is_none());
        assert!(infos[1].reason.is_some());
        assert_eq!(infos[2].source, DriverSource::Plugin);
        assert!(!infos[2].supported);
        assert!(
            infos[2]
                .reason
                .as_ref()
                .unwrap()
                .contains("libstrata_driver_vfs.so")
        );
        assert_eq!(
            r.add_plugins(&c, true).unwrap_err().kind(),
            ErrorKind::NotFound
        );

        let json = serde_json::to_value(&infos[0]).unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["capabilities", "name", "reason", "source", "supported"]
        );
        assert_eq!(json["source"], "builtin");
        assert_eq!(serde_json::to_value(&infos[2]).unwrap()["source"], "plugin");
    }
}
