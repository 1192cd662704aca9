//! The copy mount mode: refcounted views that are materialised on the first `get` and folded
//! back on the last `put`.
//!
//! A view is mounted exactly when `state/<id>.mount` exists; it is written last when a view is
//! made (after the files and the manifest) and removed first when one is released. That file
//! outlives the process, so `strata mount` in one process and `strata umount` in another work:
//! an instance that meets a mounted view it holds no count for adopts it with a count of one.
//!
//! Counts are per instance, and every get, put, remove, apply and fold of one layer runs under
//! that layer's lock, so they never interleave within a process. Across processes the engine
//! serialises writers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use strata_driver_api::{Error, ErrorKind, LayerId, Result};

use crate::fold;
use crate::layout::{self, Layout, write_atomic};
use crate::manifest::{self, Rec};
use crate::sys;
use crate::view;

/// This instance's references to one layer's view.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    count: u32,
}

/// What the mount state says about a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct State {
    /// The view's changes are folded back on the last put.
    pub writable: bool,
}

/// The per-layer locks and counts of one driver instance.
#[derive(Debug, Default)]
pub(crate) struct Mounts {
    slots: Mutex<HashMap<LayerId, Arc<Mutex<Slot>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a slot leaves on-disk state that every step re-checks.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Mounts {
    /// The layer's slot; lock it for the whole operation.
    pub(crate) fn slot(&self, id: &LayerId) -> Arc<Mutex<Slot>> {
        lock(&self.slots).entry(id.clone()).or_default().clone()
    }

    /// Takes a reference to the view of `id`, materialising it if it is not mounted.
    pub(crate) fn get(&self, layout: &Layout, id: &LayerId, read_only: bool) -> Result<PathBuf> {
        let slot = self.slot(id);
        let mut s = lock(&slot);
        if !layout.exists(id)? {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("layer {id} not found"),
            ));
        }
        match read_state(layout, id)? {
            None => {
                mount(layout, id, !read_only)?;
                s.count = 0;
            }
            Some(st) => {
                if s.count == 0 {
                    s.count = 1;
                }
                if !read_only && !st.writable {
                    write_state(layout, id, State { writable: true })?;
                }
            }
        }
        s.count += 1;
        Ok(layout.mnt(id))
    }

    /// Drops a reference; the last one folds a writable view back and releases it.
    pub(crate) fn put(&self, layout: &Layout, id: &LayerId) -> Result<()> {
        let slot = self.slot(id);
        let mut s = lock(&slot);
        let Some(st) = read_state(layout, id)? else {
            s.count = 0;
            return Ok(());
        };
        s.count = s.count.max(1) - 1;
        if s.count == 0 {
            if let Err(e) = unmount(layout, id, st.writable) {
                // Still mounted: the next put tries again.
                s.count = 1;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Removes the layer; a mounted one is `Busy` unless `force`, which discards its view
    /// (its unfolded changes go with the layer).
    pub(crate) fn remove(&self, layout: &Layout, id: &LayerId, force: bool) -> Result<()> {
        let slot = self.slot(id);
        let mut s = lock(&slot);
        if !layout.exists(id)? {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("layer {id} not found"),
            ));
        }
        if read_state(layout, id)?.is_some() {
            if !force {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("layer {id} is mounted"),
                ));
            }
            release(layout, id)?;
        }
        s.count = 0;
        layout.remove_layer(id)?;
        drop(s);
        lock(&self.slots).remove(id);
        Ok(())
    }

    /// Runs `f` under the layer's lock, refusing (`Busy`) while it is mounted.
    pub(crate) fn while_unmounted<T>(
        &self,
        layout: &Layout,
        id: &LayerId,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let slot = self.slot(id);
        let _s = lock(&slot);
        if !layout.exists(id)? {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("layer {id} not found"),
            ));
        }
        if read_state(layout, id)?.is_some() {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("layer {id} is mounted"),
            ));
        }
        f()
    }

    /// Runs `f` under the layer's lock once the diff directory is up to date: a writable view's
    /// changes so far are folded in first (the view stays mounted).
    pub(crate) fn with_synced<T>(
        &self,
        layout: &Layout,
        id: &LayerId,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let slot = self.slot(id);
        let _s = lock(&slot);
        if !layout.exists(id)? {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("layer {id} not found"),
            ));
        }
        if let Some(State { writable: true }) = read_state(layout, id)? {
            let recs = fold::fold(layout, id)?;
            manifest::write(&layout.manifest(id), recs.iter().map(|(p, r)| (p, r)))?;
        }
        f()
    }

    /// Releases every view this instance holds a reference to, folding writable ones back.
    /// Goes on past a failure and returns the first.
    pub(crate) fn cleanup(&self, layout: &Layout) -> Result<()> {
        let slots: Vec<(LayerId, Arc<Mutex<Slot>>)> = lock(&self.slots)
            .iter()
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        let mut first = None;
        for (id, slot) in slots {
            let mut s = lock(&slot);
            if s.count == 0 {
                continue;
            }
            let result = match read_state(layout, &id) {
                Ok(Some(st)) => unmount(layout, &id, st.writable),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => s.count = 0,
                Err(e) => {
                    first.get_or_insert(e.context(format!("release layer {id}")));
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// The view's mount state, or `None` if it is not mounted.
pub(crate) fn read_state(layout: &Layout, id: &LayerId) -> Result<Option<State>> {
    let path = layout.mount_state(id);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(State {
            writable: text.lines().any(|l| l == "writable=true"),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::os("read", &path, e)),
    }
}

fn write_state(layout: &Layout, id: &LayerId, st: State) -> Result<()> {
    write_atomic(&layout.mount_state(id), |w| {
        writeln!(w, "writable={}", st.writable).map_err(|e| Error::io("write mount state", e))
    })
}

/// Materialises the view of `id` into `mnt/<id>` and records it.
fn mount(layout: &Layout, id: &LayerId, writable: bool) -> Result<()> {
    let branches = layout.branches(id)?;
    layout.reset_mountpoint(id)?;
    let staging = layout.staging("mnt", id, "materialising");
    sys::remove_tree(&staging)?;
    layout::mkdir_0700(&staging)?;
    let lower = match view::materialise(&branches, &staging) {
        Ok(lower) => lower,
        Err(e) => {
            // A dot name: the sweep removes it if this fails too.
            let _ = sys::remove_tree(&staging);
            return Err(e);
        }
    };
    let mnt = layout.mnt(id);
    layout::rename(&staging, &mnt)?;
    let recorded = (|| {
        let recs: Vec<(PathBuf, Rec)> = view::scan(&mnt)?
            .into_iter()
            .map(|(p, m)| {
                let lower = lower.contains(&p);
                (p, Rec::new(&m, lower))
            })
            .collect();
        manifest::write(&layout.manifest(id), recs.iter().map(|(p, r)| (p, r)))?;
        write_state(layout, id, State { writable })
    })();
    if recorded.is_err() {
        // Without its state the view is not mounted; the sweep clears it if this fails too.
        let _ = layout::unlink(&layout.manifest(id));
        let _ = layout.reset_mountpoint(id);
    }
    recorded
}

/// Folds (if `writable`) and releases the view of `id`.
fn unmount(layout: &Layout, id: &LayerId, writable: bool) -> Result<()> {
    if writable {
        fold::fold(layout, id)?;
    }
    release(layout, id)
}

/// Forgets the view of `id` without folding: the mount state first, then its files.
fn release(layout: &Layout, id: &LayerId) -> Result<()> {
    layout::unlink(&layout.mount_state(id))?;
    layout::unlink(&layout.manifest(id))?;
    layout.reset_mountpoint(id)
}
