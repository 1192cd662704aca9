//! Mount refcounts across processes: `<runroot>/<key of the root>/<driver>-layers/mounts.json`
//! ([`Config::run_dir`](crate::Config::run_dir)).
//!
//! The driver counts references inside one process; this table counts them across every
//! `strata` process and survives them (a `strata mount` from the shell outlives its process).
//! It lives in the runroot, on tmpfs, so a reboot, which drops every mount, also drops it.
//! The engine checks it against the system (`Driver::is_mounted`) before trusting it. The
//! table does no locking itself: the engine holds `mounts.lock` around every load-change-save.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind as IoKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_driver_api::{Error, ErrorKind, LayerId, Result};

use crate::lock::LockFile;
use strata_archive::atomic;

const FILE: &str = "mounts.json";

/// One mounted layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    /// Where its merged view is (empty while a get is under way).
    pub path: PathBuf,
    /// How many references are out; 0 while a get is under way ([`MountTable::getting`]).
    pub count: u32,
}

/// What `mount` must do for a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountStep {
    /// It is mounted and referenced: take one more reference on this path, no driver call.
    Reuse(PathBuf),
    /// Call `Driver::get`, then [`MountTable::mounted`].
    Get,
}

/// What `unmount` must do for a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmountStep {
    /// Other references remain: the count was decremented, no driver call.
    Decremented,
    /// The last reference: call `Driver::put`, then [`MountTable::forget`].
    Put,
    /// The table holds no reference.
    NotRecorded,
}

/// The refcount table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MountTable {
    entries: BTreeMap<LayerId, MountEntry>,
}

impl MountTable {
    /// The references out on `id`.
    pub fn count(&self, id: &LayerId) -> u32 {
        self.entries.get(id).map_or(0, |e| e.count)
    }

    /// The entry of `id`.
    pub fn get(&self, id: &LayerId) -> Option<&MountEntry> {
        self.entries.get(id)
    }

    /// The ids with entries.
    pub fn ids(&self) -> Vec<LayerId> {
        self.entries.keys().cloned().collect()
    }

    /// Decides a mount. `still_mounted` is what the driver says now; it only matters when
    /// the table holds references (the caller may skip asking otherwise). A view that went
    /// away behind the table's back (unmounted by hand) is mounted afresh.
    pub fn mount_step(&self, id: &LayerId, still_mounted: bool) -> MountStep {
        match self.entries.get(id) {
            Some(e) if e.count > 0 && still_mounted => MountStep::Reuse(e.path.clone()),
            _ => MountStep::Get,
        }
    }

    /// Records that `Driver::get` of `id` is about to be called (a count of 0), unless the
    /// table holds references already: saved before the call, it tells recovery that a view
    /// the table does not count may be mounted, by a process killed before it could record it.
    pub fn getting(&mut self, id: &LayerId) {
        self.entries.entry(id.clone()).or_insert(MountEntry {
            path: PathBuf::new(),
            count: 0,
        });
    }

    /// Records a reference taken by `step`: one more on a reused view, or a fresh count of one
    /// on `path` after `Driver::get` (stale references of a view that went away are dropped).
    pub fn mounted(&mut self, id: &LayerId, path: PathBuf, step: &MountStep) {
        match step {
            MountStep::Reuse(_) => {
                if let Some(e) = self.entries.get_mut(id) {
                    e.count += 1;
                    return;
                }
                self.entries
                    .insert(id.clone(), MountEntry { path, count: 1 });
            }
            MountStep::Get => {
                self.entries
                    .insert(id.clone(), MountEntry { path, count: 1 });
            }
        }
    }

    /// Releases one reference; see [`UnmountStep`]. On `Put` the entry is kept until the
    /// caller's `Driver::put` succeeds and it calls [`forget`](MountTable::forget).
    pub fn unmount_step(&mut self, id: &LayerId) -> UnmountStep {
        match self.entries.get_mut(id) {
            Some(e) if e.count > 1 => {
                e.count -= 1;
                UnmountStep::Decremented
            }
            Some(_) => UnmountStep::Put,
            None => UnmountStep::NotRecorded,
        }
    }

    /// Drops the entry of `id`; returns whether there was one.
    pub fn forget(&mut self, id: &LayerId) -> bool {
        self.entries.remove(id).is_some()
    }
}

/// The table's file and lock for one driver.
#[derive(Debug, Clone)]
pub struct MountStore {
    dir: PathBuf,
    lock: LockFile,
}

impl MountStore {
    /// The table in `dir` ([`Config::run_dir`](crate::Config::run_dir)), with its lock
    /// `dir/mounts.lock`.
    pub fn new(dir: impl Into<PathBuf>) -> MountStore {
        let dir = dir.into();
        let lock = LockFile::new(dir.join("mounts.lock"));
        MountStore { dir, lock }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lock that guards the table.
    pub fn lock(&self) -> &LockFile {
        &self.lock
    }

    /// Reads the table; no file is an empty table.
    pub fn load(&self) -> Result<MountTable> {
        let path = self.dir.join(FILE);
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(table) => Ok(table),
                Err(e) => {
                    // One damaged file must not stop every command: it is moved aside and the
                    // counts start over (recovery and the driver's adoption of live views
                    // rebuild what matters).
                    let aside = self.dir.join(format!("{FILE}.damaged"));
                    match fs::rename(&path, &aside) {
                        Ok(()) => {}
                        Err(r) if r.kind() == IoKind::NotFound => {}
                        Err(r) => return Err(Error::os("rename", &path, r)),
                    }
                    tracing::warn!(table = %path.display(), moved_to = %aside.display(), error = %e, "a damaged mount table was moved aside; counts start over");
                    Ok(MountTable::default())
                }
            },
            Err(e) if e.kind() == IoKind::NotFound => Ok(MountTable::default()),
            Err(e) => Err(Error::os("read", &path, e)),
        }
    }

    /// Writes the table atomically.
    pub fn save(&self, table: &MountTable) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(table)
            .map_err(|e| Error::with_source(ErrorKind::Io, "serialise mount table", e))?;
        bytes.push(b'\n');
        Ok(atomic::write_bytes(&self.dir.join(FILE), &bytes)?)
    }

    /// Removes leftovers of interrupted writes.
    pub fn remove_temp_files(&self) -> Result<usize> {
        Ok(atomic::remove_temp_files(&self.dir)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> LayerId {
        LayerId::new(s).unwrap()
    }

    #[test]
    fn first_mount_gets_then_reuses() {
        let mut t = MountTable::default();
        let a = id("a");
        let step = t.mount_step(&a, false);
        assert_eq!(step, MountStep::Get);
        t.mounted(&a, "/m/a".into(), &step);
        assert_eq!(t.count(&a), 1);

        let step = t.mount_step(&a, true);
        assert_eq!(step, MountStep::Reuse("/m/a".into()));
        t.mounted(&a, "/m/a".into(), &step);
        assert_eq!(t.count(&a), 2);
    }

    #[test]
    fn a_view_gone_behind_our_back_is_mounted_afresh() {
        let mut t = MountTable::default();
        let a = id("a");
        t.mounted(&a, "/old".into(), &MountStep::Get);
        t.mounted(&a, "/old".into(), &MountStep::Reuse("/old".into()));
        assert_eq!(t.count(&a), 2);
        let step = t.mount_step(&a, false);
        assert_eq!(step, MountStep::Get);
        t.mounted(&a, "/new".into(), &step);
        assert_eq!(
            t.get(&a).unwrap(),
            &MountEntry {
                path: "/new".into(),
                count: 1
            }
        );
    }

    #[test]
    fn unmount_counts_down_to_put() {
        let mut t = MountTable::default();
        let a = id("a");
        assert_eq!(t.unmount_step(&a), UnmountStep::NotRecorded);
        t.mounted(&a, "/m".into(), &MountStep::Get);
        t.mounted(&a, "/m".into(), &MountStep::Reuse("/m".into()));
        assert_eq!(t.unmount_step(&a), UnmountStep::Decremented);
        assert_eq!(t.count(&a), 1);
        assert_eq!(t.unmount_step(&a), UnmountStep::Put);
        // Kept until the put succeeded.
        assert_eq!(t.count(&a), 1);
        assert!(t.forget(&a));
        assert_eq!(t.count(&a), 0);
        assert!(!t.forget(&a));
    }

    #[test]
    fn table_round_trips_through_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = MountStore::new(tmp.path());
        assert_eq!(store.load().unwrap(), MountTable::default());
        let mut t = MountTable::default();
        t.mounted(&id("a"), "/m/a".into(), &MountStep::Get);
        t.mounted(&id("b"), "/m/b".into(), &MountStep::Get);
        store.save(&t).unwrap();
        assert_eq!(store.load().unwrap(), t);
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(tmp.path().join(FILE)).unwrap()).unwrap();
        assert_eq!(json["a"]["count"], 1);
        assert_eq!(json["b"]["path"], "/m/b");
        // A damaged table is moved aside and the counts start over.
        fs::write(tmp.path().join(FILE), b"[").unwrap();
        assert_eq!(store.load().unwrap(), MountTable::default());
        assert_eq!(
            fs::read(tmp.path().join(format!("{FILE}.damaged"))).unwrap(),
            b"["
        );
        assert!(!tmp.path().join(FILE).exists());
    }
}
