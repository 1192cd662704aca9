//! The mount table (`/proc/self/mountinfo`) and the mount and unmount calls of an image.
//!
//! The mount table is the truth about what is mounted: refcounts are adopted from it after a
//! restart, and the sweep of a crash's leftovers reads it. Parsing is a pure function.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};
use strata_driver_api::{Error, ErrorKind, Result};

use crate::config::Fs;
use crate::loopdev;

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted.
    pub target: PathBuf,
    /// The filesystem type.
    pub fs_type: String,
    /// The source (`/dev/loop3`).
    pub source: String,
    /// The per-mount options contain `ro`.
    pub read_only: bool,
}

impl MountEntry {
    /// The loop device number when the source is `/dev/loopN`.
    pub fn loop_number(&self) -> Option<u32> {
        self.source.strip_prefix("/dev/loop")?.parse().ok()
    }
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> OsString {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

/// Parses the text of `/proc/self/mountinfo`; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < 6 || fields.len() < sep + 3 {
            continue;
        }
        out.push(MountEntry {
            target: PathBuf::from(unescape(fields[4])),
            read_only: fields[5].split(',').any(|o| o == "ro"),
            fs_type: fields[sep + 1].to_string(),
            source: unescape(fields[sep + 2]).to_string_lossy().into_owned(),
        });
    }
    out
}

/// The current mount table of this process's namespace.
pub fn read() -> Result<Vec<MountEntry>> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|e| Error::os("read", path, e))?;
    Ok(parse(&text))
}

/// The topmost mount at `target`, if any.
pub fn find(table: &[MountEntry], target: &Path) -> Option<MountEntry> {
    table.iter().rev().find(|m| m.target == target).cloned()
}

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
    let entry = find(&read()?, target);
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

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
95 22 7:3 / /var/lib/strata/block/a/mnt ro,relatime shared:50 - ext4 /dev/loop3 ro
96 22 7:4 / /tmp/with\\040space/mnt rw,relatime - xfs /dev/loop12 rw,nouuid
bad line
";

    #[test]
    fn parses_targets_sources_and_ro() {
        let t = parse(SAMPLE);
        assert_eq!(t.len(), 3);
        assert_eq!(t[1].target, Path::new("/var/lib/strata/block/a/mnt"));
        assert!(t[1].read_only);
        assert_eq!(t[1].loop_number(), Some(3));
        assert_eq!(t[2].target, Path::new("/tmp/with space/mnt"));
        assert_eq!(t[2].fs_type, "xfs");
        assert!(!t[2].read_only);
        assert_eq!(t[2].loop_number(), Some(12));
        assert_eq!(t[0].loop_number(), None);
        assert!(find(&t, Path::new("/tmp/with space/mnt")).is_some());
        assert!(find(&t, Path::new("/nowhere")).is_none());
    }

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

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("a\\040b\\134c"), OsString::from("a b\\c"));
        assert_eq!(unescape("trail\\04"), OsString::from("trail\\04"));
    }
}
