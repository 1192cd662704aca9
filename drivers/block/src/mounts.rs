//! Mounting and unmounting layers' images, with refcounts that survive a restart; and the
//! other operations that must not run while a layer is mounted (remove, apply, cloning it into
//! a child). Synchronous, each run on one blocking thread by the trait glue.
//!
//! Every operation on a layer holds that layer's slot exclusively (in this process) for its
//! whole length: get, put, remove, apply, and cloning it into a child (see
//! `strata_driver_util::refcount`). Operations on different layers run in parallel. Across
//! processes the engine serialises writers.
//!
//! Refcounts live in the slots; the mount table is the truth about what is mounted: a layer
//! mounted at `<id>/mnt` that this instance counts nothing for (a restart, another process) is
//! adopted with a count of one by its first get or put.

use std::path::{Path, PathBuf};

use rustix::mount::UnmountFlags;
use strata_archive::{ApplyOptions, WhiteoutMode};
use strata_driver_api::{Error, ErrorKind, LayerId, LayerKind, Result};
use strata_driver_util::mountinfo;

use crate::image::{self, CloneMethod};
use crate::layout::{Layout, Meta};
use crate::{Inner, MountSpec, loopdev, sys};

fn not_found(id: &LayerId) -> Error {
    Error::new(ErrorKind::NotFound, format!("layer {id} not found"))
}

impl Inner {
    /// The mount at the layer's mount point, if any.
    fn mounted(&self, id: &LayerId) -> Result<Option<mountinfo::MountEntry>> {
        Ok(mountinfo::find(&mountinfo::read()?, &self.layout.mnt(id)))
    }

    /// The scratch image for this config, made on first use.
    fn scratch(&self) -> Result<PathBuf> {
        // A panic while making it leaves files that the next call re-checks: go on.
        let _guard = self.scratch_lock.lock().unwrap_or_else(|p| p.into_inner());
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
                self.slots.exclusive(p, |_| {
                    if !self.layout.exists(p)? {
                        return Err(Error::new(
                            ErrorKind::ParentNotFound,
                            format!("parent layer {p} not found"),
                        ));
                    }
                    // A parent mounted read-write is frozen for the copy, so the copy is a
                    // consistent, clean filesystem.
                    let frozen = match self.mounted(p)? {
                        Some(m) if !m.read_only => Some(Freeze::new(&self.layout, p)?),
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
        sys::validate_options(extra)?;
        self.slots.exclusive(id, |s| {
            let meta = self.layout.meta(id)?;
            let mnt = self.layout.mnt(id);
            if s.count() == 0 && self.mounted(id)?.is_some() {
                s.adopt();
            }
            s.acquire(|| {
                let ro = read_only || meta.kind == LayerKind::Image;
                self.mount(id, ro, extra)
            })?;
            Ok(mnt)
        })
    }

    fn mount(&self, id: &LayerId, read_only: bool, extra: &[String]) -> Result<()> {
        let img = self.layout.image(id);
        if read_only && image::needs_recovery(&img, self.fs)? {
            // A journal to replay (the machine went down while it was mounted read-write):
            // a read-only device cannot replay it, so mount read-write once first.
            self.mount(id, false, &[])?;
            sys::unmount(&self.layout.mnt(id), &img)?;
        }
        let dev = loopdev::attach(&img, read_only, id.as_str())?;
        let data = sys::option_string(image::fs_options(self.fs), extra);
        // On failure, dropping `dev` closes its only user and autoclear detaches it.
        sys::mount_with(&dev.path(), &self.layout.mnt(id), self.fs, read_only, &data)
    }

    /// Releases one reference; the last unmounts (and the loop device detaches itself).
    pub(crate) fn put(&self, id: &LayerId) -> Result<()> {
        self.slots.exclusive(id, |s| {
            if s.count() == 0 {
                if !self.layout.exists(id)? {
                    return Err(not_found(id));
                }
                if self.mounted(id)?.is_none() {
                    return Ok(());
                }
                s.adopt();
            }
            s.release(|| sys::unmount(&self.layout.mnt(id), &self.layout.image(id)))
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
        self.slots.exclusive(id, |s| {
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
                match sys::unmount(&mnt, &img) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::Busy => {
                        sys::unmount_flags(&mnt, &img, UnmountFlags::DETACH)?
                    }
                    Err(e) => return Err(e),
                }
            }
            s.reset();
            self.layout.remove(id)
        })
    }

    /// Applies a tar onto the layer's image: mounted read-write for the apply, synced,
    /// unmounted. `Busy` while the layer is mounted.
    pub(crate) fn apply(&self, id: &LayerId, r: &mut dyn std::io::Read) -> Result<u64> {
        self.slots.exclusive(id, |s| {
            if !self.layout.exists(id)? {
                return Err(not_found(id));
            }
            if s.count() > 0 || self.mounted(id)?.is_some() {
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
            let unmounted = sys::unmount(&mnt, &self.layout.image(id));
            let size = applied.map_err(|e| self.explain_no_space(id, e))?;
            unmounted.map_err(|e| self.explain_no_space(id, e))?;
            Ok(size)
        })
    }

    /// An I/O error inside layer `id`'s filesystem, told for what it is when the backing
    /// filesystem has less room than the layer's sparse image may still grow by: the image's
    /// writes then fail in the loop device, which the layer's filesystem sees as EIO (or, once
    /// ext4 gives up, EROFS), or at best as ENOSPC without saying where. Other errors, and an
    /// ENOSPC of the layer's own filesystem (its image is full), are returned as they are.
    fn explain_no_space(&self, id: &LayerId, err: Error) -> Error {
        if !matches!(err.kind(), ErrorKind::Io | ErrorKind::NoSpace) {
            return err;
        }
        let image = self.layout.image(id);
        let home = self.layout.home();
        let (Ok(size), Ok(used), Ok(vfs)) = (
            image::apparent(&image),
            image::allocated(&image),
            rustix::fs::statvfs(home),
        ) else {
            return err;
        };
        let free = vfs.f_bfree.saturating_mul(vfs.f_frsize);
        let room = size.saturating_sub(used);
        if free >= room {
            return err;
        }
        Error::with_source(
            ErrorKind::NoSpace,
            format!(
                "layer {id}: the backing filesystem of {} is full: {free} bytes free, less than the {room} bytes its sparse image may still grow by",
                home.display()
            ),
            err,
        )
    }

    /// Unmounts every layer mounted at its mount point; the counts start over.
    pub(crate) fn cleanup(&self) -> Result<()> {
        let table = mountinfo::read()?;
        let mut first_err = None;
        for id in self.layout.layers()? {
            let mnt = self.layout.mnt(&id);
            let released = self.slots.exclusive(&id, |s| {
                if mountinfo::find(&table, &mnt).is_some() {
                    // Still mounted on failure: the count stays.
                    sys::unmount(&mnt, &self.layout.image(&id))?;
                }
                s.reset();
                Ok::<(), Error>(())
            });
            if let Err(e) = released {
                first_err.get_or_insert(e);
            }
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
}

/// Clears what a crash left in this home: mounts other than layers' own mount points,
/// loop devices backed by this home's files that nothing mounts, and dot-name leftovers.
/// Runs only while no other instance has the home open (under `HomeLock::attach`).
/// A layer's mounted filesystem frozen for a child's clone, with its marker
/// `<home>/<id>/freezing` held (flock) meanwhile: a process killed while frozen leaves the
/// marker with its lock free, and the next start thaws ([`thaw_abandoned`]). A freeze without
/// a marker (an administrator's `fsfreeze`) is never touched.
struct Freeze {
    frozen: Option<loopdev::Frozen>,
    marker: PathBuf,
    _held: std::fs::File,
}

impl Freeze {
    fn new(layout: &Layout, id: &LayerId) -> Result<Freeze> {
        let marker = layout.freezing(id);
        let held = std::fs::File::create(&marker).map_err(|e| Error::os("create", &marker, e))?;
        rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::os("flock", &marker, e))?;
        match loopdev::freeze(&layout.mnt(id)) {
            Ok(frozen) => Ok(Freeze {
                frozen: Some(frozen),
                marker,
                _held: held,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&marker);
                Err(e)
            }
        }
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        // Thawed first, then the marker goes, then (the field) its lock.
        drop(self.frozen.take());
        let _ = std::fs::remove_file(&self.marker);
    }
}

/// Thaws the filesystems that a killed process left frozen: every layer whose `freezing`
/// marker nobody holds. Runs at every start (a marker's lock tells a live freeze from a dead
/// one, so no other instance's clone is disturbed); writes to a layer frozen and abandoned
/// would hang forever otherwise.
pub(crate) fn thaw_abandoned(layout: &Layout) -> Result<()> {
    use rustix::fs::{FlockOperation, flock};
    for id in layout.layers()? {
        let marker = layout.freezing(&id);
        let held = match std::fs::File::open(&marker) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::os("open", &marker, e)),
        };
        if flock(&held, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // a live process is cloning from it
        }
        let mnt = layout.mnt(&id);
        if mountinfo::find(&mountinfo::read()?, &mnt).is_some() {
            let thawed = loopdev::thaw(&mnt)?;
            tracing::debug!(layer = %id, thawed, "a killed clone's freeze released");
        }
        std::fs::remove_file(&marker).map_err(|e| Error::os("unlink", &marker, e))?;
    }
    Ok(())
}

pub(crate) fn sweep(layout: &Layout) -> Result<()> {
    let home = layout.home();
    let table = mountinfo::read()?;
    let layers = layout.layers()?;
    let keep: Vec<PathBuf> = layers.iter().map(|id| layout.mnt(id)).collect();
    for m in table.iter().rev() {
        if m.target.starts_with(home) && !keep.contains(&m.target) {
            sys::unmount_flags(&m.target, Path::new(""), UnmountFlags::DETACH)?;
        }
    }
    let table = mountinfo::read()?;
    let in_use: Vec<u32> = table.iter().filter_map(|m| m.loop_number()).collect();
    for (n, file) in loopdev::attached() {
        if file.starts_with(home) && !in_use.contains(&n) {
            loopdev::detach(n)?;
        }
    }
    for path in layout.leftovers() {
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

fn syncfs(dir: &Path) -> Result<()> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| Error::os("open", dir, e))?;
    rustix::fs::syncfs(&fd).map_err(|e| Error::os("syncfs", dir, e))
}
