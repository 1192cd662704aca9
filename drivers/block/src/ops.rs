//! The driver's operations, synchronous, each run on one blocking thread by the trait glue.
//!
//! Every operation on a layer holds that layer's slot lock (in this process) for its whole
//! length: get, put, remove, apply, and cloning it into a child. Operations on different layers
//! run in parallel. Across processes the engine serialises writers.
//!
//! Refcounts live in the slots; the mount table is the truth about what is mounted: a layer
//! mounted at `<id>/mnt` that this instance counts nothing for (a restart, another process) is
//! adopted with a count of one by its first get or put.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::mount::UnmountFlags;
use strata_archive::{ApplyOptions, WhiteoutMode};
use strata_driver_api::{Error, ErrorKind, LayerId, Result};

use crate::image::{self, CloneMethod};
use crate::layout::{LayerKind, Meta};
use crate::{Inner, MountSpec, loopdev, mountinfo};

/// This instance's references to one layer's mount.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    count: u32,
}

/// The per-layer locks and counts of one instance.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    map: Mutex<HashMap<LayerId, Arc<Mutex<Slot>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves state that every step re-reads from disk: go on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slots {
    fn slot(&self, id: &LayerId) -> Arc<Mutex<Slot>> {
        lock(&self.map).entry(id.clone()).or_default().clone()
    }

    /// Drops an idle slot from the map, so the map holds only what is in use.
    fn forget_if_idle(&self, id: &LayerId, slot: &Arc<Mutex<Slot>>) {
        let mut map = lock(&self.map);
        if Arc::strong_count(slot) == 2 && slot.try_lock().is_ok_and(|s| s.count == 0) {
            map.remove(id);
        }
    }

    fn all(&self) -> Vec<(LayerId, Arc<Mutex<Slot>>)> {
        lock(&self.map)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn not_found(id: &LayerId) -> Error {
    Error::new(ErrorKind::NotFound, format!("layer {id} not found"))
}

impl Inner {
    /// Runs `f` with the layer's slot locked.
    fn locked<T>(&self, id: &LayerId, f: impl FnOnce(&mut Slot) -> Result<T>) -> Result<T> {
        let slot = self.slots.slot(id);
        let result = {
            let mut s = lock(&slot);
            f(&mut s)
        };
        self.slots.forget_if_idle(id, &slot);
        result
    }

    /// The mount at the layer's mount point, if any.
    fn mounted(&self, id: &LayerId) -> Result<Option<mountinfo::MountEntry>> {
        Ok(mountinfo::find(&mountinfo::read()?, &self.layout.mnt(id)))
    }

    /// The scratch image for this config, made on first use.
    fn scratch(&self) -> Result<PathBuf> {
        let _guard = lock(&self.scratch_lock);
        let dir = self.layout.scratch_dir();
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::os("mkdir", &dir, e)),
        }
        image::scratch(&dir, self.fs, self.size, &self.layout.unique())
    }

    /// Makes a layer: its image cloned from the parent's (or the scratch image).
    pub(crate) fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        kind: LayerKind,
    ) -> Result<CloneMethod> {
        let meta = Meta {
            kind,
            parent: parent.cloned(),
        };
        let mut method = CloneMethod::SparseCopy;
        match parent {
            None => {
                let scratch = self.scratch()?;
                self.layout.create(id, &meta, |dst| {
                    method = image::clone_file(&scratch, dst)?;
                    Ok(())
                })?;
            }
            Some(p) => {
                self.locked(p, |_| {
                    if !self.layout.exists(p)? {
                        return Err(Error::new(
                            ErrorKind::ParentNotFound,
                            format!("parent layer {p} not found"),
                        ));
                    }
                    // A parent mounted read-write is frozen for the copy, so the copy is a
                    // consistent, clean filesystem.
                    let frozen = match self.mounted(p)? {
                        Some(m) if !m.read_only => Some(loopdev::freeze(&self.layout.mnt(p))?),
                        _ => None,
                    };
                    let src = self.layout.image(p);
                    let made = self.layout.create(id, &meta, |dst| {
                        method = image::clone_file(&src, dst)?;
                        Ok(())
                    });
                    drop(frozen);
                    made
                })?;
            }
        }
        tracing::debug!(layer = %id, clone = %method.as_str(), "image cloned");
        Ok(method)
    }

    /// Mounts the layer (first reference) or counts one more.
    pub(crate) fn get(&self, id: &LayerId, read_only: bool, extra: &[String]) -> Result<PathBuf> {
        mountinfo::validate_options(extra)?;
        self.locked(id, |s| {
            let meta = self.layout.meta(id)?;
            let mnt = self.layout.mnt(id);
            if s.count == 0 && self.mounted(id)?.is_some() {
                s.count = 1;
            }
            if s.count == 0 {
                let ro = read_only || meta.kind == LayerKind::Image;
                self.mount(id, ro, extra)?;
            }
            s.count += 1;
            Ok(mnt)
        })
    }

    fn mount(&self, id: &LayerId, read_only: bool, extra: &[String]) -> Result<()> {
        let img = self.layout.image(id);
        if read_only && image::needs_recovery(&img, self.fs)? {
            // A journal to replay (the machine went down while it was mounted read-write):
            // a read-only device cannot replay it, so mount read-write once first.
            self.mount(id, false, &[])?;
            mountinfo::unmount(&self.layout.mnt(id), &img)?;
        }
        let dev = loopdev::attach(&img, read_only, id.as_str())?;
        let data = mountinfo::option_string(image::fs_options(self.fs), extra);
        // On failure, dropping `dev` closes its only user and autoclear detaches it.
        mountinfo::mount_with(&dev.path(), &self.layout.mnt(id), self.fs, read_only, &data)
    }

    /// Releases one reference; the last unmounts (and the loop device detaches itself).
    pub(crate) fn put(&self, id: &LayerId) -> Result<()> {
        self.locked(id, |s| {
            if s.count == 0 {
                if !self.layout.exists(id)? {
                    return Err(not_found(id));
                }
                if self.mounted(id)?.is_none() {
                    return Ok(());
                }
                s.count = 1;
            }
            if s.count == 1 {
                mountinfo::unmount(&self.layout.mnt(id), &self.layout.image(id))?;
            }
            s.count -= 1;
            Ok(())
        })
    }

    pub(crate) fn is_mounted(&self, id: &LayerId) -> Result<bool> {
        if !self.layout.exists(id)? {
            return Err(not_found(id));
        }
        Ok(self.mounted(id)?.is_some())
    }

    /// Removes a layer; `Busy` while mounted unless `force`.
    pub(crate) fn remove(&self, id: &LayerId, force: bool) -> Result<()> {
        self.locked(id, |s| {
            if !self.layout.exists(id)? {
                return Err(not_found(id));
            }
            if self.mounted(id)?.is_some() {
                if !force {
                    return Err(Error::new(
                        ErrorKind::Busy,
                        format!("layer {id} is mounted"),
                    ));
                }
                let (mnt, img) = (self.layout.mnt(id), self.layout.image(id));
                match mountinfo::unmount(&mnt, &img) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::Busy => {
                        mountinfo::unmount_flags(&mnt, &img, UnmountFlags::DETACH)?
                    }
                    Err(e) => return Err(e),
                }
            }
            s.count = 0;
            self.layout.remove(id)
        })
    }

    /// Applies a tar onto the layer's image: mounted read-write for the apply, synced,
    /// unmounted. `Busy` while the layer is mounted.
    pub(crate) fn apply(&self, id: &LayerId, r: &mut dyn std::io::Read) -> Result<u64> {
        self.locked(id, |s| {
            if !self.layout.exists(id)? {
                return Err(not_found(id));
            }
            if s.count > 0 || self.mounted(id)?.is_some() {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("layer {id} is mounted"),
                ));
            }
            let mnt = self.layout.mnt(id);
            self.mount(id, false, &[])?;
            let applied = (|| -> Result<u64> {
                let stats =
                    strata_archive::apply_tar(&mnt, r, &ApplyOptions::new(WhiteoutMode::Remove))?;
                syncfs(&mnt)?;
                Ok(stats.size)
            })();
            let unmounted = mountinfo::unmount(&mnt, &self.layout.image(id));
            let size = applied?;
            unmounted?;
            Ok(size)
        })
    }

    /// Unmounts every layer mounted at its mount point; the counts start over.
    pub(crate) fn cleanup(&self) -> Result<()> {
        let table = mountinfo::read()?;
        let mut first_err = None;
        for id in self.layout.layers()? {
            let mnt = self.layout.mnt(&id);
            let slot = self.slots.slot(&id);
            {
                let mut s = lock(&slot);
                if mountinfo::find(&table, &mnt).is_some() {
                    if let Err(e) = mountinfo::unmount(&mnt, &self.layout.image(&id)) {
                        first_err.get_or_insert(e);
                        continue;
                    }
                }
                s.count = 0;
            }
            self.slots.forget_if_idle(&id, &slot);
        }
        for (id, slot) in self.slots.all() {
            self.slots.forget_if_idle(&id, &slot);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The mount spec of a layer: what a VM runtime needs to attach the image as a disk.
    pub(crate) fn mount_spec(&self, id: &LayerId) -> Result<MountSpec> {
        let meta = self.layout.meta(id)?;
        Ok(MountSpec {
            image: self.layout.image(id),
            fs_type: self.fs.as_str().to_string(),
            read_only: meta.kind == LayerKind::Image,
            options: image::fs_options(self.fs)
                .iter()
                .map(|s| s.to_string())
                .collect(),
        })
    }

    /// Clears what a crash left in this home: mounts other than layers' own mount points,
    /// loop devices backed by this home's files that nothing mounts, and dot-name leftovers.
    /// Runs only while no other instance has the home open.
    pub(crate) fn sweep(&self) -> Result<()> {
        let home = self.layout.home();
        let table = mountinfo::read()?;
        let layers = self.layout.layers()?;
        let keep: Vec<PathBuf> = layers.iter().map(|id| self.layout.mnt(id)).collect();
        for m in table.iter().rev() {
            if m.target.starts_with(home) && !keep.contains(&m.target) {
                mountinfo::unmount_flags(&m.target, Path::new(""), UnmountFlags::DETACH)?;
            }
        }
        let table = mountinfo::read()?;
        let in_use: Vec<u32> = table.iter().filter_map(|m| m.loop_number()).collect();
        for (n, file) in loopdev::attached() {
            if file.starts_with(home) && !in_use.contains(&n) {
                loopdev::detach(n)?;
            }
        }
        for path in self.layout.leftovers() {
            let r = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::os("remove", &path, e)),
            }
        }
        Ok(())
    }
}

fn syncfs(dir: &Path) -> Result<()> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| Error::os("open", dir, e))?;
    rustix::fs::syncfs(&fd).map_err(|e| Error::os("syncfs", dir, e))
}
