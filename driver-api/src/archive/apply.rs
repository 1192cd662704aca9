//! Applying an OCI layer tar inside a layer root.

use std::io::Read;
use std::path::Path;

use crate::Result;

/// What to do with whiteout entries (`.wh.<name>`, `.wh..wh..opq`) while applying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Store them as they are, as empty files: the target is an AUFS-format diff directory
    /// (the dir driver), where whiteouts stay on disk and take effect at union time.
    Keep,
    /// Apply them to a full tree (the naive apply onto a merged view): `.wh.x` removes `x`,
    /// the opaque marker removes the directory's existing children, except those this same
    /// archive created.
    Remove,
    /// Convert them to overlayfs's form in an upper directory: `.wh.x` becomes a 0/0 character
    /// device `x` (owned as the entry says), the opaque marker becomes the xattr
    /// `trusted.overlay.opaque=y` (`user.overlay.opaque` when `user_xattr`).
    Overlay {
        /// Use `user.overlay.*` (rootless overlay mounted with `userxattr`).
        user_xattr: bool,
    },
}

/// How to apply a layer tar.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// What to do with whiteouts.
    pub whiteouts: WhiteoutMode,
    /// Set owners from the tar (needs privilege; without it files belong to the caller).
    pub same_owner: bool,
    /// Create device nodes (needs privilege; without it device entries are skipped).
    pub devices: bool,
}

impl ApplyOptions {
    /// The options for `whiteouts`, with owners and devices as the process's privilege allows.
    pub fn new(whiteouts: WhiteoutMode) -> ApplyOptions {
        let root = rustix::process::geteuid().is_root();
        ApplyOptions {
            whiteouts,
            same_owner: root,
            devices: root,
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Bytes of regular-file content written (hardlinks count once): the layer size.
    pub size: u64,
    /// Number of tar entries processed.
    pub entries: u64,
}

/// Applies the uncompressed tar read from `reader` inside the directory `root`.
///
/// `root` must exist. On error the tree may be partly applied; the caller discards the layer.
pub fn apply_tar(root: &Path, reader: &mut dyn Read, opts: &ApplyOptions) -> Result<ApplyStats> {
    let _ = (root, reader, opts);
    todo!("archive::apply_tar")
}
