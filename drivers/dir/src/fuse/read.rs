//! The operations that change nothing: lookup, attributes, directory listings, opening and
//! reading files, xattrs, statfs.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use fuser::{BackingId, FileAttr};
use rustix::fs::{self as rfs, OFlags};
use rustix::io::Errno;

use crate::sys::Kind;
use crate::union::Merged;

use super::fs::{DirSnapshot, OpenFile, R, UnionFs, at, lock, to_attr, visible_name};
use super::tree::ROOT;

/// How an open file is served.
#[derive(Debug)]
pub(crate) enum Served {
    /// Through this server (and the page cache).
    Plain,
    /// By the kernel, straight from the backing file.
    Passthrough(Arc<BackingId>),
}

impl UnionFs {
    /// The node for `name` in directory `parent` (counting a lookup) and its attributes.
    pub(crate) fn lookup_name(&self, parent: u64, name: &OsStr) -> R<(u64, FileAttr)> {
        if !visible_name(name) {
            return Err(Errno::NOENT);
        }
        let listing = self.listing(parent)?;
        let m = listing.get(name).ok_or(Errno::NOENT)?;
        let (parent_rel, _, _) = self.locate(parent)?;
        self.enter(parent, name, m, || {
            self.stat_in(m.from, &parent_rel.join(name))
        })
    }

    /// The node of merged entry `m` (`name` in `parent`), counting a lookup; `stat` gives the
    /// entry's `lstat` in branch `m.from` when the node is new.
    fn enter(
        &self,
        parent: u64,
        name: &OsStr,
        m: &Merged,
        stat: impl FnOnce() -> R<rfs::Stat>,
    ) -> R<(u64, FileAttr)> {
        let known = lock(&self.tree).child(parent, name);
        if let Some(ino) = known {
            let attr = self.attr(ino)?;
            let mut tree = lock(&self.tree);
            // Still the same node (not renamed over meanwhile): count the lookup.
            if tree.child(parent, name) == Some(ino) {
                if let Some(n) = tree.get_mut(ino) {
                    n.lookups += 1;
                    return Ok((ino, attr));
                }
            }
        }
        let st = stat()?;
        #[allow(clippy::unnecessary_cast)]
        let origin = (m.kind != Kind::Dir && st.st_nlink > 1).then_some((
            m.from,
            st.st_dev as u64,
            st.st_ino as u64,
        ));
        let ino = lock(&self.tree).enter(parent, name, m, origin);
        Ok((ino, to_attr(ino, &st)))
    }

    pub(crate) fn readlink(&self, ino: u64) -> R<Vec<u8>> {
        let (rel, layer, _) = self.locate(ino)?;
        let target = rfs::readlinkat(&self.branches[layer].fd, at(&rel), Vec::new())?;
        Ok(target.into_bytes())
    }

    /// Snapshots the merged listing of directory `ino` for one open directory.
    pub(crate) fn open_dir(&self, ino: u64) -> R<u64> {
        let listing = self.listing(ino)?;
        let snap: DirSnapshot = Arc::new(
            listing
                .iter()
                .map(|(n, m)| (n.clone(), m.clone()))
                .collect(),
        );
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs).insert(fh, snap);
        Ok(fh)
    }

    pub(crate) fn release_dir(&self, fh: u64) {
        lock(&self.dirs).remove(&fh);
    }

    fn snapshot(&self, fh: u64) -> R<DirSnapshot> {
        lock(&self.dirs).get(&fh).cloned().ok_or(Errno::BADF)
    }

    fn parent_of(&self, ino: u64) -> u64 {
        let tree = lock(&self.tree);
        tree.get(ino)
            .and_then(|n| n.links.first())
            .map_or(ROOT, |l| l.0)
    }

    /// The entries of open directory `fh` from `offset` on (offsets 0 and 1 are `.` and `..`),
    /// as (next offset, inode, kind, name); `fill` returns true when the reply is full.
    pub(crate) fn read_dir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut fill: impl FnMut(u64, u64, Kind, &OsStr) -> bool,
    ) -> R<()> {
        let snap = self.snapshot(fh)?;
        let start = usize::try_from(offset).map_err(|_| Errno::INVAL)?;
        if start == 0 && fill(1, ino, Kind::Dir, OsStr::new(".")) {
            return Ok(());
        }
        if start <= 1 && fill(2, self.parent_of(ino), Kind::Dir, OsStr::new("..")) {
            return Ok(());
        }
        for (i, (name, m)) in snap.iter().enumerate().skip(start.saturating_sub(2)) {
            // Entries listed without a lookup still get their stable number.
            let child = self.child_node(ino, name, m);
            if fill(i as u64 + 3, child, m.kind, name) {
                break;
            }
        }
        Ok(())
    }

    /// As [`read_dir`](Self::read_dir), with each entry's node (counted as looked up) and
    /// attributes; `fill` returns true when the entry did not fit (its lookup is undone).
    pub(crate) fn read_dir_plus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut fill: impl FnMut(u64, u64, &OsStr, &FileAttr) -> bool,
    ) -> R<()> {
        let snap = self.snapshot(fh)?;
        let start = usize::try_from(offset).map_err(|_| Errno::INVAL)?;
        if start <= 1 {
            // `.` and `..` are not looked up by the kernel: no counts.
            let dot = self.attr(ino)?;
            if start == 0 && fill(1, ino, OsStr::new("."), &dot) {
                return Ok(());
            }
            let parent = self.parent_of(ino);
            let dotdot = self.attr(parent).unwrap_or(dot);
            if fill(2, parent, OsStr::new(".."), &dotdot) {
                return Ok(());
            }
        }
        let (rel, _, _) = self.locate(ino)?;
        // The directory in each branch, opened once for the whole reply.
        let mut dirs: HashMap<usize, OwnedFd> = HashMap::new();
        for (i, (name, m)) in snap.iter().enumerate().skip(start.saturating_sub(2)) {
            let stat = || -> R<rfs::Stat> {
                let dir = match dirs.entry(m.from) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
                        e.insert(self.open_in(m.from, &rel, flags)?)
                    }
                };
                rfs::statat(&*dir, name, rfs::AtFlags::SYMLINK_NOFOLLOW)
            };
            let (child, attr) = match self.enter(ino, name, m, stat) {
                Ok(x) => x,
                // Removed since the directory was opened.
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e),
            };
            if fill(i as u64 + 3, child, name, &attr) {
                lock(&self.tree).forget(child, 1);
                break;
            }
        }
        Ok(())
    }

    /// Opens file `ino` (copying it up first when opened for writing) and decides how it is
    /// served. `register` makes a passthrough registration for a backing file.
    pub(crate) fn open_file(
        &self,
        ino: u64,
        flags: i32,
        register: impl FnOnce(&std::fs::File) -> std::io::Result<BackingId>,
    ) -> R<(u64, Served)> {
        let raw = flags as u32;
        let acc = OFlags::from_bits_retain(raw) & OFlags::RWMODE;
        let trunc = OFlags::from_bits_retain(raw).contains(OFlags::TRUNC);
        let writing = acc != OFlags::RDONLY || trunc;
        if writing {
            self.check_writable()?;
            self.copy_up(ino)?;
        }
        let (rel, layer, kind) = self.locate(ino)?;
        if kind != Kind::File {
            return Err(Errno::INVAL);
        }
        // Not O_DIRECT: the kernel's requests are not aligned for it (FUSE has its own
        // direct I/O), nor O_APPEND: the kernel gives every write its offset.
        let keep = OFlags::RWMODE | OFlags::TRUNC | OFlags::SYNC | OFlags::DSYNC | OFlags::NOATIME;
        let mut oflags = OFlags::from_bits_retain(raw) & keep;
        if !self.root {
            // O_NOATIME is refused for files the server's user does not own.
            oflags -= OFlags::NOATIME;
        }
        let fd = self.open_in(layer, &rel, oflags)?;
        let file = std::fs::File::from(fd);
        if !writing {
            // Requests come in parallel and may reach the file out of order: tell the page
            // cache to read ahead as for one sequential reader.
            let _ = rfs::fadvise(&file, 0, None, rfs::Advice::Sequential);
        }
        let served = self.serve(ino, layer, &file, register);
        let backing = match &served {
            Served::Passthrough(b) => Some(Arc::clone(b)),
            _ => None,
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(fh, Arc::new(OpenFile { file, backing }));
        Ok((fh, served))
    }

    /// How to serve an open of node `ino` (whose file is in branch `layer`). The kernel puts
    /// each inode in one I/O mode at a time: while any open passes through to a backing file,
    /// every open must pass through to that same file; while any open is cached, none may pass
    /// through. So a node's opens share one registration, and only files of branch 0 pass
    /// through: a lower file passing through would leave a writer after its copy-up no way in
    /// (its new file is another backing file). Lower files are read through this server, with
    /// the page cache kept across opens.
    fn serve(
        &self,
        ino: u64,
        layer: usize,
        file: &std::fs::File,
        register: impl FnOnce(&std::fs::File) -> std::io::Result<BackingId>,
    ) -> Served {
        let mut map = lock(&self.io);
        let io = map.entry(ino).or_default();
        if let Some(id) = io.passthrough.as_ref().and_then(Weak::upgrade) {
            return Served::Passthrough(id);
        }
        if self.passthrough.load(Ordering::Relaxed) && layer == 0 && io.cached == 0 {
            if let Ok(id) = register(file) {
                let id = Arc::new(id);
                io.passthrough = Some(Arc::downgrade(&id));
                return Served::Passthrough(id);
            }
        }
        io.cached += 1;
        Served::Plain
    }

    pub(crate) fn file(&self, fh: u64) -> R<Arc<OpenFile>> {
        lock(&self.files).get(&fh).cloned().ok_or(Errno::BADF)
    }

    pub(crate) fn release_file(&self, ino: u64, fh: u64) {
        let Some(gone) = lock(&self.files).remove(&fh) else {
            return;
        };
        let cached = gone.backing.is_none();
        // The registration goes with its last open (`gone`, here).
        drop(gone);
        let mut map = lock(&self.io);
        if let Some(io) = map.get_mut(&ino) {
            if cached {
                io.cached = io.cached.saturating_sub(1);
            }
            if io.cached == 0
                && io
                    .passthrough
                    .as_ref()
                    .is_none_or(|w| w.strong_count() == 0)
            {
                map.remove(&ino);
            }
        }
    }

    /// Reads up to `size` bytes at `offset` (fewer only at the end of the file) and hands
    /// them, or the error, to `reply`, from a buffer each server thread keeps: a fresh 1 MiB
    /// buffer a request would be mapped, faulted in and unmapped every time.
    pub(crate) fn read(&self, fh: u64, offset: u64, size: u32, reply: impl FnOnce(R<&[u8]>)) {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply(Err(e)),
        };
        BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            let size = size as usize;
            if buf.len() < size {
                buf.resize(size, 0);
            }
            let buf = &mut buf[..size];
            let mut done = 0;
            while done < size {
                match f.file.read_at(&mut buf[done..], offset + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return reply(Err(io_errno(&e))),
                }
            }
            reply(Ok(&buf[..done]))
        })
    }

    pub(crate) fn getxattr(&self, ino: u64, name: &OsStr, size: u32) -> R<XattrReply> {
        let (rel, layer, _) = self.locate(ino)?;
        let path = self.branch_paths[layer].join(&rel);
        if size == 0 {
            return Ok(XattrReply::Size(rfs::lgetxattr_query(&path, name)? as u32));
        }
        let mut buf = vec![0u8; size as usize];
        let n = rfs::lgetxattr(&path, name, &mut buf)?;
        buf.truncate(n);
        Ok(XattrReply::Data(buf))
    }

    pub(crate) fn listxattr(&self, ino: u64, size: u32) -> R<XattrReply> {
        let (rel, layer, _) = self.locate(ino)?;
        let path = self.branch_paths[layer].join(&rel);
        if size == 0 {
            return Ok(XattrReply::Size(rfs::llistxattr_query(&path)? as u32));
        }
        let mut buf = vec![0u8; size as usize];
        let n = rfs::llistxattr(&path, &mut buf)?;
        buf.truncate(n);
        Ok(XattrReply::Data(buf))
    }

    /// The upper branch's file system: where the view's writes go.
    pub(crate) fn statfs(&self) -> R<rfs::StatVfs> {
        rfs::fstatvfs(self.upper())
    }

    /// `lseek` for `SEEK_DATA`/`SEEK_HOLE` (the kernel does the others itself).
    pub(crate) fn lseek(&self, fh: u64, offset: i64, whence: i32) -> R<i64> {
        let f = self.file(fh)?;
        let pos = match whence {
            3 => rfs::SeekFrom::Data(offset as u64),
            4 => rfs::SeekFrom::Hole(offset as u64),
            0 => rfs::SeekFrom::Start(offset as u64),
            1 => rfs::SeekFrom::Current(offset),
            2 => rfs::SeekFrom::End(offset),
            _ => return Err(Errno::INVAL),
        };
        Ok(rfs::seek(&f.file, pos)? as i64)
    }
}

/// The answer to a getxattr or listxattr.
#[derive(Debug)]
pub(crate) enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

pub(crate) fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::IO, Errno::from_raw_os_error)
}
