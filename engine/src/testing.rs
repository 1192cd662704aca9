//! A test-only driver: layers are directories holding the applied tar bytes; mounts are
//! counters in files, so they survive a new driver instance as real mounts survive a process.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use async_trait::async_trait;
use strata_driver_api::stream::{self, TarStream};
use strata_driver_api::{
    Capabilities, Change, ChangeKind, CreateOpts, Driver, Error, ErrorKind, LayerId, MountOpts,
    Result,
};

use crate::config::{Config, Environment};
use crate::registry::{DriverFactory, DriverSource, Registry};

/// Knobs and counters shared by every instance a test's factory builds.
#[derive(Debug, Default)]
pub(crate) struct Knobs {
    pub fail_apply: AtomicBool,
    pub fail_get: AtomicBool,
    /// When non-zero, `apply_diff` reads only this many bytes and reports success.
    pub read_only_first: AtomicU64,
    pub gets: AtomicU32,
    pub puts: AtomicU32,
}

#[derive(Debug)]
pub(crate) struct FakeDriver {
    home: PathBuf,
    knobs: Arc<Knobs>,
}

impl FakeDriver {
    fn layer(&self, id: &LayerId) -> PathBuf {
        self.home.join("layers").join(id.as_str())
    }

    fn counter(&self, id: &LayerId) -> PathBuf {
        self.home.join("mounted").join(id.as_str())
    }

    fn refs(&self, id: &LayerId) -> u32 {
        fs::read_to_string(self.counter(id))
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn set_refs(&self, id: &LayerId, n: u32) {
        let path = self.counter(id);
        if n == 0 {
            let _ = fs::remove_file(path);
        } else {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, n.to_string()).unwrap();
        }
    }

    fn check(&self, id: &LayerId) -> Result<()> {
        if self.layer(id).is_dir() {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::NotFound, format!("fake layer {id}")))
        }
    }

    fn make(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()> {
        if self.layer(id).exists() {
            return Err(Error::new(ErrorKind::AlreadyExists, id.to_string()));
        }
        if let Some(p) = parent {
            if !self.layer(p).is_dir() {
                return Err(Error::new(ErrorKind::ParentNotFound, p.to_string()));
            }
        }
        fs::create_dir_all(self.layer(id)).map_err(|e| Error::os("mkdir", &self.layer(id), e))
    }

    /// Unmounts a layer behind the engine's back (as `umount` by hand would).
    pub fn vanish_mount(&self, id: &LayerId) {
        self.set_refs(id, 0);
    }
}

#[async_trait]
impl Driver for FakeDriver {
    fn name(&self) -> &str {
        "fake"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: true,
            ..Capabilities::default()
        }
    }

    fn status(&self) -> Vec<(String, String)> {
        vec![("Backing".into(), "test".into())]
    }

    async fn create(&self, id: &LayerId, parent: Option<&LayerId>, _: &CreateOpts) -> Result<()> {
        self.make(id, parent)
    }

    async fn create_rw(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        _: &CreateOpts,
    ) -> Result<()> {
        self.make(id, parent)
    }

    async fn remove(&self, id: &LayerId, force: bool) -> Result<()> {
        self.check(id)?;
        if self.refs(id) > 0 {
            if !force {
                return Err(Error::new(ErrorKind::Busy, id.to_string()));
            }
            self.set_refs(id, 0);
        }
        fs::remove_dir_all(self.layer(id)).map_err(|e| Error::os("rm", &self.layer(id), e))
    }

    async fn get(&self, id: &LayerId, _: &MountOpts) -> Result<PathBuf> {
        self.check(id)?;
        if self.knobs.fail_get.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Io, "get failed (test knob)"));
        }
        self.knobs.gets.fetch_add(1, Ordering::SeqCst);
        self.set_refs(id, self.refs(id) + 1);
        Ok(self.home.join("mnt").join(id.as_str()))
    }

    async fn put(&self, id: &LayerId) -> Result<()> {
        self.knobs.puts.fetch_add(1, Ordering::SeqCst);
        let n = self.refs(id);
        self.set_refs(id, n.saturating_sub(1));
        Ok(())
    }

    async fn is_mounted(&self, id: &LayerId) -> Result<bool> {
        self.check(id)?;
        Ok(self.refs(id) > 0)
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        Ok(self.layer(id).is_dir())
    }

    async fn metadata(&self, id: &LayerId) -> Result<Vec<(String, String)>> {
        self.check(id)?;
        Ok(vec![("Dir".into(), self.layer(id).display().to_string())])
    }

    async fn cleanup(&self) -> Result<()> {
        Ok(())
    }

    async fn diff(&self, id: &LayerId, _: Option<&LayerId>) -> Result<TarStream> {
        self.check(id)?;
        let path = self.layer(id).join("content");
        Ok(stream::from_blocking(move |out| {
            let bytes = fs::read(&path).unwrap_or_default();
            out.write_all(&bytes).map_err(|e| Error::io("w", e))
        }))
    }

    async fn apply_diff(&self, id: &LayerId, _: Option<&LayerId>, diff: TarStream) -> Result<u64> {
        self.check(id)?;
        let path = self.layer(id).join("content");
        let fail = self.knobs.fail_apply.load(Ordering::SeqCst);
        let limit = self.knobs.read_only_first.load(Ordering::SeqCst);
        stream::read_blocking(diff, move |r| {
            let mut file = fs::File::create(&path).map_err(|e| Error::os("create", &path, e))?;
            let n = if limit > 0 {
                std::io::copy(&mut r.take(limit), &mut file)
            } else {
                std::io::copy(r, &mut file)
            }
            .map_err(|e| Error::io("apply", e))?;
            if fail {
                return Err(Error::new(ErrorKind::InvalidArchive, "fake: hostile"));
            }
            Ok(n)
        })
        .await
    }

    async fn changes(&self, id: &LayerId, _: Option<&LayerId>) -> Result<Vec<Change>> {
        self.check(id)?;
        Ok(vec![Change {
            path: PathBuf::from(format!("/{id}")),
            kind: ChangeKind::Add,
        }])
    }
}

/// A registry holding the fake driver under `name`.
pub(crate) fn registry(name: &str, knobs: &Arc<Knobs>) -> Registry {
    let knobs = knobs.clone();
    let mut r = Registry::empty();
    r.register(DriverFactory::new(
        name,
        DriverSource::Builtin,
        |_| Ok(()),
        |_| Capabilities::default(),
        move |home, _| {
            Ok(Arc::new(FakeDriver {
                home,
                knobs: knobs.clone(),
            }) as Arc<dyn Driver>)
        },
    ))
    .unwrap();
    r
}

/// A config rooted in `dir`, naming `driver`.
pub(crate) fn config(dir: &Path, driver: &str) -> Config {
    let mut c = Config::defaults(&Environment {
        uid: 0,
        ..Environment::default()
    })
    .unwrap();
    c.root = dir.join("root");
    c.runroot = dir.join("run");
    c.driver = driver.to_string();
    c
}

/// The fake driver behind an engine, for knobs that act on its state.
pub(crate) fn fake(home: &Path) -> FakeDriver {
    FakeDriver {
        home: home.to_path_buf(),
        knobs: Arc::default(),
    }
}

/// Reads a whole file (test helper).
pub(crate) fn read(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    fs::File::open(path).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// How long [`wait_until`] waits before it calls a test hung: far beyond any healthy wait, so
/// that no verdict depends on the machine's speed.
pub(crate) const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until `cond` holds, checking it every millisecond; panics naming `what` when
/// [`PATIENCE`] runs out. The condition is what the test waits for, never a guess at how long
/// something takes.
pub(crate) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// How many requests are blocked waiting for a lock on the file at `path`: /proc/locks lists
/// each as `N: -> FLOCK ...` with the file's `major:minor:inode`.
pub(crate) fn lock_waiters(path: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let md = fs::metadata(path).unwrap();
    let dev = md.dev();
    let file = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        md.ino()
    );
    fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&"->") && fields.contains(&file.as_str())
        })
        .count()
}
