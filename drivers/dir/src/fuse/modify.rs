//! The operations that change a node's attributes or contents (never its names): setattr,
//! xattrs, writes, fsync, fallocate. Each copies the node up first where it must.

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::time::UNIX_EPOCH;

use fuser::{FileAttr, TimeOrNow};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::sys::Kind;

use super::fs::{R, UnionFs};
use super::read::io_errno;
use super::write::split;

/// What `setattr` changes.
#[derive(Debug, Default)]
pub(crate) struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    pub fh: Option<u64>,
}

impl UnionFs {
    pub(crate) fn setattr(&self, ino: u64, set: &SetAttr) -> R<FileAttr> {
        self.check_writable()?;
        self.copy_up(ino)?;
        let (rel, _, kind) = self.locate(ino)?;
        let (parent_rel, name) = split(&rel);
        let dir = self.upper_dir(parent_rel)?;
        if let Some(mode) = set.mode {
            // chmod follows a symlink; a symlink's mode means nothing anyway.
            if kind != Kind::Symlink {
                rfs::chmodat(
                    &dir,
                    name,
                    Mode::from_raw_mode(mode & 0o7777),
                    AtFlags::empty(),
                )?;
            }
        }
        if set.uid.is_some() || set.gid.is_some() {
            rfs::chownat(
                &dir,
                name,
                set.uid.map(rfs::Uid::from_raw),
                set.gid.map(rfs::Gid::from_raw),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if let Some(size) = set.size {
            if kind != Kind::File {
                return Err(Errno::INVAL);
            }
            match set.fh.map(|fh| self.file(fh)) {
                Some(Ok(f)) => rfs::ftruncate(&f.file, size)?,
                _ => rfs::ftruncate(self.open_in(0, &rel, OFlags::WRONLY)?, size)?,
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let times = Timestamps {
                last_access: timespec(set.atime),
                last_modification: timespec(set.mtime),
            };
            rfs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
        }
        self.attr(ino)
    }

    pub(crate) fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> R<()> {
        self.check_writable()?;
        self.copy_up(ino)?;
        let path = self.branch_paths[0].join(self.locate(ino)?.0);
        let flags = rfs::XattrFlags::from_bits_retain(flags as u32);
        rfs::lsetxattr(&path, name, value, flags)
    }

    pub(crate) fn removexattr(&self, ino: u64, name: &OsStr) -> R<()> {
        self.check_writable()?;
        // Nothing to remove: no copy-up for nothing.
        let (rel, layer, _) = self.locate(ino)?;
        rfs::lgetxattr_query(self.branch_paths[layer].join(&rel), name)?;
        self.copy_up(ino)?;
        let path = self.branch_paths[0].join(self.locate(ino)?.0);
        rfs::lremovexattr(&path, name)
    }

    pub(crate) fn write(&self, fh: u64, offset: u64, data: &[u8]) -> R<u32> {
        self.check_writable()?;
        let f = self.file(fh)?;
        f.file
            .write_all_at(data, offset)
            .map_err(|e| io_errno(&e))?;
        Ok(data.len() as u32)
    }

    pub(crate) fn fsync(&self, fh: u64, datasync: bool) -> R<()> {
        let f = self.file(fh)?;
        if datasync {
            rfs::fdatasync(&f.file)?;
        } else {
            rfs::fsync(&f.file)?;
        }
        Ok(())
    }

    pub(crate) fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> R<()> {
        self.check_writable()?;
        let f = self.file(fh)?;
        let flags = rfs::FallocateFlags::from_bits_retain(mode as u32);
        rfs::fallocate(&f.file, flags, offset, len)
    }
}

fn timespec(t: Option<TimeOrNow>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    let d = e.duration();
                    let mut sec = -(d.as_secs() as i64);
                    let mut nsec = -(d.subsec_nanos() as i64);
                    if nsec < 0 {
                        sec -= 1;
                        nsec += 1_000_000_000;
                    }
                    (sec, nsec)
                }
            };
            Timespec {
                tv_sec: sec,
                tv_nsec: nsec as _,
            }
        }
    }
}
