//! The system calls this driver is built from: mounting an image's loop device, unmounting
//! it (waiting for the device to let go), and the option strings. Every error names the call
//! and the path. The mount table itself is read with `strata_driver_util::mountinfo`.

use std::path::Path;

use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};
use strata_driver_api::{Error, ErrorKind, Result};
use strata_driver_util::mountinfo;

use crate::config::Fs;
use crate::loopdev;

/// The option string for a mount: the filesystem's own options, then the caller's.
pub fn option_string(fs_opts: &[&str], extra: &[String]) -> String {
    let mut all: Vec<&str> = fs_opts.to_vec();
    all.extend(extra.iter().map(String::as_str));
    all.join(",")
}

/// Checks caller-supplied mount options: non-empty, no commas, no NUL.
pub fn validate_options(extra: &[String]) -> Result<()> {
    for o in extra {
        if o.is_empty() || o.contains(',') || o.contains('\0') {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("mount option {o:?} must be one non-empty option without commas"),
            ));
        }
    }
    Ok(())
}

/// Mounts the block device `dev` holding `fs` at `target`.
pub fn mount(dev: &Path, target: &Path, fs: Fs, read_only: bool, opts: &[&str]) -> Result<()> {
    mount_with(dev, target, fs, read_only, &option_string(opts, &[]))
}

/// [`mount`] with a complete option string.
pub fn mount_with(dev: &Path, target: &Path, fs: Fs, read_only: bool, data: &str) -> Result<()> {
    let flags = if read_only {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    let data = std::ffi::CString::new(data)
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "mount options contain NUL"))?;
    rustix::mount::mount(dev, target, fs.as_str(), flags, data.as_c_str())
        .map_err(|e| Error::os("mount", target, e))
}

/// How many times an unmount is retried on `EBUSY` (10 ms apart) before it is `Busy`.
const UMOUNT_TRIES: u32 = 50;

/// Unmounts `target` (the image `image` on a loop device) and waits until the loop device has
/// detached itself. `EBUSY` that lasts half a second is `Busy`.
pub fn unmount(target: &Path, image: &Path) -> Result<()> {
    unmount_flags(target, image, UnmountFlags::empty())
}

/// [`unmount`], lazily detaching (`MNT_DETACH`) when `lazy`: for forced removal and the sweep.
pub fn unmount_flags(target: &Path, image: &Path, flags: UnmountFlags) -> Result<()> {
    let entry = mountinfo::find(&mountinfo::read()?, target);
    let mut tries = 0;
    loop {
        match rustix::mount::unmount(target, flags) {
            Ok(()) => break,
            Err(Errno::INVAL) if entry.is_none() => return Ok(()),
            // A process forked elsewhere in this program may hold a copy of a descriptor
            // into the mount for the moment until its exec: retry for a while.
            Err(Errno::BUSY) if tries < UMOUNT_TRIES => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(Error::os("umount", target, e)),
        }
    }
    match entry.and_then(|e| e.loop_number()) {
        // A lazy unmount lets go of the device when its last user does: do not wait.
        Some(n) if !flags.contains(UnmountFlags::DETACH) => loopdev::wait_detached(n, image),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_join_and_validate() {
        assert_eq!(
            option_string(&["nouuid"], &["context=x".to_string()]),
            "nouuid,context=x"
        );
        assert_eq!(option_string(&[], &[]), "");
        assert!(validate_options(&["a=b".into()]).is_ok());
        for bad in ["", "a,b", "a\0"] {
            assert_eq!(
                validate_options(&[bad.to_string()]).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
        }
    }
}
