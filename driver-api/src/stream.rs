//! The bridge between async tar streams at the trait and blocking file work.
//!
//! The trait speaks [`TarStream`] (an `AsyncRead`), but walking a tree or unpacking a tar is a
//! long run of small syscalls, which belongs on one blocking thread per operation. These
//! helpers move bytes between the two worlds and carry errors across: a producer that fails or
//! panics midway makes the reader fail, never end early with a short tar that looks whole.

use std::io::{self, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use crate::{Error, ErrorKind, Result};

/// An uncompressed tar stream, as `diff` returns and `apply_diff` takes it.
pub type TarStream = Pin<Box<dyn AsyncRead + Send>>;

const CHUNK: usize = 256 * 1024;
const DEPTH: usize = 8;

thread_local! {
    /// This thread may block: it is a thread the host gave a plugin call to, running that
    /// call's future (see [`blocking_allowed_here`]).
    static MAY_BLOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (which drives a future to completion on this thread, `Runtime::block_on`) with
/// [`run_blocking`] doing its work in place on this thread rather than on another one: for
/// the plugin ABI's guest side, whose calls arrive on the host's blocking threads, where one
/// more thread hop a call would be all cost.
pub fn blocking_allowed_here<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            MAY_BLOCK.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(MAY_BLOCK.with(|c| c.replace(true)));
    f()
}

fn panicked(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Io, format!("blocking task failed: {what}"))
}

/// Runs `f` on a blocking thread and returns its result; a panic becomes an `Io` error.
/// (On a thread that may block already, a plugin call's, `f` runs in place.)
pub async fn run_blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    if MAY_BLOCK.with(|c| c.get()) {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err(panicked("panicked")));
    }
    spawn(f).await
}

/// [`run_blocking`] with a driver's shared state: `f` gets `&S` on the blocking thread (the
/// `Arc` is cloned for it). The one way a driver's async trait glue runs an operation, so each
/// method is one blocking task:
///
/// ```ignore
/// run_blocking_with(&self.inner, move |inner| inner.remove(&id, force)).await
/// ```
pub async fn run_blocking_with<S, T, F>(state: &std::sync::Arc<S>, f: F) -> Result<T>
where
    S: Send + Sync + 'static + ?Sized,
    F: FnOnce(&S) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let state = std::sync::Arc::clone(state);
    run_blocking(move || f(&state)).await
}

async fn spawn<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(res) => res,
        Err(e) => Err(panicked(e)),
    }
}

/// Runs `f` on a blocking thread with a synchronous reader over `stream`. Always another
/// thread: the reader waits on the stream, which this thread's runtime may be feeding.
pub async fn read_blocking<T, F>(stream: TarStream, f: F) -> Result<T>
where
    F: FnOnce(&mut dyn Read) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    spawn(move || {
        let mut reader = tokio_util::io::SyncIoBridge::new(stream);
        f(&mut reader)
    })
    .await
}

/// A stream whose bytes `f` writes on a blocking thread.
///
/// Bytes flow through a bounded channel, so memory stays at a few chunks whatever the size.
/// If `f` returns an error or panics, the reader gets that error after the bytes written so
/// far; if the reader is dropped, `f`'s writes fail with `BrokenPipe` and it stops.
/// Must be called from within a tokio runtime.
pub fn from_blocking<F>(f: F) -> TarStream
where
    F: FnOnce(&mut dyn Write) -> Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            f(&mut w).and_then(|()| w.flush_chunk())
        }));
        let err = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => io::Error::from(e),
            Err(_) => io::Error::other("the tar stream's producer panicked"),
        };
        // The reader may be gone already; then nobody needs the error.
        let _ = tx.blocking_send(Err(err));
    });
    Box::pin(ChannelReader {
        rx,
        chunk: Vec::new(),
        pos: 0,
        done: false,
    })
}

struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn flush_chunk(&mut self) -> Result<()> {
        self.send().map_err(|e| Error::io("tar stream", e))
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "tar stream reader went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    done: bool,
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.pos < self.chunk.len() {
                let n = buf.remaining().min(self.chunk.len() - self.pos);
                let pos = self.pos;
                buf.put_slice(&self.chunk[pos..pos + n]);
                self.pos += n;
                return Poll::Ready(Ok(()));
            }
            if self.done {
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.done = true;
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn bytes_flow_through_in_order() {
        let mut s = from_blocking(|w| {
            for i in 0..100_000u32 {
                w.write_all(&i.to_le_bytes())
                    .map_err(|e| Error::io("w", e))?;
            }
            Ok(())
        });
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert_eq!(out.len(), 400_000);
        assert_eq!(&out[396..400], &99u32.to_le_bytes());
    }

    #[tokio::test]
    async fn producer_error_reaches_reader_after_data() {
        let mut s = from_blocking(|w| {
            w.write_all(&[1u8; 1000]).map_err(|e| Error::io("w", e))?;
            Err(Error::new(ErrorKind::Io, "disk on fire"))
        });
        let mut out = Vec::new();
        let err = s
            .read_to_end(&mut out)
            .await
            .expect_err("must fail, not end short");
        assert!(err.to_string().contains("disk on fire"));
    }

    #[tokio::test]
    async fn producer_panic_is_an_error() {
        let mut s = from_blocking(|_w| panic!("boom"));
        let mut out = Vec::new();
        assert!(s.read_to_end(&mut out).await.is_err());
    }

    #[tokio::test]
    async fn read_blocking_sees_all_bytes() {
        let s = from_blocking(|w| {
            w.write_all(&[7u8; 3_000_000])
                .map_err(|e| Error::io("w", e))
        });
        let n = read_blocking(s, |r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v).map_err(|e| Error::io("r", e))?;
            Ok(v.len())
        })
        .await
        .unwrap();
        assert_eq!(n, 3_000_000);
    }
}
