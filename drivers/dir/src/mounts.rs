//! Refcounted views: materialised on the first `get` and folded back on the last `put` (copy
//! mode), or served by a FUSE helper from the first `get` to the last `put` (fuse mode; see
//! the `fuse` module).
//!
//! A copied view is mounted exactly when `state/<id>.mount` exists; it is written last when a
//! view is made (after the files and the manifest) and removed first when one is released. A
//! FUSE view's state (`fuse=<pid>`) is written before its server starts and counts only while
//! the mount answers: a view whose server is gone is cleared on the next call that looks. That file
//! outlives the process, so `strata mount` in one process and `strata umount` in another work:
//! an instance that meets a mounted view it holds no count for adopts it with a count of one.
//!
//! Counts are per instance. Every get, put, remove, apply and fold of one layer runs under
//! that layer's lock (held for writing), so they never interleave within a process; reading a
//! layer's diff as an ancestor (materialising a child's view, a child's `changes`, making a
//! child) holds the ancestor's lock for reading, so no fold, apply or remove swaps it mid-read.
//! Locks are taken child first, then ancestors in chain order, so they cannot deadlock. Across
//! processes the engine serialises writers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use strata_driver_api::{Error, ErrorKind, LayerId, Result};

use crate::fold;
use crate::fuse::{launch, serve};
use crate::layout::{self, LayerKind, Layout};
use crate::manifest::{self, Rec};
use crate::sys;
use crate::view;
use strata_archive::atomic;

/// This instance's references to one layer's view.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    count: u32,
}

/// What the mount state says about a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct State {
    /// The view takes writes (copy mode: its changes are folded back on the last put).
    pub writable: bool,
    /// A FUSE view: its server's pid (0 while it is being started).
    pub fuse: Option<u32>,
}

/// The per-layer locks and counts of one driver instance.
#[derive(Debug, Default)]
pub(crate) struct Mounts {
    slots: Mutex<HashMap<LayerId, Arc<RwLock<Slot>>>>,
    /// The FUSE helper program, in fuse mode; `None` in copy mode.
    fuse: Option<PathBuf>,
}

type SlotRef = Arc<RwLock<Slot>>;

// A panic while holding a lock leaves on-disk state that every step re-checks: go on.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn not_found(id: &LayerId) -> Error {
    Error::new(ErrorKind::NotFound, format!("layer {id} not found"))
}

fn busy(id: &LayerId) -> Error {
    Error::new(ErrorKind::Busy, format!("layer {id} is mounted"))
}

impl Mounts {
    /// Views made by copying (`fuse: None`) or by the FUSE helper `fuse`.
    pub(crate) fn new(fuse: Option<PathBuf>) -> Mounts {
        Mounts {
            slots: Mutex::default(),
            fuse,
        }
    }

    /// The layer's slot, to lock for the whole operation.
    fn slot(&self, id: &LayerId) -> SlotRef {
        lock(&self.slots).entry(id.clone()).or_default().clone()
    }

    /// The slots of the layer's ancestors, to hold for reading while their diffs are read.
    fn ancestor_slots(&self, layout: &Layout, id: &LayerId) -> Result<Vec<(LayerId, SlotRef)>> {
        Ok(layout
            .ancestry(id)?
            .into_iter()
            .map(|a| {
                let s = self.slot(&a);
                (a, s)
            })
            .collect())
    }

    /// Drops the slot of `id` from the map when it counts no reference and nobody else has it
    /// (the map's `Arc` and the caller's are the only ones): the map holds only what is in use.
    fn forget_if_idle(&self, id: &LayerId, slot: &SlotRef) {
        let mut map = lock(&self.slots);
        // With no other Arc, no other thread can hold or wait for the lock (getting an Arc
        // takes the map's lock, held here), so this never waits.
        if Arc::strong_count(slot) == 2 && slot.try_read().is_ok_and(|s| s.count == 0) {
            map.remove(id);
        }
    }

    fn forget_all_idle(&self, slots: &[(LayerId, SlotRef)]) {
        for (id, s) in slots {
            self.forget_if_idle(id, s);
        }
    }

    /// Runs `f` on the layer's slot, held for writing, with its ancestors' held for reading when
    /// `ancestors` (their diffs are read: no fold, apply or remove of theirs meanwhile).
    fn locked<T>(
        &self,
        layout: &Layout,
        id: &LayerId,
        ancestors: bool,
        f: impl FnOnce(&mut Slot) -> Result<T>,
    ) -> Result<T> {
        let slot = self.slot(id);
        let result = (|| {
            let mut s = write(&slot);
            if !layout.exists(id)? {
                return Err(not_found(id));
            }
            let lower = if ancestors {
                self.ancestor_slots(layout, id)?
            } else {
                Vec::new()
            };
            let result = {
                let _reading: Vec<_> = lower.iter().map(|(_, s)| read(s)).collect();
                f(&mut s)
            };
            drop(s);
            self.forget_all_idle(&lower);
            result
        })();
        self.forget_if_idle(id, &slot);
        result
    }

    /// Takes a reference to the view of `id`, mounting it if it is not mounted. A FUSE view
    /// of an image layer is always read-only (its diff is its children's lower branch).
    pub(crate) fn get(&self, layout: &Layout, id: &LayerId, read_only: bool) -> Result<PathBuf> {
        self.locked(layout, id, true, |s| {
            let read_only =
                read_only || (self.fuse.is_some() && layout.kind(id)? == LayerKind::Image);
            match current_state(layout, id)? {
                None => {
                    match &self.fuse {
                        Some(helper) => mount_fuse(layout, id, !read_only, helper)?,
                        None => mount(layout, id, !read_only)?,
                    }
                    s.count = 0;
                }
                Some(st) => {
                    // A view this instance holds no count for: adopt it.
                    s.count = s.count.max(1);
                    if !read_only && !st.writable {
                        if let Some(pid) = st.fuse {
                            launch::signal(pid, rustix::process::Signal::USR1)?;
                        }
                        let st = State {
                            writable: true,
                            ..st
                        };
                        write_state(layout, id, st)?;
                    }
                }
            }
            s.count += 1;
            Ok(layout.mnt(id))
        })
    }

    /// Drops a reference; the last one folds a writable view back and releases it. A layer
    /// that is not mounted (or does not exist) is a no-op.
    pub(crate) fn put(&self, layout: &Layout, id: &LayerId) -> Result<()> {
        let result = self.locked(layout, id, false, |s| {
            let Some(st) = current_state(layout, id)? else {
                s.count = 0;
                return Ok(());
            };
            s.count = s.count.max(1) - 1;
            if s.count == 0 {
                if let Err(e) = unmount(layout, id, st) {
                    // Still mounted: the next put tries again.
                    s.count = 1;
                    return Err(e);
                }
            }
            Ok(())
        });
        match result {
            Err(e) if e.kind() == ErrorKind::NotFound && !layout.exists(id)? => Ok(()),
            other => other,
        }
    }

    /// Removes the layer; a mounted one is `Busy` unless `force`, which discards its view
    /// (its unfolded changes go with the layer).
    pub(crate) fn remove(&self, layout: &Layout, id: &LayerId, force: bool) -> Result<()> {
        self.locked(layout, id, false, |s| {
            if let Some(st) = current_state(layout, id)? {
                if !force {
                    return Err(busy(id));
                }
                if st.fuse.is_some() {
                    launch::detach(&layout.mnt(id))?;
                    release_fuse(layout, id)?;
                } else {
                    release(layout, id)?;
                }
            }
            s.count = 0;
            layout.remove_layer(id)
        })
    }

    /// Makes layer `id` with `f`, under its lock and its parent's (for reading: the parent is
    /// neither removed nor changed while the child is made from it).
    pub(crate) fn creating<T>(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let slot = self.slot(id);
        let parent_slot = parent.map(|p| (p.clone(), self.slot(p)));
        let result = {
            let _s = write(&slot);
            let _reading = parent_slot.as_ref().map(|(_, s)| read(s));
            f()
        };
        self.forget_all_idle(parent_slot.as_slice());
        self.forget_if_idle(id, &slot);
        result
    }

    /// Runs `f` under the layer's lock, refusing (`Busy`) while it is mounted.
    pub(crate) fn while_unmounted<T>(
        &self,
        layout: &Layout,
        id: &LayerId,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.locked(layout, id, false, |_| {
            if current_state(layout, id)?.is_some() {
                return Err(busy(id));
            }
            f()
        })
    }

    /// Runs `f` under the layer's lock (and its ancestors', for reading) once the diff directory
    /// is up to date: a writable view's changes so far are folded in first (the view stays
    /// mounted).
    pub(crate) fn with_synced<T>(
        &self,
        layout: &Layout,
        id: &LayerId,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.locked(layout, id, true, |_| {
            // A FUSE view writes straight into the diff: nothing to fold.
            if let Some(State {
                writable: true,
                fuse: None,
            }) = current_state(layout, id)?
            {
                let recs = fold::fold(layout, id)?;
                manifest::write(&layout.manifest(id), recs.iter().map(|(p, r)| (p, r)))?;
            }
            f()
        })
    }

    /// Releases every view this instance holds a reference to, folding writable ones back.
    /// Goes on past a failure and returns the first.
    pub(crate) fn cleanup(&self, layout: &Layout) -> Result<()> {
        let slots: Vec<(LayerId, SlotRef)> = lock(&self.slots)
            .iter()
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        let mut first = None;
        for (id, slot) in &slots {
            let mut s = write(slot);
            if s.count == 0 {
                continue;
            }
            let result = match current_state(layout, id) {
                Ok(Some(st)) => unmount(layout, id, st),
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
        self.forget_all_idle(&slots);
        first.map_or(Ok(()), Err)
    }
}

/// The view's mount state as recorded, or `None` if it is not mounted.
fn read_state(layout: &Layout, id: &LayerId) -> Result<Option<State>> {
    let path = layout.mount_state(id);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(State {
            writable: text.lines().any(|l| l == "writable=true"),
            fuse: text
                .lines()
                .find_map(|l| l.strip_prefix("fuse="))
                .and_then(|p| p.parse().ok()),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::os("read", &path, e)),
    }
}

/// Whether the view of `id` is mounted: recorded so and, for a FUSE view, still served.
pub(crate) fn is_mounted(layout: &Layout, id: &LayerId) -> Result<bool> {
    Ok(match read_state(layout, id)? {
        Some(State { fuse: Some(_), .. }) => {
            launch::liveness(&layout.mnt(id))? == launch::Liveness::Alive
        }
        other => other.is_some(),
    })
}

/// The view's mount state, under the layer's lock: a FUSE view whose server is gone (killed,
/// or unmounted behind the driver's back) is cleared away first and counts as not mounted.
fn current_state(layout: &Layout, id: &LayerId) -> Result<Option<State>> {
    let st = read_state(layout, id)?;
    let Some(State { fuse: Some(_), .. }) = st else {
        return Ok(st);
    };
    let mnt = layout.mnt(id);
    match launch::liveness(&mnt)? {
        launch::Liveness::Alive => Ok(st),
        launch::Liveness::Dead => {
            launch::detach(&mnt)?;
            release_fuse(layout, id)?;
            Ok(None)
        }
        launch::Liveness::NotMounted => {
            release_fuse(layout, id)?;
            Ok(None)
        }
    }
}

fn write_state(layout: &Layout, id: &LayerId, st: State) -> Result<()> {
    atomic::write_file(&layout.mount_state(id), |w| {
        writeln!(w, "writable={}", st.writable).map_err(|e| Error::io("write mount state", e))?;
        if let Some(pid) = st.fuse {
            writeln!(w, "fuse={pid}").map_err(|e| Error::io("write mount state", e))?;
        }
        Ok(())
    })
}

/// Mounts the FUSE view of `id` on `mnt/<id>`. The state is written first (with no server
/// yet), so a crash midway leaves a state that [`current_state`] finds unserved and clears,
/// never a mount without a state (which a sweep would take for a leftover to empty).
fn mount_fuse(layout: &Layout, id: &LayerId, writable: bool, helper: &Path) -> Result<()> {
    let branches = layout.branches(id)?;
    layout.reset_mountpoint(id)?;
    let work = layout.fuse_work(id);
    sys::remove_tree(&work)?;
    layout::mkdir_0700(&work)?;
    write_state(
        layout,
        id,
        State {
            writable,
            fuse: Some(0),
        },
    )?;
    let args = serve::Args {
        mountpoint: layout.mnt(id),
        work,
        read_only: !writable,
        fsname: format!("strata-dir:{id}"),
        branches,
        serve: false,
    };
    let started = launch::start(helper, &args, &layout.fuse_log(id)).and_then(|pid| {
        tracing::debug!(layer = %id, pid, branches = args.branches.len(), writable, "FUSE view served");
        let st = State {
            writable,
            fuse: Some(pid),
        };
        write_state(layout, id, st).inspect_err(|_| {
            let _ = launch::detach(&layout.mnt(id));
        })
    });
    if started.is_err() {
        let _ = layout::unlink(&layout.mount_state(id));
        let _ = layout.discard_fuse_files(id);
    }
    started
}

/// Forgets a FUSE view that is no longer mounted: its state, work directory and log.
fn release_fuse(layout: &Layout, id: &LayerId) -> Result<()> {
    layout::unlink(&layout.mount_state(id))?;
    layout.discard_fuse_files(id)
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
    tracing::debug!(layer = %id, branches = branches.len(), writable, "view materialised (copy mode)");
    let recorded = (|| {
        let recs: Vec<(PathBuf, Rec)> = view::scan(&mnt)?
            .into_iter()
            .map(|(p, m)| {
                let lower = lower.contains(&p);
                (p, Rec::new(&m, lower))
            })
            .collect();
        manifest::write(&layout.manifest(id), recs.iter().map(|(p, r)| (p, r)))?;
        write_state(
            layout,
            id,
            State {
                writable,
                fuse: None,
            },
        )
    })();
    if recorded.is_err() {
        // Without its state the view is not mounted; the sweep clears it if this fails too.
        let _ = layout::unlink(&layout.manifest(id));
        let _ = layout.reset_mountpoint(id);
    }
    recorded
}

/// Unmounts a FUSE view, or folds (if writable) and releases a copied one.
fn unmount(layout: &Layout, id: &LayerId, st: State) -> Result<()> {
    if let Some(pid) = st.fuse {
        launch::unmount(&layout.mnt(id), Some(pid))?;
        return release_fuse(layout, id);
    }
    if st.writable {
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
