//! Helpers for the block driver's tests: skips, temporary directories that clean up their
//! mounts and loop devices whatever happens, and scans of what is left attached.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use strata_conformance::tarfile::{Entry, make_tar, stream};
use strata_driver_api::{Driver, TarStream};

/// Why the block driver cannot run here, if it cannot (the test then skips, saying so).
pub fn skip_reason() -> Option<String> {
    strata_driver_block::probe().err().map(|e| e.to_string())
}

/// Skips the calling test with a printed reason when the block driver cannot run here.
#[macro_export]
macro_rules! need_block {
    () => {
        if let Some(why) = common::skip_reason() {
            strata_conformance::skip!("{why}");
            return;
        }
    };
}

/// The mount points under `dir` in this namespace, deepest last.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let table = strata_driver_util::mountinfo::read().unwrap_or_default();
    strata_driver_util::mountinfo::under(&table, dir)
        .into_iter()
        .map(|m| m.target.clone())
        .collect()
}

/// The loop devices (`N`, backing file) whose backing file is under `dir`.
pub fn loops_under(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix("loop")
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/sys/block/loop{n}/loop/backing_file"))
        else {
            continue;
        };
        let file = PathBuf::from(text.trim_end_matches('\n').trim_end_matches(" (deleted)"));
        if file.starts_with(dir) {
            out.push((n, file));
        }
    }
    out
}

/// A temporary directory that, when dropped, lazily unmounts whatever is still mounted under
/// it and detaches loop devices backed by its files (never anything else), then removes it.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    pub fn new() -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix("strata-block-test-")
            .tempdir()
            .expect("temporary directory");
        let path = std::fs::canonicalize(dir.path()).expect("canonical temp dir");
        TestDir {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asserts that nothing under the directory is mounted and no loop device is backed by a
    /// file in it.
    pub fn assert_clean(&self) {
        assert_eq!(
            mounts_under(&self.path),
            Vec::<PathBuf>::new(),
            "mounts left"
        );
        assert_eq!(
            loops_under(&self.path),
            Vec::new(),
            "loop devices left attached"
        );
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        for m in mounts_under(&self.path).into_iter().rev() {
            let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
        }
        for (n, _) in loops_under(&self.path) {
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(format!("/dev/loop{n}"))
                .status();
        }
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

/// A tar stream holding one regular file `name` of `len` bytes (a repeating pattern).
pub fn file_tar(name: &str, len: usize) -> TarStream {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    stream(make_tar(&[Entry::file(name, data)]))
}

/// Runs `f` on a fresh multi-threaded runtime.
pub fn rt<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Keeps `Driver` in scope for the callers' method calls.
pub fn as_driver(d: &dyn Driver) -> &dyn Driver {
    d
}
