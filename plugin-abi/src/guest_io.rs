//! The plugin's ends of the in-place tar streams of ABI 1.1: the [`TarStream`](strata_driver_api::TarStream) a driver's
//! `apply_diff` reads (the host's [`ReadSource`], read straight into the driver's buffer),
//! and the [`Waker`] over the host's [`WakerRef`] that `stream_read` polls a driver's diff
//! with.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::runtime::RuntimeFlavor;

use super::status::{self, OK, Status};
use super::{ReadSource, WakerRef};
use strata_driver_api::{Error, ErrorKind};

/// The host's source, until the call that lent it returns.
struct Lent(ReadSource);

// SAFETY: ABI 1.1 lets a plugin call a source's `read` from any thread (never concurrently:
// the mutex around it sees to that).
unsafe impl Send for Lent {}

type Shared = Arc<Mutex<Option<Lent>>>;

/// The host's stream as a [`TarStream`](strata_driver_api::TarStream). Each read calls the host, which fills the driver's
/// buffer in place and may block until it has bytes (on a runtime worker, inside
/// `block_in_place`, so the worker's other tasks move on).
pub(super) struct HostReader {
    source: Shared,
}

/// Ends the reader's use of the host's source when dropped: a reader the driver kept past the
/// call fails from then on instead of calling into memory the host has freed.
pub(super) struct Revoke(Shared);

impl Drop for Revoke {
    fn drop(&mut self) {
        // Waits for a read in flight; a poisoned lock still holds the source to take away.
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// A reader over `source`, and the guard that revokes it; the guard must be dropped before
/// the call that lent `source` returns.
pub(super) fn host_reader(source: ReadSource) -> (HostReader, Revoke) {
    let shared = Arc::new(Mutex::new(Some(Lent(source))));
    (
        HostReader {
            source: shared.clone(),
        },
        Revoke(shared),
    )
}

fn host_error(status: Status, what: &str) -> Error {
    let kind = status::to_kind(status).unwrap_or(ErrorKind::Plugin);
    Error::new(kind, format!("{what}: the host answered status {status}"))
}

impl AsyncRead for HostReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let guard = self
            .source
            .lock()
            .map_err(|_| io::Error::other("the host's stream lock is poisoned"))?;
        let Some(Lent(source)) = guard.as_ref() else {
            return Poll::Ready(Err(io::Error::other(
                "the host's stream was read after apply_diff returned",
            )));
        };
        // SAFETY: the host only writes into the memory (ABI 1.1), never de-initializes it.
        let unfilled = unsafe { buf.unfilled_mut() };
        let (ptr, len) = (unfilled.as_mut_ptr() as *mut u8, unfilled.len());
        let mut n = 0usize;
        let mut read = || (source.read)(source.ctx, ptr, len, &mut n);
        let on_worker_pool = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
        let status = if on_worker_pool {
            tokio::task::block_in_place(read)
        } else {
            read()
        };
        if status != OK {
            let e = host_error(status, "read the layer from the host");
            return Poll::Ready(Err(io::Error::from(e)));
        }
        if n > len {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the host read {n} bytes into a buffer of {len}"),
            )));
        }
        // SAFETY: the host filled the first `n <= len` bytes of the unfilled part.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// The host's waker, borrowed for one `stream_read` call: cloning it makes an owned one (the
/// host's `clone`), which the driver may keep and wake from any thread.
///
/// # Safety
/// `r` must be a [`WakerRef`] the host passed to the current call, and the returned waker must
/// not outlive the call (a `&Waker` in a `Context` cannot be kept without cloning it).
pub(super) unsafe fn borrowed_waker(r: &WakerRef) -> std::mem::ManuallyDrop<Waker> {
    let raw = RawWaker::new(r as *const WakerRef as *const (), &BORROWED);
    // SAFETY: BORROWED's functions keep the RawWaker contract for a borrowed host context:
    // waking calls the host's thread-safe `wake`, cloning makes an owned copy, and dropping
    // (which ManuallyDrop never does anyway) gives nothing back.
    std::mem::ManuallyDrop::new(unsafe { Waker::from_raw(raw) })
}

/// A borrowed host context: `data` points to the call's [`WakerRef`].
static BORROWED: RawWakerVTable = RawWakerVTable::new(clone_waker, wake_by_ref, wake_by_ref, noop);
/// An owned host context: `data` is a `Box<WakerRef>` whose `ctx` the host's `clone` made.
static OWNED: RawWakerVTable =
    RawWakerVTable::new(clone_waker, wake_owned, wake_by_ref, drop_owned);

unsafe fn clone_waker(data: *const ()) -> RawWaker {
    // SAFETY: `data` is a live WakerRef (borrowed for the call, or owned by a waker).
    let r = unsafe { &*(data as *const WakerRef) };
    let owned = Box::new(WakerRef {
        ctx: (r.clone)(r.ctx),
        ..*r
    });
    RawWaker::new(Box::into_raw(owned) as *const (), &OWNED)
}

unsafe fn wake_by_ref(data: *const ()) {
    // SAFETY: as in `clone_waker`.
    let r = unsafe { &*(data as *const WakerRef) };
    (r.wake)(r.ctx);
}

unsafe fn wake_owned(data: *const ()) {
    // SAFETY: an owned waker's data, consumed by this wake.
    unsafe {
        wake_by_ref(data);
        drop_owned(data);
    }
}

unsafe fn drop_owned(data: *const ()) {
    // SAFETY: an owned waker's data, a Box made by `clone_waker`, dropped once.
    let r = unsafe { Box::from_raw(data as *mut WakerRef) };
    (r.drop)(r.ctx);
}

unsafe fn noop(_: *const ()) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::c_void;
    use tokio::io::AsyncReadExt;

    extern "C" fn count_up(ctx: *mut c_void, buf: *mut u8, len: usize, n: *mut usize) -> Status {
        // SAFETY: the test's counter, alive while the reader may call.
        let next = unsafe { &mut *(ctx as *mut u32) };
        let k = len.min(1000).min(5000 - *next as usize);
        for i in 0..k {
            // SAFETY: `len >= k` writable bytes.
            unsafe { buf.add(i).write((*next + i as u32) as u8) };
        }
        *next += k as u32;
        // SAFETY: valid for the call.
        unsafe { n.write(k) };
        OK
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_reader_reads_in_place_and_fails_once_revoked() {
        let mut next = 0u32;
        let source = ReadSource {
            ctx: (&raw mut next) as *mut c_void,
            read: count_up,
        };
        let (mut reader, revoke) = host_reader(source);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 5000);
        assert!(got.iter().enumerate().all(|(i, b)| *b == i as u8));
        drop(revoke);
        let err = reader.read(&mut [0u8; 10]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
    }
}
