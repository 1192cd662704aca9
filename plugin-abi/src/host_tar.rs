//! How [`PluginDriver`](super::host::PluginDriver) moves tar streams across the boundary.
//!
//! ABI 1.1 (`apply_diff_from`, `diff_open` + `stream_read` + `stream_close`): in place.
//! `apply_diff_from` reads the caller's stream through a [`ReadSource`](super::ReadSource)
//! straight into the plugin's buffer, on the plugin's thread, exactly as a direct call's
//! blocking reader would. `diff_open` hands back the plugin's stream, which the caller's reads
//! poll directly (`stream_read`, with the caller's waker), as they would poll a direct call's
//! stream: no thread or buffer in between.
//!
//! ABI 1.0 (`diff`, `apply_diff`): through a pipe, whose end is handed to the plugin; used for
//! a plugin whose vtable stops before the 1.1 functions. Each call runs on a blocking thread
//! while the caller feeds or reads the pipe, and the call's status decides whether the stream
//! is whole: a diff that failed midway is a read error, never a short tar that looks whole.

use std::future::Future;
use std::io;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use super::host::{Instance, id_bytes, invoke, invoke_raw, parent_bytes, plugin_error};
use super::host_io::{Source, waker_ref};
use super::status::{self, OK, PENDING};
use super::{
    ApplyDiffFn, ApplyDiffFromFn, DiffFn, DiffOpenFn, Stream, StreamCloseFn, StreamReadFn,
};
use strata_driver_api::stream::run_blocking;
use strata_driver_api::{Error, Result, TarStream};

/// How large the host asks its pipes to be (best effort): fewer wake-ups per megabyte.
const PIPE_SIZE: usize = 1 << 20;

/// The call's id and parent, owned, for a blocking thread.
type Ids = (String, Option<String>);

/// The 1.1 stream functions.
#[derive(Clone, Copy)]
pub(super) struct StreamFns {
    pub(super) open: DiffOpenFn,
    pub(super) read: StreamReadFn,
    pub(super) close: StreamCloseFn,
}

/// `diff` through `diff_open` (ABI 1.1): the plugin's stream, polled in place.
pub(super) async fn diff_open(inst: Arc<Instance>, fns: StreamFns, ids: Ids) -> Result<TarStream> {
    let opener = inst.clone();
    let stream = run_blocking(move || {
        let (id, parent) = ids;
        let mut stream: Stream = std::ptr::null_mut();
        invoke("diff", |err| {
            // SAFETY: a live handle of this vtable; arguments alive for the call.
            unsafe {
                (fns.open)(
                    opener.handle,
                    id_bytes(&id),
                    parent_bytes(&parent),
                    &mut stream,
                    err,
                )
            }
        })?;
        if stream.is_null() {
            return Err(plugin_error("diff: the plugin gave no stream"));
        }
        Ok(SendStream(stream))
    })
    .await?;
    Ok(Box::pin(PluginStream {
        inst,
        fns,
        stream: stream.0,
    }))
}

struct SendStream(Stream);
// SAFETY: ABI 1.1: a stream may be used from any thread, one at a time.
unsafe impl Send for SendStream {}

/// A plugin's open stream; closed when dropped.
struct PluginStream {
    /// Keeps the instance alive while the stream is.
    inst: Arc<Instance>,
    fns: StreamFns,
    stream: Stream,
}

// SAFETY: ABI 1.1: a stream may be used from any thread, one at a time (`poll_read` takes
// `&mut self`); the instance is `Send + Sync`.
unsafe impl Send for PluginStream {}

impl AsyncRead for PluginStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let this = self.get_mut();
        // SAFETY: the plugin only writes into the memory (ABI 1.1), never de-initializes it.
        let unfilled = unsafe { buf.unfilled_mut() };
        let (ptr, len) = (unfilled.as_mut_ptr() as *mut u8, unfilled.len());
        let waker = waker_ref(cx.waker());
        let mut n = 0usize;
        let (status, wire) = invoke_raw(|err| {
            // SAFETY: a live handle of this vtable and one of its open streams; `len` writable
            // bytes at `ptr`; the waker and `n` alive for the call.
            unsafe { (this.fns.read)(this.inst.handle, this.stream, ptr, len, &mut n, &waker, err) }
        });
        match status {
            PENDING => Poll::Pending,
            OK if n <= len => {
                // SAFETY: the plugin filled the first `n <= len` bytes of the unfilled part.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            OK => Poll::Ready(Err(io::Error::other(plugin_error(format!(
                "diff: the plugin read {n} bytes into a buffer of {len}"
            ))))),
            _ => Poll::Ready(Err(io::Error::from(
                status::decode(status, wire, "diff").context("diff"),
            ))),
        }
    }
}

impl Drop for PluginStream {
    fn drop(&mut self) {
        // SAFETY: a live handle of this vtable and one of its open streams, closed once.
        unsafe { (self.fns.close)(self.inst.handle, self.stream) }
    }
}

/// `apply_diff` through `apply_diff_from` (ABI 1.1).
pub(super) async fn apply_diff_from(
    inst: Arc<Instance>,
    f: ApplyDiffFromFn,
    ids: Ids,
    diff: TarStream,
) -> Result<u64> {
    let rt = tokio::runtime::Handle::current();
    let call = tokio::task::spawn_blocking(move || {
        let (id, parent) = ids;
        let source = Source::new(diff, rt);
        let abi = source.abi();
        let mut size = 0u64;
        let status = invoke("apply_diff", |err| {
            // SAFETY: a live handle of this vtable; arguments and source alive for the call.
            unsafe {
                f(
                    inst.handle,
                    id_bytes(&id),
                    parent_bytes(&parent),
                    &abi,
                    &mut size,
                    err,
                )
            }
        });
        // The input failing is the cause, whatever the plugin made of it; and a plugin that
        // succeeded on a failed input may have applied a truncated tar that happened to end
        // on an entry boundary.
        if let Some(e) = source.into_error() {
            return Err(Error::io("read the layer to apply", e));
        }
        status.map(|()| size)
    });
    joined(call.await, "apply_diff")
}

/// `diff` through a pipe (ABI 1.0).
pub(super) async fn diff_pipe(inst: Arc<Instance>, f: DiffFn, ids: Ids) -> Result<TarStream> {
    let (rd, wr) = make_pipe()?;
    let rx = pipe::Receiver::from_owned_fd(rd).map_err(|e| Error::io("diff pipe", e))?;
    let mut call = tokio::task::spawn_blocking(move || {
        let (id, parent) = ids;
        // The write end is the plugin's from here on: it closes it.
        let fd = wr.into_raw_fd();
        invoke("diff", |err| {
            // SAFETY: a live handle of this vtable; arguments alive for the call; the fd is
            // handed over.
            unsafe { f(inst.handle, id_bytes(&id), parent_bytes(&parent), fd, err) }
        })
    });
    // Errors before the first byte (a missing layer, a failed mount) come from `diff` itself,
    // as from an in-process driver: wait for the first bytes, or for the end of the stream and
    // then the call's status.
    let mut head = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            biased;
            outcome = &mut call => {
                joined(outcome, "diff")?;
                // Done and whole: what it wrote is all in the pipe.
                return Ok(reader(rx, None));
            }
            ready = rx.readable() => {
                ready.map_err(|e| Error::io("diff pipe", e))?;
                match rx.try_read(&mut head) {
                    Ok(0) => continue, // the plugin closed its end: its status follows
                    Ok(n) => {
                        head.truncate(n);
                        return Ok(reader(io::Cursor::new(head).chain(rx), Some(call)));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(Error::io("diff pipe", e)),
                }
            }
        }
    }
}

/// `apply_diff` through a pipe (ABI 1.0).
pub(super) async fn apply_diff_pipe(
    inst: Arc<Instance>,
    f: ApplyDiffFn,
    ids: Ids,
    mut diff: TarStream,
) -> Result<u64> {
    let (rd, wr) = make_pipe()?;
    let mut tx = pipe::Sender::from_owned_fd(wr).map_err(|e| Error::io("apply pipe", e))?;
    let mut call = tokio::task::spawn_blocking(move || {
        let (id, parent) = ids;
        // The read end is the plugin's from here on: it closes it.
        let fd = rd.into_raw_fd();
        let mut size = 0u64;
        invoke("apply_diff", |err| {
            // SAFETY: a live handle of this vtable; arguments alive for the call; the fd is
            // handed over.
            unsafe {
                f(
                    inst.handle,
                    id_bytes(&id),
                    parent_bytes(&parent),
                    fd,
                    &mut size,
                    err,
                )
            }
        })?;
        Ok(size)
    });
    // Feed the pipe while the plugin reads it; dropping the sender is its end of file.
    let copy = async move {
        let r = copy_big(&mut diff, &mut tx).await;
        drop(tx);
        r
    };
    tokio::pin!(copy);
    let (copied, outcome) = tokio::select! {
        // The plugin is done before the input is: it stopped reading (an error, or the end of
        // the tar reached before the end of the stream). Stop feeding it.
        outcome = &mut call => (None, outcome),
        copied = &mut copy => (Some(copied), (&mut call).await),
    };
    // A plugin that failed first may have failed because the input did (a truncated tar):
    // look once more whether the copy is over.
    let copied = match copied {
        Some(c) => Some(c),
        None => {
            std::future::poll_fn(|cx| {
                Poll::Ready(match copy.as_mut().poll(cx) {
                    Poll::Ready(r) => Some(r),
                    Poll::Pending => None,
                })
            })
            .await
        }
    };
    // The input failing is the cause, whatever the plugin made of it (a truncated tar); and a
    // plugin that succeeded on a failed input may have applied a truncated tar that happened
    // to end on an entry boundary.
    if let Some(Err(e)) = copied {
        if e.kind() != io::ErrorKind::BrokenPipe {
            return Err(Error::io("read the layer to apply", e));
        }
    }
    joined(outcome, "apply_diff")
}

/// A blocking call's result; a panic of the host's own code around the call is a `Plugin`
/// error.
fn joined<T>(
    outcome: std::result::Result<Result<T>, tokio::task::JoinError>,
    call: &str,
) -> Result<T> {
    outcome.map_err(|e| plugin_error(format!("the {call} call failed: {e:#}")))?
}

/// A pipe with close-on-exec ends, enlarged where the system allows.
fn make_pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::io("pipe", e.into()))?;
    // Best effort: a smaller pipe works, with more wake-ups.
    let _ = rustix::pipe::fcntl_setpipe_size(&wr, PIPE_SIZE);
    Ok((rd, wr))
}

/// Copies `from` into `to` in pipe-sized pieces (tokio's `copy` moves 8 KiB at a time, which
/// wakes the plugin's reader a hundred times as often).
async fn copy_big(from: &mut TarStream, to: &mut pipe::Sender) -> io::Result<u64> {
    let mut buf = vec![0u8; PIPE_SIZE];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

fn reader(
    bytes: impl AsyncRead + Send + 'static,
    call: Option<JoinHandle<Result<()>>>,
) -> TarStream {
    Box::pin(DiffReader {
        bytes: Box::pin(bytes),
        call,
    })
}

/// The caller's end of a diff: at the end of the bytes it waits for the call's status, so a
/// diff that failed midway is a read error, never a short tar that looks whole.
struct DiffReader {
    bytes: TarStream,
    /// The call, while it may still be running.
    call: Option<JoinHandle<Result<()>>>,
}

impl AsyncRead for DiffReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(this.bytes.as_mut().poll_read(cx, buf))?;
        if buf.filled().len() > before || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // The end of the bytes: the plugin's status says whether the tar is whole.
        let Some(call) = this.call.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let outcome = ready!(Pin::new(call).poll(cx));
        this.call = None;
        Poll::Ready(match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io::Error::from(e.context("diff"))),
            Err(e) => Err(io::Error::other(format!("the diff call failed: {e:#}"))),
        })
    }
}
