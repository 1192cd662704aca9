//! The driver's files under its home (`<root>/block`):
//!
//! ```text
//! <home>/lock                   held shared by every instance; exclusive only for the sweep
//!                               (`strata_driver_util::lock`; so no layer can be called `lock`)
//! <home>/.scratch/<fs>-<size>.img   the empty filesystem a base layer is cloned from
//! <home>/<id>/image             the layer's filesystem image (sparse)
//! <home>/<id>/meta              kind=image|container, parent=<id> (written before the rename)
//! <home>/<id>/mnt/              where `get` mounts it
//! <home>/<id>/freezing          while the layer's mounted filesystem is frozen for a child's
//!                               clone: held (flock) by the freezing process, removed after the
//!                               thaw; one whose lock is free was left by a killed process
//! <home>/.tmp-<id>-<tag>/       a layer being made (renamed to <id> when whole)
//! <home>/.rm-<id>-<tag>/        a layer being removed
//! ```
//!
//! Layer ids start with a letter or digit, so the dot-names never collide with a layer; the
//! one other name, `lock`, is reserved ([`RESERVED`]). An old `.lock` (an earlier version's
//! lock file) is neither a layer nor a leftover: it stays, harmless. A layer
//! is made whole in a `.tmp-` directory (image cloned and fsync'd, meta written and fsync'd)
//! and renamed into place with `RENAME_NOREPLACE`: a layer directory either is whole or does not
//! exist. A crash leaves only dot-names, which the sweep removes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::RenameFlags;
use strata_driver_api::{Error, ErrorKind, LayerId, LayerKind, Result};
use strata_driver_util::lock::LOCK_FILE;

/// Names in the home that are not layers, so not usable as layer ids: the instance lock.
pub const RESERVED: &[&str] = &[LOCK_FILE];

/// A layer's `meta` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The layer's kind.
    pub kind: LayerKind,
    /// Its parent, if any.
    pub parent: Option<LayerId>,
}

impl Meta {
    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = format!("kind={}\n", self.kind.as_str());
        if let Some(p) = &self.parent {
            s.push_str(&format!("parent={p}\n"));
        }
        s
    }

    /// Parses the file's text; anything unexpected is `Corrupt`.
    pub fn parse(text: &str) -> Result<Meta> {
        let bad = |why: String| Error::new(ErrorKind::Corrupt, format!("layer meta: {why}"));
        let mut kind = None;
        let mut parent = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("kind", k)) if LayerKind::parse(k).is_some() => kind = LayerKind::parse(k),
                Some(("parent", p)) => {
                    parent = Some(LayerId::new(p).map_err(|_| bad(format!("bad parent {p:?}")))?)
                }
                _ => return Err(bad(format!("unexpected line {line:?}"))),
            }
        }
        Ok(Meta {
            kind: kind.ok_or_else(|| bad("no kind".into()))?,
            parent,
        })
    }
}

/// Paths under the home.
#[derive(Debug)]
pub struct Layout {
    home: PathBuf,
    tag: String,
    counter: AtomicU64,
}

impl Layout {
    /// The layout of `home` (absolute, canonical).
    pub fn new(home: PathBuf) -> Result<Layout> {
        // The pid alone could repeat a crashed process's leftover names.
        let salt = strata_driver_api::random::hex(4)?;
        Ok(Layout {
            home,
            tag: format!("{}{salt}", std::process::id()),
            counter: AtomicU64::new(0),
        })
    }

    /// The home.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// A name part unique to this process and call.
    pub fn unique(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.tag)
    }

    /// `<home>/<id>`
    pub fn dir(&self, id: &LayerId) -> PathBuf {
        self.home.join(id.as_str())
    }

    /// `<home>/<id>/image`
    pub fn image(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("image")
    }

    /// `<home>/<id>/freezing`: the marker of a freeze in progress (see the module docs).
    pub fn freezing(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("freezing")
    }

    /// `<home>/<id>/mnt`
    pub fn mnt(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("mnt")
    }

    /// `<home>/.scratch`
    pub fn scratch_dir(&self) -> PathBuf {
        self.home.join(".scratch")
    }

    /// Whether the layer exists (its `meta` does).
    pub fn exists(&self, id: &LayerId) -> Result<bool> {
        if RESERVED.contains(&id.as_str()) {
            return Ok(false);
        }
        let meta = self.dir(id).join("meta");
        match std::fs::symlink_metadata(&meta) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::os("stat", &meta, e)),
        }
    }

    /// The layer's meta; `NotFound` for a missing layer.
    pub fn meta(&self, id: &LayerId) -> Result<Meta> {
        let path = self.dir(id).join("meta");
        match std::fs::read_to_string(&path) {
            Ok(text) => Meta::parse(&text).map_err(|e| e.context(path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::new(
                ErrorKind::NotFound,
                format!("layer {id} not found"),
            )),
            Err(e) => Err(Error::os("read", &path, e)),
        }
    }

    /// Makes layer `id` from the image `fill` writes: in a `.tmp-` directory first, renamed
    /// into place when whole. An existing `id` is `AlreadyExists`; on error nothing is left.
    pub fn create(
        &self,
        id: &LayerId,
        meta: &Meta,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        if RESERVED.contains(&id.as_str()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("layer id {id:?} is reserved by the block driver's layout"),
            ));
        }
        if self.exists(id)? {
            return Err(already(id));
        }
        let tmp = self.home.join(format!(".tmp-{id}-{}", self.unique()));
        let result = (|| {
            std::fs::create_dir(&tmp).map_err(|e| Error::os("mkdir", &tmp, e))?;
            std::fs::create_dir(tmp.join("mnt"))
                .map_err(|e| Error::os("mkdir", &tmp.join("mnt"), e))?;
            fill(&tmp.join("image"))?;
            let meta_path = tmp.join("meta");
            let f = std::fs::File::create_new(&meta_path)
                .map_err(|e| Error::os("create", &meta_path, e))?;
            std::io::Write::write_all(&mut &f, meta.render().as_bytes())
                .map_err(|e| Error::os("write", &meta_path, e))?;
            f.sync_all()
                .map_err(|e| Error::os("fsync", &meta_path, e))?;
            crate::image::sync_dir(&tmp)?;
            let dest = self.dir(id);
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &tmp,
                rustix::fs::CWD,
                &dest,
                RenameFlags::NOREPLACE,
            )
            .map_err(|e| match e {
                rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY => already(id),
                e => Error::os("rename", &dest, e),
            })?;
            crate::image::sync_dir(&self.home)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Removes the layer's directory: renamed aside first (so the layer is gone at once), then
    /// deleted. The caller has unmounted it.
    pub fn remove(&self, id: &LayerId) -> Result<()> {
        let dir = self.dir(id);
        let aside = self.home.join(format!(".rm-{id}-{}", self.unique()));
        match std::fs::rename(&dir, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("layer {id} not found"),
                ));
            }
            Err(e) => return Err(Error::os("rename", &dir, e)),
        }
        std::fs::remove_dir_all(&aside).map_err(|e| Error::os("remove", &aside, e))
    }

    /// Every layer directory's id (names that are valid ids).
    pub fn layers(&self) -> Result<Vec<LayerId>> {
        let rd = std::fs::read_dir(&self.home).map_err(|e| Error::os("readdir", &self.home, e))?;
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(|e| Error::os("readdir", &self.home, e))?;
            if let Some(id) = e.file_name().to_str().and_then(|n| LayerId::new(n).ok()) {
                if !RESERVED.contains(&id.as_str()) {
                    out.push(id);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The dot-names a crash left behind: `.tmp-*`, `.rm-*` in the home, temporary files and
    /// mount points in `.scratch`.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for dir in [self.home.clone(), self.scratch_dir()] {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if is_leftover(&name) {
                    out.push(e.path());
                }
            }
        }
        out
    }
}

/// Whether a name in the home or `.scratch` is a crash's leftover.
fn is_leftover(name: &str) -> bool {
    name.starts_with(".tmp-")
        || name.starts_with(".rm-")
        || name.starts_with(".mnt-")
        || name.starts_with(".reflink-")
        || (name.starts_with('.') && name.contains(".img.tmp-"))
}

fn already(id: &LayerId) -> Error {
    Error::new(
        ErrorKind::AlreadyExists,
        format!("layer {id} already exists"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_rejects_junk() {
        let m = Meta {
            kind: LayerKind::Container,
            parent: Some(LayerId::new("p1").unwrap()),
        };
        assert_eq!(m.render(), "kind=container\nparent=p1\n");
        assert_eq!(Meta::parse(&m.render()).unwrap(), m);
        let base = Meta {
            kind: LayerKind::Image,
            parent: None,
        };
        assert_eq!(Meta::parse(&base.render()).unwrap(), base);
        for bad in [
            "",
            "kind=vm\n",
            "kind=image\nparent=../x\n",
            "kind=image\nx=1\n",
        ] {
            assert_eq!(
                Meta::parse(bad).unwrap_err().kind(),
                ErrorKind::Corrupt,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn lock_is_a_reserved_id() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout::new(tmp.path().to_path_buf()).unwrap();
        std::fs::write(tmp.path().join(LOCK_FILE), b"").unwrap();
        let lock = LayerId::new(LOCK_FILE).unwrap();
        let meta = Meta {
            kind: LayerKind::Image,
            parent: None,
        };
        let err = l.create(&lock, &meta, |_| Ok(())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(!l.exists(&lock).unwrap());
        assert!(l.layers().unwrap().is_empty());
    }

    #[test]
    fn leftovers_are_dot_names_only() {
        assert!(is_leftover(".tmp-a-1-2"));
        assert!(is_leftover(".rm-a-1-2"));
        assert!(is_leftover(".mnt-1-2"));
        assert!(is_leftover(".ext4-1024.img.tmp-1-2"));
        assert!(!is_leftover("ext4-1024.img"));
        assert!(!is_leftover("layer1"));
        assert!(!is_leftover(".lock"));
        assert!(!is_leftover(LOCK_FILE));
        assert!(!is_leftover(".scratch"));
    }
}
