//! Trial starts: a driver started only to learn its capabilities, over a home the engine owns
//! and sweeps, never in `$TMPDIR`.
//!
//! Built-in drivers answer from their probes without starting. A plugin cannot: ABI 1 reports
//! capabilities per instance. So `strata drivers` starts it once over
//! `<root>/<name>-layers/.probe-<pid>/<name>`, in the engine's own directory for that driver
//! (the driver's home `<root>/<name>` stays untouched), and removes the directory again. The
//! process holds `.probe-<pid>/lock` while it probes; [`sweep`] removes every probe directory
//! whose process is gone, detaching whatever is mounted in it first. It runs before each trial
//! and whenever the engine opens that driver, so a command killed mid-probe leaves nothing for
//! longer than the next command.

use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{FlockOperation, flock};
use strata_driver_api::{Capabilities, Driver, Error, Result};
use strata_driver_util::mountinfo;

const PREFIX: &str = ".probe-";

/// The engine's directory for driver `name`'s records under `root`, where its trial homes go.
pub(crate) fn records_dir(root: &Path, name: &str) -> PathBuf {
    root.join(format!("{name}-layers"))
}

/// Starts a driver over a trial home in `records` (see the module docs) and returns its
/// capabilities; the trial home is removed whatever happened.
pub(crate) fn capabilities(
    name: &str,
    records: &Path,
    start: impl FnOnce(PathBuf) -> Result<Arc<dyn Driver>>,
) -> Result<Capabilities> {
    sweep(records)?;
    let dir = records.join(format!("{PREFIX}{}", std::process::id()));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::os("mkdir", &dir, e))?;
    let result = hold(&dir).and_then(|_lock| {
        let driver = start(dir.join(name))?;
        let caps = driver.capabilities();
        drop(driver);
        Ok(caps)
    });
    let removed = remove(&dir);
    let caps = result?;
    removed?;
    tracing::debug!(driver = name, "capabilities learnt from a trial start");
    Ok(caps)
}

/// Takes `<dir>/lock` exclusively, for as long as the returned file is open.
fn hold(dir: &Path) -> Result<File> {
    let path = dir.join("lock");
    let file = File::create(&path).map_err(|e| Error::os("create", &path, e))?;
    flock(&file, FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| Error::os("flock", &path, e))?;
    Ok(file)
}

/// Removes the probe directories in `records` whose process is gone: their lock is free, or,
/// made before the lock, their process no longer exists. A missing `records` is fine.
pub(crate) fn sweep(records: &Path) -> Result<()> {
    let entries = match fs::read_dir(records) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::os("opendir", records, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::os("readdir", records, e))?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let dir = entry.path();
        let gone = match File::open(dir.join("lock")) {
            Ok(lock) => flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok(),
            Err(_) => !Path::new("/proc").join(pid).exists(),
        };
        if gone {
            tracing::debug!(dir = %dir.display(), "removing a killed process's trial home");
            remove(&dir)?;
        }
    }
    Ok(())
}

/// Detaches whatever is mounted at or below `dir`, deepest first, then removes it.
fn remove(dir: &Path) -> Result<()> {
    mountinfo::detach_under(dir)?;
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::os("remove", dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_driver_api::ErrorKind;

    #[test]
    fn a_trial_leaves_nothing_and_a_killed_ones_home_is_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let records = records_dir(tmp.path(), "p");
        let seen = std::sync::Mutex::new(None);
        let err = capabilities("p", &records, |home| {
            fs::create_dir_all(home.join("data")).unwrap();
            *seen.lock().unwrap() = Some(home);
            Err(Error::new(ErrorKind::NotSupported, "no"))
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotSupported);
        let home = seen.lock().unwrap().clone().unwrap();
        assert!(home.starts_with(&records), "{}", home.display());
        assert_eq!(fs::read_dir(&records).unwrap().count(), 0);

        // A killed probe: its lock is free (the process is gone). A live one: held.
        let dead = records.join(format!("{PREFIX}1"));
        fs::create_dir_all(dead.join("p/x")).unwrap();
        File::create(dead.join("lock")).unwrap();
        let live = records.join(format!("{PREFIX}{}", std::process::id()));
        fs::create_dir_all(&live).unwrap();
        let _held = hold(&live).unwrap();
        sweep(&records).unwrap();
        assert!(!dead.exists());
        assert!(live.exists());
    }
}
