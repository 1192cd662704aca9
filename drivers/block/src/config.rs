//! The driver's configuration: the `[drivers.block]` table of `strata.toml`.

use serde::Deserialize;

/// The size of a layer's image when the config does not say: 10 GiB, sparse.
pub const DEFAULT_SIZE: u64 = 10 << 30;

/// The smallest image the driver makes: below it mkfs refuses or the journal crowds out data.
pub const MIN_SIZE: u64 = 16 << 20;

/// The filesystem inside the images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fs {
    /// ext4 (the default).
    #[default]
    Ext4,
    /// xfs: needs images of at least 300 MiB (mkfs.xfs's minimum).
    Xfs,
}

impl Fs {
    /// The name used in configs, as the mount type and in `mkfs.<name>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4",
            Fs::Xfs => "xfs",
        }
    }

    /// The smallest image mkfs makes for this filesystem.
    pub fn min_size(self) -> u64 {
        match self {
            Fs::Ext4 => MIN_SIZE,
            Fs::Xfs => 300 << 20,
        }
    }
}

/// The block driver's options.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The apparent (sparse) size of every layer's image, in bytes; written as `"10G"`,
    /// `"512M"`, or a number of bytes. Writing past it inside a layer is ENOSPC.
    #[serde(deserialize_with = "strata_driver_util::size::deserialize")]
    pub size: u64,
    /// The filesystem inside the images: `ext4` (the default) or `xfs`.
    pub fs: Fs,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            size: DEFAULT_SIZE,
            fs: Fs::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_and_rejects_unknown_keys() {
        let c: Config = toml::from_str("size = \"1.5G\"\nfs = \"xfs\"").unwrap();
        assert_eq!(c.size, 3 << 29);
        assert_eq!(c.fs, Fs::Xfs);
        let c: Config = toml::from_str("size = 4096").unwrap();
        assert_eq!(c.size, 4096);
        assert_eq!(toml::from_str::<Config>("").unwrap(), Config::default());
        assert_eq!(Config::default().size, 10 << 30);
        assert!(toml::from_str::<Config>("size = \"10X\"").is_err());
        assert!(toml::from_str::<Config>("size = -1").is_err());
        assert!(toml::from_str::<Config>("fs = \"btrfs\"").is_err());
        assert!(toml::from_str::<Config>("fstype = \"xfs\"").is_err());
    }
}
