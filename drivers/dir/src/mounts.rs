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
//! Counts are per instance, in `strata_driver_util::refcount` slots. Every get, put, remove,
//! apply and fold of one layer runs under that layer's slot (held exclusively), so they never
//! interleave within a process; reading a layer's diff as an ancestor (materialising a child's
//! view, a child's `changes`, making a child) holds the ancestor's slot shared, so no fold,
//! apply or remove swaps it mid-read. Slots are taken child first, then ancestors in chain
//! order, so they cannot deadlock. Across processes the engine serialises writers.
//!
//! Start-up's mount work is here too ([`detach_dead_views`]), so that the layout stays a module
//! of paths and files.

use std::path::{Path, PathBuf};

use strata_driver_api::{Error, ErrorKind, LayerId, LayerKind, Result};
use strata_driver_util::refcount::{Slot, Slots};

use crate::fold;
use crate::fuse::{launch, serve};
use crate::layout::{self, Layout};
use crate::manifest::{self, Rec};
use crate::sys;
use crate::view;
use strata_archive::atomic;

/// What the mount state says about a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct State {
    /// The view takes writes (copy mode: its changes are folded back on the last put).
    pub writable: bool,
    /// A FUSE view: its server's pid (0 while it is being started).
    pub fuse: Option<u32>,
}

/// The per-layer slots of one driver instance, and how it makes views.
#[derive(Debug, Default)]
pub(crate) struct Mounts {
    slots: Slots,
    /// The FUSE helper program, in fuse mode; `None` in copy mode.
    fuse: Option<PathBuf>,
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
            slots: Slots::new(),
            fuse,
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
        self.slots.exclusive(id, |s| {
            if !layout.exists(id)? {
                return Err(not_found(id));
            }
            let mut lower = if ancestors {
                layout.ancestry(id)?
            } else {
                Vec::new()
            };
            // Never the layer's own slot twice, even from a corrupt ancestry.
            lower.retain(|a| a != id);
            self.slots.shared(&lower, || f(s))
        })
    }

    /// Takes a reference to the view of `id`, mounting it if it is not mounted. A FUSE view
    /// of an image layer is always read-only (its diff is its children's lower branch).
    pub(crate) fn get(&self, layout: &Layout, id: &LayerId, read_only: bool) -> Result<PathBuf> {
        self.locked(layout, id, true, |s| {
            let read_only =
                read_only || (self.fuse.is_some() && layout.kind(id)? == LayerKind::Image);
            match current_state(layout, id)? {
                None => {
                    // Not mounted: whatever this instance counted is gone.
                    s.reset();
                }
                Some(st) => {
                    // A view this instance holds no count for: adopt it.
                    s.adopt();
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
            s.acquire(|| match &self.fuse {
                Some(helper) => mount_fuse(layout, id, !read_only, helper),
                None => mount(layout, id, !read_only),
            })?;
            Ok(layout.mnt(id))
        })
    }

    /// Drops a reference; the last one folds a writable view back and releases it. A layer
    /// that is not mounted (or does not exist) is a no-op.
    pub(crate) fn put(&self, layout: &Layout, id: &LayerId) -> Result<()> {
        let result = self.locked(layout, id, false, |s| {
            let Some(st) = current_state(layout, id)? else {
                s.reset();
                return Ok(());
            };
            // Still mounted when the unmount fails: the next put tries again.
            s.release(|| unmount(layout, id, st))
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
            s.reset();
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
        // Never the layer's own slot twice (a layer named as its own parent: the layout refuses).
        let parent: Vec<LayerId> = parent.filter(|p| *p != id).into_iter().cloned().collect();
        self.slots.exclusive(id, |_| self.slots.shared(&parent, f))
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
        let mut first = None;
        for id in self.slots.ids() {
            let result = self.slots.exclusive(&id, |s| {
                if s.count() == 0 {
                    return Ok(());
                }
                if let Some(st) = current_state(layout, &id)? {
                    unmount(layout, &id, st)?;
                }
                s.reset();
                Ok::<(), Error>(())
            });
            if let Err(e) = result {
                first.get_or_insert(e.context(format!("release layer {id}")));
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Detaches every FUSE view whose server died: such a mount fails every call with ENOTCONN
/// ("Transport endpoint is not connected"), and would fail the sweep and any later mount
/// there. Always safe, whoever else has the home open: a dead view serves nobody.
pub(crate) fn detach_dead_views(layout: &Layout) -> Result<()> {
    let mnt = layout.sub("mnt");
    for ent in std::fs::read_dir(&mnt).map_err(|e| Error::os("opendir", &mnt, e))? {
        let ent = ent.map_err(|e| Error::os("readdir", &mnt, e))?;
        let path = ent.path();
        if launch::liveness(&path)? == launch::Liveness::Dead {
            launch::detach(&path)?;
        }
    }
    Ok(())
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
