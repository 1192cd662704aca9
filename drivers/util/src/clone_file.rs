//! Copying a file's contents the cheap way: a reflink (`FICLONE`) where the filesystem can
//! share extents, else a sparse copy that moves only the data extents (`SEEK_DATA`/`SEEK_HOLE`,
//! each with `copy_file_range`, falling back to reads and writes), so a sparse file stays
//! sparse. The block driver clones whole images with it; the dir driver copies files up.
//!
//! Contents only: owners, modes, xattrs and times are the caller's.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{self as rfs, Mode, OFlags, SeekFrom};
use rustix::io::Errno;
use strata_driver_api::{Error, Result};

/// How a copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneMethod {
    /// `FICLONE`: the blocks are shared, O(1) in the data.
    Reflink,
    /// Only the allocated extents were copied (`SEEK_DATA`/`SEEK_HOLE` + `copy_file_range`).
    SparseCopy,
}

impl CloneMethod {
    /// The name shown in `status()` and metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            CloneMethod::Reflink => "reflink",
            CloneMethod::SparseCopy => "sparse copy",
        }
    }
}

/// Copies the contents of `src` (`size` bytes long) into the empty file `dst`: a reflink where
/// the filesystem can, else the data extents only, then the length (holes stay holes). The
/// paths are for errors. A failed reflink is the expected answer on filesystems without
/// shared extents (ext4, tmpfs) or across mounts, so any error from it means "copy the bytes";
/// a real I/O problem shows up in the copy itself.
pub fn copy_data(
    src: impl AsFd,
    dst: impl AsFd,
    size: u64,
    src_path: &Path,
    dst_path: &Path,
) -> Result<CloneMethod> {
    let (src, dst) = (src.as_fd(), dst.as_fd());
    if size == 0 {
        return Ok(CloneMethod::SparseCopy);
    }
    if rfs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(CloneMethod::Reflink);
    }
    let mut end = 0u64;
    let mut off = 0u64;
    loop {
        let data = match rfs::seek(src, SeekFrom::Data(off)) {
            Ok(d) => d,
            // No data after `off`: the rest is a hole.
            Err(Errno::NXIO) => break,
            // No SEEK_DATA on this filesystem: the whole file is data.
            Err(Errno::INVAL) if off == 0 => {
                end = copy_range(src, dst, 0, u64::MAX, src_path, dst_path)?;
                break;
            }
            Err(e) => return Err(Error::os("lseek SEEK_DATA", src_path, e)),
        };
        let hole = rfs::seek(src, SeekFrom::Hole(data))
            .map_err(|e| Error::os("lseek SEEK_HOLE", src_path, e))?;
        end = end.max(copy_range(src, dst, data, hole, src_path, dst_path)?);
        if hole <= off {
            break;
        }
        off = hole;
    }
    rfs::ftruncate(dst, end.max(size)).map_err(|e| Error::os("ftruncate", dst_path, e))?;
    Ok(CloneMethod::SparseCopy)
}

/// Copies bytes `[start, end)` (stopping early at end of file); returns the offset reached.
fn copy_range(
    src: impl AsFd,
    dst: impl AsFd,
    start: u64,
    end: u64,
    src_path: &Path,
    dst_path: &Path,
) -> Result<u64> {
    let (src, dst) = (src.as_fd(), dst.as_fd());
    let mut pos = start;
    while pos < end {
        let want = usize::try_from((end - pos).min(1 << 30)).unwrap_or(1 << 30);
        let mut off_in = pos;
        let mut off_out = pos;
        match rfs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => break,
            Ok(n) => pos += n as u64,
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                return copy_range_rw(src, dst, pos, end, src_path, dst_path);
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(Error::os("copy_file_range", dst_path, e)),
        }
    }
    Ok(pos)
}

/// [`copy_range`] by `pread`/`pwrite`, where `copy_file_range` cannot (across filesystems on
/// old kernels, special filesystems).
fn copy_range_rw(
    src: impl AsFd,
    dst: impl AsFd,
    start: u64,
    end: u64,
    src_path: &Path,
    dst_path: &Path,
) -> Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut pos = start;
    while pos < end {
        let want = usize::try_from((end - pos).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = match rustix::io::pread(&src, &mut buf[..want], pos) {
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Error::os("read", src_path, e)),
        };
        let mut done = 0;
        while done < n {
            match rustix::io::pwrite(&dst, &buf[done..n], pos + done as u64) {
                Ok(w) => done += w,
                Err(Errno::INTR) => {}
                Err(e) => return Err(Error::os("write", dst_path, e)),
            }
        }
        pos += n as u64;
    }
    Ok(pos)
}

/// Makes `dst` (which must not exist: `AlreadyExists` otherwise; made 0600) a copy of the
/// contents of `src` with [`copy_data`], and fsyncs it. On error `dst` may be left partly
/// written; the caller discards it.
pub fn clone_file(src: &Path, dst: &Path) -> Result<CloneMethod> {
    let s = rfs::open(src, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::os("open", src, e))?;
    let d = rfs::open(
        dst,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| Error::os("create", dst, e))?;
    let size = rfs::fstat(&s)
        .map_err(|e| Error::os("fstat", src, e))?
        .st_size as u64;
    let method = copy_data(&s, &d, size, src, dst)?;
    rfs::fsync(&d).map_err(|e| Error::os("fsync", dst, e))?;
    Ok(method)
}

/// Whether `FICLONE` works in `dir`: tried on two small files made there (named with `tag`,
/// dot names) and removed again.
pub fn probe_reflink(dir: &Path, tag: &str) -> bool {
    let a = dir.join(format!(".reflink-a-{tag}"));
    let b = dir.join(format!(".reflink-b-{tag}"));
    let ok = (|| -> std::io::Result<bool> {
        let mut fa = File::create(&a)?;
        // One block: some filesystems refuse to clone an empty file.
        std::io::Write::write_all(&mut fa, &[0u8; 4096])?;
        drop(fa);
        let fa = File::open(&a)?;
        let fb = File::create(&b)?;
        Ok(rfs::ioctl_ficlone(&fb, &fa).is_ok())
    })()
    .unwrap_or(false);
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};
    use std::os::unix::fs::{FileExt, MetadataExt};
    use strata_driver_api::ErrorKind;

    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn sparse_copy_moves_only_data() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(std::io::SeekFrom::Start(8 << 20)).unwrap();
        f.write_all(&[7u8; 1 << 20]).unwrap();
        f.seek(std::io::SeekFrom::Start(40 << 20)).unwrap();
        f.write_all(&[9u8; 4096]).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let dst = dir.path().join("dst");
        let method = clone_file(&src, &dst).unwrap();
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), 64 << 20);
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        if method == CloneMethod::SparseCopy {
            let alloc = allocated(&dst);
            assert!(alloc < 2 << 20, "sparse copy allocated {alloc} bytes");
        }
        let again = clone_file(&src, &dst).unwrap_err();
        assert_eq!(again.kind(), ErrorKind::AlreadyExists);
        assert!(again.message().contains("create "), "{}", again.message());
    }

    #[test]
    fn copies_head_and_tail_of_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
        let f = File::create(&src).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", (8 << 20) - 4).unwrap();
        drop(f);
        let s = File::open(&src).unwrap();
        let d = File::create(&dst).unwrap();
        copy_data(&s, &d, 8 << 20, &src, &dst).unwrap();
        drop(d);
        let data = std::fs::read(&dst).unwrap();
        assert_eq!(data.len(), 8 << 20);
        assert_eq!(&data[..4], b"head");
        assert_eq!(&data[data.len() - 4..], b"tail");
        assert!(allocated(&dst) < 1 << 20, "copy is not sparse");
    }

    #[test]
    fn empty_and_hole_only_files() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
        File::create(&src).unwrap().set_len(1 << 20).unwrap();
        clone_file(&src, &dst).unwrap();
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), 1 << 20);
        assert!(std::fs::read(&dst).unwrap().iter().all(|b| *b == 0));
        let (e, e2) = (dir.path().join("e"), dir.path().join("e2"));
        File::create(&e).unwrap();
        clone_file(&e, &e2).unwrap();
        assert_eq!(std::fs::metadata(&e2).unwrap().len(), 0);
    }

    #[test]
    fn probe_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let _ = probe_reflink(dir.path(), "t");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
