//! The aufs-like directory driver.
//!
//! Each layer is a directory holding only that layer's changes, in the AUFS/OCI whiteout form
//! (`.wh.<name>` hides a lower `<name>`, `.wh..wh..opq` hides a lower directory's children).
//! Since that is also the OCI layer tar format, `diff` is a plain tar of the layer's directory
//! and `apply_diff` untars straight into it: both O(size of the layer), never O(size of the
//! image). It needs no root, no kernel module and no special file system.
//!
//! The layout under the driver's home (`<root>/dir`) is described in the `layout` module's
//! docs: `layers/<id>` (the ancestry), `diff/<id>/` (the changes), `mnt/<id>/` (the view).
//!
//! # Mount modes
//!
//! The merged view of a layer (its diff over its ancestors', top first) can be set up two ways
//! ([`MountMode`]):
//!
//! - **fuse**: a union file system in userspace (see the [`fuse`] module), served by a helper
//!   process (`strata-dir-fuse`, a binary of this crate) that outlives the caller of `get`,
//!   as fuse-overlayfs does under Podman; the last `put` unmounts it. Changes go straight
//!   into `diff/<id>`, in AUFS form, as they are made. As root it mounts directly; otherwise
//!   through `fusermount3`. `auto` picks it when `/dev/fuse` opens and the helper is found.
//!
//! - **copy**: the first `get` materialises the view into `mnt/<id>` (file contents reflinked
//!   where the file system can, else copied) and records a manifest of what it holds; the last
//!   `put` compares the view with the manifest and folds the differences back into `diff/<id>`
//!   (copy-ups, whiteouts, opaque directories), crash-safely, then empties `mnt/<id>`. A `get`
//!   with `read_only` never folds. The first `get` costs O(size of the image); the last `put` a
//!   walk of the view plus O(size of the changes). Nothing stops a write through a read-only
//!   view, so [`Capabilities::read_only_images`] is false.

//! # Crash safety
//!
//! Every file is written atomically and every tree built under a dot-name and renamed into
//! place; [`DirDriver::new`] sweeps what a crash left (see the `layout` module). A fold never touches
//! the previous diff until one `RENAME_EXCHANGE` swaps the new one in (see the `fold` module).
//! The sweep runs only when no other instance has the home open (a shared `flock` on
//! `<home>/lock` that every instance holds for its life), so it never mistakes another
//! process's work in progress for a crash's leftovers.

//!
//! # Limits of the copy mode
//!
//! - Mount options (`MountOpts::options`, e.g. an SELinux `context=`) cannot apply to a copied
//!   view: a `get` with any is `NotSupported`.
//! - What no layer can hold is not folded back: sockets, and files named `.wh.*` made in a
//!   view (AUFS itself refuses to create them). A file system mounted inside a view is never
//!   entered.
//! - An unprivileged user's views keep the user as the owner of every file (a foreign owner
//!   cannot be given away) and go without `trusted.*` xattrs; files the owner cannot read
//!   (mode 0222) are copied by lending them `u+r` for the moment of opening; directories the
//!   owner cannot search cannot be copied.
//! - A `diff` stream reads `diff/<id>` as it goes: if the layer is folded into or removed
//!   before the stream ends, the stream fails with an error (never a short tar).
//! - A directory deleted and made again in a view may get its old inode number back from the
//!   file system; the fold then records per-child whiteouts instead of an opaque directory
//!   (the same view either way).

#![deny(missing_docs)]

mod changes;
mod config;
mod copy;
mod driver;
mod fold;
pub mod fuse;
mod layout;
mod manifest;
mod mounts;
mod sys;
mod union;
mod view;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use config::{Config, MountMode};
use strata_driver_api::{Capabilities, Error, ErrorKind, Result};
use strata_driver_util::lock::HomeLock;

/// The driver's name, in configs and as its home directory's name.
pub const NAME: &str = "dir";

/// Whether the driver can work on this host. The dir driver needs nothing special: always Ok.
pub fn probe() -> Result<()> {
    Ok(())
}

/// Whether [`DirDriver::new`] would start with `config` on this host, and the capabilities
/// it would have, found by reading only (nothing is created, nothing mounted): the mount mode
/// `config` resolves to here (for `fuse` and `auto`: whether `/dev/fuse` opens and the helper
/// is found), as `new` resolves it. `home` is where the driver would live; the dir driver
/// needs nothing of it.
pub fn probe_config(home: &Path, config: &Config) -> Result<Capabilities> {
    let _ = home;
    Ok(caps(resolve(config)?.mode))
}

/// A config's mount mode as it resolves on this host.
struct Resolved {
    /// `Fuse` or `Copy`.
    mode: MountMode,
    /// The FUSE helper, in fuse mode.
    helper: Option<PathBuf>,
    /// Why `auto` did not pick fuse.
    fallback: Option<String>,
}

/// Resolves `config.mount`: `Fuse` is `NotSupported` where FUSE cannot be mounted (no usable
/// `/dev/fuse`, or neither root nor `fusermount3`) or the helper is not found; `Auto` is fuse
/// where it can be, else copy.
fn resolve(config: &Config) -> Result<Resolved> {
    let fuse_helper = || -> Result<PathBuf> {
        fuse::usable().map_err(|why| {
            Error::new(
                ErrorKind::NotSupported,
                format!("dir driver: FUSE is not usable here: {why}"),
            )
        })?;
        fuse::find_helper(config.fuse_helper.as_deref())
    };
    let (mode, helper, fallback) = match config.mount {
        MountMode::Fuse => (MountMode::Fuse, Some(fuse_helper()?), None),
        MountMode::Copy => (MountMode::Copy, None, None),
        MountMode::Auto => match fuse_helper() {
            Ok(h) => (MountMode::Fuse, Some(h), None),
            Err(e) => (MountMode::Copy, None, Some(e.message().to_string())),
        },
    };
    Ok(Resolved {
        mode,
        helper,
        fallback,
    })
}

/// The driver's capabilities in mount mode `mode` (see [`DirDriver::caps`]).
fn caps(mode: MountMode) -> Capabilities {
    let fuse = mode == MountMode::Fuse;
    Capabilities {
        native_diff: true,
        needs_root: false,
        rootless: true,
        max_depth: None,
        quota: false,
        mount_spec: false,
        rename_dir: !fuse,
        read_only_images: fuse,
    }
}

/// The dir driver. Cheap to share: the engine holds it as `Arc<dyn Driver>`.
#[derive(Debug)]
pub struct DirDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    layout: layout::Layout,
    mounts: mounts::Mounts,
    mode: MountMode,
    /// Why `auto` did not pick fuse, for `status()`.
    fallback: Option<String>,
    /// `<home>/lock`, held shared while this instance lives.
    _lock: HomeLock,
}

impl DirDriver {
    /// Opens the driver in `home` (`<root>/dir`), creating it (0700) and its subdirectories if
    /// needed, and, when no other instance has the home open (in this process or another),
    /// clearing what a crashed operation left behind. The instance holds `<home>/lock` shared
    /// until it is dropped.
    ///
    /// `MountMode::Fuse` is `NotSupported` where FUSE cannot be mounted (no usable
    /// `/dev/fuse`, or neither root nor `fusermount3`) or the helper program is not found;
    /// `Auto` resolves to `Fuse` where it can be, else to `Copy`.
    pub fn new(home: PathBuf, config: Config) -> Result<DirDriver> {
        let Resolved {
            mode,
            helper,
            fallback,
        } = resolve(&config)?;
        tracing::debug!(
            home = %home.display(),
            mode = %mode.as_str(),
            helper = ?helper,
            fallback = ?fallback,
            "dir driver mount mode"
        );
        let layout = layout::Layout::open(home)?;
        // Always safe, whoever else has the home open: a dead view serves nobody, and would
        // fail the sweep and any later mount there.
        mounts::detach_dead_views(&layout)?;
        let lock = HomeLock::attach(layout.home(), || layout.sweep())?;
        Ok(DirDriver {
            inner: Arc::new(Inner {
                layout,
                mounts: mounts::Mounts::new(helper),
                mode,
                fallback,
                _lock: lock,
            }),
        })
    }

    /// The mount mode in use (`Auto` resolved).
    pub fn mount_mode(&self) -> MountMode {
        self.inner.mode
    }

    /// The mount mode for `status()`, with the reason `auto` fell back to copy.
    fn mount_mode_status(&self) -> String {
        match &self.inner.fallback {
            Some(why) => format!("{} ({why})", self.inner.mode.as_str()),
            None => self.inner.mode.as_str().to_string(),
        }
    }

    /// The driver's capabilities in its mount mode: a FUSE view refuses writes when mounted
    /// read-only, and cannot rename a directory that is not wholly the layer's own (EXDEV);
    /// a copied view can do the latter and not the former.
    pub fn caps(&self) -> Capabilities {
        caps(self.inner.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_config_says_what_new_would() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("dir");
        let copy = Config {
            mount: MountMode::Copy,
            ..Config::default()
        };
        let caps = probe_config(&home, &copy).unwrap();
        assert_eq!(caps, DirDriver::new(home.clone(), copy).unwrap().caps());
        assert!(caps.rename_dir && !caps.read_only_images);

        let fuse = Config {
            mount: MountMode::Fuse,
            fuse_helper: Some(tmp.path().join("no-such-helper")),
        };
        let err = probe_config(&home, &fuse).unwrap_err();
        let made = DirDriver::new(tmp.path().join("other"), fuse).unwrap_err();
        assert_eq!(err.kind(), made.kind());
        assert!(!tmp.path().join("other").exists());
    }
}
