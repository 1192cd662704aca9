//! The classic `mount(2)` fallback: the whole stack in one option string of relative names,
//! resolved against the driver's home on a thread that has its own working directory.
// `unshare(CLONE_FS)` is unsafe in rustix (it is safe for CLONE_FS, which only gives this
// thread its own cwd/umask/root; the unsafety is about CLONE_FILES).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::path::Path;

use rustix::mount::{MountAttrFlags, MountFlags};
use rustix::thread::UnshareFlags;
use strata_driver_api::{Error, ErrorKind, Result};

use crate::opts::{self, Options, Stack};
use crate::sys::os;

/// Mounts `stack` (paths relative to `home`) on `target` (absolute) with `mount(2)`.
pub(crate) fn mount(
    home: &Path,
    stack: &Stack<String>,
    opts: &Options,
    read_only: bool,
    target: &Path,
) -> Result<()> {
    let data = opts::mount_data(stack, &opts.param_string())?;
    let data = CString::new(data)
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "mount data holds a NUL"))?;
    let mut flags = MountFlags::empty();
    let attrs = opts.attrs;
    for (a, f) in [
        (MountAttrFlags::MOUNT_ATTR_RDONLY, MountFlags::RDONLY),
        (MountAttrFlags::MOUNT_ATTR_NODEV, MountFlags::NODEV),
        (MountAttrFlags::MOUNT_ATTR_NOSUID, MountFlags::NOSUID),
        (MountAttrFlags::MOUNT_ATTR_NOEXEC, MountFlags::NOEXEC),
        (MountAttrFlags::MOUNT_ATTR_NOATIME, MountFlags::NOATIME),
        (
            MountAttrFlags::MOUNT_ATTR_NODIRATIME,
            MountFlags::NODIRATIME,
        ),
        (
            MountAttrFlags::MOUNT_ATTR_STRICTATIME,
            MountFlags::STRICTATIME,
        ),
    ] {
        if attrs.contains(a) {
            flags |= f;
        }
    }
    if read_only {
        flags |= MountFlags::RDONLY;
    }
    let (home, target) = (home.to_path_buf(), target.to_path_buf());
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: CLONE_FS only unshares this thread's cwd, root and umask; no file
            // descriptor table is unshared, so no thread can observe a foreign descriptor.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS) }
                .map_err(|e| os("unshare(CLONE_FS) before mounting", &target, e))?;
            rustix::process::chdir(&home).map_err(|e| os("chdir", &home, e))?;
            rustix::mount::mount("overlay", &target, "overlay", flags, data.as_c_str())
                .map_err(|e| os("mount overlay on", &target, e))
        })
        .join()
        .unwrap_or_else(|_| Err(Error::new(ErrorKind::Io, "the mount thread panicked")))
    })
}
