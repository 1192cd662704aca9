//! Whiteout names in the AUFS/OCI format, and the overlayfs equivalents.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// The prefix that marks a whiteout: `.wh.<name>` hides `<name>` in lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The prefix of AUFS metadata names (`.wh..wh.plnk`, `.wh..wh.aufs`, ...), never real files.
pub const META_PREFIX: &str = ".wh..wh.";
/// The opaque marker: a directory holding it hides all lower children of that directory.
pub const OPAQUE: &str = ".wh..wh..opq";

/// The xattr suffix that marks an overlay opaque directory (after `trusted.` or `user.`).
pub const OVERLAY_OPAQUE_XATTR: &str = "overlay.opaque";

/// What a directory entry name means in the AUFS/OCI whiteout format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name<'a> {
    /// An ordinary name.
    Regular(&'a OsStr),
    /// `.wh.<name>`: hides `<name>` in lower layers.
    Whiteout(&'a OsStr),
    /// `.wh..wh..opq`: hides every lower child of the directory.
    Opaque,
    /// Another `.wh..wh.*` AUFS-internal name: never materialised, never exported.
    Meta,
    /// A whiteout that names the directory itself or its parent (`.wh.`, `.wh..`, `.wh...`):
    /// the archive must be rejected.
    Invalid,
}

/// Classifies one path component.
///
/// `.wh.` (empty target), `.wh..` and `.wh...` are `Invalid`: they would name the directory
/// itself or its parent. Moby's reader refuses exactly these.
pub fn classify(name: &OsStr) -> Name<'_> {
    let bytes = name.as_bytes();
    if bytes == OPAQUE.as_bytes() {
        return Name::Opaque;
    }
    if bytes.starts_with(META_PREFIX.as_bytes()) {
        return Name::Meta;
    }
    match bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        None => Name::Regular(name),
        Some(b"" | b"." | b"..") => Name::Invalid,
        Some(target) if target.contains(&b'/') => Name::Invalid,
        Some(target) => Name::Whiteout(OsStr::from_bytes(target)),
    }
}

/// The whiteout name for `name`: `.wh.<name>`.
pub fn whiteout_name(name: &OsStr) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(WHITEOUT_PREFIX);
    s.push(name);
    s
}

/// Whether an xattr name is overlayfs's own (`trusted.overlay.*`, `user.overlay.*`): such xattrs
/// never cross a tar in either direction.
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Name<'_> {
        classify(OsStr::new(s))
    }

    #[test]
    fn classifies_names() {
        assert_eq!(c("foo"), Name::Regular(OsStr::new("foo")));
        assert_eq!(c(".whfoo"), Name::Regular(OsStr::new(".whfoo")));
        assert_eq!(c("..data"), Name::Regular(OsStr::new("..data")));
        assert_eq!(c(".wh.foo"), Name::Whiteout(OsStr::new("foo")));
        assert_eq!(c(".wh..foo"), Name::Whiteout(OsStr::new(".foo")));
        assert_eq!(c(".wh..wh..opq"), Name::Opaque);
        assert_eq!(c(".wh..wh.plnk"), Name::Meta);
        assert_eq!(c(".wh..wh.aufs"), Name::Meta);
        assert_eq!(c(".wh."), Name::Invalid);
        assert_eq!(c(".wh.."), Name::Invalid);
        assert_eq!(c(".wh..."), Name::Invalid);
    }

    #[test]
    fn builds_whiteout_names() {
        assert_eq!(whiteout_name(OsStr::new("a b")), OsStr::new(".wh.a b"));
    }

    #[test]
    fn overlay_xattrs() {
        assert!(is_overlay_xattr(b"trusted.overlay.opaque"));
        assert!(is_overlay_xattr(b"user.overlay.redirect"));
        assert!(!is_overlay_xattr(b"security.capability"));
        assert!(!is_overlay_xattr(b"user.overlayfoo"));
        assert!(!is_overlay_xattr(b"trusted.overlayfs"));
    }
}
