//! The engine: one selected driver, its records, its mount refcounts.
//!
//! [`Engine::open`] selects the driver, creates the directories and cleans up after crashed
//! operations. Every operation then takes the locks it needs for its own duration only:
//! `layers.lock` (shared to read records, exclusive to change them; an import holds it for the
//! whole import) and, after it, `mounts.lock`. Lock order is always layers, then mounts.
//!
//! Tracing (`RUST_LOG=strata_engine=debug`): each operation is a span named for it, with the
//! layer it is about; inside it, every driver call is a `driver` span (driver, operation,
//! layer) closed by an event saying how long it took, and lock waits, record writes and
//! refcount changes are events. Errors are returned, never logged as well.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use strata_driver_api::stream::run_blocking;
use strata_driver_api::{Driver, Error, ErrorKind, LayerId, Result};
use tracing::Instrument;

use crate::config::Config;
use crate::lock::{LockFile, LockGuard};
use crate::mounts::{MountStore, MountTable};
use crate::registry::{DriverInfo, PLANNED, Registry};
use crate::select::{self, Inputs, Selection};
use crate::store::{self, LayerRecord, LayerStore, create_private_dir};

/// A layer store over one driver. Cheap to clone (the clones share everything).
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) selection: Selection,
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) home: PathBuf,
    pub(crate) store: LayerStore,
    pub(crate) mounts: MountStore,
}

/// A layer as `list` shows it: its record and the references out on its mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerInfo {
    /// The record.
    #[serde(flatten)]
    pub record: LayerRecord,
    /// References out on its merged view (0: not mounted through strata).
    pub mounts: u32,
}

/// What `strata info` shows; its JSON shape is a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Info {
    /// The driver in use.
    pub driver: String,
    /// Why it was chosen.
    pub selected_by: String,
    /// The root directory.
    pub root: PathBuf,
    /// The runroot directory.
    pub runroot: PathBuf,
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    /// The driver's status pairs, in its order.
    pub status: Vec<(String, String)>,
    /// How many layers there are.
    pub layers: usize,
}

/// A selected driver that can be started in any home: see [`Engine::standalone_driver`].
#[derive(Debug)]
pub struct StandaloneDriver {
    selection: Selection,
    registry: Registry,
    config: Config,
}

impl StandaloneDriver {
    /// The driver's name.
    pub fn name(&self) -> &str {
        &self.selection.name
    }

    /// Starts an instance whose data lives in `home` (created if missing).
    pub fn start(&self, home: &Path) -> Result<Arc<dyn Driver>> {
        let factory = self
            .registry
            .get(&self.selection.name)
            .expect("selection only returns registered drivers");
        factory.build(home.to_path_buf(), &self.config)
    }
}

impl Engine {
    /// Opens the engine with the built-in drivers and the config's plugins (a plugin that
    /// cannot be loaded is an error).
    pub async fn open(config: Config) -> Result<Engine> {
        let mut registry = Registry::builtin();
        registry.add_plugins(&config, true)?;
        Engine::open_with(config, registry).await
    }

    /// Opens the engine, choosing among the drivers of `registry`: selects the driver,
    /// creates `<root>/<driver>/`, `<root>/<driver>-layers/` and
    /// [`Config::run_dir`] (`<runroot>/<key of the root>/<driver>-layers/`)
    /// (mode 0700), and cleans up what crashed operations left: incomplete layers, temporary
    /// files, refcounts of views that are no longer mounted.
    #[tracing::instrument(
        name = "open",
        level = "debug",
        skip_all,
        fields(root = %config.root.display(), requested = %config.driver)
    )]
    pub async fn open_with(config: Config, registry: Registry) -> Result<Engine> {
        config.validate()?;
        let selection = choose(&config, &registry, true)?;
        tracing::debug!(
            driver = %selection.name,
            reason = %selection.reason.as_str(),
            "driver selected"
        );
        let name = selection.name.clone();
        let factory = registry
            .get(&name)
            .expect("selection only returns registered drivers");
        let home = config.root.join(&name);
        let store = LayerStore::new(config.root.join(format!("{name}-layers")));
        let mounts = MountStore::new(config.run_dir(&name));
        {
            let dirs = [
                home.clone(),
                store.dir().to_path_buf(),
                mounts.dir().to_path_buf(),
            ];
            run_blocking(move || {
                dirs.iter().try_for_each(|d| create_private_dir(d))?;
                // Trial homes a killed `strata drivers` left (plugins only).
                crate::trial::sweep(&dirs[1])
            })
            .await?;
        }
        let driver = factory
            .build(home.clone(), &config)
            .map_err(|e| e.context(format!("start driver {name}")))?;
        let engine = Engine {
            inner: Arc::new(Inner {
                config,
                selection,
                driver,
                home,
                store,
                mounts,
            }),
        };
        engine.recover().await?;
        tracing::debug!(driver = %name, "engine open");
        Ok(engine)
    }

    /// The driver `config` selects among `registry` (layers already under the root play no
    /// part), and a factory that starts a fresh instance of it in any home directory: what
    /// `strata conformance` runs its suite against, one instance per case.
    pub fn standalone_driver(config: &Config, registry: Registry) -> Result<StandaloneDriver> {
        config.validate()?;
        let selection = choose(config, &registry, false)?;
        Ok(StandaloneDriver {
            selection,
            registry,
            config: config.clone(),
        })
    }

    /// Every driver `config` could use, built-in and plugins, for `strata drivers`; a plugin
    /// that cannot be loaded is listed as unsupported with the reason.
    pub fn drivers(config: &Config) -> Vec<DriverInfo> {
        let _span = tracing::debug_span!("drivers").entered();
        let mut registry = Registry::builtin();
        // Not strict: failures become entries, never an error.
        let _ = registry.add_plugins(config, false);
        registry.infos(config)
    }

    /// The driver in use.
    pub fn driver(&self) -> Arc<dyn Driver> {
        self.inner.driver.clone()
    }

    /// The configuration the engine was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Which driver was chosen, and why.
    pub fn selection(&self) -> &Selection {
        &self.inner.selection
    }

    /// Every layer, by id, with its mount references.
    pub async fn list(&self) -> Result<Vec<LayerInfo>> {
        let (store, mounts) = (self.inner.store.clone(), self.inner.mounts.clone());
        run_blocking(move || {
            let _layers = store.lock().shared()?;
            let records = store.load_all()?;
            let table = {
                let _m = mounts.lock().shared()?;
                mounts.load()?
            };
            Ok(records
                .into_values()
                .map(|record| LayerInfo {
                    mounts: table.count(&record.id),
                    record,
                })
                .collect())
        })
        .await
    }

    /// The record of one layer. A missing layer is `NotFound`.
    pub async fn layer(&self, id: &LayerId) -> Result<LayerRecord> {
        let store = self.inner.store.clone();
        let id = id.clone();
        run_blocking(move || {
            let _layers = store.lock().shared()?;
            store.load(&id)?.ok_or_else(|| not_found(&id))
        })
        .await
    }

    /// The layer `text` names, as every command taking a layer id reads it: the layer with
    /// that id, or else the only layer whose id starts with `text` (`strata ls` shows ids cut
    /// to 12 characters, as docker does, and docker takes such prefixes). A full id always
    /// wins over being a prefix of longer ids. No match is `NotFound`; a prefix of several
    /// ids is `InvalidInput` ("ambiguous"), naming how many; text that cannot be an id is
    /// `InvalidInput` (so the empty string is never a prefix of everything).
    pub async fn resolve(&self, text: &str) -> Result<LayerId> {
        let wanted = LayerId::new(text)?;
        let store = self.inner.store.clone();
        run_blocking(move || {
            let _layers = store.lock().shared()?;
            if store.exists(&wanted)? {
                return Ok(wanted);
            }
            let mut found = store
                .ids()?
                .into_iter()
                .filter(|id| id.as_str().starts_with(wanted.as_str()));
            match (found.next(), found.count()) {
                (None, _) => Err(not_found(&wanted)),
                (Some(id), 0) => Ok(id),
                (Some(_), more) => Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "layer id prefix {wanted} is ambiguous: it matches {} layers",
                        more + 1
                    ),
                )),
            }
        })
        .await
    }

    /// The driver, paths, status pairs and layer count.
    pub async fn info(&self) -> Result<Info> {
        let layers = self.list().await?.len();
        let inner = &self.inner;
        Ok(Info {
            driver: inner.selection.name.clone(),
            selected_by: inner.selection.reason.as_str().to_string(),
            root: inner.config.root.clone(),
            runroot: inner.config.runroot.clone(),
            config_file: inner.config.file.clone(),
            status: inner.driver.status(),
            layers,
        })
    }

    /// The driver's home, `<root>/<driver>`.
    pub fn home(&self) -> &Path {
        &self.inner.home
    }

    /// Cleans up after crashed operations (see [`Engine::open_with`]). Runs at open; safe to
    /// run again. Incomplete layers are left alone while another process holds the layers
    /// lock (its operation may still be running); a layer the driver fails to remove stays
    /// incomplete and is retried at the next open.
    #[tracing::instrument(name = "recover", level = "debug", skip_all)]
    pub async fn recover(&self) -> Result<()> {
        let inner = &self.inner;
        let store = inner.store.clone();
        let held = run_blocking(move || {
            let Some(guard) = store.lock().try_exclusive()? else {
                return Ok(None);
            };
            let swept = store.remove_temp_files()?;
            store.quarantine_damaged()?;
            let records = store.load_all()?;
            Ok(Some((guard, records, swept)))
        })
        .await?;
        match held {
            Some((guard, records, swept)) => {
                let incomplete: Vec<&LayerRecord> =
                    records.values().filter(|r| r.incomplete).collect();
                tracing::debug!(
                    records = records.len(),
                    incomplete = incomplete.len(),
                    temp_files = swept,
                    "layer records checked"
                );
                for record in incomplete {
                    let kids = store::children(&records, &record.id);
                    if !kids.is_empty() {
                        // A layer is made on a complete parent only: a flag that says otherwise
                        // is damage, and the children need the data.
                        tracing::warn!(layer = %record.id, children = kids.len(), "a layer marked incomplete has children: kept");
                        continue;
                    }
                    tracing::debug!(layer = %record.id, "removing an incomplete layer");
                    if let Err(e) = self.discard(&record.id).await {
                        tracing::warn!(layer = %record.id, error = %e, "could not remove an incomplete layer; will retry at the next open");
                    }
                }
                drop(guard);
            }
            None => tracing::debug!(
                "another writer holds the layers lock: incomplete layers are left to it"
            ),
        }

        let guard = lock(inner.mounts.lock(), true).await?;
        let mounts = inner.mounts.clone();
        let (mut table, swept) = run_blocking(move || {
            let swept = mounts.remove_temp_files()?;
            Ok((mounts.load()?, swept))
        })
        .await?;
        let mut changed = false;
        let ids = table.ids();
        for id in &ids {
            let mounted = match self
                .call("is_mounted", id, inner.driver.is_mounted(id))
                .await
            {
                Ok(mounted) => mounted,
                Err(e) if e.kind() == ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            if mounted && table.count(id) == 0 {
                // A get whose process died before it recorded the reference (see
                // `MountTable::getting`): nobody holds this view.
                tracing::debug!(layer = %id, "releasing a view that a killed process mounted");
                self.call("put", id, inner.driver.put(id)).await?;
                table.forget(id);
                changed = true;
            } else if !mounted {
                tracing::debug!(layer = %id, refs = table.count(id), "forgetting the refcount of a view that is gone");
                table.forget(id);
                changed = true;
            }
        }
        tracing::debug!(
            recorded = ids.len(),
            temp_files = swept,
            "mount refcounts checked"
        );
        if changed {
            self.save_mounts(table).await?;
        }
        drop(guard);
        Ok(())
    }

    /// Removes a layer's data and record, whatever state it is in. The caller holds the
    /// layers lock exclusively.
    pub(crate) async fn discard(&self, id: &LayerId) -> Result<()> {
        match self
            .call("remove", id, self.inner.driver.remove(id, true))
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.sync_home().await?;
        let store = self.inner.store.clone();
        let id = id.clone();
        run_blocking(move || store.delete(&id)).await
    }

    /// Makes everything the driver wrote durable: one `syncfs` on its home's filesystem.
    pub(crate) async fn sync_home(&self) -> Result<()> {
        let home = self.inner.home.clone();
        let start = Instant::now();
        run_blocking(move || {
            let dir = std::fs::File::open(&home).map_err(|e| Error::os("open", &home, e))?;
            rustix::fs::syncfs(&dir).map_err(|e| Error::os("syncfs", &home, e))
        })
        .await?;
        tracing::debug!(elapsed = ?start.elapsed(), "driver home synced");
        Ok(())
    }

    pub(crate) async fn save_record(&self, record: &LayerRecord) -> Result<()> {
        let store = self.inner.store.clone();
        let saved = record.clone();
        run_blocking(move || store.save(&saved)).await?;
        tracing::debug!(
            layer = %record.id,
            incomplete = record.incomplete,
            "record written"
        );
        Ok(())
    }

    pub(crate) async fn delete_record(&self, id: &LayerId) -> Result<()> {
        let store = self.inner.store.clone();
        let gone = id.clone();
        run_blocking(move || store.delete(&gone)).await?;
        tracing::debug!(layer = %id, "record deleted");
        Ok(())
    }

    pub(crate) async fn load_records(
        &self,
    ) -> Result<std::collections::BTreeMap<LayerId, LayerRecord>> {
        let store = self.inner.store.clone();
        run_blocking(move || store.load_all()).await
    }

    pub(crate) async fn load_mounts(&self) -> Result<MountTable> {
        let mounts = self.inner.mounts.clone();
        run_blocking(move || mounts.load()).await
    }

    pub(crate) async fn save_mounts(&self, table: MountTable) -> Result<()> {
        let mounts = self.inner.mounts.clone();
        run_blocking(move || mounts.save(&table)).await
    }

    pub(crate) async fn layers_lock(&self, exclusive: bool) -> Result<LockGuard> {
        lock(self.inner.store.lock(), exclusive).await
    }

    pub(crate) async fn mounts_lock(&self) -> Result<LockGuard> {
        lock(self.inner.mounts.lock(), true).await
    }

    /// Runs one call of the driver's in a `driver` span (driver, operation, layer) and says
    /// how long it took. A failure is only returned: whoever handles it reports it.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        id: &LayerId,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let span = tracing::debug_span!(
            "driver",
            driver = %self.inner.selection.name,
            op = %op,
            layer = %id
        );
        async move {
            let start = Instant::now();
            let out = call.await?;
            tracing::debug!(elapsed = ?start.elapsed(), "driver call done");
            Ok(out)
        }
        .instrument(span)
        .await
    }
}

/// Takes a lock on a blocking thread (waiting for it may take long). An uncontended lock is
/// taken at once; a wait is logged, with how long it lasted.
async fn lock(lock: &LockFile, exclusive: bool) -> Result<LockGuard> {
    let lock = lock.clone();
    let span = tracing::Span::current();
    run_blocking(move || {
        let _entered = span.enter();
        let (mode, free) = if exclusive {
            ("exclusive", lock.try_exclusive()?)
        } else {
            ("shared", lock.try_shared()?)
        };
        if let Some(guard) = free {
            tracing::trace!(lock = %lock.path().display(), mode = %mode, "lock taken");
            return Ok(guard);
        }
        tracing::debug!(lock = %lock.path().display(), mode = %mode, "waiting for a lock held elsewhere");
        let start = Instant::now();
        let guard = if exclusive {
            lock.exclusive()
        } else {
            lock.shared()
        }?;
        tracing::debug!(
            lock = %lock.path().display(),
            mode = %mode,
            waited = ?start.elapsed(),
            "lock taken after a wait"
        );
        Ok(guard)
    })
    .await
}

/// The selection rules over a registry and the root on disk.
/// Selects the driver `config` names (or `auto` picks) among `registry`; with `prior_data`, a
/// driver whose records already hold layers under the root wins, as selection rules say.
fn choose(config: &Config, registry: &Registry, prior_data: bool) -> Result<Selection> {
    let registered = registry.names();
    // Drivers this engine cannot run but may find data of: the planned ones, and any other
    // whose records sit under the root (a plugin no longer configured, say), so that `auto`
    // refuses to start over them instead of switching drivers silently.
    let found = if prior_data {
        drivers_with_records(&config.root)
    } else {
        Vec::new()
    };
    let mut planned: Vec<&str> = PLANNED.to_vec();
    planned.extend(found.iter().map(String::as_str));
    planned.retain(|n| registry.get(n).is_none());
    planned.dedup();
    let probe = |name: &str| match registry.get(name) {
        Some(f) => f.probe(config).map_err(|e| e.to_string()),
        None => Err("not registered".to_string()),
    };
    let holds =
        |name: &str| prior_data && store::holds_layers(&config.root.join(format!("{name}-layers")));
    select::select(&Inputs {
        requested: &config.driver,
        registered: &registered,
        planned: &planned,
        probe: &probe,
        holds_layers: &holds,
    })
}

/// The names `<name>` of the `<root>/<name>-layers` directories (the engine's records of a
/// driver), whatever driver they belong to.
fn drivers_with_records(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix("-layers").map(str::to_string))
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names
}

pub(crate) fn not_found(id: &LayerId) -> Error {
    Error::new(ErrorKind::NotFound, format!("layer {id} not found"))
}
