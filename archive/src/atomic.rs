//! Small files written so that a crash leaves the old contents or the new, never a part.
//!
//! Every driver and the engine keep small state files (a layer's ancestry, its kind, mount
//! records, layer records); all of them are written here, one way: a temporary file named
//! [`TEMP_PREFIX`]`*` beside the target, filled, fsync'd, renamed over the target, and the
//! directory fsync'd. A crash can leave a temporary file behind; [`remove_temp_files`] (or a
//! driver's own sweep of dot names) clears them.

use std::fs::{self, File};
use std::io::{BufWriter, ErrorKind as IoKind, Write};
use std::path::Path;

use crate::{Error, Result};

/// The name prefix of temporary files: a dot name, which no layer id can be.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Writes the file `path` atomically with what `fill` writes (buffered).
///
/// The temporary file has a unique name, so concurrent writers of the same path never mix
/// their bytes: the last rename wins. On error the temporary file is removed. `fill` may fail
/// with an error of the caller's own type, which the function then returns.
pub fn write_file<E: From<Error>>(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| Error::os("create temporary file in", dir, e))?;
    {
        let mut w = BufWriter::with_capacity(64 * 1024, tmp.as_file());
        fill(&mut w)?;
        w.flush().map_err(|e| Error::os("write", tmp.path(), e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::os("fsync", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| Error::os("rename", path, e.error))?;
    Ok(sync_dir(dir)?)
}

/// Writes `bytes` to the file `path` atomically; see [`write_file`].
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, |w| {
        w.write_all(bytes).map_err(|e| Error::os("write", path, e))
    })
}

/// fsyncs a directory, making renames and unlinks in it durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::os("fsync", dir, e))
}

/// Removes the temporary files interrupted writes left in `dir`; returns how many.
pub fn remove_temp_files(dir: &Path) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::os("readdir", dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::os("readdir", dir, e))?;
        if is_temp_name(&entry.file_name()) {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == IoKind::NotFound => {}
                Err(e) => return Err(Error::os("unlink", &path, e)),
            }
        }
    }
    Ok(removed)
}

/// Whether `name` is one of [`write_file`]'s temporary files.
pub fn is_temp_name(name: &std::ffi::OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    name.as_bytes().starts_with(TEMP_PREFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replaces_and_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("state");
        write_bytes(&p, b"one").unwrap();
        write_bytes(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state")]);
    }

    #[test]
    fn failed_fill_keeps_old_contents_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("state");
        write_bytes(&p, b"old").unwrap();
        let err = write_file(&p, |w| {
            w.write_all(b"half").unwrap();
            Err(Error::new(crate::ErrorKind::Io, "disk on fire"))
        })
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Io);
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn removes_only_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(".tmp-abc"), b"x").unwrap();
        fs::write(tmp.path().join("keep.json"), b"x").unwrap();
        assert_eq!(remove_temp_files(tmp.path()).unwrap(), 1);
        assert!(tmp.path().join("keep.json").exists());
        assert_eq!(remove_temp_files(&tmp.path().join("missing")).unwrap(), 0);
    }
}
