//! Advisory file locks (`flock`) that serialise strata processes.
//!
//! Each acquisition opens the lock file afresh, so the lock belongs to that open file
//! description: two threads of one process exclude each other exactly as two processes do, and
//! dropping the guard (closing the fd) releases it. Taking a lock blocks; call it from a
//! blocking context (the engine does so inside `spawn_blocking`).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use strata_driver_api::{Error, Result};

/// A lock file on disk.
#[derive(Debug, Clone)]
pub struct LockFile {
    path: PathBuf,
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

impl LockFile {
    /// A lock at `path` (created, mode 0600, on first use).
    pub fn new(path: impl Into<PathBuf>) -> LockFile {
        LockFile { path: path.into() }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for a shared (reader) lock.
    pub fn shared(&self) -> Result<LockGuard> {
        self.take(FlockOperation::LockShared)
    }

    /// Waits for an exclusive (writer) lock.
    pub fn exclusive(&self) -> Result<LockGuard> {
        self.take(FlockOperation::LockExclusive)
    }

    /// Takes the exclusive lock if nobody holds the lock now; `None` if someone does.
    pub fn try_exclusive(&self) -> Result<Option<LockGuard>> {
        self.try_take(FlockOperation::NonBlockingLockExclusive)
    }

    /// Takes a shared lock if nobody holds the lock exclusively now; `None` if someone does.
    pub fn try_shared(&self) -> Result<Option<LockGuard>> {
        self.try_take(FlockOperation::NonBlockingLockShared)
    }

    fn try_take(&self, op: FlockOperation) -> Result<Option<LockGuard>> {
        let file = self.open()?;
        match flock(&file, op) {
            Ok(()) => Ok(Some(LockGuard { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(Error::os("flock", &self.path, e)),
        }
    }

    fn open(&self) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| Error::os("open", &self.path, e))
    }

    fn take(&self, op: FlockOperation) -> Result<LockGuard> {
        let file = self.open()?;
        loop {
            match flock(&file, op) {
                Ok(()) => return Ok(LockGuard { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Error::os("flock", &self.path, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn exclusive_excludes_across_fds() {
        let dir = tempfile::tempdir().unwrap();
        let lock = LockFile::new(dir.path().join("x.lock"));
        let held = lock.exclusive().unwrap();
        assert!(lock.try_exclusive().unwrap().is_none());

        let released = Arc::new(AtomicBool::new(false));
        let (lock2, released2) = (lock.clone(), released.clone());
        let waiter = std::thread::spawn(move || {
            let _g = lock2.exclusive().unwrap();
            // Only reachable once the first guard is gone.
            assert!(released2.load(Ordering::SeqCst));
        });
        std::thread::sleep(Duration::from_millis(100));
        released.store(true, Ordering::SeqCst);
        drop(held);
        waiter.join().unwrap();
        assert!(lock.try_exclusive().unwrap().is_some());
    }

    #[test]
    fn shared_locks_coexist_and_block_writers() {
        let dir = tempfile::tempdir().unwrap();
        let lock = LockFile::new(dir.path().join("x.lock"));
        let a = lock.shared().unwrap();
        let b = lock.shared().unwrap();
        assert!(lock.try_shared().unwrap().is_some());
        assert!(lock.try_exclusive().unwrap().is_none());
        drop(a);
        assert!(lock.try_exclusive().unwrap().is_none());
        drop(b);
        let w = lock.try_exclusive().unwrap();
        assert!(w.is_some());
        assert!(
            lock.try_shared().unwrap().is_none(),
            "a reader got in past a writer"
        );
    }

    #[test]
    fn excludes_another_process() {
        // `flock(1)` from util-linux holds the lock in a separate process.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let lock = LockFile::new(&path);
        let held = lock.exclusive().unwrap();
        let status = std::process::Command::new("flock")
            .args(["--nonblock", "--exclusive"])
            .arg(&path)
            .arg("true")
            .status();
        let Ok(status) = status else {
            eprintln!("SKIP excludes_another_process: the flock(1) command is not installed");
            return;
        };
        assert!(!status.success(), "another process took a held lock");
        drop(held);
        let status = std::process::Command::new("flock")
            .args(["--nonblock", "--exclusive"])
            .arg(&path)
            .arg("true")
            .status()
            .unwrap();
        assert!(status.success());
    }
}
