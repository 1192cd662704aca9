//! The plugin's tar-stream functions: ABI 1.0's `diff` and `apply_diff` over pipe file
//! descriptors, and ABI 1.1's in-place `apply_diff_from` (the host's stream read straight into
//! the driver's buffer) and `diff_open`/`stream_read`/`stream_close` (the driver's stream
//! polled by the host, with the host's waker).

use std::ffi::c_int;
use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::{Context, Poll};

use tokio::io::{AsyncReadExt, ReadBuf};

use super::guest::{Instance, call, invalid, layer_id, parent_id, write_out};
use super::guest_io;
use super::status::{OK, PENDING, Status};
use super::{Bytes, ErrorSink, Handle, ReadSource, Stream, WakerRef};
use strata_driver_api::{Driver, Error, TarStream};

/// The size of the buffer `diff` copies through.
const CHUNK: usize = 256 * 1024;

/// Takes ownership of a descriptor the host handed over; `None` for a negative one.
///
/// # Safety
/// `fd` must be an open descriptor nobody else will close, or negative.
unsafe fn take_fd(fd: c_int) -> Option<OwnedFd> {
    // SAFETY: the caller hands over ownership of an open descriptor.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) unsafe extern "C" fn diff<D: Driver>(
    h: Handle,
    id: Bytes,
    parent: Bytes,
    fd: c_int,
    err: *const ErrorSink,
) -> Status {
    // SAFETY: the host hands over the pipe's write end; owned from here on, so it is closed
    // on every path, errors and panics included.
    let fd = unsafe { take_fd(fd) };
    call::<D, _>(h, err, move |inst| {
        let mut pipe = std::fs::File::from(fd.ok_or_else(|| invalid("no diff pipe"))?);
        let (id, parent) = (layer_id(id)?, parent_id(parent)?);
        inst.block_on(async {
            let mut tar = inst.driver.diff(&id, parent.as_ref()).await?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = tar
                    .read(&mut buf)
                    .await
                    .map_err(|e| Error::io("read the diff", e))?;
                if n == 0 {
                    return Ok(());
                }
                // A blocking write on the host's calling thread: the diff's producer runs on
                // its own thread, and the host reads the other end concurrently.
                pipe.write_all(&buf[..n])
                    .map_err(|e| Error::io("write the diff into the host's pipe", e))?;
            }
        })
    })
}

pub(super) unsafe extern "C" fn apply_diff<D: Driver>(
    h: Handle,
    id: Bytes,
    parent: Bytes,
    fd: c_int,
    out: *mut u64,
    err: *const ErrorSink,
) -> Status {
    // SAFETY: the host hands over the pipe's read end; owned from here on.
    let fd = unsafe { take_fd(fd) };
    call::<D, _>(h, err, move |inst| {
        let fd = fd.ok_or_else(|| invalid("no apply pipe"))?;
        let (id, parent) = (layer_id(id)?, parent_id(parent)?);
        let size = inst.block_on(async {
            let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map_err(|e| Error::io("open the host's pipe", e))?;
            inst.driver
                .apply_diff(&id, parent.as_ref(), Box::pin(rx))
                .await
        })?;
        write_out(out, size)
    })
}

pub(super) unsafe extern "C" fn diff_open<D: Driver>(
    h: Handle,
    id: Bytes,
    parent: Bytes,
    out: *mut Stream,
    err: *const ErrorSink,
) -> Status {
    call::<D, _>(h, err, |inst| {
        let (id, parent) = (layer_id(id)?, parent_id(parent)?);
        if out.is_null() {
            return Err(invalid("null stream out pointer"));
        }
        let tar: TarStream = inst.block_on(inst.driver.diff(&id, parent.as_ref()))?;
        let stream = Box::into_raw(Box::new(tar)) as Stream;
        write_out(out, stream)
    })
}

pub(super) unsafe extern "C" fn stream_read<D: Driver>(
    h: Handle,
    stream: Stream,
    buf: *mut u8,
    len: usize,
    out: *mut usize,
    waker: *const WakerRef,
    err: *const ErrorSink,
) -> Status {
    let mut pending = false;
    let status = call::<D, _>(h, err, |inst| {
        if stream.is_null() || out.is_null() || waker.is_null() || (buf.is_null() && len > 0) {
            return Err(invalid("null stream_read argument"));
        }
        // SAFETY: a stream `diff_open` made for this instance, not yet closed, used by one
        // thread at a time (ABI 1.1).
        let tar = unsafe { &mut *(stream as *mut TarStream) };
        // SAFETY: the host's waker for this call; the borrowed waker lives only in this call.
        let waker = unsafe { guest_io::borrowed_waker(&*waker) };
        let mut cx = Context::from_waker(&waker);
        let mem: &mut [MaybeUninit<u8>] = if len == 0 {
            &mut []
        } else {
            // SAFETY: the host lends `len` writable bytes at `buf`, possibly uninitialized,
            // for this call; `ReadBuf` only ever writes them.
            unsafe { std::slice::from_raw_parts_mut(buf as *mut MaybeUninit<u8>, len) }
        };
        let mut rb = ReadBuf::uninit(mem);
        // The driver's stream may need its runtime (a timer, a blocking-pool read).
        let _rt = inst.rt.enter();
        match tar.as_mut().poll_read(&mut cx, &mut rb) {
            Poll::Pending => {
                pending = true;
                Ok(())
            }
            Poll::Ready(Ok(())) => write_out(out, rb.filled().len()),
            Poll::Ready(Err(e)) => Err(Error::io("read the diff", e)),
        }
    });
    if status == OK && pending {
        PENDING
    } else {
        status
    }
}

pub(super) unsafe extern "C" fn stream_close<D: Driver>(h: Handle, stream: Stream) {
    if h.is_null() || stream.is_null() {
        return;
    }
    // SAFETY: as in `call`: a live instance of this `D`.
    let inst = unsafe { &*(h as *const Instance<D>) };
    // Also on a poisoned instance: this frees memory. A panicking drop loses nothing the host
    // could act on; it must not unwind into the host.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let _rt = inst.rt.enter();
        // SAFETY: a stream `diff_open` made, closed once, with no read in flight.
        drop(unsafe { Box::from_raw(stream as *mut TarStream) });
    }));
}

pub(super) unsafe extern "C" fn apply_diff_from<D: Driver>(
    h: Handle,
    id: Bytes,
    parent: Bytes,
    source: *const ReadSource,
    out: *mut u64,
    err: *const ErrorSink,
) -> Status {
    call::<D, _>(h, err, |inst| {
        if source.is_null() {
            return Err(invalid("null apply source"));
        }
        // SAFETY: valid for the call.
        let source = unsafe { *source };
        let (id, parent) = (layer_id(id)?, parent_id(parent)?);
        // `_revoke` is dropped before this returns, also when the driver panics: a reader the
        // driver kept cannot reach the host's source after the call.
        let (reader, _revoke) = guest_io::host_reader(source);
        let size = inst.block_on(
            inst.driver
                .apply_diff(&id, parent.as_ref(), Box::pin(reader)),
        )?;
        write_out(out, size)
    })
}
