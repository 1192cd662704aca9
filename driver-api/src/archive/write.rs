//! Writing deterministic OCI layer tars from a directory.

use std::io::Write;
use std::path::Path;

use crate::Result;

/// How whiteouts are stored in the directory being written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// AUFS/OCI form on disk (`.wh.<name>` files, `.wh..wh..opq`): exported as they are;
    /// other `.wh..wh.*` names are skipped. Also right for a plain tree with no whiteouts.
    Aufs,
    /// overlayfs form (0/0 character devices, `*.overlay.opaque` xattr): converted to AUFS form,
    /// the opaque marker placed before its siblings.
    Overlay {
        /// The opaque xattr is `user.overlay.opaque` rather than `trusted.overlay.opaque`.
        user_xattr: bool,
    },
}

/// How to write a tar.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// How the directory stores whiteouts.
    pub whiteouts: WhiteoutFormat,
}

/// Writes the whole tree under `root` as an uncompressed OCI layer tar to `out`.
///
/// Deterministic: entries sorted by name (a directory before its children, whiteouts before
/// their siblings), hardlinks as links to the first path seen, no atime/ctime, no user or group
/// names, overlay xattrs never written. Returns the number of bytes written.
pub fn write_tar(root: &Path, out: &mut dyn Write, opts: &WriteOptions) -> Result<u64> {
    let _ = (root, out, opts);
    todo!("archive::write_tar")
}
