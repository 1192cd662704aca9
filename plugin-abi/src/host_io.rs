//! The host's callbacks of ABI 1.1: a [`ReadSource`] over the host's [`TarStream`] (for
//! `apply_diff_from`), and the [`WakerRef`] functions over a task's [`Waker`] (for
//! `stream_read`).
//!
//! The source's `read` runs on whatever thread the plugin calls it from, possibly inside the
//! plugin's own tokio runtime (in-process, the same tokio as the host's), so it never uses
//! tokio's blocking helpers (`Handle::block_on`), which refuse to run inside a runtime: it
//! waits with [`park_on`], a plain thread-parking executor.

use std::ffi::c_void;
use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use tokio::io::ReadBuf;

use super::status::{self, OK, Status};
use super::{ReadSource, WakerRef};
use strata_driver_api::TarStream;

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

/// The [`WakerRef`] of `waker`, borrowed for one `stream_read` call.
pub(super) fn waker_ref(waker: &Waker) -> WakerRef {
    WakerRef {
        ctx: waker as *const Waker as *const c_void,
        clone: waker_clone,
        wake: waker_wake,
        drop: waker_drop,
    }
}

extern "C" fn waker_clone(ctx: *const c_void) -> *const c_void {
    // SAFETY: ctx is the borrowed `Waker` of `waker_ref` or an owned one made here; the plugin
    // uses each only while it is alive.
    let waker = unsafe { &*(ctx as *const Waker) };
    Box::into_raw(Box::new(waker.clone())) as *const c_void
}

extern "C" fn waker_wake(ctx: *const c_void) {
    // SAFETY: as in `waker_clone`.
    let waker = unsafe { &*(ctx as *const Waker) };
    // A waker that panics has nothing to tell the plugin; it must not unwind into it.
    let _ = catch_unwind(AssertUnwindSafe(|| waker.wake_by_ref()));
}

extern "C" fn waker_drop(ctx: *const c_void) {
    // SAFETY: an owned context made by `waker_clone`, given back once.
    let waker = unsafe { Box::from_raw(ctx as *mut Waker) };
    let _ = catch_unwind(AssertUnwindSafe(|| drop(waker)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use tokio::io::{AsyncRead, AsyncReadExt};

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

    #[test]
    fn a_waker_ref_clones_wakes_and_drops_the_waker() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(count.clone());
        let r = waker_ref(&waker);
        let owned = (r.clone)(r.ctx) as usize;
        assert_eq!(Arc::strong_count(&count), 3);
        // An owned context may be woken and dropped from another thread.
        let (wake, give_back) = (r.wake, r.drop);
        std::thread::spawn(move || {
            let owned = owned as *const c_void;
            wake(owned);
            give_back(owned);
        })
        .join()
        .unwrap();
        (r.wake)(r.ctx);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(Arc::strong_count(&count), 2);
    }
}
