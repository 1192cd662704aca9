//! The layer records: one JSON file a layer under `<root>/<driver>-layers/`.
//!
//! A record is the engine's truth about a layer (the driver only holds its files). Records are
//! written atomically (temporary file, fsync, rename, fsync of the directory), so a crash
//! leaves the old record or the new one, never half of one. The store does no locking of its
//! own: the engine holds `layers.lock` around every use.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_archive::atomic;
use strata_driver_api::{Error, ErrorKind, LayerId, LayerKind, Result};

use crate::lock::LockFile;

const RECORD_EXT: &str = ".json";

/// One layer's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The layer's id.
    pub id: LayerId,
    /// Its parent; `None` for a base layer.
    pub parent: Option<LayerId>,
    /// Image or container layer.
    pub kind: LayerKind,
    /// When it was created, RFC 3339 UTC.
    pub created: String,
    /// `sha256:<hex>` of the uncompressed tar it was filled from (its OCI diffID); `None` for
    /// a layer that was created empty.
    #[serde(default)]
    pub diff_digest: Option<String>,
    /// The size of its content as the driver measured it when it was filled (regular-file
    /// bytes, hardlinks once); 0 for a layer created empty.
    #[serde(default)]
    pub size: u64,
    /// Names given to it.
    #[serde(default)]
    pub names: Vec<String>,
    /// Set while the layer is being made or removed; such a layer is cleaned up at the next
    /// open unless its maker is still at work.
    #[serde(default)]
    pub incomplete: bool,
}

/// The records of one driver.
#[derive(Debug, Clone)]
pub struct LayerStore {
    dir: PathBuf,
    lock: LockFile,
}

impl LayerStore {
    /// The store in `dir` (`<root>/<driver>-layers`), with its lock `dir/layers.lock`.
    pub fn new(dir: impl Into<PathBuf>) -> LayerStore {
        let dir = dir.into();
        let lock = LockFile::new(dir.join("layers.lock"));
        LayerStore { dir, lock }
    }

    /// The directory of the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lock that guards the records.
    pub fn lock(&self) -> &LockFile {
        &self.lock
    }

    fn path_of(&self, id: &LayerId) -> PathBuf {
        self.dir.join(format!("{id}{RECORD_EXT}"))
    }

    /// Every record, by id. A damaged record (one that does not parse, or holds another id) is
    /// left out with a warning naming it, so that one damaged file does not stop every command;
    /// [`quarantine_damaged`](LayerStore::quarantine_damaged) moves it aside.
    pub fn load_all(&self) -> Result<BTreeMap<LayerId, LayerRecord>> {
        Ok(self.load_all_checked()?.0)
    }

    /// Every record, and the paths of the damaged ones (see [`load_all`](LayerStore::load_all)).
    fn load_all_checked(&self) -> Result<(BTreeMap<LayerId, LayerRecord>, Vec<PathBuf>)> {
        let mut damaged = Vec::new();
        let mut out = BTreeMap::new();
        for (path, stem) in self.record_files()? {
            match self.read(&path, &stem) {
                Ok(record) => {
                    out.insert(record.id.clone(), record);
                }
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    tracing::warn!(record = %path.display(), error = %format_args!("{e:#}"), "a damaged layer record is left out");
                    damaged.push(path);
                }
                Err(e) => return Err(e),
            }
        }
        Ok((out, damaged))
    }

    /// Moves damaged records to `<dir>/quarantine/` (for a person to look at; their layers'
    /// driver data stays where it is) and returns where each went. Run under the lock held
    /// exclusively.
    pub fn quarantine_damaged(&self) -> Result<Vec<PathBuf>> {
        let (_, damaged) = self.load_all_checked()?;
        let mut moved = Vec::new();
        if damaged.is_empty() {
            return Ok(moved);
        }
        let dir = self.dir.join("quarantine");
        create_private_dir(&dir)?;
        for path in damaged {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let mut to = dir.join(&name);
            let mut n = 1;
            while to.exists() {
                to = dir.join(format!("{name}.{n}"));
                n += 1;
            }
            fs::rename(&path, &to).map_err(|e| Error::os("rename", &path, e))?;
            tracing::warn!(record = %path.display(), to = %to.display(), "a damaged layer record was moved aside");
            moved.push(to);
        }
        atomic::sync_dir(&self.dir)?;
        Ok(moved)
    }

    /// The record files: path and id-stem.
    fn record_files(&self) -> Result<Vec<(PathBuf, String)>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == IoKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::os("readdir", &self.dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::os("readdir", &self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(stem) = record_stem(name) else {
                continue;
            };
            out.push((entry.path(), stem.to_string()));
        }
        Ok(out)
    }

    /// The ids of every record, from the records' file names alone (a damaged record is
    /// listed too; reading it is the caller's business).
    pub fn ids(&self) -> Result<Vec<LayerId>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == IoKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::os("readdir", &self.dir, e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::os("readdir", &self.dir, e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(record_stem) else {
                continue;
            };
            if let Ok(id) = LayerId::new(stem) {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Whether there is a record of `id` (its file exists; it is not read).
    pub fn exists(&self, id: &LayerId) -> Result<bool> {
        let path = self.path_of(id);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == IoKind::NotFound => Ok(false),
            Err(e) => Err(Error::os("stat", &path, e)),
        }
    }

    /// The record of `id`, if there is one.
    pub fn load(&self, id: &LayerId) -> Result<Option<LayerRecord>> {
        let path = self.path_of(id);
        match fs::metadata(&path) {
            Ok(_) => self.read(&path, id.as_str()).map(Some),
            Err(e) if e.kind() == IoKind::NotFound => Ok(None),
            Err(e) => Err(Error::os("stat", &path, e)),
        }
    }

    fn read(&self, path: &Path, stem: &str) -> Result<LayerRecord> {
        let bytes = fs::read(path).map_err(|e| Error::os("read", path, e))?;
        let record: LayerRecord = serde_json::from_slice(&bytes).map_err(|e| {
            Error::with_source(
                ErrorKind::Corrupt,
                format!("layer record {}", path.display()),
                e,
            )
        })?;
        if record.parent.as_ref() == Some(&record.id) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "layer record {} names its own layer as its parent",
                    path.display()
                ),
            ));
        }
        if record.id.as_str() != stem {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "layer record {} holds id {}, not {stem}",
                    path.display(),
                    record.id
                ),
            ));
        }
        Ok(record)
    }

    /// Writes `record` atomically, replacing any earlier one.
    pub fn save(&self, record: &LayerRecord) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::with_source(ErrorKind::Io, "serialise layer record", e))?;
        bytes.push(b'\n');
        Ok(atomic::write_bytes(&self.path_of(&record.id), &bytes)?)
    }

    /// Deletes the record of `id` (durably); a missing record is not an error.
    pub fn delete(&self, id: &LayerId) -> Result<()> {
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(atomic::sync_dir(&self.dir)?),
            Err(e) if e.kind() == IoKind::NotFound => Ok(()),
            Err(e) => Err(Error::os("unlink", &path, e)),
        }
    }

    /// Removes temporary files a crashed write left behind; returns how many.
    pub fn remove_temp_files(&self) -> Result<usize> {
        Ok(atomic::remove_temp_files(&self.dir)?)
    }
}

/// The id part of a record's file name, or `None` for anything else in the directory.
fn record_stem(name: &str) -> Option<&str> {
    if name.starts_with('.') {
        return None;
    }
    name.strip_suffix(RECORD_EXT).filter(|s| !s.is_empty())
}

/// Whether `dir` (a `<driver>-layers` directory) holds any layer record. A directory that
/// cannot be read counts as holding layers, so selection errs on the side of not switching
/// drivers under existing data.
pub fn holds_layers(dir: &Path) -> bool {
    match fs::read_dir(dir) {
        Ok(entries) => entries.into_iter().any(|e| match e {
            Ok(e) => e.file_name().to_str().and_then(record_stem).is_some(),
            Err(_) => true,
        }),
        Err(e) => e.kind() != IoKind::NotFound,
    }
}

/// The ids of the layers whose parent is `id`.
pub fn children<'a>(records: &'a BTreeMap<LayerId, LayerRecord>, id: &LayerId) -> Vec<&'a LayerId> {
    records
        .values()
        .filter(|r| r.parent.as_ref() == Some(id))
        .map(|r| &r.id)
        .collect()
}

/// Creates `dir` and its missing parents with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::os("mkdir", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, parent: Option<&str>) -> LayerRecord {
        LayerRecord {
            id: LayerId::new(id).unwrap(),
            parent: parent.map(|p| LayerId::new(p).unwrap()),
            kind: LayerKind::Image,
            created: "2024-01-01T00:00:00Z".into(),
            diff_digest: Some("sha256:00".into()),
            size: 12,
            names: vec!["n".into()],
            incomplete: false,
        }
    }

    #[test]
    fn save_load_delete_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LayerStore::new(tmp.path());
        assert!(!holds_layers(tmp.path()));
        let a = record("a", None);
        let mut b = record("b", Some("a"));
        store.save(&a).unwrap();
        store.save(&b).unwrap();
        assert!(holds_layers(tmp.path()));
        b.incomplete = true;
        store.save(&b).unwrap();
        let all = store.load_all().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[&a.id], a);
        assert_eq!(all[&b.id], b);
        assert_eq!(store.load(&b.id).unwrap(), Some(b.clone()));
        assert_eq!(children(&all, &a.id), [&b.id]);
        assert!(children(&all, &b.id).is_empty());

        store.delete(&b.id).unwrap();
        store.delete(&b.id).unwrap();
        assert_eq!(store.load(&b.id).unwrap(), None);
        assert_eq!(store.load_all().unwrap().len(), 1);
    }

    #[test]
    fn the_json_shape() {
        let json = serde_json::to_value(record("a", None)).unwrap();
        assert_eq!(json["parent"], serde_json::Value::Null);
        assert_eq!(json["kind"], "image");
        assert_eq!(json["incomplete"], false);
        // Old or foreign records without the optional fields still load.
        let minimal: LayerRecord = serde_json::from_str(
            r#"{"id":"x","parent":null,"kind":"container","created":"2024-01-01T00:00:00Z","future":1}"#,
        )
        .unwrap();
        assert_eq!(minimal.kind, LayerKind::Container);
        assert!(!minimal.incomplete);
    }

    #[test]
    fn leftovers_and_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LayerStore::new(tmp.path());
        store.save(&record("a", None)).unwrap();
        fs::write(tmp.path().join(".tmp-abc123"), b"{\"half").unwrap();
        fs::write(tmp.path().join("layers.lock"), b"").unwrap();
        // Temporary files are not records.
        assert_eq!(store.load_all().unwrap().len(), 1);
        assert_eq!(store.remove_temp_files().unwrap(), 1);
        assert!(!tmp.path().join(".tmp-abc123").exists());
        assert!(tmp.path().join("a.json").exists());

        // A damaged record is Corrupt when asked for, and left out of the whole set (one
        // damaged file must not stop every command) until quarantined.
        let b = LayerId::new("b").unwrap();
        fs::write(tmp.path().join("b.json"), b"{not json").unwrap();
        assert_eq!(store.load(&b).unwrap_err().kind(), ErrorKind::Corrupt);
        assert_eq!(store.load_all().unwrap().len(), 1);
        fs::write(
            tmp.path().join("b.json"),
            serde_json::to_vec(&record("c", None)).unwrap(),
        )
        .unwrap();
        assert_eq!(store.load(&b).unwrap_err().kind(), ErrorKind::Corrupt);
        assert_eq!(store.load_all().unwrap().len(), 1);
        let moved = store.quarantine_damaged().unwrap();
        assert_eq!(moved, [tmp.path().join("quarantine/b.json")]);
        assert!(!tmp.path().join("b.json").exists());
        assert_eq!(store.load_all().unwrap().len(), 1);
    }

    #[test]
    fn missing_dir_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LayerStore::new(tmp.path().join("nope"));
        assert!(store.load_all().unwrap().is_empty());
        assert!(!holds_layers(&tmp.path().join("nope")));
        assert_eq!(store.remove_temp_files().unwrap(), 0);
    }
}
