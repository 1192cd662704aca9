//! The set of drivers an engine chooses from, and what `strata drivers` says of each.
//!
//! A [`Registry`] holds [`DriverFactory`]s and knows nothing of where they come from: the
//! constructors that fill one with the built-in drivers and the config's plugins
//! ([`Registry::builtin`], [`Registry::add_plugins`]) live in the engine's `catalog` module,
//! above this one, so the dependency runs one way: catalog -> registry -> factory.

use serde::Serialize;
use strata_driver_api::{Capabilities, Error, ErrorKind, Result};

use crate::config::Config;

pub use crate::factory::{DriverFactory, DriverSource};
// For the plugin module, which imports it from here; the factory module is its home.

/// Drivers strata knows of that this build does not have yet: named in errors and in
/// `strata drivers`, and recognised as prior data under a root.
pub const PLANNED: &[&str] = &[];

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

    /// Notes a configured plugin that could not be loaded, for [`infos`](Registry::infos).
    pub(crate) fn note_failed(&mut self, info: DriverInfo) {
        self.failed.push(info);
    }

    /// Every driver this strata knows of, for `strata drivers`: the registered ones (plugins
    /// included) with their probe result and capabilities (one probe each), then the planned
    /// ones, which this build cannot run yet, and the configured plugins that failed to load.
    pub fn infos(&self, config: &Config) -> Vec<DriverInfo> {
        let mut out: Vec<DriverInfo> = self
            .factories
            .iter()
            .map(|f| match f.assess(config) {
                Ok(caps) => DriverInfo {
                    name: f.name().to_string(),
                    source: f.source(),
                    supported: true,
                    reason: None,
                    capabilities: Some(caps),
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
