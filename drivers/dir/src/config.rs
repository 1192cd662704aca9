//! The driver's configuration: the `[drivers.dir]` table of `strata.toml`.

use std::path::PathBuf;

use serde::Deserialize;

/// How the merged view of a layer is set up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountMode {
    /// A union file system in userspace (FUSE), served by the `strata-dir-fuse` helper.
    /// Choosing it where FUSE cannot be mounted is a `NotSupported` error when the driver is
    /// made.
    Fuse,
    /// Materialise the merged view by copying, and fold the changes back on the last `put`.
    /// Slower, works everywhere, always correct.
    Copy,
    /// `fuse` where `/dev/fuse` is usable and the helper is found, else `copy`.
    #[default]
    Auto,
}

impl MountMode {
    /// The name used in configs and in `status()`.
    pub fn as_str(self) -> &'static str {
        match self {
            MountMode::Fuse => "fuse",
            MountMode::Copy => "copy",
            MountMode::Auto => "auto",
        }
    }
}

/// The dir driver's options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How views are mounted: `fuse`, `copy` or `auto` (the default).
    pub mount: MountMode,
    /// The FUSE helper program (`strata-dir-fuse`, built from this crate). When unset it is
    /// looked up: `$STRATA_DIR_FUSE_HELPER`, then beside the running program (and one directory
    /// up, where cargo puts test binaries' siblings), then `$PATH`.
    pub fuse_helper: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c: Config = toml::from_str(r#"mount = "copy""#).unwrap();
        assert_eq!(c.mount, MountMode::Copy);
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.mount, MountMode::Auto);
        assert!(toml::from_str::<Config>(r#"mount = "bind""#).is_err());
        assert!(toml::from_str::<Config>(r#"mnt = "copy""#).is_err());
    }
}
