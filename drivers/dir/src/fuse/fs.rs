//! The union file system's state and the helpers every operation shares.
//!
//! Paths: a node's path in the view (from the [`Tree`]) names it in the branch that holds it;
//! since the branches change only through this mount while it is up (the driver refuses to
//! apply to a mounted layer, and ancestors' diffs are read-only), a path the tree built never
//! crosses a symlink in that branch: every directory on it is a directory of that branch
//! (the union rules merge only same-named directories). Opens still go through
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` so that a branch changed behind the
//! mount's back cannot send one outside it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{BackingId, FileAttr, FileType, INodeNo};
use rustix::fs::{self as rfs, AtFlags, OFlags};
use rustix::io::Errno;
use strata_driver_api::Error;

use crate::copy::Copier;
use crate::sys::{self, Kind};
use crate::union;

use super::tree::{Listing, Tree};

/// Locks `m`, going on past a poisoned lock: a panic in one request leaves the tree as
/// consistent as every step keeps it, and the server must keep serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What an operation returns: its value or the errno for the kernel.
pub(crate) type R<T> = std::result::Result<T, Errno>;

/// How long the kernel may trust names and attributes it was given: the branches change only
/// through this mount, which tells the kernel of every change it makes.
pub(crate) const TTL: Duration = Duration::from_secs(3600);

/// One branch: a layer's diff directory.
#[derive(Debug)]
pub(crate) struct Branch {
    pub path: PathBuf,
    pub fd: OwnedFd,
}

impl Branch {
    pub(crate) fn open(path: &Path) -> strata_driver_api::Result<Branch> {
        Ok(Branch {
            path: path.to_path_buf(),
            fd: sys::open_dir(path)?,
        })
    }
}

/// An open file of the view.
#[derive(Debug)]
pub(crate) struct OpenFile {
    pub file: std::fs::File,
    /// The passthrough registration this open uses, if any (shared by the node's opens).
    pub backing: Option<Arc<BackingId>>,
}

/// How a node's open files are served: by one shared passthrough registration, or cached
/// (through the server), never both at once.
#[derive(Debug, Default)]
pub(crate) struct NodeIo {
    pub passthrough: Option<Weak<BackingId>>,
    /// Open files served through the server.
    pub cached: usize,
}

/// One snapshot of a directory's merged listing, taken at `opendir`.
pub(crate) type DirSnapshot = Arc<Vec<(std::ffi::OsString, union::Merged)>>;

/// The union file system of one mounted view.
#[derive(Debug)]
pub(crate) struct UnionFs {
    pub branches: Vec<Branch>,
    pub branch_paths: Vec<PathBuf>,
    /// A directory on the same file system as branch 0, where copy-ups are built before
    /// they are renamed into place.
    pub work: Branch,
    /// Whether the view takes writes (a read-only `get` mounts it `false`; the driver can
    /// switch it on).
    pub writable: Arc<AtomicBool>,
    pub tree: Mutex<Tree>,
    /// Serialises every change of branch 0's names (creates, removals, renames, copy-ups).
    pub ns: Mutex<()>,
    pub files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    pub dirs: Mutex<HashMap<u64, DirSnapshot>>,
    pub next_fh: AtomicU64,
    pub next_tmp: AtomicU64,
    pub copier: Copier,
    /// The server runs as root: it gives what it makes to the caller.
    pub root: bool,
    /// The kernel agreed to passthrough (and the server may register backing files).
    pub passthrough: AtomicBool,
    /// Each lower branch's multiply-linked files, read on first need (see `links`).
    pub links: Mutex<HashMap<usize, super::links::LinkIndex>>,
    /// Each open node's I/O mode (see `serve`).
    pub io: Mutex<HashMap<u64, NodeIo>>,
}

/// The errno of a driver error (EIO when it carries none).
pub(crate) fn errno_of(e: &Error) -> Errno {
    e.raw_os_error().map_or(Errno::IO, Errno::from_raw_os_error)
}

/// `.` for the root's empty path, for the `*at` calls.
pub(crate) fn at(rel: &Path) -> &Path {
    if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    }
}

impl UnionFs {
    /// A file system over `branches` (top first; branch 0 is written to), building copy-ups
    /// in `work`.
    pub(crate) fn new(
        branches: &[PathBuf],
        work: &Path,
        writable: bool,
    ) -> strata_driver_api::Result<UnionFs> {
        let opened = branches
            .iter()
            .map(|p| Branch::open(p))
            .collect::<strata_driver_api::Result<Vec<_>>>()?;
        Ok(UnionFs {
            branches: opened,
            branch_paths: branches.to_vec(),
            work: Branch::open(work)?,
            writable: Arc::new(AtomicBool::new(writable)),
            tree: Mutex::new(Tree::new(branches.len())),
            ns: Mutex::new(()),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            next_tmp: AtomicU64::new(1),
            copier: Copier::new(),
            root: rustix::process::geteuid().is_root(),
            passthrough: AtomicBool::new(false),
            links: Mutex::new(HashMap::new()),
            io: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn upper(&self) -> BorrowedFd<'_> {
        self.branches[0].fd.as_fd()
    }

    /// EROFS unless the view takes writes.
    pub(crate) fn check_writable(&self) -> R<()> {
        if self.writable.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(Errno::ROFS)
        }
    }

    /// The node's path, branch and kind; ENOENT for an unknown or unlinked node.
    pub(crate) fn locate(&self, ino: u64) -> R<(PathBuf, usize, Kind)> {
        let tree = lock(&self.tree);
        let node = tree.get(ino).ok_or(Errno::NOENT)?;
        let path = tree.path(ino).ok_or(Errno::NOENT)?;
        Ok((path, node.layer, node.kind))
    }

    /// `lstat` of `rel` in branch `layer`.
    pub(crate) fn stat_in(&self, layer: usize, rel: &Path) -> R<rfs::Stat> {
        rfs::statat(&self.branches[layer].fd, at(rel), AtFlags::SYMLINK_NOFOLLOW)
    }

    /// The node's attributes, as the view shows them.
    pub(crate) fn attr(&self, ino: u64) -> R<FileAttr> {
        let (rel, layer, _) = self.locate(ino)?;
        Ok(to_attr(ino, &self.stat_in(layer, &rel)?))
    }

    /// Opens `rel` in branch `layer` without following any symlink or leaving the branch.
    pub(crate) fn open_in(&self, layer: usize, rel: &Path, flags: OFlags) -> R<OwnedFd> {
        let path = self.branch_paths[layer].join(rel);
        sys::open_beneath(self.branches[layer].fd.as_fd(), rel, flags, &path)
            .map_err(|e| errno_of(&e))
    }

    /// Opens directory `rel` of branch 0.
    pub(crate) fn upper_dir(&self, rel: &Path) -> R<OwnedFd> {
        self.open_in(0, rel, OFlags::RDONLY | OFlags::DIRECTORY)
    }

    /// The merged listing of directory `ino`, read on first use. A listing read while the
    /// directory changed is used once and read again next time.
    pub(crate) fn listing(&self, ino: u64) -> R<Listing> {
        let (rel, branches, version) = {
            let tree = lock(&self.tree);
            let node = tree.get(ino).ok_or(Errno::NOENT)?;
            let dir = node.dir.as_ref().ok_or(Errno::NOTDIR)?;
            if let Some(l) = &dir.listing {
                return Ok(Arc::clone(l));
            }
            let rel = tree.path(ino).ok_or(Errno::NOENT)?;
            (rel, dir.branches.clone(), dir.version)
        };
        let merged =
            union::merged_dir(&self.branch_paths, &rel, &branches).map_err(|e| errno_of(&e))?;
        let listing: Listing = Arc::new(merged);
        let mut tree = lock(&self.tree);
        let dir = tree
            .get_mut(ino)
            .and_then(|n| n.dir.as_mut())
            .ok_or(Errno::NOENT)?;
        if dir.version != version {
            return Ok(listing);
        }
        Ok(Arc::clone(dir.listing.get_or_insert(listing)))
    }

    /// A fresh name for a copy-up being built in the work directory.
    pub(crate) fn tmp_name(&self) -> String {
        format!("cu-{}", self.next_tmp.fetch_add(1, Ordering::Relaxed))
    }
}

/// The kernel's view of an `lstat`: the node's own inode number, and 1 as a directory's link
/// count (a merged directory's subdirectories are not all in one branch; 1 tells `find` and
/// friends not to count on it).
#[allow(clippy::unnecessary_cast)]
pub(crate) fn to_attr(ino: u64, st: &rfs::Stat) -> FileAttr {
    let mode = st.st_mode as u32;
    let kind = file_type(mode);
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime as i64, st.st_atime_nsec as i64),
        mtime: time(st.st_mtime as i64, st.st_mtime_nsec as i64),
        ctime: time(st.st_ctime as i64, st.st_ctime_nsec as i64),
        crtime: UNIX_EPOCH,
        kind,
        perm: (mode & 0o7777) as u16,
        nlink: if kind == FileType::Directory {
            1
        } else {
            st.st_nlink as u32
        },
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: encode_dev(st.st_rdev as u64),
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// The FUSE file type of an `st_mode`.
pub(crate) fn file_type(mode: u32) -> FileType {
    kind_type(Kind::from_mode(mode))
}

/// The FUSE file type of a node kind.
pub(crate) fn kind_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Char => FileType::CharDevice,
        Kind::Block => FileType::BlockDevice,
        Kind::Socket => FileType::Socket,
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nsecs = nsecs.clamp(0, 999_999_999) as u32;
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs)
    } else {
        UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0) + Duration::new(0, nsecs)
    }
}

/// The kernel's 32-bit device number encoding (`new_encode_dev`), which FUSE carries.
fn encode_dev(dev: u64) -> u32 {
    let (major, minor) = (rfs::major(dev), rfs::minor(dev));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// `name` may appear in the view: not a whiteout or an AUFS-internal name.
pub(crate) fn visible_name(name: &OsStr) -> bool {
    !sys::is_wh_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_encode_as_the_kernel_does() {
        // /dev/null is 1:3; a large minor (259:65536) uses the high bits.
        assert_eq!(encode_dev(rfs::makedev(1, 3)), 0x103);
        assert_eq!(
            encode_dev(rfs::makedev(259, 65536)),
            (259 << 8) | (65536 << 12)
        );
    }

    #[test]
    fn times_before_the_epoch() {
        let t = time(-1, 500_000_000);
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::from_millis(500)
        );
    }
}
