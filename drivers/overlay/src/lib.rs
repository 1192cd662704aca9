//! The overlay driver: kernel overlayfs with overlay2's layout.
//!
//! Each layer is a directory of its own changes in overlayfs's form (`<id>/diff`: whiteouts
//! as 0/0 character devices, opaque directories by the `trusted.overlay.opaque` xattr); its
//! merged view is an overlay mount on `<id>/merged` of its diff over its ancestors' diffs. The
//! layout (overlay2's, with `l/` short links) is described in the `layout` module.
//!
//! # Mounting
//!
//! With the new mount API (`fsopen`, `fsconfig("lowerdir+")` one lower at a time, `fsmount`,
//! `move_mount`; Linux 6.8+) a chain can be as deep as overlayfs allows: 500 lowers, so a
//! chain of 500 layers ([`OverlayDriver::caps`]`.max_depth`). Where the kernel refuses
//! `lowerdir+`, the classic `mount(2)` takes one option string of `l/<LID>` names relative
//! to the home (resolved on a thread with its own working directory), limited to what fits in
//! a page with 512 bytes to spare for 128-character ids: 114 layers without extra options.
//! Either way, creating a layer deeper than the limit is `NotSupported` at create time.
//!
//! # Limits
//!
//! - Root, or root of a user namespace (rootless): there every mount gets `userxattr` and
//!   overlay's xattrs are `user.overlay.*` (opaque directories, the native-diff probe, diff and
//!   apply); owners in an applied tar must be mapped in the namespace. An unprivileged
//!   process outside one cannot mount: [`probe`] says so.
//! - No size quota: `create_rw` with a size is `NotSupported` (xfs project quotas are not
//!   done yet).
//! - The ids `l` (the short links' directory) and `lock` (the instance lock) are reserved.
//! - Renaming a directory that came from a lower layer fails with EXDEV in a view (no
//!   `redirect_dir`), as in Docker; callers such as `mv` copy instead.
//!
//! Every mount has `index=off` (and `redirect_dir=off`/`metacopy=off` where the module turns
//! them on by default). An image layer (`create`) and a layer that has children (marked
//! `committed`, as overlay2 does) mount read-only, with no upper: `lowerdir=<diff>:<lowers>`.
//! A base layer's writable mount has the shared `empty/` directory as its one lower.
//! overlayfs ignores the opaque xattr on a layer's root, so a stack ends at the first layer,
//! from the top, whose `diff/` root is opaque (a tar with `.wh..wh..opq` at the top).
//!
//! # Refcounts
//!
//! `get` counts in-process (`strata_driver_util::refcount`: each operation on a layer holds its
//! slot); the first `get` or `put` of a layer that is mounted already (a mount left by another
//! process: `<id>/merged` is a mount root) adopts it with a count of one.
//! The last `put` detaches the mount lazily and removes `merged`. `remove` of a mounted layer
//! is `Busy` unless forced; removing retries EBUSY.
//!
//! # Diff
//!
//! Native where a tar of the upper is the diff: the pair is a layer and its direct parent, and
//! a start-up test mount shows this kernel with these options neither copies the opaque flag
//! up nor writes redirects (moby's check). Then `diff` tars `diff/` converting whiteouts to OCI
//! form and `diff_size` walks `diff/`; otherwise both are naive, and `status()` says which
//! ("Native Overlay Diff"). `apply_diff` always untars into `diff/` converting whiteouts the
//! other way (correct whatever overlayfs would write itself). `changes` is always the naive
//! one (moby's overlay2 does the same: overlay's upper alone cannot tell a modified directory
//! from a copied-up one).

#![deny(missing_docs)]

mod check;
mod config;
mod driver;
mod layout;
mod mount2;
mod mounts;
mod opts;
mod sys;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use config::{Config, MountApi};
use strata_driver_api::{Capabilities, Result};
use strata_driver_util::fsname;
use strata_driver_util::lock::HomeLock;
use strata_driver_util::refcount::Slots;

/// The driver's name, in configs and as its home directory's name.
pub const NAME: &str = "overlay";

/// Whether the driver can work on this host: root (or root of a user namespace), and
/// overlayfs in the kernel.
pub fn probe() -> Result<()> {
    check::host()
}

/// Whether [`OverlayDriver::new`] would start with `config` in `home` on this host, and the
/// capabilities it would have, found by reading only: nothing is created, nothing mounted,
/// and `home` need not exist (its nearest existing ancestor stands for its file system).
///
/// Checks the host ([`probe`]), the config's mount options, the backing file system
/// (overlayfs cannot be an upper layer; `d_type`) and the mount API. Native diff needs a test
/// mount, which only a real start makes: here it is the best estimate (false when the options
/// turn on `redirect_dir` or `metacopy`; else this process's test result if it has one for
/// the same setup; else true, as on every kernel since 4.8 with the driver's defaults).
pub fn probe_config(home: &Path, config: &Config) -> Result<Capabilities> {
    let plan = check::plan(home, config)?;
    Ok(caps(
        plan.native_diff_estimate(),
        plan.user_xattr,
        plan.max_depth,
    ))
}

/// The overlay driver. Cheap to share: the engine holds it as `Arc<dyn Driver>`.
#[derive(Debug)]
pub struct OverlayDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    layout: layout::Layout,
    /// The mount API in use (`Auto` resolved).
    api: MountApi,
    /// The options of every mount: the driver's defaults, then the config's.
    opts: opts::Options,
    max_depth: u32,
    native_diff: bool,
    /// In a user namespace: `userxattr`, overlay's xattrs under `user.overlay.*`.
    user_xattr: bool,
    backing: String,
    /// In-process mount refcounts and per-layer locks.
    slots: Slots,
    /// `<home>/lock`, held shared while this instance lives.
    _lock: HomeLock,
}

impl OverlayDriver {
    /// Opens the driver in `home` (`<root>/overlay`), creating it if needed.
    ///
    /// Checks what [`probe_config`] checks (the host, the config's mount options: `Config`
    /// error for one the driver sets itself; the backing file system: not overlayfs, `d_type`
    /// support, else `NotSupported` naming the fix; the mount API), then, once attached to the
    /// home, whether native diff is safe (one test mount per process, in `<home>/.probe-<pid>`).
    /// When no other instance has the home open, it first clears what crashed operations left,
    /// test mounts of killed processes included.
    pub fn new(home: PathBuf, config: Config) -> Result<OverlayDriver> {
        let plan = check::plan(&home, &config)?;
        let layout = layout::Layout::open(home)?;
        let home = layout.home().to_path_buf();
        // Again on the home itself, which now holds the layout's entries to tell d_type by.
        let magic = check::backing(&home, &home)?;
        let lock = HomeLock::attach(layout.home(), || layout.sweep())?;
        let native_diff = check::native_diff_ok(&home, plan.api, &plan.opts, plan.xattr_prefix())?;
        tracing::debug!(
            home = %home.display(),
            api = %plan.api.as_str(),
            options = %plan.opts.param_string(),
            native_diff,
            max_depth = plan.max_depth,
            "overlay driver started"
        );
        Ok(OverlayDriver {
            inner: Arc::new(Inner {
                layout,
                api: plan.api,
                opts: plan.opts,
                max_depth: plan.max_depth,
                native_diff,
                user_xattr: plan.user_xattr,
                backing: fsname::name(magic),
                slots: Slots::new(),
                _lock: lock,
            }),
        })
    }

    /// The mount API in use (`Auto` resolved).
    pub fn mount_api(&self) -> MountApi {
        self.inner.api
    }

    /// Whether `diff`/`apply_diff`/`diff_size` are native on this host.
    pub fn native_diff(&self) -> bool {
        self.inner.native_diff
    }

    /// The driver's capabilities on this host.
    pub fn caps(&self) -> Capabilities {
        caps(
            self.inner.native_diff,
            self.inner.user_xattr,
            self.inner.max_depth,
        )
    }
}

fn caps(native_diff: bool, user_xattr: bool, max_depth: u32) -> Capabilities {
    Capabilities {
        native_diff,
        needs_root: true,
        rootless: user_xattr,
        max_depth: Some(max_depth),
        quota: false,
        mount_spec: false,
        rename_dir: false,
        read_only_images: true,
    }
}
