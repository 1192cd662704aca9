//! The host's ends of the in-place tar streams of ABI 1.1: a [`ReadSource`] over the host's
//! [`TarStream`] (for `apply_diff_from`) and a [`WriteSink`] that lends chunk buffers and
//! passes them, full, to a [`ChunkReader`] (for `diff_into`).
//!
//! The callbacks run on whatever thread the plugin calls them from, possibly inside the
//! plugin's own tokio runtime (in-process, the same tokio as the host's), so they never use
//! tokio's blocking helpers (`blocking_send`, `Handle::block_on`), which refuse to run inside
//! a runtime: they wait with [`park_on`], a plain thread-parking executor.

use std::ffi::c_void;
use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use super::status::{self, OK, Status};
use super::{ReadSource, WriteSink};
use crate::TarStream;

/// The size of the chunks `diff_into` fills (as `stream::from_blocking`'s).
pub(super) const CHUNK: usize = 256 * 1024;
/// How many full chunks may wait for the reader.
pub(super) const DEPTH: usize = 8;

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `fut` to completion on this thread, parking it while the future waits.
fn park_on<F: Future>(fut: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// The host's stream behind a [`ReadSource`].
pub(super) struct Source {
    state: Mutex<SourceState>,
}

struct SourceState {
    stream: TarStream,
    /// The host's runtime: the stream may need it (a `tokio::fs::File` reads on its blocking
    /// pool).
    rt: tokio::runtime::Handle,
    /// The first read error; every later read fails.
    error: Option<io::Error>,
}

impl Source {
    pub(super) fn new(stream: TarStream, rt: tokio::runtime::Handle) -> Source {
        Source {
            state: Mutex::new(SourceState {
                stream,
                rt,
                error: None,
            }),
        }
    }

    /// The ABI view, valid while `self` is alive and not moved.
    pub(super) fn abi(&self) -> ReadSource {
        ReadSource {
            ctx: self as *const Source as *mut c_void,
            read: source_read,
        }
    }

    /// The read error the plugin saw, if any.
    pub(super) fn into_error(self) -> Option<io::Error> {
        match self.state.into_inner() {
            Ok(s) => s.error,
            Err(poisoned) => poisoned.into_inner().error,
        }
    }
}

extern "C" fn source_read(ctx: *mut c_void, buf: *mut u8, len: usize, n: *mut usize) -> Status {
    if ctx.is_null() || n.is_null() || (buf.is_null() && len > 0) {
        return status::INVALID_INPUT;
    }
    // SAFETY: ctx is the `Source` the host passed with this callback, alive until the call
    // that got it returns, and the plugin reads only during that call.
    let source = unsafe { &*(ctx as *const Source) };
    let Ok(mut state) = source.state.lock() else {
        return status::IO;
    };
    if state.error.is_some() {
        return status::IO;
    }
    let state = &mut *state;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if len == 0 {
            return Ok(0);
        }
        // SAFETY: the plugin lends `len` writable bytes at `buf` for this call; they may be
        // uninitialized, which `MaybeUninit` allows, and `ReadBuf` only ever writes them.
        let mem = unsafe { std::slice::from_raw_parts_mut(buf as *mut MaybeUninit<u8>, len) };
        let mut rb = ReadBuf::uninit(mem);
        let _rt = state.rt.enter();
        let stream = &mut state.stream;
        park_on(poll_fn(|cx| stream.as_mut().poll_read(cx, &mut rb)))?;
        Ok(rb.filled().len())
    }));
    match outcome {
        Ok(Ok(filled)) => {
            // SAFETY: checked non-null; the plugin's out pointer, valid for the call.
            unsafe { n.write(filled) };
            OK
        }
        Ok(Err(e)) => {
            state.error = Some(e);
            status::IO
        }
        Err(_) => {
            state.error = Some(io::Error::other("the layer's stream panicked"));
            status::IO
        }
    }
}

/// The host's end of a [`WriteSink`]: fills a chunk in place, sends it when full.
pub(super) struct Sink {
    state: Mutex<SinkState>,
}

struct SinkState {
    tx: mpsc::Sender<Vec<u8>>,
    chunk: Vec<u8>,
    /// The reader went away: every later call fails.
    closed: bool,
}

impl Sink {
    pub(super) fn new(tx: mpsc::Sender<Vec<u8>>) -> Sink {
        Sink {
            state: Mutex::new(SinkState {
                tx,
                chunk: Vec::new(),
                closed: false,
            }),
        }
    }

    /// The ABI view, valid while `self` is alive and not moved.
    pub(super) fn abi(&self) -> WriteSink {
        WriteSink {
            ctx: self as *const Sink as *mut c_void,
            reserve: sink_reserve,
            commit: sink_commit,
        }
    }

    /// Sends what is left in the chunk (after a successful call).
    pub(super) fn finish(self) -> io::Result<()> {
        let mut state = self
            .state
            .into_inner()
            .map_err(|_| io::Error::other("the diff sink's lock is poisoned"))?;
        state.send()
    }
}

impl SinkState {
    fn send(&mut self) -> io::Result<()> {
        if self.closed {
            return Err(gone());
        }
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.chunk);
        if park_on(self.tx.send(chunk)).is_err() {
            self.closed = true;
            return Err(gone());
        }
        Ok(())
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the diff's reader went away")
}

fn with_sink(ctx: *mut c_void, f: impl FnOnce(&mut SinkState) -> Status) -> Status {
    if ctx.is_null() {
        return status::INVALID_INPUT;
    }
    // SAFETY: ctx is the `Sink` the host passed with this callback, alive until the call that
    // got it returns, and the plugin writes only during that call.
    let sink = unsafe { &*(ctx as *const Sink) };
    let Ok(mut state) = sink.state.lock() else {
        return status::IO;
    };
    if state.closed {
        return status::IO;
    }
    catch_unwind(AssertUnwindSafe(|| f(&mut state))).unwrap_or(status::IO)
}

extern "C" fn sink_reserve(ctx: *mut c_void, buf: *mut *mut u8, len: *mut usize) -> Status {
    if buf.is_null() || len.is_null() {
        return status::INVALID_INPUT;
    }
    with_sink(ctx, |state| {
        if state.chunk.capacity() == 0 {
            state.chunk = Vec::with_capacity(CHUNK);
        }
        let spare = state.chunk.spare_capacity_mut();
        // SAFETY: checked non-null; the plugin's out pointers, valid for the call.
        unsafe {
            buf.write(spare.as_mut_ptr() as *mut u8);
            len.write(spare.len());
        }
        OK
    })
}

extern "C" fn sink_commit(ctx: *mut c_void, n: usize) -> Status {
    with_sink(ctx, |state| {
        let len = state.chunk.len();
        if n > state.chunk.capacity() - len {
            return status::INVALID_INPUT;
        }
        // SAFETY: the ABI: the plugin wrote the first `n` bytes of the memory `reserve` lent,
        // the chunk's spare capacity, which has not moved since (only this sink touches the
        // chunk, under its lock).
        unsafe { state.chunk.set_len(len + n) };
        if state.chunk.len() < CHUNK {
            return OK;
        }
        match state.send() {
            Ok(()) => OK,
            Err(_) => status::IO,
        }
    })
}

/// Reads the chunks a [`Sink`] sends, in order.
pub(super) struct ChunkReader {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    /// A reader that starts with `head` (the first chunk, already received).
    pub(super) fn new(rx: mpsc::Receiver<Vec<u8>>, head: Vec<u8>) -> ChunkReader {
        ChunkReader {
            rx,
            chunk: head,
            pos: 0,
        }
    }
}

impl AsyncRead for ChunkReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.chunk.len() {
                let n = buf.remaining().min(this.chunk.len() - this.pos);
                buf.put_slice(&this.chunk[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                // The end of the chunks; the caller asks the call whether they are whole.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(chunk)) => {
                    this.chunk = chunk;
                    this.pos = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_source_reads_the_stream_into_foreign_memory_and_keeps_its_error() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let stream: TarStream = Box::pin(std::io::Cursor::new(data.clone()).chain(Failing));
        let source = Source::new(stream, tokio::runtime::Handle::current());
        let got = tokio::task::spawn_blocking(move || {
            let abi = source.abi();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 70_000];
            let status = loop {
                let mut n = 0;
                let st = (abi.read)(abi.ctx, buf.as_mut_ptr(), buf.len(), &mut n);
                if st != OK || n == 0 {
                    break st;
                }
                got.extend_from_slice(&buf[..n]);
            };
            assert_eq!(status, status::IO);
            // A read after the error fails too.
            let mut n = 0;
            assert_eq!((abi.read)(abi.ctx, buf.as_mut_ptr(), 1, &mut n), status::IO);
            let err = source.into_error().expect("the error is kept");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
            got
        })
        .await
        .unwrap();
        assert!(got == data);
    }

    struct Failing;

    impl AsyncRead for Failing {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sink_passes_lent_buffers_in_order_and_fails_once_the_reader_is_gone() {
        let (tx, rx) = mpsc::channel(DEPTH);
        let sink = Sink::new(tx);
        let writer = tokio::task::spawn_blocking(move || {
            let abi = sink.abi();
            let mut written = 0u32;
            while written < 3_000_000 {
                let (mut ptr, mut len) = (std::ptr::null_mut(), 0);
                assert_eq!((abi.reserve)(abi.ctx, &mut ptr, &mut len), OK);
                assert!(len > 0);
                let n = len.min(12_345);
                for i in 0..n {
                    // SAFETY: `len >= n` bytes lent by reserve.
                    unsafe { ptr.add(i).write((written + i as u32) as u8) };
                }
                assert_eq!((abi.commit)(abi.ctx, n), OK);
                written += n as u32;
            }
            // Committing more than was lent is refused.
            let (mut ptr, mut len) = (std::ptr::null_mut(), 0);
            assert_eq!((abi.reserve)(abi.ctx, &mut ptr, &mut len), OK);
            assert_eq!((abi.commit)(abi.ctx, len + 1), status::INVALID_INPUT);
            sink.finish().unwrap();
            written
        });
        let mut reader = ChunkReader::new(rx, Vec::new());
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        let written = writer.await.unwrap();
        assert_eq!(got.len(), written as usize);
        assert!(got.iter().enumerate().all(|(i, b)| *b == i as u8));

        // The reader is gone: the next full chunk fails.
        let (tx, rx) = mpsc::channel(DEPTH);
        drop(rx);
        let sink = Sink::new(tx);
        let abi = sink.abi();
        let (mut ptr, mut len) = (std::ptr::null_mut(), 0);
        assert_eq!((abi.reserve)(abi.ctx, &mut ptr, &mut len), OK);
        assert_eq!((abi.commit)(abi.ctx, len), status::IO);
        assert_eq!((abi.reserve)(abi.ctx, &mut ptr, &mut len), status::IO);
    }
}
