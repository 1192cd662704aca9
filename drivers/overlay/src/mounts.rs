//! Mounting and unmounting layers' views, with refcounts that survive a restart; and making a
//! layer, which must not race its parent's mounts.
//!
//! Every operation on a layer holds that layer's slot exclusively for its whole length (see
//! `strata_driver_util::refcount`); making a child holds the child's slot, then its parent's.
//! Counts are per instance: a view mounted by someone else is adopted with a count of one.

use std::path::PathBuf;

use rustix::mount::MountAttrFlags;
use strata_driver_api::{Error, ErrorKind, LayerId, LayerKind, MountOpts, Result};

use crate::config::MountApi;
use crate::opts::{Options, Stack};
use crate::{Inner, mount2, sys};

impl Inner {
    /// Makes a layer, under its slot and its parent's (which also orders the parent's
    /// `committed` mark against its mounts).
    pub(crate) fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        kind: LayerKind,
    ) -> Result<()> {
        self.slots.exclusive(id, |_| match parent {
            None => self.layout.create(id, None, kind),
            // Its own parent: the one slot is held already (and the layout refuses).
            Some(p) if p == id => self.create_child(id, p, kind),
            Some(p) => self.slots.exclusive(p, |_| self.create_child(id, p, kind)),
        })
    }

    /// Makes layer `id` over `p`, with both slots held.
    fn create_child(&self, id: &LayerId, p: &LayerId, kind: LayerKind) -> Result<()> {
        let plid = match self.layout.lid(p) {
            Ok(l) => l,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::new(
                    ErrorKind::ParentNotFound,
                    format!("parent layer {p} not found"),
                ));
            }
            Err(e) => return Err(e),
        };
        let lowers = self.layout.lower_lids(p)?;
        let depth = lowers.len() + 2;
        if depth > self.max_depth as usize {
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!(
                    "layer {id} would be {depth} layers deep; the overlay driver mounts at most {} here ({} mount API)",
                    self.max_depth,
                    self.api.as_str()
                ),
            ));
        }
        // A parent with children mounts read-only from its next mount on (overlay2's
        // `committed`): a lower in use as another mount's upper is undefined. Marked
        // first, so a failed mark leaves no child behind.
        self.layout.commit(p)?;
        self.layout.create(id, Some((p, &plid, &lowers)), kind)
    }

    /// The stack of layer `id`'s mount, paths absolute.
    fn stack(&self, id: &LayerId, read_only: bool) -> Result<(Stack<PathBuf>, Stack<String>)> {
        let l = &self.layout;
        let lids = l.lower_lids(id)?;
        let mut abs: Vec<PathBuf> = Vec::with_capacity(lids.len() + 1);
        let mut rel: Vec<String> = Vec::with_capacity(lids.len() + 1);
        let mut upper = None;
        if read_only {
            let own = l.lid(id)?;
            abs.push(l.lid_path(&own));
            rel.push(format!("l/{own}"));
        } else {
            upper = Some((l.diff(id), l.work(id)));
        }
        // overlayfs ignores the opaque xattr on a layer's root (the root is never looked up),
        // so a layer whose tar had `.wh..wh..opq` at the top would still show every lower
        // file: the stack ends at the first layer, from the top, whose root is opaque.
        if !self.root_is_opaque(&l.diff(id))? {
            for lid in &lids {
                abs.push(l.lid_path(lid));
                rel.push(format!("l/{lid}"));
                if self.root_is_opaque(&l.lid_path(lid))? {
                    break;
                }
            }
        }
        // overlayfs wants two lowers without an upper, one with.
        if abs.is_empty() || (read_only && abs.len() == 1) {
            abs.push(l.empty());
            rel.push(".empty".to_string());
        }
        let rel_upper = upper
            .as_ref()
            .map(|_| (format!("{id}/diff"), format!("{id}/work")));
        Ok((
            Stack { lowers: abs, upper },
            Stack {
                lowers: rel,
                upper: rel_upper,
            },
        ))
    }

    /// The directories of the layers below `id` that its view shows, top first: the stack
    /// ends at the first whose root is opaque (what `apply_diff` hides whiteouts against).
    pub(crate) fn lower_dirs(&self, id: &LayerId) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for lid in self.layout.lower_lids(id)? {
            let dir = self.layout.lid_path(&lid);
            let opaque = self.root_is_opaque(&dir)?;
            out.push(dir);
            if opaque {
                break;
            }
        }
        Ok(out)
    }

    /// Whether the layer directory `dir` (its `diff/`, or its short link) has overlay's opaque
    /// xattr on its root, as `apply_diff` sets it for an opaque marker at the top of a tar.
    fn root_is_opaque(&self, dir: &std::path::Path) -> Result<bool> {
        let prefix = if self.user_xattr { "user" } else { "trusted" };
        let name = format!(
            "{prefix}.{}",
            strata_archive::whiteout::OVERLAY_OPAQUE_XATTR
        );
        let mut buf = [0u8; 8];
        match rustix::fs::getxattr(dir, name.as_str(), &mut buf) {
            Ok(n) => Ok(&buf[..n] == b"y"),
            Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(false),
            // A longer value is no "y".
            Err(rustix::io::Errno::RANGE) => Ok(false),
            Err(e) => Err(sys::os("getxattr", dir, e)),
        }
    }

    /// Mounts layer `id`'s view on `<id>/merged`.
    fn mount(&self, id: &LayerId, read_only: bool, opts: &Options) -> Result<()> {
        let (abs, rel) = self.stack(id, read_only)?;
        let target = self.layout.merged(id);
        tracing::debug!(
            layer = %id,
            api = %self.api.as_str(),
            lowers = abs.lowers.len(),
            upper = abs.upper.is_some(),
            read_only,
            options = %opts.param_string(),
            "mounting overlay"
        );
        match self.api {
            MountApi::Mount2 => mount2::mount(self.layout.home(), &rel, opts, read_only, &target),
            _ => sys::mount_fsconfig(&abs, opts, read_only, &target),
        }
    }

    pub(crate) fn get(&self, id: &LayerId, mopts: &MountOpts) -> Result<PathBuf> {
        let extra = Options::parse(&mopts.options)?;
        let opts = self.opts.merged(&extra);
        self.slots.exclusive(id, |s| {
            self.layout.ensure(id)?;
            let merged = self.layout.merged(id);
            if s.count() == 0 && sys::is_mount_root(&merged)? {
                s.adopt(); // mounted by an earlier instance
            }
            s.acquire(|| {
                let read_only = mopts.read_only
                    || self.layout.committed(id)
                    || opts.attrs.contains(MountAttrFlags::MOUNT_ATTR_RDONLY);
                match std::fs::create_dir(&merged) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::os("mkdir", &merged, e)),
                }
                self.mount(id, read_only, &opts).map_err(|e| {
                    let _ = std::fs::remove_dir(&merged);
                    e.context(format!("mount layer {id}"))
                })
            })?;
            Ok(merged)
        })
    }

    pub(crate) fn put(&self, id: &LayerId) -> Result<()> {
        self.slots.exclusive(id, |s| {
            self.layout.ensure(id)?;
            if s.count() == 0 {
                if !sys::is_mount_root(&self.layout.merged(id))? {
                    return Ok(());
                }
                s.adopt();
            }
            s.release(|| self.unmount(id))
        })
    }

    /// Detaches the view and removes the mount point.
    fn unmount(&self, id: &LayerId) -> Result<()> {
        let merged = self.layout.merged(id);
        sys::unmount(&merged)?;
        match std::fs::remove_dir(&merged) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::os("rmdir", &merged, e)),
        }
    }

    pub(crate) fn is_mounted(&self, id: &LayerId) -> Result<bool> {
        self.layout.ensure(id)?;
        sys::is_mount_root(&self.layout.merged(id))
    }

    pub(crate) fn remove(&self, id: &LayerId, force: bool) -> Result<()> {
        self.slots.exclusive(id, |s| {
            self.layout.ensure(id)?;
            if sys::is_mount_root(&self.layout.merged(id))? {
                if !force {
                    return Err(Error::new(
                        ErrorKind::Busy,
                        format!("layer {id} is mounted"),
                    ));
                }
                self.unmount(id)?;
            }
            s.reset();
            self.layout.remove(id)
        })
    }

    /// Unmounts every layer's view (this instance's and any adopted one).
    pub(crate) fn cleanup(&self) -> Result<()> {
        for id in self.layout.ids()? {
            self.slots.exclusive(&id, |s| {
                s.reset();
                if sys::is_mount_root(&self.layout.merged(&id))? {
                    self.unmount(&id)?;
                }
                Ok::<(), Error>(())
            })?;
        }
        Ok(())
    }

    /// `Busy` while the layer is mounted (an upper changed under a mount is undefined).
    pub(crate) fn ensure_unmounted(&self, id: &LayerId) -> Result<()> {
        self.layout.ensure(id)?;
        if sys::is_mount_root(&self.layout.merged(id))? {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("layer {id} is mounted"),
            ));
        }
        Ok(())
    }
}
