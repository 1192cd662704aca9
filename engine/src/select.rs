//! Choosing a driver: pure rules, no I/O (the caller injects probing and the prior-data check).
//!
//! The rules are Docker's and containers/storage's:
//! 1. An explicit name wins. An unknown name, one not built in, or one that is not supported on
//!    this host is an error that lists what is available.
//! 2. `auto`: a driver that already holds layers under the root is used (it is an error if it
//!    cannot be used: never silently switch drivers and "lose" the layers), and two such are an
//!    error asking the user to choose.
//! 3. Otherwise the first driver of [`PRIORITY`] that is supported. Other drivers (block,
//!    plugins) are used only when named.

use strata_driver_api::{Error, ErrorKind, Result};

use crate::config::AUTO;

/// The drivers `auto` tries on a fresh root, best first.
pub const PRIORITY: &[&str] = &["overlay", "dir"];

/// Why a driver was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The config, `$STRATA_DRIVER` or `--driver` named it.
    Named,
    /// It already holds layers under the root.
    PriorData,
    /// The first supported driver of [`PRIORITY`].
    Priority,
}

impl Reason {
    /// A few words for `strata info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Named => "named in the config or on the command line",
            Reason::PriorData => "holds the existing layers",
            Reason::Priority => "first supported driver",
        }
    }
}

/// What selection decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The driver's name.
    pub name: String,
    /// Why.
    pub reason: Reason,
}

/// What selection needs to know about the world.
pub struct Inputs<'a> {
    /// The driver the user asked for, or [`AUTO`].
    pub requested: &'a str,
    /// Drivers this build can run, in registration order.
    pub registered: &'a [&'a str],
    /// Drivers strata knows of but this build lacks (named in errors, detected as prior data).
    pub planned: &'a [&'a str],
    /// Whether a registered driver works on this host; `Err` holds the reason it does not.
    pub probe: &'a dyn Fn(&str) -> std::result::Result<(), String>,
    /// Whether the root already holds layers of the named driver.
    pub holds_layers: &'a dyn Fn(&str) -> bool,
}

impl std::fmt::Debug for Inputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs")
            .field("requested", &self.requested)
            .field("registered", &self.registered)
            .field("planned", &self.planned)
            .finish_non_exhaustive()
    }
}

/// Applies the rules above.
pub fn select(inputs: &Inputs<'_>) -> Result<Selection> {
    if inputs.requested != AUTO {
        return named(inputs, inputs.requested, Reason::Named);
    }
    let mut known: Vec<&str> = Vec::new();
    for name in PRIORITY
        .iter()
        .chain(inputs.registered)
        .chain(inputs.planned)
    {
        if !known.contains(name) {
            known.push(name);
        }
    }
    let prior: Vec<&str> = known
        .into_iter()
        .filter(|n| (inputs.holds_layers)(n))
        .collect();
    match prior.as_slice() {
        [] => {}
        [one] => {
            return named(inputs, one, Reason::PriorData).map_err(|e| {
                e.context(format!(
                    "the root holds layers of driver {one}, which cannot be used"
                ))
            });
        }
        several => {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the root holds layers of several drivers ({}); choose one with --driver or `driver =` in strata.toml",
                    several.join(", ")
                ),
            ));
        }
    }
    let mut tried = Vec::new();
    for name in PRIORITY {
        if !inputs.registered.contains(name) {
            tried.push(format!("{name}: not built into this strata yet"));
            continue;
        }
        match (inputs.probe)(name) {
            Ok(()) => {
                return Ok(Selection {
                    name: name.to_string(),
                    reason: Reason::Priority,
                });
            }
            Err(why) => tried.push(format!("{name}: {why}")),
        }
    }
    Err(Error::new(
        ErrorKind::NotSupported,
        format!(
            "no supported storage driver found ({}); {}",
            tried.join("; "),
            available(inputs)
        ),
    ))
}

fn named(inputs: &Inputs<'_>, name: &str, reason: Reason) -> Result<Selection> {
    if inputs.registered.contains(&name) {
        return match (inputs.probe)(name) {
            Ok(()) => Ok(Selection {
                name: name.to_string(),
                reason,
            }),
            Err(why) => Err(Error::new(
                ErrorKind::NotSupported,
                format!(
                    "driver {name} is not supported on this host: {why}; {}",
                    available(inputs)
                ),
            )),
        };
    }
    if inputs.planned.contains(&name) {
        return Err(Error::new(
            ErrorKind::NotSupported,
            format!(
                "driver {name} is not built into this strata yet; {}",
                available(inputs)
            ),
        ));
    }
    Err(Error::new(
        ErrorKind::Config,
        format!("unknown driver {name:?}; {}", available(inputs)),
    ))
}

/// "available: dir, fake (not supported: no /dev/fuse)" or "available: none".
fn available(inputs: &Inputs<'_>) -> String {
    let list: Vec<String> = inputs
        .registered
        .iter()
        .map(|name| match (inputs.probe)(name) {
            Ok(()) => name.to_string(),
            Err(why) => format!("{name} (not supported: {why})"),
        })
        .collect();
    if list.is_empty() {
        "available: none".to_string()
    } else {
        format!("available: {}", list.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct World {
        registered: Vec<&'static str>,
        unsupported: Vec<&'static str>,
        prior: Vec<&'static str>,
    }

    impl World {
        fn new(registered: &[&'static str]) -> World {
            World {
                registered: registered.to_vec(),
                unsupported: Vec::new(),
                prior: Vec::new(),
            }
        }

        fn select(&self, requested: &str) -> Result<Selection> {
            let probe = |n: &str| {
                if self.unsupported.contains(&n) {
                    Err("no /dev/fuse".to_string())
                } else {
                    Ok(())
                }
            };
            let holds = |n: &str| self.prior.contains(&n);
            select(&Inputs {
                requested,
                registered: &self.registered,
                planned: &["block"],
                probe: &probe,
                holds_layers: &holds,
            })
        }
    }

    fn chose(sel: Result<Selection>, name: &str, reason: Reason) {
        let sel = sel.unwrap();
        assert_eq!((sel.name.as_str(), sel.reason), (name, reason));
    }

    #[test]
    fn explicit_name_wins() {
        let mut w = World::new(&["overlay", "dir"]);
        w.prior = vec!["overlay"];
        chose(w.select("dir"), "dir", Reason::Named);
    }

    #[test]
    fn unknown_name_is_a_config_error() {
        let w = World::new(&["dir"]);
        assert_eq!(w.select("zfs").unwrap_err().kind(), ErrorKind::Config);
    }

    #[test]
    fn unsupported_or_unbuilt_name_is_not_supported() {
        let mut w = World::new(&["dir"]);
        w.unsupported = vec!["dir"];
        assert_eq!(w.select("dir").unwrap_err().kind(), ErrorKind::NotSupported);
        assert_eq!(
            w.select("block").unwrap_err().kind(),
            ErrorKind::NotSupported
        );
    }

    #[test]
    fn error_lists_what_is_available() {
        let mut w = World::new(&["overlay", "dir"]);
        w.unsupported = vec!["overlay"];
        let msg = w.select("zfs").unwrap_err().to_string();
        assert!(
            msg.ends_with("available: overlay (not supported: no /dev/fuse), dir"),
            "{msg}"
        );
    }

    #[test]
    fn auto_uses_prior_data() {
        let mut w = World::new(&["overlay", "dir"]);
        w.prior = vec!["dir"];
        chose(w.select(AUTO), "dir", Reason::PriorData);
    }

    #[test]
    fn auto_never_falls_through_from_unusable_prior_data() {
        let mut w = World::new(&["overlay", "dir"]);
        w.prior = vec!["dir"];
        w.unsupported = vec!["dir"];
        assert_eq!(w.select(AUTO).unwrap_err().kind(), ErrorKind::NotSupported);

        let mut w = World::new(&["dir"]);
        w.prior = vec!["block"];
        assert_eq!(w.select(AUTO).unwrap_err().kind(), ErrorKind::NotSupported);
    }

    #[test]
    fn auto_refuses_two_prior_drivers() {
        let mut w = World::new(&["overlay", "dir"]);
        w.prior = vec!["dir", "overlay"];
        assert_eq!(w.select(AUTO).unwrap_err().kind(), ErrorKind::Config);
        // An explicit choice resolves it.
        chose(w.select("overlay"), "overlay", Reason::Named);
    }

    #[test]
    fn auto_follows_priority() {
        chose(
            World::new(&["dir", "overlay"]).select(AUTO),
            "overlay",
            Reason::Priority,
        );
        let mut w = World::new(&["dir", "overlay"]);
        w.unsupported = vec!["overlay"];
        chose(w.select(AUTO), "dir", Reason::Priority);
        // overlay not built: dir.
        chose(World::new(&["dir"]).select(AUTO), "dir", Reason::Priority);
    }

    #[test]
    fn auto_never_picks_block_or_plugins_unnamed() {
        let w = World::new(&["block", "myplugin"]);
        assert_eq!(w.select(AUTO).unwrap_err().kind(), ErrorKind::NotSupported);
        let mut w = World::new(&["dir", "block"]);
        w.unsupported = vec!["dir"];
        assert_eq!(w.select(AUTO).unwrap_err().kind(), ErrorKind::NotSupported);
        chose(w.select("block"), "block", Reason::Named);
    }

    #[test]
    fn prior_plugin_data_is_used() {
        let mut w = World::new(&["dir", "myplugin"]);
        w.prior = vec!["myplugin"];
        chose(w.select(AUTO), "myplugin", Reason::PriorData);
    }
}
