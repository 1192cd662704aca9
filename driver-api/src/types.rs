//! Plain data that crosses the trait: options, capabilities, changes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

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

/// What happened to a path between two layers, as `docker diff` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The path exists in both and differs (for a directory: its attributes or its children).
    Modify,
    /// The path is new.
    Add,
    /// The path was removed.
    Delete,
}

impl ChangeKind {
    /// The letter `docker diff` uses: `C`, `A` or `D`.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modify => 'C',
            ChangeKind::Add => 'A',
            ChangeKind::Delete => 'D',
        }
    }
}

/// One changed path. `path` is absolute within the layer ("/etc/passwd").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Change {
    /// The path, absolute within the layer, starting with `/`.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.letter(), self.path.display())
    }
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

    #[test]
    fn change_prints_like_docker_diff() {
        let c = Change {
            path: "/etc/passwd".into(),
            kind: ChangeKind::Modify,
        };
        assert_eq!(c.to_string(), "C /etc/passwd");
        let d = Change {
            path: "/tmp/x".into(),
            kind: ChangeKind::Delete,
        };
        assert_eq!(d.to_string(), "D /tmp/x");
    }
}
