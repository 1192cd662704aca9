//! Files strata loads or runs with its own privileges (plugin libraries, the FUSE helper): one
//! rule for all, refusing any that someone else could change.
//!
//! A file passes when nobody but root or this process's user can replace or change it: the
//! file (symlinks resolved) and every directory above it are owned by root or the effective
//! user, and none is writable by others. Group write is fine for the root group (or this
//! process's group); a directory others may write to is fine when it has the sticky bit (as
//! /tmp: others cannot rename or remove what they do not own there). This is the rule sudo and
//! OpenSSH apply to the files they trust.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Resolves `path` and checks it by the module's rule; returns the resolved path, which the
/// caller then loads or runs (so a symlink switched afterwards changes nothing), or why not.
pub fn check(path: &Path) -> Result<PathBuf, String> {
    let canonical = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let euid = rustix::process::geteuid().as_raw();
    let egid = rustix::process::getegid().as_raw();
    let trusted_user = |uid: u32| uid == 0 || uid == euid;
    let trusted_group = |gid: u32| gid == 0 || gid == egid;
    for (i, p) in canonical.ancestors().enumerate() {
        let md = std::fs::metadata(p).map_err(|e| format!("stat {}: {e}", p.display()))?;
        let what = if i == 0 { "it" } else { "the directory" };
        let shown = if i == 0 {
            String::new()
        } else {
            format!(" {}", p.display())
        };
        if !trusted_user(md.uid()) {
            return Err(format!(
                "refusing {}: {what}{shown} is owned by uid {}, not by root or this user",
                canonical.display(),
                md.uid()
            ));
        }
        let mode = md.mode();
        let sticky_dir = i > 0 && mode & 0o1000 != 0;
        if mode & 0o002 != 0 && !sticky_dir {
            return Err(format!(
                "refusing {}: {what}{shown} is world-writable (mode {:o})",
                canonical.display(),
                mode & 0o7777
            ));
        }
        if mode & 0o020 != 0 && !trusted_group(md.gid()) && !sticky_dir {
            return Err(format!(
                "refusing {}: {what}{shown} is writable by group {} (mode {:o})",
                canonical.display(),
                md.gid(),
                mode & 0o7777
            ));
        }
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn chown(p: &Path, uid: u32, gid: u32) {
        rustix::fs::chown(
            p,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .unwrap();
    }

    #[test]
    fn modes_and_sticky_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o755);
        let f = dir.join("lib.so");
        std::fs::write(&f, b"").unwrap();
        chmod(&f, 0o755);
        assert_eq!(check(&f).unwrap(), std::fs::canonicalize(&f).unwrap());
        chmod(&f, 0o757);
        assert!(check(&f).unwrap_err().contains("world-writable"));
        chmod(&f, 0o755);
        chmod(&dir, 0o777);
        assert!(check(&f).unwrap_err().contains("world-writable"));
        chmod(&dir, 0o1777);
        check(&f).unwrap();
        // Through a symlink: the target is what is checked and returned.
        let link = tmp.path().join("link.so");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert_eq!(check(&link).unwrap(), std::fs::canonicalize(&f).unwrap());
    }

    /// Issue 12, item 10: a library owned by another user in a sticky world-writable
    /// directory, or writable by a group that is not root's, is refused.
    #[test]
    fn other_owners_and_groups_are_refused() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP other_owners_and_groups_are_refused: needs root (chown)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o1777);
        let f = dir.join("lib.so");
        std::fs::write(&f, b"").unwrap();
        chmod(&f, 0o755);
        chown(&f, 65534, 65534);
        assert!(check(&f).unwrap_err().contains("owned by uid 65534"));
        chown(&f, 0, 65534);
        chmod(&f, 0o775);
        assert!(check(&f).unwrap_err().contains("writable by group 65534"));
        chown(&f, 0, 0);
        check(&f).unwrap();
        chown(&dir, 65534, 0);
        chmod(&dir, 0o755);
        assert!(check(&f).unwrap_err().contains("the directory"));
    }
}
