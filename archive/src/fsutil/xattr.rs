//! Reading extended attributes by file descriptor or by path (without following a symlink),
//! whatever their size, treating "this filesystem has no xattrs" as none.

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::io::Errno;

use super::Xattrs;

pub(super) enum Target<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a Path),
}

fn list_raw(target: &Target<'_>, buf: &mut Vec<u8>) -> rustix::io::Result<usize> {
    match target {
        Target::Fd(fd) => rustix::fs::flistxattr(fd, buf),
        Target::Path(p) => rustix::fs::llistxattr(*p, buf),
    }
}

fn list_query(target: &Target<'_>) -> rustix::io::Result<usize> {
    match target {
        Target::Fd(fd) => rustix::fs::flistxattr_query(fd),
        Target::Path(p) => rustix::fs::llistxattr_query(*p),
    }
}

fn get_raw(target: &Target<'_>, name: &OsStr, buf: &mut Vec<u8>) -> rustix::io::Result<usize> {
    match target {
        Target::Fd(fd) => rustix::fs::fgetxattr(fd, name, buf),
        Target::Path(p) => rustix::fs::lgetxattr(*p, name, buf),
    }
}

fn get_query(target: &Target<'_>, name: &OsStr) -> rustix::io::Result<usize> {
    match target {
        Target::Fd(fd) => rustix::fs::fgetxattr_query(fd, name),
        Target::Path(p) => rustix::fs::lgetxattr_query(*p, name),
    }
}

/// Whether an errno means "this filesystem or file type has no xattrs".
fn no_xattrs(e: Errno) -> bool {
    e == Errno::NOTSUP || e == Errno::OPNOTSUPP
}

/// Runs a `*xattr` call into a buffer, growing it on `ERANGE` (the value may grow between the
/// size query and the read).
fn with_growing<F, Q>(mut call: F, mut query: Q) -> rustix::io::Result<Vec<u8>>
where
    F: FnMut(&mut Vec<u8>) -> rustix::io::Result<usize>,
    Q: FnMut() -> rustix::io::Result<usize>,
{
    let mut buf = vec![0u8; 256];
    loop {
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => {
                let want = query()?;
                buf.resize(want.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

pub(super) fn get_xattr(target: Target<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = OsStr::from_bytes(name);
    match with_growing(
        |buf| get_raw(&target, name, buf),
        || get_query(&target, name),
    ) {
        Ok(value) => Ok(Some(value)),
        Err(Errno::NODATA) => Ok(None),
        Err(e) if no_xattrs(e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn read_xattrs(target: Target<'_>) -> io::Result<Xattrs> {
    let list = match with_growing(|buf| list_raw(&target, buf), || list_query(&target)) {
        Ok(list) => list,
        Err(e) if no_xattrs(e) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        // An attribute removed between the list and the read is simply gone.
        if let Some(value) = get_xattr(
            match &target {
                Target::Fd(fd) => Target::Fd(*fd),
                Target::Path(p) => Target::Path(p),
            },
            name,
        )? {
            out.push((name.to_vec(), value));
        }
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
