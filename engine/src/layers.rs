//! Making, filling, reading and removing layers.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use strata_driver_api::{Change, CreateOpts, Error, ErrorKind, LayerId, Result, TarStream};
use tokio::io::{AsyncRead, ReadBuf};
use tracing::field;

use crate::engine::{Engine, not_found};
use crate::fill::fill;
use crate::lock::LockGuard;
use crate::store::{LayerRecord, children};
use crate::timefmt::format_rfc3339;
use strata_driver_api::LayerKind;

/// What [`Engine::create`] makes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateRequest {
    /// The new layer's id; a random one when `None`.
    pub id: Option<LayerId>,
    /// Its parent; `None` for a base layer.
    pub parent: Option<LayerId>,
    /// A writable container layer (`true`) or an image layer to fill with `apply`.
    pub rw: bool,
    /// Names to record (unique across layers).
    pub names: Vec<String>,
}

/// What [`Engine::import`] makes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportRequest {
    /// The new layer's id; a random one when `None`.
    pub id: Option<LayerId>,
    /// Its parent; `None` for a base layer.
    pub parent: Option<LayerId>,
    /// Names to record (unique across layers).
    pub names: Vec<String>,
}

impl Engine {
    /// Creates an empty layer and returns its record.
    ///
    /// An existing id or name is `AlreadyExists`; a missing parent is `ParentNotFound`.
    #[tracing::instrument(
        name = "create",
        level = "debug",
        skip_all,
        fields(layer = field::Empty, parent = %or_dash(req.parent.as_ref()), rw = req.rw)
    )]
    pub async fn create(&self, req: CreateRequest) -> Result<LayerRecord> {
        let kind = if req.rw {
            LayerKind::Container
        } else {
            LayerKind::Image
        };
        let _lock = self.layers_lock(true).await?;
        let record = self
            .begin_layer(req.id, req.parent, kind, req.names)
            .await?;
        let made = self.create_in_driver(&record).await;
        if let Err(e) = made {
            // The driver leaves nothing behind on error; only the record goes.
            self.abandon(&record.id, false).await;
            return Err(e);
        }
        let record = self.finish_layer(record).await?;
        tracing::debug!(layer = %record.id, "layer created");
        Ok(record)
    }

    /// Creates an image layer from a tar (plain, gzip or zstd, sniffed) and returns its
    /// record, with the digest and size of the uncompressed tar.
    ///
    /// The tar is streamed: never held in memory. If anything fails, the layer is removed and
    /// no record remains. Errors as [`create`](Engine::create), and `InvalidArchive` for a
    /// malformed or hostile tar.
    #[tracing::instrument(
        name = "import",
        level = "debug",
        skip_all,
        fields(layer = field::Empty, parent = %or_dash(req.parent.as_ref()))
    )]
    pub async fn import<R>(&self, reader: R, req: ImportRequest) -> Result<LayerRecord>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let start = Instant::now();
        let _lock = self.layers_lock(true).await?;
        let mut record = self
            .begin_layer(req.id, req.parent, LayerKind::Image, req.names)
            .await?;
        if let Err(e) = self.create_in_driver(&record).await {
            self.abandon(&record.id, false).await;
            return Err(e);
        }
        match self.fill(&record, reader).await {
            Ok(filled) => {
                record.size = filled.size;
                record.diff_digest = Some(filled.digest);
                let record = self.finish_layer(record).await?;
                tracing::debug!(
                    layer = %record.id,
                    tar_bytes = filled.tar_bytes,
                    size = record.size,
                    digest = record.diff_digest.as_deref().unwrap_or_default(),
                    elapsed = ?start.elapsed(),
                    "layer imported"
                );
                Ok(record)
            }
            Err(e) => {
                self.abandon(&record.id, true).await;
                Err(e)
            }
        }
    }

    /// Fills an empty layer (made by [`create`](Engine::create), never filled) from a tar,
    /// as [`import`](Engine::import) does, and returns its updated record.
    ///
    /// A layer that was already filled is `InvalidInput`; one with children is
    /// `HasChildren`; a mounted one is `Busy`. If the tar fails, the layer is made empty again
    /// (removed and created afresh with the same id and parent), or, if even that fails,
    /// removed.
    #[tracing::instrument(name = "apply", level = "debug", skip_all, fields(layer = %id))]
    pub async fn apply<R>(&self, id: &LayerId, reader: R) -> Result<LayerRecord>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let start = Instant::now();
        let _lock = self.layers_lock(true).await?;
        let records = self.load_records().await?;
        let mut record = usable(&records, id)?.clone();
        if record.diff_digest.is_some() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("layer {id} already has content: apply fills only an empty layer"),
            ));
        }
        if let Some(child) = children(&records, id).first() {
            return Err(Error::new(
                ErrorKind::HasChildren,
                format!("layer {id} has children ({child}); apply would change them"),
            ));
        }
        {
            let _m = self.mounts_lock().await?;
            let count = self.load_mounts().await?.count(id);
            if count > 0 {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("layer {id} is mounted ({count} references); unmount it first"),
                ));
            }
        }
        record.incomplete = true;
        self.save_record(&record).await?;
        match self.fill(&record, reader).await {
            Ok(filled) => {
                record.size = filled.size;
                record.diff_digest = Some(filled.digest);
                let record = self.finish_layer(record).await?;
                tracing::debug!(
                    tar_bytes = filled.tar_bytes,
                    size = record.size,
                    digest = record.diff_digest.as_deref().unwrap_or_default(),
                    elapsed = ?start.elapsed(),
                    "layer filled"
                );
                Ok(record)
            }
            Err(e) => match self.reset(&record).await {
                Ok(()) => Err(e),
                Err(reset) => {
                    self.abandon(id, true).await;
                    Err(e.context(format!(
                        "layer {id} was removed (making it empty again failed: {reset})"
                    )))
                }
            },
        }
    }

    /// Removes a layer. One with children is `HasChildren` (even when forced); a mounted
    /// one is `Busy` unless `force`, which unmounts it.
    #[tracing::instrument(name = "remove", level = "debug", skip_all, fields(layer = %id, force))]
    pub async fn remove(&self, id: &LayerId, force: bool) -> Result<()> {
        let _lock = self.layers_lock(true).await?;
        let records = self.load_records().await?;
        let Some(record) = records.get(id) else {
            return Err(not_found(id));
        };
        let kids = children(&records, id);
        if !kids.is_empty() {
            let list: Vec<String> = kids.iter().map(|k| k.to_string()).collect();
            return Err(Error::new(
                ErrorKind::HasChildren,
                format!("layer {id} has children: {}", list.join(", ")),
            ));
        }
        let _m = self.mounts_lock().await?;
        let mut table = self.load_mounts().await?;
        let count = table.count(id);
        if count > 0 && !force {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("layer {id} is mounted ({count} references); unmount it or force"),
            ));
        }
        let mut dying = record.clone();
        dying.incomplete = true;
        self.save_record(&dying).await?;
        match self
            .call("remove", id, self.inner.driver.remove(id, force))
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                // Nothing was removed (the driver refused): the layer stays as it was.
                self.save_record(record).await?;
                return Err(e);
            }
        }
        if table.forget(id) {
            tracing::debug!(refs = count, "refcount dropped with the layer");
            self.save_mounts(table).await?;
        }
        self.sync_home().await?;
        self.delete_record(id).await?;
        tracing::debug!("layer removed");
        Ok(())
    }

    /// The layer's changes against `parent` (its own recorded parent when `None`) as an
    /// uncompressed OCI layer tar.
    ///
    /// The stream holds a shared lock on the layers until it is dropped: the layer cannot be
    /// removed while it is read (so do not remove layers in the same task while holding it).
    #[tracing::instrument(
        name = "export",
        level = "debug",
        skip_all,
        fields(layer = %id, parent = field::Empty)
    )]
    pub async fn export(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        let lock = self.layers_lock(false).await?;
        let base = self.base(id, parent).await?;
        record_parent(&base);
        let stream = self
            .call("diff", id, self.inner.driver.diff(id, base.as_ref()))
            .await?;
        Ok(Box::pin(Locked {
            inner: stream,
            _lock: lock,
            traced: Some(Streamed {
                span: tracing::Span::current(),
                start: Instant::now(),
                bytes: 0,
            }),
        }))
    }

    /// The paths that differ between `parent` (the recorded parent when `None`) and the layer.
    #[tracing::instrument(
        name = "changes",
        level = "debug",
        skip_all,
        fields(layer = %id, parent = field::Empty)
    )]
    pub async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        let _lock = self.layers_lock(false).await?;
        let base = self.base(id, parent).await?;
        record_parent(&base);
        let changes = self
            .call("changes", id, self.inner.driver.changes(id, base.as_ref()))
            .await?;
        tracing::debug!(changes = changes.len(), "changes listed");
        Ok(changes)
    }

    /// The driver's facts about one layer, for inspection: its paths and, for drivers that
    /// hand out mount specs (block), the image, filesystem type, read-only flag and options.
    pub async fn metadata(&self, id: &LayerId) -> Result<Vec<(String, String)>> {
        let _lock = self.layers_lock(false).await?;
        usable(&self.load_records().await?, id)?;
        self.call("metadata", id, self.inner.driver.metadata(id))
            .await
    }

    /// The base to diff `id` against: `parent` if given (it must exist), else the recorded one.
    async fn base(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Option<LayerId>> {
        let records = self.load_records().await?;
        let record = usable(&records, id)?;
        match parent {
            None => Ok(record.parent.clone()),
            Some(p) => match records.get(p) {
                Some(r) if !r.incomplete => Ok(Some(p.clone())),
                _ => Err(Error::new(
                    ErrorKind::ParentNotFound,
                    format!("layer {p} not found"),
                )),
            },
        }
    }

    /// Checks a new layer's id, parent and names and writes its record, marked incomplete.
    /// The caller holds the layers lock exclusively.
    async fn begin_layer(
        &self,
        id: Option<LayerId>,
        parent: Option<LayerId>,
        kind: LayerKind,
        names: Vec<String>,
    ) -> Result<LayerRecord> {
        let records = self.load_records().await?;
        let id = id.unwrap_or_else(LayerId::random);
        if records.contains_key(&id) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("layer {id} already exists"),
            ));
        }
        if let Some(p) = &parent {
            match records.get(p) {
                Some(r) if !r.incomplete => {}
                _ => {
                    return Err(Error::new(
                        ErrorKind::ParentNotFound,
                        format!("parent layer {p} not found"),
                    ));
                }
            }
        }
        for name in &names {
            if name.is_empty() {
                return Err(Error::new(ErrorKind::InvalidInput, "empty layer name"));
            }
            if let Some(owner) = records.values().find(|r| r.names.contains(name)) {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("name {name:?} is already used by layer {}", owner.id),
                ));
            }
        }
        tracing::Span::current().record("layer", field::display(&id));
        let record = LayerRecord {
            id,
            parent,
            kind,
            created: format_rfc3339(SystemTime::now()),
            diff_digest: None,
            size: 0,
            names,
            incomplete: true,
        };
        self.save_record(&record).await?;
        Ok(record)
    }

    /// Makes the layer's files durable, then its record complete.
    async fn finish_layer(&self, mut record: LayerRecord) -> Result<LayerRecord> {
        let done = async {
            self.sync_home().await?;
            record.incomplete = false;
            self.save_record(&record).await
        };
        match done.await {
            Ok(()) => Ok(record),
            Err(e) => {
                self.abandon(&record.id, true).await;
                Err(e)
            }
        }
    }

    /// Gives up on a layer being made: removes its data (when the driver has any) and its
    /// record. A failure here is logged, not returned: the caller is already returning the
    /// error that matters, and the record, still incomplete, is cleaned at the next open.
    async fn abandon(&self, id: &LayerId, has_data: bool) {
        let outcome = if has_data {
            self.discard(id).await
        } else {
            self.delete_record(id).await
        };
        if let Err(e) = outcome {
            tracing::warn!(layer = %id, error = %e, "could not clean up a failed layer; it is removed at the next open");
        }
    }

    /// Makes a partly-filled layer empty again: removes it and creates it afresh.
    async fn reset(&self, record: &LayerRecord) -> Result<()> {
        tracing::debug!(layer = %record.id, "making the layer empty again");
        let driver = &self.inner.driver;
        match self
            .call("remove", &record.id, driver.remove(&record.id, true))
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.create_in_driver(record).await?;
        self.sync_home().await?;
        let mut record = record.clone();
        record.incomplete = false;
        self.save_record(&record).await
    }

    /// Makes the record's layer in the driver: `create_rw` for a container layer, `create`
    /// for an image layer.
    async fn create_in_driver(&self, record: &LayerRecord) -> Result<()> {
        let (id, parent) = (&record.id, record.parent.as_ref());
        let opts = CreateOpts::default();
        let driver = &self.inner.driver;
        match record.kind {
            LayerKind::Container => {
                self.call("create_rw", id, driver.create_rw(id, parent, &opts))
                    .await
            }
            LayerKind::Image => {
                self.call("create", id, driver.create(id, parent, &opts))
                    .await
            }
        }
    }

    /// Fills the record's layer from `reader` (the driver's `apply_diff`, fed by the
    /// decompressing, hashing producer).
    async fn fill<R>(&self, record: &LayerRecord, reader: R) -> Result<crate::fill::Filled>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let (id, parent) = (&record.id, record.parent.as_ref());
        self.call(
            "apply_diff",
            id,
            fill(
                &self.inner.driver,
                id,
                parent,
                reader,
                &self.inner.config.limits,
            ),
        )
        .await
    }
}

/// Records the base a diff is taken against in the current span.
fn record_parent(base: &Option<LayerId>) {
    tracing::Span::current().record("parent", field::display(or_dash(base.as_ref())));
}

/// A layer id for a log line, `-` for none.
fn or_dash(id: Option<&LayerId>) -> &str {
    id.map_or("-", LayerId::as_str)
}

/// The record of `id` if it exists and is complete; `NotFound` otherwise.
pub(crate) fn usable<'a>(
    records: &'a BTreeMap<LayerId, LayerRecord>,
    id: &LayerId,
) -> Result<&'a LayerRecord> {
    match records.get(id) {
        Some(r) if !r.incomplete => Ok(r),
        _ => Err(not_found(id)),
    }
}

/// A stream that holds a lock until it is dropped.
struct Locked {
    inner: TarStream,
    _lock: LockGuard,
    /// Counts what went out, to say so at the end; `None` once said.
    traced: Option<Streamed>,
}

/// What an export stream has sent so far, in the span of the export that opened it.
struct Streamed {
    span: tracing::Span,
    start: Instant,
    bytes: u64,
}

impl AsyncRead for Locked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.inner.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = (buf.filled().len() - before) as u64;
            if n > 0 {
                if let Some(t) = self.traced.as_mut() {
                    t.bytes += n;
                }
            } else if buf.remaining() > 0 {
                if let Some(t) = self.traced.take() {
                    t.span.in_scope(|| {
                        tracing::debug!(bytes = t.bytes, elapsed = ?t.start.elapsed(), "export streamed");
                    });
                }
            }
        }
        polled
    }
}
