//! One test, run in each mount mode: a driver in a temp dir with the mode's config, checks that
//! a view is (or is not) a FUSE mount, and a guard that leaves no mount or helper process
//! behind when a test fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_conformance::tarfile::stream;
use strata_driver_api::{Driver, ErrorKind, MountOpts};
use strata_driver_dir::{Config, DirDriver, MountMode};

use super::id;

/// The fuse mode's config, with the helper built with these tests.
#[allow(clippy::needless_update)] // the fuse mode may add fields; they keep their defaults
pub fn fuse_config() -> Config {
    Config {
        mount: MountMode::Fuse,
        fuse_helper: Some(PathBuf::from(env!("CARGO_BIN_EXE_strata-dir-fuse"))),
        ..Config::default()
    }
}

/// The config of a mount mode (`Fuse`: [`fuse_config`]).
pub fn config(mode: MountMode) -> Config {
    match mode {
        MountMode::Fuse => fuse_config(),
        m => Config {
            mount: m,
            ..Config::default()
        },
    }
}

/// Opens a driver in `home` in `mode`; `None` (after printing why) when the fuse mode is not
/// available in this build or on this host. Any other error fails the test.
pub fn open_driver(home: &Path, mode: MountMode, test: &str) -> Option<DirDriver> {
    match DirDriver::new(home.to_path_buf(), config(mode)) {
        Ok(d) => Some(d),
        Err(e) if mode == MountMode::Fuse && e.kind() == ErrorKind::NotSupported => {
            strata_conformance::skip::print(test, format_args!("fuse mode not available: {e}"));
            None
        }
        Err(e) => panic!("{test}: DirDriver::new in {} mode: {e}", mode.as_str()),
    }
}

/// Runs each listed `async fn name(f: U)` once per mount mode, as `name::copy` and
/// `name::fuse`.
#[macro_export]
macro_rules! per_mode {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use strata_driver_dir::MountMode;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn copy() {
                let name = concat!(stringify!($name), "::copy");
                if let Some(f) = $crate::common::modes::U::new(MountMode::Copy, name) {
                    super::$name(f).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fuse() {
                let name = concat!(stringify!($name), "::fuse");
                if let Some(f) = $crate::common::modes::U::new(MountMode::Fuse, name) {
                    super::$name(f).await;
                }
            }
        }
    )*};
}

/// A temp dir that, when dropped, first detaches every mount left under it (deepest first)
/// and kills every process whose command line names it: what a failing test left behind.
#[derive(Debug)]
pub struct Guard {
    tmp: tempfile::TempDir,
}

impl Guard {
    pub fn new() -> Guard {
        Guard {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let root = self.tmp.path().to_path_buf();
        let mut left: Vec<PathBuf> = mounts_under(&root).into_iter().map(|m| m.target).collect();
        left.sort();
        for m in left.iter().rev() {
            eprintln!("cleanup: detaching a mount the test left: {}", m.display());
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
        for (pid, cmd) in processes_naming(&root) {
            eprintln!("cleanup: killing process {pid} the test left: {cmd}");
            kill(pid);
        }
    }
}

/// One line of `/proc/self/mountinfo`.
pub use strata_driver_util::mountinfo::MountEntry as MountInfo;

/// The mounts at or under `root`, in mount-table order.
pub fn mounts_under(root: &Path) -> Vec<MountInfo> {
    let table = strata_driver_util::mountinfo::read().unwrap();
    strata_driver_util::mountinfo::under(&table, root)
        .into_iter()
        .cloned()
        .collect()
}

/// The FUSE mounts (`fuse`, `fuse.*`) at or under `root`.
pub fn fuse_mounts_under(root: &Path) -> Vec<MountInfo> {
    mounts_under(root)
        .into_iter()
        .filter(|m| m.fs_type == "fuse" || m.fs_type.starts_with("fuse."))
        .collect()
}

/// The processes (other than this one) whose command line names the path `needle` (or a path
/// under it), with their command lines.
pub fn processes_naming(needle: &Path) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let needle = needle.as_os_str().as_encoded_bytes();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for ent in dir.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(ent.path().join("cmdline")) else {
            continue;
        };
        if names_path(&cmd, needle) {
            let shown = String::from_utf8_lossy(&cmd).replace('\0', " ");
            out.push((pid, shown.trim_end().to_string()));
        }
    }
    out
}

/// Whether `needle` occurs in `cmd` as a whole path: followed by nothing, `/`, or a separator
/// (so `/x/mnt/c` does not match `/x/mnt/c2`).
fn names_path(cmd: &[u8], needle: &[u8]) -> bool {
    (0..cmd.len().saturating_sub(needle.len()) + 1).any(|i| {
        cmd[i..].starts_with(needle)
            && matches!(
                cmd.get(i + needle.len()),
                None | Some(b'\0' | b'/' | b',' | b':' | b' ' | b'=')
            )
    })
}

pub fn kill(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Waits up to `limit` for `cond`.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A driver in one mount mode, in a guarded temp dir.
#[derive(Debug)]
pub struct U {
    pub drv: DirDriver,
    pub mode: MountMode,
    pub test: &'static str,
    // Last: dropped after the driver.
    guard: Guard,
}

impl U {
    pub fn new(mode: MountMode, test: &'static str) -> Option<U> {
        let guard = Guard::new();
        let drv = open_driver(&guard.path().join("dir"), mode, test)?;
        Some(U {
            drv,
            mode,
            test,
            guard,
        })
    }

    pub fn is_fuse(&self) -> bool {
        self.mode == MountMode::Fuse
    }

    pub fn tmp(&self) -> &Path {
        self.guard.path()
    }

    pub fn home(&self) -> PathBuf {
        self.guard.path().join("dir")
    }

    pub fn diff(&self, layer: &str) -> PathBuf {
        self.home().join("diff").join(layer)
    }

    pub fn mnt(&self, layer: &str) -> PathBuf {
        self.home().join("mnt").join(layer)
    }

    /// Another instance on the same home, in the same mode.
    pub fn reopen(&self) -> DirDriver {
        DirDriver::new(self.home(), config(self.mode)).unwrap()
    }

    /// An image layer filled from a tar (see `strata_conformance::tarfile`).
    pub async fn image(&self, layer: &str, parent: Option<&str>, tar: Vec<u8>) {
        super::create(&self.drv, layer, parent, false).await;
        self.fill(layer, tar).await;
    }

    /// Applies a tar to an existing, unmounted layer.
    pub async fn fill(&self, layer: &str, tar: Vec<u8>) {
        self.drv
            .apply_diff(&id(layer), None, stream(tar))
            .await
            .unwrap();
    }

    pub async fn container(&self, layer: &str, parent: Option<&str>) {
        super::create(&self.drv, layer, parent, true).await;
    }

    /// Gets the layer's view and checks it is what the mode makes: a FUSE mount at the path in
    /// fuse mode, a plain directory in copy mode.
    pub async fn get(&self, layer: &str) -> PathBuf {
        self.get_opts(layer, &MountOpts::default()).await
    }

    pub async fn get_ro(&self, layer: &str) -> PathBuf {
        let ro = MountOpts {
            read_only: true,
            ..MountOpts::default()
        };
        self.get_opts(layer, &ro).await
    }

    async fn get_opts(&self, layer: &str, opts: &MountOpts) -> PathBuf {
        let path = self.drv.get(&id(layer), opts).await.unwrap();
        let at_path: Vec<_> = fuse_mounts_under(&path)
            .into_iter()
            .filter(|m| m.target == path)
            .collect();
        if self.is_fuse() {
            assert_eq!(
                at_path.len(),
                1,
                "{}: one FUSE mount at {path:?}",
                self.test
            );
        } else {
            assert!(
                at_path.is_empty(),
                "{}: copy mode mounts nothing",
                self.test
            );
        }
        path
    }

    pub async fn put(&self, layer: &str) {
        self.drv.put(&id(layer)).await.unwrap()
    }

    /// The last put: afterwards the layer is not mounted, its mountpoint is empty, no FUSE mount
    /// is left under the home, and no process names the mountpoint any more.
    pub async fn put_last(&self, layer: &str) {
        self.put(layer).await;
        self.assert_released(layer).await;
    }

    pub async fn assert_released(&self, layer: &str) {
        assert!(!self.drv.is_mounted(&id(layer)).await.unwrap());
        assert_released_at(&self.home(), &self.mnt(layer));
    }

    /// The layer's view as a fresh instance shows it (read-only, released again).
    pub async fn fresh_view(&self, layer: &str) -> BTreeMap<String, String> {
        super::fresh_view(&self.reopen(), layer).await
    }
}

/// `mnt` is empty and unmounted, no FUSE mount is left under `home`, and (within 5 s) no
/// process names `mnt` any more.
pub fn assert_released_at(home: &Path, mnt: &Path) {
    let left = fuse_mounts_under(home);
    assert!(left.is_empty(), "FUSE mounts left under the home: {left:?}");
    let names: Vec<_> = std::fs::read_dir(mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.is_empty(), "{mnt:?} is not empty: {names:?}");
    assert!(
        wait_for(Duration::from_secs(5), || processes_naming(mnt).is_empty()),
        "processes still name {mnt:?}: {:?}",
        processes_naming(mnt)
    );
}
