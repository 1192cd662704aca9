//! Filling a layer from a (possibly compressed) tar: decompress, hash, apply, all streaming.
//!
//! One blocking task reads the caller's stream, sniffs and undoes its compression
//! ([`strata_archive::decompress`]), hashes the uncompressed bytes (the layer's OCI diffID) and writes
//! them into a [`stream::from_blocking`] stream that the driver's `apply_diff` reads. Memory
//! stays at a few buffers whatever the size of the layer.
//!
//! A tar's end-of-archive blocks may be followed by padding the driver never reads; the digest
//! covers the whole stream, so once the driver is done the producer keeps reading to the end,
//! hashing without writing. If the driver fails, the producer is told to stop. The config's
//! [`Limits`] bound both: the whole stream, and what follows once the driver stopped reading.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use strata_driver_api::stream;
use strata_driver_api::{Driver, Error, ErrorKind, LayerId, Result};

use crate::config::Limits;
use tokio::io::AsyncRead;
use tokio::sync::oneshot;
use tokio_util::io::SyncIoBridge;

const BUF: usize = 256 * 1024;

/// What filling a layer measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filled {
    /// The size the driver reports for the layer's content.
    pub size: u64,
    /// `sha256:<hex>` of the uncompressed stream.
    pub digest: String,
    /// Bytes of the uncompressed stream.
    pub tar_bytes: u64,
}

/// Applies the tar read from `reader` to the existing layer `id` and measures it.
pub(crate) async fn fill<R>(
    driver: &Arc<dyn Driver>,
    id: &LayerId,
    parent: Option<&LayerId>,
    reader: R,
    limits: &Limits,
) -> Result<Filled>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let source = SyncIoBridge::new(reader);
    let abort = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = oneshot::channel::<Result<(String, u64)>>();
    let producer_abort = abort.clone();
    let span = tracing::Span::current();
    let limits = limits.clone();
    let tar = stream::from_blocking(move |out| {
        let _entered = span.enter();
        let outcome = produce(source, out, &producer_abort, &limits);
        // The reader gets a copy; the engine gets the original with its cause.
        let copy = outcome
            .as_ref()
            .map(|_| ())
            .map_err(|e| Error::new(e.kind(), format!("{e:#}")));
        let _ = tx.send(outcome);
        copy
    });
    match driver.apply_diff(id, parent, tar).await {
        Ok(size) => {
            let (digest, tar_bytes) = rx.await.map_err(|_| {
                Error::new(
                    ErrorKind::Io,
                    "the layer stream's reader ended without a result",
                )
            })??;
            Ok(Filled {
                size,
                digest,
                tar_bytes,
            })
        }
        Err(applied) => {
            abort.store(true, Ordering::SeqCst);
            // A failure of the stream itself (bad gzip, a read error) reached the driver as
            // its cause: report the original. Otherwise the driver's own error stands.
            match rx.try_recv() {
                Ok(Err(source_err)) => Err(source_err),
                _ => Err(applied),
            }
        }
    }
}

/// The producer: decompress `source`, hash, write to `out`; drain after `out` closes unless
/// told to abort.
fn produce(
    source: impl Read + Send + 'static,
    out: &mut dyn Write,
    abort: &AtomicBool,
    limits: &Limits,
) -> Result<(String, u64)> {
    let (compression, mut plain) = strata_archive::decompress(source).map_err(read_error)?;
    tracing::debug!(?compression, "reading the layer stream");
    // An image archive is refused before the driver sees any of it.
    let mut head = Vec::new();
    crate::sniff::refuse_images(&mut plain, &mut head).map_err(read_error)??;
    let mut plain = io::Cursor::new(head).chain(plain);
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; BUF];
    let mut reader_gone = false;
    // Bytes read since the driver stopped reading (its tar had ended).
    let mut trailing = 0u64;
    loop {
        let n = match plain.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
        if total > limits.max_layer_size {
            return Err(Error::new(
                ErrorKind::InvalidArchive,
                format!(
                    "the layer is larger than limits.max_layer_size ({} bytes)",
                    limits.max_layer_size
                ),
            ));
        }
        if reader_gone {
            trailing += n as u64;
            if trailing > limits.max_trailing {
                return Err(Error::new(
                    ErrorKind::InvalidArchive,
                    format!(
                        "more than limits.max_trailing ({} bytes) follows the tar's end",
                        limits.max_trailing
                    ),
                ));
            }
        } else {
            match out.write_all(&buf[..n]) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => reader_gone = true,
                Err(e) => return Err(Error::io("layer stream", e)),
            }
        }
        if reader_gone && abort.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Io, "layer stream abandoned"));
        }
    }
    let digest = format!("sha256:{:x}", hasher.finalize());
    tracing::debug!(bytes = total, %digest, "layer stream read to the end");
    Ok((digest, total))
}

/// A read error of the layer stream: an OS error keeps its errno; anything else is the
/// decompressor rejecting the data.
fn read_error(e: io::Error) -> Error {
    if e.raw_os_error().is_some() {
        Error::io("read layer", e)
    } else {
        Error::with_source(
            ErrorKind::InvalidArchive,
            "read layer: corrupt or truncated stream",
            e,
        )
    }
}
