//! Lexical cleaning of entry names from a layer tar (pure logic, no I/O).
//!
//! A name is cleaned the way Go's `path.Clean` + `filepath.IsLocal` would see it: leading `/`
//! and `./` are dropped (absolute names land under the root), empty and `.` components vanish,
//! `..` removes the component before it. A `..` with nothing left to remove means the name is
//! not local: the archive is rejected, never clamped or silently skipped (CVE-2026-17106).
//! Cleaning never looks at the tree; symlinks are the resolver's business.

use crate::{Error, ErrorKind, Result};

/// The longest path component Linux accepts (`NAME_MAX`).
pub(super) const NAME_MAX: usize = 255;
/// The longest cleaned path accepted, in bytes (`PATH_MAX` less its NUL).
pub(super) const PATH_MAX: usize = 4095;

/// Cleans a raw entry name (or hardlink target) into a relative, `/`-separated path with no
/// empty, `.` or `..` components. The empty result names the root itself.
pub(super) fn clean(raw: &[u8]) -> Result<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    // Byte offsets in `out` where each kept component starts, to undo one on `..`.
    let mut starts: Vec<usize> = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => match starts.pop() {
                // Drop the component and the `/` before it (the first one has none).
                Some(start) => out.truncate(start.saturating_sub(1)),
                None => {
                    return Err(invalid(raw, "is not local (it climbs out of the root)"));
                }
            },
            _ => {
                if comp.contains(&0) {
                    return Err(invalid(raw, "contains a NUL byte"));
                }
                if comp.len() > NAME_MAX {
                    return Err(invalid(raw, "has a component longer than 255 bytes"));
                }
                if !out.is_empty() {
                    out.push(b'/');
                }
                starts.push(out.len());
                out.extend_from_slice(comp);
            }
        }
    }
    if out.len() > PATH_MAX {
        return Err(invalid(raw, "is longer than 4095 bytes"));
    }
    Ok(out)
}

/// Splits a cleaned, non-empty path into its parent (possibly empty: the root) and last name.
pub(super) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// The components of a cleaned path.
pub(super) fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// Joins a cleaned directory path and one name.
pub(super) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if !dir.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A path as it is shown in messages.
pub(super) fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// An `InvalidArchive` error about the name `raw`. Very long names are shortened.
pub(super) fn invalid(raw: &[u8], what: &str) -> Error {
    let shown = if raw.len() > 200 {
        format!("{}...", String::from_utf8_lossy(&raw[..200]))
    } else {
        show(raw)
    };
    Error::new(ErrorKind::InvalidArchive, format!("entry {shown:?} {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        String::from_utf8(clean(raw.as_bytes()).unwrap()).unwrap()
    }

    fn bad(raw: &[u8]) -> ErrorKind {
        clean(raw).unwrap_err().kind()
    }

    #[test]
    fn cleans_local_names() {
        assert_eq!(ok("a/b/c"), "a/b/c");
        assert_eq!(ok("/etc/x"), "etc/x");
        assert_eq!(ok("///etc//x/"), "etc/x");
        assert_eq!(ok("./a/./b/"), "a/b");
        assert_eq!(ok("a/../b"), "b");
        assert_eq!(ok("a/b/../../c"), "c");
        assert_eq!(ok("a/b/.."), "a");
        assert_eq!(ok("..data"), "..data");
        assert_eq!(ok("..."), "...");
        assert_eq!(ok(".whfoo"), ".whfoo");
    }

    #[test]
    fn root_names_clean_to_empty() {
        for raw in ["", ".", "/", "./", "//", "a/..", "./a/../"] {
            assert_eq!(ok(raw), "", "{raw:?}");
        }
    }

    #[test]
    fn rejects_names_that_are_not_local() {
        for raw in [
            "..",
            "../x",
            "../../etc/x",
            "a/../../x",
            "/../x",
            "a/b/../../../x",
            "./..",
        ] {
            assert_eq!(bad(raw.as_bytes()), ErrorKind::InvalidArchive, "{raw:?}");
        }
    }

    #[test]
    fn enforces_length_limits() {
        let long = "x".repeat(256);
        assert_eq!(bad(long.as_bytes()), ErrorKind::InvalidArchive);
        let ok255 = "x".repeat(255);
        assert_eq!(ok(&ok255), ok255);
        let deep = "abcdefg/".repeat(600);
        assert_eq!(bad(deep.as_bytes()), ErrorKind::InvalidArchive);
        // A long raw name that cleans to something short is fine.
        let mut raw = "./".repeat(5000);
        raw.push_str("ok");
        assert_eq!(ok(&raw), "ok");
        assert_eq!(bad(b"a/b\0c"), ErrorKind::InvalidArchive);
    }

    #[test]
    fn splits_and_joins() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a/b", b"x"), b"a/b/x");
        assert_eq!(
            components(b"a/b/c").collect::<Vec<_>>(),
            [&b"a"[..], b"b", b"c"]
        );
        assert_eq!(components(b"").count(), 0);
    }
}
