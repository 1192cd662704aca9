//! The block driver: one filesystem image per layer, cloned from its parent, mounted through a
//! loop device.
//!
//! For users who want each layer as a block image: to attach it to a VM as a disk (Kata,
//! Firecracker: see [`BlockDriver::mount_spec`]), to bound a container's size hard (the image's
//! size is the limit: writing past it is ENOSPC inside the layer), or to move a layer as one
//! file. Like containerd's blockfile snapshotter, with sparse-aware clones and the fast loop
//! setup.
//!
//! - **Images.** A layer is `<home>/<id>/image`, an ext4 (or xfs) filesystem of the configured
//!   apparent size, sparse. A base layer starts as a clone of a scratch image made once per
//!   (fs, size) with mkfs and kept (remade if missing or without a superblock); a child starts
//!   as a clone of its parent's image, so it already holds the parent's whole view. A clone is
//!   a reflink (`FICLONE`, O(1)) where the backing filesystem can (xfs, btrfs), else a sparse
//!   copy that moves only the allocated extents (`SEEK_DATA`/`SEEK_HOLE` + `copy_file_range`).
//!   Disk usage is reported as allocated bytes (`st_blocks`), not the apparent size.
//! - **Mounts.** `get` attaches a loop device (`LOOP_CTL_GET_FREE` + one `LOOP_CONFIGURE` with
//!   autoclear, 4 KiB blocks and direct I/O; see the `loopdev` module) and mounts the image at
//!   `<home>/<id>/mnt`; the last `put` unmounts, and autoclear detaches the device. Image
//!   layers are always mounted read-only (read-only loop device and mount): an image layer is
//!   written only by `apply_diff`, which mounts it read-write for the apply, syncs and
//!   unmounts. Container layers mount read-write unless `MountOpts::read_only`.
//! - **Diffs.** The naive ones (the trait's defaults): both layers mounted read-only, each on
//!   its own loop device, and compared. Apply untars onto the mounted image with whiteouts
//!   applied (the image already holds the parent's files).
//! - **Crash safety.** A layer directory appears by one rename when whole (see the `layout`
//!   module). A crash between loop attach and mount leaves nothing (autoclear). [`BlockDriver::new`],
//!   when no other instance has the home open, unmounts what is mounted under the home other
//!   than layers' mount points (those are adopted by the next get or put), detaches loop
//!   devices whose backing file is in this home and that nothing mounts (never anyone else's),
//!   and removes half-made files.
//!
//! # Limits
//!
//! - Needs root (loop devices, mount) and `mkfs.ext4` or `mkfs.xfs`.
//! - The id `lock` is reserved (`<home>/lock`, the instance lock): `InvalidInput` at create.
//! - A layer's size is the config's, for every layer: `CreateOpts::size` is `NotSupported`
//!   (growing one image would need a resize; shrinking below the parent is impossible).
//! - Freed blocks inside an image are not given back to the backing file (no `discard`): an
//!   image's allocation only grows, up to its size. The journal (kept for crash safety) takes
//!   up to its size of allocation once a layer has written that much.
//! - A full backing filesystem shows inside a layer as an I/O error, not ENOSPC (the image is
//!   sparse). Keep room on the backing filesystem.
//! - xfs images need at least 300 MiB (mkfs.xfs's minimum) and their log is written in full
//!   by mkfs, so on a backing filesystem without reflink every xfs layer copies it.

#![deny(missing_docs)]

mod config;
mod driver;
mod image;
mod layout;
mod loopdev;
mod mounts;
mod sys;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use config::{Config, DEFAULT_SIZE, Fs};
pub use image::CloneMethod;
use rustix::fs::Mode;
use strata_driver_api::{Capabilities, Error, ErrorKind, LayerId, Result};
use strata_driver_util::lock::HomeLock;
use strata_driver_util::refcount::Slots;

/// The driver's name, in configs and as its home directory's name.
pub const NAME: &str = "block";

/// Whether the driver can work on this host: root, `/dev/loop-control`, and `mkfs.ext4` (or
/// `mkfs.xfs`, checked when the driver starts with `fs = "xfs"`) on the `PATH`.
pub fn probe() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Err(Error::new(
            ErrorKind::NotSupported,
            "block driver: needs root (loop devices and mounts)",
        ));
    }
    let ctl = std::path::Path::new("/dev/loop-control");
    if !ctl.exists() {
        return Err(Error::new(
            ErrorKind::NotSupported,
            "block driver: no /dev/loop-control (loop module not loaded?)",
        ));
    }
    probe_mkfs(Fs::Ext4)
}

/// Whether [`BlockDriver::new`] would start with `config` on this host, and the capabilities
/// it would have ([`capabilities`]: the same everywhere), found by reading only: [`probe`],
/// and `mkfs.<fs>` on the `PATH` and a usable size. `home` is where the driver would live;
/// the block driver needs nothing of it (whether clones are reflinks is learnt at start).
pub fn probe_config(home: &Path, config: &Config) -> Result<Capabilities> {
    let _ = home;
    probe()?;
    probe_mkfs(config.fs)?;
    check_size(config)?;
    Ok(capabilities())
}

fn check_size(config: &Config) -> Result<()> {
    if config.size < config.fs.min_size() || config.size % 4096 != 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "block driver: size {} must be a multiple of 4096 and at least {} for {}",
                config.size,
                config.fs.min_size(),
                config.fs.as_str()
            ),
        ));
    }
    Ok(())
}

/// The driver's capabilities (the same on every host it runs on).
pub fn capabilities() -> Capabilities {
    Capabilities {
        native_diff: false,
        needs_root: true,
        rootless: false,
        max_depth: None,
        quota: false,
        mount_spec: true,
        rename_dir: true,
        read_only_images: true,
    }
}

fn probe_mkfs(fs: Fs) -> Result<()> {
    let tool = format!("mkfs.{}", fs.as_str());
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    if std::env::split_paths(&path).any(|d| d.join(&tool).is_file()) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::NotSupported,
            format!("block driver: {tool} not found on PATH (install e2fsprogs or xfsprogs)"),
        ))
    }
}

/// Where and how to mount a layer's image: for runtimes that attach the image to a VM as a disk
/// instead of mounting it on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The image file.
    pub image: PathBuf,
    /// The filesystem type (`ext4`, `xfs`).
    pub fs_type: String,
    /// Whether the layer must be mounted read-only (image layers).
    pub read_only: bool,
    /// Mount options the driver itself uses (`nouuid` for xfs clones, ...).
    pub options: Vec<String>,
}

/// The block driver. Cheap to share: the engine holds it as `Arc<dyn Driver>`.
#[derive(Debug)]
pub struct BlockDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    layout: layout::Layout,
    slots: Slots,
    fs: Fs,
    size: u64,
    reflink: bool,
    scratch_lock: Mutex<()>,
    /// `<home>/lock`, held shared while this instance lives.
    _lock: HomeLock,
}

impl BlockDriver {
    /// Opens the driver in `home` (`<root>/block`), creating it (0700) if needed. When no other
    /// instance has the home open (in this process or another), clears what a crash left
    /// behind (see the crate docs). The instance holds `<home>/lock` shared until dropped (so no
    /// layer can be called `lock`: `InvalidInput`).
    ///
    /// A size below the filesystem's minimum (16 MiB for ext4, 300 MiB for xfs) is
    /// `InvalidInput`; a missing `mkfs.<fs>`, no root or no loop devices is `NotSupported`.
    pub fn new(home: PathBuf, config: Config) -> Result<BlockDriver> {
        probe_config(&home, &config)?;
        std::fs::create_dir_all(&home).map_err(|e| Error::os("mkdir", &home, e))?;
        rustix::fs::chmod(&home, Mode::from_raw_mode(0o700))
            .map_err(|e| Error::os("chmod", &home, e))?;
        let home = std::fs::canonicalize(&home).map_err(|e| Error::os("realpath", &home, e))?;
        let layout = layout::Layout::new(home)?;
        let lock = HomeLock::attach(layout.home(), || mounts::sweep(&layout))?;
        mounts::thaw_abandoned(&layout)?;
        let reflink = image::probe_reflink(layout.home(), &layout.unique());
        tracing::debug!(home = %layout.home().display(), reflink, fs = %config.fs.as_str(), "block driver started");
        Ok(BlockDriver {
            inner: Arc::new(Inner {
                layout,
                slots: Slots::new(),
                fs: config.fs,
                size: config.size,
                reflink,
                scratch_lock: Mutex::new(()),
                _lock: lock,
            }),
        })
    }

    /// The driver's capabilities.
    pub fn caps(&self) -> Capabilities {
        capabilities()
    }

    /// The filesystem inside the images.
    pub fn fs(&self) -> Fs {
        self.inner.fs
    }

    /// Whether clones are reflinks on this home's filesystem (else sparse copies).
    pub fn reflink(&self) -> bool {
        self.inner.reflink
    }

    /// The layer's mount spec, without mounting: the image path, the filesystem type, whether
    /// it must be mounted read-only (image layers), and the options the driver uses. A missing
    /// layer is `NotFound`. While the layer is mounted on the host, attaching its image
    /// elsewhere too corrupts it: the caller must not.
    pub fn mount_spec(&self, id: &LayerId) -> Result<MountSpec> {
        self.inner.mount_spec(id)
    }

    /// The bytes the layer's image takes on disk (allocated blocks, not the apparent size).
    pub fn allocated(&self, id: &LayerId) -> Result<u64> {
        self.inner.layout.meta(id)?;
        image::allocated(&self.inner.layout.image(id))
    }
}
