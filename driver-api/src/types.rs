//! Plain data that crosses the trait: options and capabilities. ([`Change`](crate::Change) and
//! [`ChangeKind`](crate::ChangeKind) come from `strata-archive`, which computes them.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Static facts about a driver. Tests and callers decide by capability, never by driver name.
///
/// New fields may be added; construct with `..Capabilities::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `diff`/`apply_diff`/`changes` are native (O(layer)), not the naive mount-and-walk ones.
    pub native_diff: bool,
    /// The driver only works as root (or with CAP_SYS_ADMIN).
    pub needs_root: bool,
    /// The driver works for an unprivileged user.
    pub rootless: bool,
    /// The deepest chain the driver can mount, counting the layer itself; `None` is unbounded.
    pub max_depth: Option<u32>,
    /// A per-layer size quota (`CreateOpts::size`) is enforced.
    pub quota: bool,
    /// The driver can hand out a mount spec (image path, fs type, options) instead of mounting.
    pub mount_spec: bool,
    /// Renaming a directory that came from a lower layer works in a mounted view (overlayfs
    /// without redirect_dir returns EXDEV, which callers such as `mv` handle by copying).
    pub rename_dir: bool,
    /// Committed image layers are mounted read-only: a write through them fails with EROFS.
    pub read_only_images: bool,
}

/// What a layer is for: an image layer ([`Driver::create`](crate::Driver::create), filled once,
/// then read-only) or a writable container layer ([`Driver::create_rw`](crate::Driver::create_rw)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// An image layer: filled once (import or apply), then read-only.
    Image,
    /// A writable container layer.
    Container,
}

impl LayerKind {
    /// `"image"` or `"container"`, as records and state files spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::Image => "image",
            LayerKind::Container => "container",
        }
    }

    /// The kind spelled `text` ([`as_str`](LayerKind::as_str)'s words), if it is one.
    pub fn parse(text: &str) -> Option<LayerKind> {
        match text {
            "image" => Some(LayerKind::Image),
            "container" => Some(LayerKind::Container),
            _ => None,
        }
    }

    /// Whether a layer of this kind is writable.
    pub fn writable(self) -> bool {
        self == LayerKind::Container
    }
}

/// Options for `create` and `create_rw`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOpts {
    /// Size limit in bytes for a writable layer; drivers without quota return `NotSupported`.
    pub size: Option<u64>,
    /// Driver-specific options (`key=value`), which each driver validates; unknown keys are an
    /// `InvalidInput` error.
    pub storage_opts: BTreeMap<String, String>,
}

impl CreateOpts {
    /// Refuses what a driver without per-layer quota and without storage options of its own
    /// cannot honour, as the trait's contract says: any storage option is `InvalidInput`
    /// (naming it); a size on an image layer (`writable` false) is `InvalidInput`; a size on a
    /// writable layer is `NotSupported`.
    pub fn check_plain(&self, driver: &str, writable: bool) -> crate::Result<()> {
        use crate::{Error, ErrorKind};
        if let Some(key) = self.storage_opts.keys().next() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{driver} driver: unknown storage option {key:?}"),
            ));
        }
        match (self.size, writable) {
            (None, _) => Ok(()),
            (Some(_), false) => Err(Error::new(
                ErrorKind::InvalidInput,
                "a size applies to writable layers only",
            )),
            (Some(_), true) => Err(Error::new(
                ErrorKind::NotSupported,
                format!("{driver} driver: no per-layer size quota"),
            )),
        }
    }
}

/// Options for `get`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOpts {
    /// Mount the view read-only even if the layer is writable.
    pub read_only: bool,
    /// Extra mount options (for example an SELinux `context=`), passed through where supported.
    pub options: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_drivers_refuse_size_and_options() {
        use crate::ErrorKind;
        assert!(CreateOpts::default().check_plain("x", true).is_ok());
        let sized = CreateOpts {
            size: Some(1 << 20),
            ..CreateOpts::default()
        };
        assert_eq!(
            sized.check_plain("x", false).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            sized.check_plain("x", true).unwrap_err().kind(),
            ErrorKind::NotSupported
        );
        let mut opts = CreateOpts::default();
        opts.storage_opts.insert("foo".into(), "1".into());
        assert_eq!(
            opts.check_plain("x", true).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}
