//! The driver's configuration: the `[drivers.overlay]` table of `strata.toml`.

use serde::Deserialize;

/// Which system call mounts the layers' views.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountApi {
    /// `fsopen`/`fsconfig("lowerdir+")`/`fsmount`/`move_mount`: one lower at a time, chains
    /// as deep as overlayfs allows (500 lowers).
    Fsconfig,
    /// The classic `mount(2)` with one option string that must fit in a page: `l/` short
    /// links, relative to the home, so a chain is limited to what fits.
    Mount2,
    /// `fsconfig` where the kernel takes `lowerdir+` (6.8+), else `mount2`.
    #[default]
    Auto,
}

impl MountApi {
    /// The name used in configs and in `status()`.
    pub fn as_str(self) -> &'static str {
        match self {
            MountApi::Fsconfig => "fsconfig",
            MountApi::Mount2 => "mount2",
            MountApi::Auto => "auto",
        }
    }
}

/// The overlay driver's options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Extra options for every overlay mount: mount attributes (`nodev`, `nosuid`, `noexec`,
    /// `noatime`, `ro`) or overlayfs parameters (`volatile`, `metacopy=on`, `redirect_dir=on`,
    /// `context=...`). Turning on `metacopy` or `redirect_dir` makes diffs naive.
    pub mount_options: Vec<String>,
    /// How views are mounted: `fsconfig`, `mount2` or `auto` (the default).
    pub mount_api: MountApi,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c: Config = toml::from_str(r#"mount_options = ["nodev", "metacopy=on"]"#).unwrap();
        assert_eq!(c.mount_options, ["nodev", "metacopy=on"]);
        assert_eq!(c.mount_api, MountApi::Auto);
        let c: Config = toml::from_str(r#"mount_api = "mount2""#).unwrap();
        assert_eq!(c.mount_api, MountApi::Mount2);
        assert_eq!(toml::from_str::<Config>("").unwrap(), Config::default());
        assert!(toml::from_str::<Config>(r#"mount_api = "fuse""#).is_err());
        assert!(toml::from_str::<Config>(r#"options = []"#).is_err());
    }
}
