//! What a case works with: [`Harness`] (a fresh driver over an empty home, directories for
//! oracles and canaries, a simulated restart), the [`Privileges`] of the process, and the
//! [`Factory`] that makes drivers. Running cases is the `runner` module's.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use strata_driver_api::{Capabilities, Driver};

use crate::check::Failure;

/// What the process may do. Detected once per case; a case that needs more is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    /// The effective uid is 0.
    pub root: bool,
    /// The process is in the initial user namespace (its uid map is the identity over all ids),
    /// so root may create device nodes and set `trusted.*` xattrs.
    pub init_userns: bool,
}

impl Privileges {
    /// The privileges of this process.
    pub fn detect() -> Privileges {
        let root = rustix::process::geteuid().is_root();
        let init_userns = std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| {
                let fields: Vec<&str> = m.split_whitespace().collect();
                fields == ["0", "0", "4294967295"]
            })
            .unwrap_or(false);
        Privileges { root, init_userns }
    }

    /// Root in the initial user namespace: device nodes, `trusted.*` and `security.*` xattrs.
    pub fn full_root(&self) -> bool {
        self.root && self.init_userns
    }
}

/// A boxed, `Send` future borrowing from `'a`, as case functions return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Makes a driver whose home is the given (empty, existing) directory.
///
/// Called once per case, and again when a case simulates a restart of the process
/// ([`Harness::restart`]). An [`ErrorKind::NotSupported`](strata_driver_api::ErrorKind::NotSupported) error skips the case ("driver not
/// supported on this host"), as graphtest does; any other error fails it.
pub type Factory =
    Arc<dyn Fn(&Path) -> strata_driver_api::Result<Arc<dyn Driver>> + Send + Sync + 'static>;

/// Wraps a closure as a [`Factory`].
pub fn factory<F>(f: F) -> Factory
where
    F: Fn(&Path) -> strata_driver_api::Result<Arc<dyn Driver>> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// Everything a case works with: a fresh driver over an empty home, and directories outside
/// that home for oracles (`scratch`) and canaries (`outside`).
///
/// Layout of the case's temporary directory: `home/` (the driver's), `scratch/`, `outside/`.
pub struct Harness {
    factory: Factory,
    dir: PathBuf,
    home: PathBuf,
    scratch: PathBuf,
    outside: PathBuf,
    privileges: Privileges,
    driver: Mutex<Arc<dyn Driver>>,
    /// Instances replaced by [`Harness::restart`]: kept alive, never cleaned up, dropped last,
    /// as a crashed process leaves its mounts behind.
    abandoned: Mutex<Vec<Arc<dyn Driver>>>,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("dir", &self.dir)
            .field("privileges", &self.privileges)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// The driver under test (the current instance, after any [`restart`](Harness::restart)).
    pub fn driver(&self) -> Arc<dyn Driver> {
        self.driver.lock().expect("driver lock").clone()
    }

    /// The driver's capabilities.
    pub fn capabilities(&self) -> Capabilities {
        self.driver().capabilities()
    }

    /// The process's privileges.
    pub fn privileges(&self) -> Privileges {
        self.privileges
    }

    /// The driver's home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// A directory outside the driver's home for oracles (flat directories, spooled tars).
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// A directory outside the driver's home, for canaries hostile archives must not touch.
    pub fn outside(&self) -> &Path {
        &self.outside
    }

    /// Simulates a restart of the process: a new driver instance over the same home becomes
    /// the current one. The old instance is neither cleaned up nor dropped until the case
    /// ends, as if its process had died with its mounts in place.
    pub fn restart(&self) -> Result<Arc<dyn Driver>, Failure> {
        let fresh = (self.factory)(&self.home)
            .map_err(|e| Failure::failed(format!("restart: making the driver again: {e:#}")))?;
        let old = std::mem::replace(
            &mut *self.driver.lock().expect("driver lock"),
            fresh.clone(),
        );
        self.abandoned.lock().expect("abandoned lock").push(old);
        Ok(fresh)
    }
}

impl Harness {
    /// A harness over the case directory `dir` (holding `home/`, `scratch/`, `outside/`), with
    /// `driver` made by `factory` over `home/`.
    pub(crate) fn new(
        factory: Factory,
        dir: PathBuf,
        driver: Arc<dyn Driver>,
        privileges: Privileges,
    ) -> Harness {
        Harness {
            factory,
            home: dir.join("home"),
            scratch: dir.join("scratch"),
            outside: dir.join("outside"),
            dir,
            privileges,
            driver: Mutex::new(driver),
            abandoned: Mutex::new(Vec::new()),
        }
    }

    /// The case directory (the parent of `home`, `scratch` and `outside`).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}
