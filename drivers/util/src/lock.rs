//! The instance lock of a driver's home, and the crash sweep it guards.
//!
//! Every driver instance holds `<home>/lock` ([`LOCK_FILE`]) shared for as long as it lives.
//! The first instance to attach (no other holds the lock, in this process or another) gets it
//! exclusively for a moment and sweeps what crashed operations left behind; then it downgrades
//! to shared like every other. A sweep therefore never runs while another instance may be
//! midway through an operation (whose staging names and half-made mounts would look like
//! leftovers), and a crashed process's lock goes with it, so the first instance after a crash
//! sweeps.
//!
//! This module knows nothing of what a sweep removes: that is each driver's.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;
use strata_driver_api::{Error, Result};

/// The lock file's name in a driver's home: `<home>/lock`. A driver whose layer ids live in
/// its home's top level reserves this name (no layer may be called `lock`).
pub const LOCK_FILE: &str = "lock";

/// `<home>/lock`, held shared for the instance's life. Dropping it lets go.
#[derive(Debug)]
pub struct HomeLock {
    file: File,
    path: PathBuf,
}

impl HomeLock {
    /// Opens (creating, 0600) `<home>/lock` and takes it: when no other instance holds it,
    /// exclusively first, and then `sweep` runs under it; then shared, for the life of the
    /// returned lock. An error from `sweep` is returned (and the lock let go); a `flock` error
    /// other than "someone else holds it" is an error naming the call and the path, never
    /// taken for "not alone".
    ///
    /// Between the exclusive and the shared lock another instance may sweep: harmless, since
    /// this one has not started anything yet.
    pub fn attach(home: &Path, sweep: impl FnOnce() -> Result<()>) -> Result<HomeLock> {
        let path = home.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::os("open", &path, e))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => sweep()?,
            Err(Errno::WOULDBLOCK) => {}
            Err(e) => return Err(Error::os("flock LOCK_EX|LOCK_NB", &path, e)),
        }
        flock(&file, FlockOperation::LockShared)
            .map_err(|e| Error::os("flock LOCK_SH", &path, e))?;
        Ok(HomeLock { file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is the only instance holding the lock right now (tries, without waiting,
    /// to take it exclusively, and goes back to shared): for tests and diagnostics.
    pub fn is_sole(&self) -> Result<bool> {
        match flock(&self.file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                flock(&self.file, FlockOperation::LockShared)
                    .map_err(|e| Error::os("flock LOCK_SH", &self.path, e))?;
                Ok(true)
            }
            Err(Errno::WOULDBLOCK) => Ok(false),
            Err(e) => Err(Error::os("flock LOCK_EX|LOCK_NB", &self.path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::os::unix::fs::PermissionsExt;
    use strata_driver_api::ErrorKind;

    #[test]
    fn first_instance_sweeps_later_ones_do_not() {
        let home = tempfile::tempdir().unwrap();
        let swept = Cell::new(0);
        let a = HomeLock::attach(home.path(), || {
            swept.set(swept.get() + 1);
            Ok(())
        })
        .unwrap();
        assert_eq!(swept.get(), 1);
        assert_eq!(a.path(), home.path().join("lock"));
        let mode = std::fs::metadata(a.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = HomeLock::attach(home.path(), || {
            swept.set(swept.get() + 1);
            Ok(())
        })
        .unwrap();
        assert_eq!(swept.get(), 1, "a second instance must not sweep");
        assert!(!a.is_sole().unwrap());
        drop(b);
        assert!(a.is_sole().unwrap());
        drop(a);
        let _c = HomeLock::attach(home.path(), || {
            swept.set(swept.get() + 1);
            Ok(())
        })
        .unwrap();
        assert_eq!(swept.get(), 2, "the first instance after all let go sweeps");
    }

    #[test]
    fn a_failed_sweep_is_the_error_and_lets_go() {
        let home = tempfile::tempdir().unwrap();
        let err = HomeLock::attach(home.path(), || {
            Err(Error::new(ErrorKind::Corrupt, "bad leftovers"))
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        let ran = Cell::new(false);
        HomeLock::attach(home.path(), || {
            ran.set(true);
            Ok(())
        })
        .unwrap();
        assert!(ran.get());
    }

    #[test]
    fn an_old_dot_lock_is_just_a_file() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".lock"), b"").unwrap();
        let l = HomeLock::attach(home.path(), || Ok(())).unwrap();
        assert!(l.is_sole().unwrap());
    }

    #[test]
    fn open_errors_name_the_path() {
        let home = tempfile::tempdir().unwrap();
        let missing = home.path().join("nope");
        let err = HomeLock::attach(&missing, || Ok(())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.message().contains("nope/lock"), "{}", err.message());
    }
}
