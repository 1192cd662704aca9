//! Applying an OCI layer tar inside a layer root: the one safe extraction path every driver and
//! plugin uses.
//!
//! The work is split by job:
//! - `reader`: a bounded, streaming tar parser (PAX, GNU long names, limits, end of archive);
//! - `fields`: numeric header fields and PAX records;
//! - `names`: lexical cleaning of entry names (`../x` is rejected, `/x` lands under the root);
//! - `inroot`: in-root resolution with `openat2(RESOLVE_IN_ROOT)` and removal;
//! - `emulate`: the same resolution in userspace where `openat2` is missing;
//! - `entries`: creating each kind of entry and setting its metadata, fd-based;
//! - `whiteouts`: the three [`WhiteoutMode`]s;
//! - `track`: what this archive made, for the "whiteouts only affect lower layers" rule.
//!
//! The rules it enforces are listed on [`apply_tar`].

mod emulate;
mod entries;
mod fields;
mod inroot;
mod names;
mod reader;
mod track;
mod whiteouts;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::Timespec;

use self::inroot::Root;
use self::reader::{Entry, Kind, TarReader};
use self::track::Tracker;
use super::whiteout::{self, Name};
use crate::{Error, ErrorKind, Result};

/// What to do with whiteout entries (`.wh.<name>`, `.wh..wh..opq`) while applying.
///
/// In every mode, `.wh.`, `.wh..` and `.wh...` (whiteouts that would name a directory or its
/// parent) reject the archive before anything is deleted, and other AUFS metadata names
/// (`.wh..wh.plnk`, `.wh..wh.aufs`, ... and anything under them) are skipped, never
/// materialised. A whiteout name used as a directory on the way to another entry
/// (`.wh.x/y`) rejects the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Store them as they are, as empty regular files with the entry's mode, owner and mtime:
    /// the target is an AUFS-format diff directory (the dir driver), where whiteouts stay on
    /// disk and take effect at union time.
    Keep,
    /// Apply them to a full tree (the naive apply onto a merged view): `.wh.x` removes `x`
    /// (the symlink itself if it is one, never what it points to; a missing `x` is a no-op),
    /// the opaque marker removes every existing child of its directory, recursively.
    ///
    /// Whiteouts only affect lower layers: what this same archive made survives, whatever the
    /// order of entries (a file and its whiteout in one layer leave the file; entries before an
    /// opaque marker survive it). "Made by this archive" is decided on the names as the archive
    /// writes them, after lexical cleaning, and on the objects' identities (device, inode), so
    /// a whiteout that reaches a file of the layer through a symlink the layer made
    /// (`s -> d`, `s/f`, `d/.wh.f`) leaves it too.
    Remove,
    /// Convert them to overlayfs's form in an upper directory: `.wh.x` becomes a 0/0 character
    /// device `x` (owned as the entry says, when [`ApplyOptions::same_owner`]), the opaque
    /// marker becomes the xattr `trusted.overlay.opaque=y` (`user.overlay.opaque` when
    /// `user_xattr`) on its directory. As with [`WhiteoutMode::Remove`], a whiteout never
    /// hides what the same archive made.
    Overlay {
        /// Use `user.overlay.*` (rootless overlay mounted with `userxattr`).
        user_xattr: bool,
    },
}

/// How to apply a layer tar.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// What to do with whiteouts.
    pub whiteouts: WhiteoutMode,
    /// Set owners from the tar (needs privilege; without it files belong to the caller).
    pub same_owner: bool,
    /// Create character and block device nodes (needs privilege; without it device entries
    /// are skipped). FIFOs are always created: they need no privilege.
    pub devices: bool,
    /// [`WhiteoutMode::Overlay`] only: the layer directories below the one applied (overlay
    /// upper directories, top first, cut where a layer's root is opaque), when the caller
    /// knows them. Then a whiteout or opaque marker with nothing below to hide writes nothing
    /// (no 0/0 device, no opaque xattr), as [`WhiteoutMode::Remove`] would change nothing: in
    /// a base layer (`Some(vec![])`), inside a directory the lower layers do not have (one
    /// this archive made), or under a directory this archive made opaque. Such a whiteout in
    /// a directory overlayfs does not merge would show as an entry that cannot be `lstat`ed.
    /// `None`: unknown, every whiteout is written.
    pub lowers: Option<Vec<PathBuf>>,
}

impl ApplyOptions {
    /// The options for `whiteouts`, with owners and devices as the process's privilege allows.
    pub fn new(whiteouts: WhiteoutMode) -> ApplyOptions {
        let root = rustix::process::geteuid().is_root();
        ApplyOptions {
            whiteouts,
            same_owner: root,
            devices: root,
            lowers: None,
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Bytes of regular-file content written: the layer size. Hardlinks, whiteouts and
    /// skipped entries count 0.
    pub size: u64,
    /// Number of tar entries processed (extension headers such as PAX and GNU long names are
    /// not entries; skipped entries are).
    pub entries: u64,
}

/// Applies the uncompressed tar read from `reader` inside the directory `root`.
///
/// `root` must exist; it is trusted, everything in the tar is not. The reader is read to its
/// end (after the end-of-archive marker the rest is discarded unparsed), so a hashing reader
/// underneath sees the whole stream. Data is not fsync'd (the caller syncs the filesystem once
/// per layer). On error the tree may be partly applied; the caller discards the layer.
///
/// Rules (OCI `layer.md` and the lessons in `research/layer-security.md`):
/// - **Parsing**: see the reader rules: PAX `x` and GNU long names are capped at 1 MiB, PAX
///   `size`/`path`/`linkpath`/`uid`/`gid`/`mtime`/`SCHILY.xattr.*` win over the header, type
///   `7` is a regular file, unknown types, sparse files (GNU `S`, PAX `GNU.sparse.*`),
///   truncated streams, bad checksums and malformed numbers reject the archive.
/// - **Names**: leading `/` and `./` are dropped; a name that is not local after lexical
///   cleaning (`../x`, `a/../../x`) rejects the archive. A component over 255 bytes or a path
///   over 4095 bytes rejects it too. The root is never replaced: an entry naming the root
///   (`.`, `/`, empty) may only be a directory, and then only updates the root's attributes.
/// - **Resolution**: the parent of each entry is resolved with `openat2(RESOLVE_IN_ROOT |
///   RESOLVE_NO_MAGICLINKS)`, so symlinks in the layer resolve as in a chroot (an equivalent
///   userspace walk where `openat2` is missing: kernels before 5.6, seccomp sandboxes);
///   missing parents are made one component at a time (`0755`, owned as the process),
///   following a dangling symlink in-root as the kernel would. The leaf is created with `*at`
///   calls on the parent's descriptor that never follow a symlink in the last component. A
///   symlink loop or a parent that is not a directory rejects the archive. Paths are never
///   cached across entries; the last parent's descriptor is, until anything is removed.
/// - **Existing paths**: a directory over a directory keeps it and takes the entry's mode,
///   owner, mtime and xattrs; anything else unlinks (or removes recursively) what is there and
///   makes a new one. An existing file is never opened for writing.
/// - **Hardlinks**: the target (resolved in-root, its last component not followed, so a link
///   to a symlink links the symlink) must exist already, earlier in the archive or in the
///   tree; a link to a directory or to itself rejects the archive, and so does a link into
///   AUFS's `.wh..wh.plnk` (Docker retargets those; its entries are skipped here) and a link
///   to a whiteout (`.wh.foo` then `bar -> foo`: the whiteout is no file of the layer, and
///   linking it would hide a lower `bar` no entry declared; in every mode).
/// - **Metadata**: set through the created file's descriptor or with `AT_SYMLINK_NOFOLLOW`;
///   owner before mode (chown clears setuid); mode `& 0o7777`; symlinks are never chmod-ed.
///   Directory modes and mtimes are set at the end, deepest first, so a mode-0000 directory
///   can get children. uid/gid must be below 2^32-1 (no wrap-around). mtimes keep PAX
///   nanoseconds and are clamped to about ±17,000 years.
/// - **Xattrs** (`SCHILY.xattr.*`): overlay's own (`trusted.overlay.*`, `user.overlay.*`) are
///   dropped; other `trusted.*` are written only when running as root (an unprivileged
///   process cannot set them; containerd refuses them from archives altogether, but as root
///   they are the layer's content, and overlay's are the only dangerous ones). A name that is
///   empty or over 255 bytes, or a value over 64 KiB, rejects the archive. A filesystem without
///   xattr support (`ENOTSUP`), or `EPERM` when not root or for `user.*` on special files, skips
///   the xattr with a warning.
/// - **Devices**: created only when [`ApplyOptions::devices`], else skipped; numbers must fit
///   the kernel's (major < 4096, minor < 2^20); a 0/0 character device entry rejects the
///   archive in every mode (it would be an undeclared overlay whiteout). FIFOs always.
/// - **Sparse files** (GNU `S`, PAX 0.x/1.0 `GNU.sparse.*`) reject the archive: OCI says they
///   should not be used, no OCI writer emits them, and a reader that half-knows them makes
///   `GNUSparseFile.N/name` files (a parser differential).
/// - **Limits**: PAX and GNU long-name members over 1 MiB reject the archive before anything
///   is allocated. Memory grows with the number of entries only in
///   [`WhiteoutMode::Remove`] and [`WhiteoutMode::Overlay`] (the names made, for the
///   same-layer rule) and with the number of directories (their deferred attributes).
pub fn apply_tar(root: &Path, reader: &mut dyn Read, opts: &ApplyOptions) -> Result<ApplyStats> {
    let root = Root::open(root)?;
    let root_ino = rustix::fs::fstat(root.fd())
        .map(|st| track::ino(&st))
        .map_err(|e| root.err("fstat", b"", e))?;
    let mut applier = Applier {
        root,
        opts,
        is_root: rustix::process::geteuid().is_root(),
        track: Tracker::new(opts.whiteouts != WhiteoutMode::Keep, root_ino),
        dirs: Vec::new(),
        dir_index: HashMap::new(),
        stats: ApplyStats::default(),
    };
    let mut tar = TarReader::new(reader);
    while let Some(entry) = tar.next_entry()? {
        applier.stats.entries += 1;
        applier.apply(&entry, &mut tar)?;
    }
    applier.finish()?;
    tar.drain()?;
    Ok(applier.stats)
}

/// Owner, mode and time of an entry, validated.
#[derive(Debug, Clone, Copy)]
struct Meta {
    uid: u32,
    gid: u32,
    /// Permission bits with setuid, setgid and sticky (`& 0o7777`).
    mode: u32,
    mtime: Timespec,
}

/// mtimes are clamped to ±2^39 seconds (about ±17,000 years): past every filesystem's range
/// (the kernel clamps further to what the filesystem stores), far from any overflow.
const MTIME_LIMIT: i64 = 1 << 39;
/// The largest xattr value accepted (the Linux limit).
const XATTR_VALUE_MAX: usize = 64 * 1024;
/// The longest xattr name accepted (the Linux limit).
const XATTR_NAME_MAX: usize = 255;

/// A directory whose mode and mtime are set at the end, after its children.
#[derive(Debug)]
struct DirFix {
    path: Vec<u8>,
    dev: u64,
    ino: u64,
    mode: u32,
    mtime: Timespec,
}

/// The state of one apply.
#[derive(Debug)]
struct Applier<'o> {
    root: Root,
    opts: &'o ApplyOptions,
    /// Running as root (euid 0): decides whether `trusted.*` xattrs are written and whether
    /// `EPERM` on an xattr is an error.
    is_root: bool,
    track: Tracker,
    dirs: Vec<DirFix>,
    /// Index into `dirs` by path, so a repeated directory entry updates its record in place.
    dir_index: HashMap<Vec<u8>, usize>,
    stats: ApplyStats,
}

impl Applier<'_> {
    fn apply(&mut self, entry: &Entry, tar: &mut TarReader<'_>) -> Result<()> {
        let path = names::clean(&entry.path)?;
        let meta = validate(entry)?;
        if path.is_empty() {
            if entry.kind != Kind::Dir {
                return Err(names::invalid(
                    &entry.path,
                    "names the root but is not a directory",
                ));
            }
            return self.root_dir(entry, &meta);
        }
        let (parent, name) = names::split(&path);
        for comp in names::components(parent) {
            match whiteout::classify(OsStr::from_bytes(comp)) {
                Name::Regular(_) => {}
                Name::Meta => return self.skip(&path, "AUFS metadata"),
                _ => {
                    return Err(names::invalid(
                        &entry.path,
                        "has a whiteout name as a directory",
                    ));
                }
            }
        }
        match whiteout::classify(OsStr::from_bytes(name)) {
            Name::Regular(_) => {}
            Name::Meta => return self.skip(&path, "AUFS metadata"),
            Name::Invalid => {
                return Err(names::invalid(
                    &entry.path,
                    "is a whiteout of a directory's parent or itself",
                ));
            }
            Name::Whiteout(target) => {
                return self.whiteout(parent, name, target.as_bytes(), &meta);
            }
            Name::Opaque => return self.opaque(parent, name, &meta),
        }
        match entry.kind {
            Kind::Regular => self.regular(&path, Some(entry), &meta, Some(tar)),
            Kind::Dir => self.dir(&path, entry, &meta),
            Kind::Symlink => self.symlink(&path, entry, &meta),
            Kind::Hardlink => self.hardlink(&path, entry),
            Kind::Fifo | Kind::Char | Kind::Block => self.node(&path, entry, &meta),
        }
    }

    /// Skips an entry on purpose (never an error).
    fn skip(&self, path: &[u8], why: &str) -> Result<()> {
        tracing::debug!(path = %names::show(path), "skipping {why} entry");
        Ok(())
    }

    /// Sets the deferred modes and mtimes of directories, deepest first.
    fn finish(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dirs);
        let depth =
            |p: &[u8]| p.iter().filter(|&&b| b == b'/').count() + usize::from(!p.is_empty());
        dirs.sort_by_key(|d| std::cmp::Reverse(depth(&d.path)));
        for d in &dirs {
            entries::fix_dir(&self.root, d)?;
        }
        Ok(())
    }
}

/// Checks an entry's owner, mode, mtime and xattrs; the archive is rejected if any is absurd.
fn validate(entry: &Entry) -> Result<Meta> {
    let bad = |what: &str| names::invalid(&entry.path, what);
    let id = |v: i64, what: &str| {
        u32::try_from(v)
            .ok()
            .filter(|&v| v != u32::MAX)
            .ok_or_else(|| bad(&format!("has an out-of-range {what} ({v})")))
    };
    let uid = id(entry.uid, "uid")?;
    let gid = id(entry.gid, "gid")?;
    if entry.mode < 0 {
        return Err(bad("has a negative mode"));
    }
    let mode = (entry.mode & 0o7777) as u32;
    for (name, value) in &entry.xattrs {
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(bad("has an xattr with an empty or over-long name"));
        }
        if value.len() > XATTR_VALUE_MAX {
            return Err(bad("has an xattr value larger than 64 KiB"));
        }
    }
    let (secs, nanos) = entry.mtime;
    let mtime = Timespec {
        tv_sec: secs.clamp(-MTIME_LIMIT, MTIME_LIMIT),
        tv_nsec: nanos.min(999_999_999).into(),
    };
    Ok(Meta {
        uid,
        gid,
        mode,
        mtime,
    })
}

/// An `InvalidArchive` error with a plain message.
fn invalid(what: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArchive, what)
}
