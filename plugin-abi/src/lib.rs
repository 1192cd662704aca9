//! The plugin ABI, version 1: how a driver built as a shared library talks to strata.
//!
//! No Rust type, trait object or future crosses the library boundary: two copies of Rust
//! code built by different compilers (or the same one twice) agree on nothing but the C ABI.
//! Everything here is `#[repr(C)]`, with its layout pinned by compile-time assertions, and
//! every function is `extern "C"`.
//!
//! - The library exports one symbol, [`ENTRY_SYMBOL`] (`strata_driver_v1`; the ABI major is in
//!   the name, so a host of another major cannot even find it), returning a `'static`
//!   [`Descriptor`]: [`MAGIC`], ABI major and minor, its own size, the driver's name, the
//!   plugin's version, feature [`flags`], and a [`VTable`].
//! - The vtable starts with its own size and only ever grows at the end (minor versions);
//!   each side reads up to the smaller size, and an absent function is `NotSupported`.
//!   Its functions are synchronous, take an opaque [`Handle`] made by `init`, and return a
//!   [`Status`]; they may be called concurrently on one handle from any thread.
//! - Results come back through host-supplied sinks ([`ErrorSink`], [`BytesSink`],
//!   [`KvSink`], [`ChangeSink`]) that copy during the call: nothing is ever freed on the other
//!   side of the boundary. Inputs are borrowed [`Bytes`] valid for the call only.
//! - Tar streams cross in place (ABI 1.1): `apply_diff_from` reads the host's stream with
//!   [`ReadSource::read`] straight into the plugin's buffer; `diff_open` gives the host a
//!   [`Stream`] it polls with `stream_read`, which reads straight into the host's buffer and,
//!   when no bytes are ready, keeps the host's [`WakerRef`] and wakes it later (a poll in C
//!   terms: no Rust future or `Waker` crosses, and each side frees only what it allocated).
//!   The bytes are copied no more often, and pass no more threads, than in a direct call. ABI 1.0's `diff`
//!   and `apply_diff` take pipe file descriptors whose ownership passes to the plugin with the
//!   call (`diff` writes into the write end it was given and closes it; `apply_diff` reads the
//!   read end to the end of the tar and closes it); a host uses them for a plugin built for
//!   1.0, whose vtable stops before the 1.1 functions, and then turns a failed status into a
//!   read error after the last byte. Either way a stream that failed midway is a read error,
//!   never a short tar that looks whole.
//! - Every function catches panics; a panicked instance is poisoned and answers every later
//!   call with [`status::POISONED`] (a `Plugin` error). A plugin built with `panic = "abort"`
//!   cannot contain its panics and takes the host down; [`flags::PANIC_UNWIND`] says which.
//!
//! [`guest`] holds the plugin side (the shims behind [`export_driver!`](crate::export_driver)),
//! which is all a plugin links. With the `host` feature, `host` holds the host side
//! (`host::PluginDriver`, the async `Driver` over a vtable) and `load` opens a library and
//! checks its descriptor; a plugin never enables it.
//!
//! This is the one crate of strata's that a plugin links and that has unsafe code: the ABI is
//! raw pointers, C function pointers and file descriptors handed across a library boundary,
//! and cannot be written without it. Every unsafe block says why it is sound.

#![allow(unsafe_code)]
#![deny(missing_docs)]

use std::ffi::{c_int, c_void};

pub mod guest;
mod guest_io;
mod guest_tar;
#[cfg(feature = "host")]
pub mod host;
#[cfg(feature = "host")]
mod host_io;
#[cfg(feature = "host")]
mod host_tar;
#[cfg(feature = "host")]
mod loader;
mod log;
mod macros;
#[cfg(feature = "host")]
mod spec;
pub mod status;

#[cfg(feature = "host")]
pub use loader::load;
pub use status::Status;
/// The driver API, for [`export_driver!`]'s expansion.
#[doc(hidden)]
pub use strata_driver_api as driver_api;
/// `tracing`, re-exported so that a plugin logs through the same crate the ABI forwards from.
pub use tracing;

/// The ABI major version this crate speaks. A major bump means anything may have changed.
pub const ABI_MAJOR: u32 = 1;

/// The ABI minor version this crate speaks: each minor only appends (vtable functions,
/// descriptor and argument fields, status codes, flags).
///
/// - 1.0: the first.
/// - 1.1: tar streams in place instead of through pipes: [`VTable::apply_diff_from`] (with a
///   [`ReadSource`]), [`VTable::diff_open`], [`VTable::stream_read`] (with a [`WakerRef`]; the
///   status [`status::PENDING`]) and [`VTable::stream_close`].
pub const ABI_MINOR: u32 = 1;

/// The first field of every [`Descriptor`]: `"STRATADR"` as a big-endian integer.
pub const MAGIC: u64 = u64::from_be_bytes(*b"STRATADR");

/// The entry symbol's name for [`ABI_MAJOR`].
pub const ENTRY_SYMBOL: &str = "strata_driver_v1";

/// The entry symbol's name for ABI major `major`, which the loader probes to say which major
/// a library was built for.
pub fn entry_symbol(major: u32) -> String {
    format!("strata_driver_v{major}")
}

/// The type of the entry symbol: returns a `'static` descriptor, never null.
pub type EntryFn = unsafe extern "C" fn() -> *const Descriptor;

/// An instance of a plugin driver, made by [`VTable::init`]; opaque to the host.
pub type Handle = *mut c_void;

/// Borrowed bytes: UTF-8 for text (names, ids, messages), raw bytes for paths. A null `ptr`
/// means "none" (an absent parent); an empty non-null value is the empty string. Valid only
/// for the duration of the call it is passed to.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Bytes {
    /// The first byte, or null for "none".
    pub ptr: *const u8,
    /// How many bytes.
    pub len: usize,
}

impl Bytes {
    /// "None".
    pub const NONE: Bytes = Bytes {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// Borrows `s` (for the duration of a call).
    pub const fn new(s: &[u8]) -> Bytes {
        Bytes {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// Borrows `s`, or "none".
    pub fn opt(s: Option<&[u8]>) -> Bytes {
        s.map_or(Bytes::NONE, Bytes::new)
    }

    /// The bytes, or `None` for "none".
    ///
    /// # Safety
    /// `ptr` must be null or point to `len` readable bytes that stay valid and unchanged for
    /// `'a`.
    pub unsafe fn as_slice<'a>(self) -> Option<&'a [u8]> {
        if self.ptr.is_null() {
            return None;
        }
        // SAFETY: non-null, and the caller promises `len` valid bytes for 'a.
        Some(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
    }
}

/// One key/value pair (options, status, metadata).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KeyValue {
    /// The key (UTF-8).
    pub key: Bytes,
    /// The value (UTF-8).
    pub value: Bytes,
}

/// The host's log function: `level` is one of [`log_level`], `target` the plugin's tracing
/// target, `message` the formatted event. Called from any thread, at any time after `init`.
pub type LogFn = extern "C" fn(level: u32, target: Bytes, message: Bytes);

/// Log levels in [`LogFn`] and [`InitArgs::max_level`].
pub mod log_level {
    /// Nothing is logged.
    pub const OFF: u32 = 0;
    /// `ERROR`.
    pub const ERROR: u32 = 1;
    /// `WARN`.
    pub const WARN: u32 = 2;
    /// `INFO`.
    pub const INFO: u32 = 3;
    /// `DEBUG`.
    pub const DEBUG: u32 = 4;
    /// `TRACE`.
    pub const TRACE: u32 = 5;
}

/// What `init` gets: the driver's home directory, its options, and the host's log function.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct InitArgs {
    /// `size_of::<InitArgs>()` as the host built it.
    pub size: usize,
    /// `<root>/<driver-name>`, as bytes (a path).
    pub home: Bytes,
    /// `[plugins.options]`, `options_len` pairs.
    pub options: *const KeyValue,
    /// How many options.
    pub options_len: usize,
    /// Where the plugin's tracing events go; `None` drops them.
    pub log: Option<LogFn>,
    /// The most verbose [`log_level`] the host wants.
    pub max_level: u32,
}

/// Receives an error: the [`Status`] (never `OK`), the OS error number behind it (0 if none)
/// and a one-line message. Called at most once per call, before the call returns.
#[repr(C)]
#[derive(Debug)]
pub struct ErrorSink {
    /// The host's context.
    pub ctx: *mut c_void,
    /// Copies the error into the host's context.
    pub set: extern "C" fn(ctx: *mut c_void, status: Status, errno: i32, message: Bytes),
}

/// Receives bytes (a path), copied during the call.
#[repr(C)]
#[derive(Debug)]
pub struct BytesSink {
    /// The host's context.
    pub ctx: *mut c_void,
    /// Copies `data` into the host's context.
    pub write: extern "C" fn(ctx: *mut c_void, data: Bytes),
}

/// Receives key/value pairs in order, copied during the call.
#[repr(C)]
#[derive(Debug)]
pub struct KvSink {
    /// The host's context.
    pub ctx: *mut c_void,
    /// Copies one pair into the host's context.
    pub push: extern "C" fn(ctx: *mut c_void, key: Bytes, value: Bytes),
}

/// Receives changes in order: `kind` is 0 modified, 1 added, 2 deleted; `path` the bytes of
/// the path (absolute within the layer).
#[repr(C)]
#[derive(Debug)]
pub struct ChangeSink {
    /// The host's context.
    pub ctx: *mut c_void,
    /// Copies one change into the host's context.
    pub push: extern "C" fn(ctx: *mut c_void, kind: u8, path: Bytes),
}

/// The host's tar stream for `apply_diff_from` (ABI 1.1), read in place.
///
/// `read` fills up to `len` bytes at `buf` (writable, possibly uninitialized memory the plugin
/// owns), stores how many it filled in `*n` and returns [`status::OK`]; `*n == 0` with a
/// non-zero `len` is the end of the stream. Any other status is a read error (the host keeps
/// the cause and reports it as the call's error); every later read fails too. `read` may
/// block until the host has bytes, may be called from any thread but never concurrently, and
/// only until `apply_diff_from` returns.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ReadSource {
    /// The host's context.
    pub ctx: *mut c_void,
    /// Reads the next bytes of the stream.
    pub read: extern "C" fn(ctx: *mut c_void, buf: *mut u8, len: usize, n: *mut usize) -> Status,
}

/// A plugin's open tar stream (ABI 1.1): made by `diff_open`, read with `stream_read`, freed
/// by `stream_close`. Opaque to the host; used by one thread at a time, any thread.
pub type Stream = *mut c_void;

/// The host's waker (ABI 1.1), for a `stream_read` that has no bytes yet.
///
/// `ctx` as passed to `stream_read` is borrowed for that call. `clone(ctx)` returns a new
/// context the plugin owns and must give back exactly once with `drop`; `wake(ctx)` wakes the
/// host's reader (it does not consume `ctx`). All three may be called from any thread, at any
/// time while the plugin holds an owned context, also after the stream is closed.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WakerRef {
    /// The host's waker.
    pub ctx: *const c_void,
    /// Makes an owned copy of a context.
    pub clone: extern "C" fn(ctx: *const c_void) -> *const c_void,
    /// Wakes the reader.
    pub wake: extern "C" fn(ctx: *const c_void),
    /// Gives back an owned context.
    pub drop: extern "C" fn(ctx: *const c_void),
}

/// `create`/`create_rw` options.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CreateArgs {
    /// 1: `create_rw`, 0: `create`.
    pub read_write: u8,
    /// 1 when `size` is set.
    pub has_size: u8,
    /// The size limit in bytes.
    pub size: u64,
    /// Driver-specific options.
    pub storage_opts: *const KeyValue,
    /// How many.
    pub storage_opts_len: usize,
}

/// `get` options.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MountArgs {
    /// 1: mount read-only.
    pub read_only: u8,
    /// Extra mount options, `options_len` strings.
    pub options: *const Bytes,
    /// How many.
    pub options_len: usize,
}

/// A driver's capabilities: [`cap`] bits plus the maximum depth.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapabilitiesOut {
    /// [`cap`] bits.
    pub bits: u64,
    /// The deepest chain the driver can mount; 0 is unbounded.
    pub max_depth: u32,
}

/// Capability bits of [`CapabilitiesOut::bits`], one per field of
/// [`Capabilities`](strata_driver_api::Capabilities). New bits may be added in minor versions.
pub mod cap {
    /// `native_diff`.
    pub const NATIVE_DIFF: u64 = 1 << 0;
    /// `needs_root`.
    pub const NEEDS_ROOT: u64 = 1 << 1;
    /// `rootless`.
    pub const ROOTLESS: u64 = 1 << 2;
    /// `quota`.
    pub const QUOTA: u64 = 1 << 3;
    /// `mount_spec`.
    pub const MOUNT_SPEC: u64 = 1 << 4;
    /// `rename_dir`.
    pub const RENAME_DIR: u64 = 1 << 5;
    /// `read_only_images`.
    pub const READ_ONLY_IMAGES: u64 = 1 << 6;
}

/// Bits of [`Descriptor::flags`]: facts about how the plugin was built.
pub mod flags {
    /// The plugin was built with `panic = "unwind"`, so its panics are caught and reported.
    /// Without it, a panic in the plugin aborts the host.
    pub const PANIC_UNWIND: u64 = 1 << 0;
}

/// What the entry symbol returns: `'static`, never freed.
#[repr(C)]
#[derive(Debug)]
pub struct Descriptor {
    /// [`MAGIC`].
    pub magic: u64,
    /// The ABI major the plugin was built for.
    pub abi_major: u32,
    /// The ABI minor the plugin was built for.
    pub abi_minor: u32,
    /// `size_of::<Descriptor>()` as the plugin built it.
    pub size: usize,
    /// The driver's name: its config name and home directory (`[A-Za-z0-9][A-Za-z0-9_.-]*`).
    pub name: Bytes,
    /// The plugin's own version (its package version).
    pub plugin_version: Bytes,
    /// The strata-driver-api version it was built with (for diagnostics only).
    pub api_version: Bytes,
    /// [`flags`] bits.
    pub flags: u64,
    /// The functions.
    pub vtable: *const VTable,
}

// SAFETY: a descriptor is immutable 'static data (pointers to 'static strings and a 'static
// vtable); sharing it between threads is sound.
unsafe impl Sync for Descriptor {}
// SAFETY: as above; it holds no thread-bound state.
unsafe impl Send for Descriptor {}

/// `init(args, out_handle, err)`: makes an instance.
pub type InitFn =
    unsafe extern "C" fn(args: *const InitArgs, out: *mut Handle, err: *const ErrorSink) -> Status;
/// `destroy(handle)`: ends an instance; called once, with no call in flight.
pub type DestroyFn = unsafe extern "C" fn(h: Handle);
/// `capabilities(handle, out, err)`.
pub type CapabilitiesFn =
    unsafe extern "C" fn(h: Handle, out: *mut CapabilitiesOut, err: *const ErrorSink) -> Status;
/// `status(handle, pairs, err)`.
pub type StatusFn =
    unsafe extern "C" fn(h: Handle, out: *const KvSink, err: *const ErrorSink) -> Status;
/// `create(handle, id, parent, args, err)`.
pub type CreateFn = unsafe extern "C" fn(
    h: Handle,
    id: Bytes,
    parent: Bytes,
    args: *const CreateArgs,
    err: *const ErrorSink,
) -> Status;
/// `remove(handle, id, force, err)`.
pub type RemoveFn =
    unsafe extern "C" fn(h: Handle, id: Bytes, force: u8, err: *const ErrorSink) -> Status;
/// `get(handle, id, args, path, err)`.
pub type GetFn = unsafe extern "C" fn(
    h: Handle,
    id: Bytes,
    args: *const MountArgs,
    path: *const BytesSink,
    err: *const ErrorSink,
) -> Status;
/// `put(handle, id, err)`, `is_mounted`... : one id in.
pub type IdFn = unsafe extern "C" fn(h: Handle, id: Bytes, err: *const ErrorSink) -> Status;
/// `exists(handle, id, out, err)` and `is_mounted`: a yes (1) or no (0) out.
pub type IdBoolFn =
    unsafe extern "C" fn(h: Handle, id: Bytes, out: *mut u8, err: *const ErrorSink) -> Status;
/// `metadata(handle, id, pairs, err)`.
pub type MetadataFn =
    unsafe extern "C" fn(h: Handle, id: Bytes, out: *const KvSink, err: *const ErrorSink) -> Status;
/// `cleanup(handle, err)`.
pub type CleanupFn = unsafe extern "C" fn(h: Handle, err: *const ErrorSink) -> Status;
/// `diff(handle, id, parent, fd, err)`: `fd` is a pipe's write end, now the plugin's, which
/// it closes before returning.
pub type DiffFn = unsafe extern "C" fn(
    h: Handle,
    id: Bytes,
    parent: Bytes,
    fd: c_int,
    err: *const ErrorSink,
) -> Status;
/// `apply_diff(handle, id, parent, fd, out_size, err)`: `fd` is a pipe's read end, now the
/// plugin's, which it closes before returning.
pub type ApplyDiffFn = unsafe extern "C" fn(
    h: Handle,
    id: Bytes,
    parent: Bytes,
    fd: c_int,
    out: *mut u64,
    err: *const ErrorSink,
) -> Status;
/// `diff_open(handle, id, parent, out_stream, err)` (ABI 1.1): starts the diff; the errors a
/// diff meets before its first byte (a missing layer) come from here.
pub type DiffOpenFn = unsafe extern "C" fn(
    h: Handle,
    id: Bytes,
    parent: Bytes,
    out: *mut Stream,
    err: *const ErrorSink,
) -> Status;
/// `stream_read(handle, stream, buf, len, out_n, waker, err)` (ABI 1.1): polls the stream for
/// up to `len` bytes into `buf` (writable, possibly uninitialized host memory). [`status::OK`]
/// with `*out_n` bytes (0 with a non-zero `len`: the end of the stream, which is then whole);
/// [`status::PENDING`]: none yet, `waker` will be woken; any other status: the stream failed.
/// Never blocks.
pub type StreamReadFn = unsafe extern "C" fn(
    h: Handle,
    stream: Stream,
    buf: *mut u8,
    len: usize,
    out: *mut usize,
    waker: *const WakerRef,
    err: *const ErrorSink,
) -> Status;
/// `stream_close(handle, stream)` (ABI 1.1): frees the stream, read to its end or not; also
/// on a poisoned instance.
pub type StreamCloseFn = unsafe extern "C" fn(h: Handle, stream: Stream);
/// `apply_diff_from(handle, id, parent, source, out_size, err)` (ABI 1.1): applies the tar
/// read from `source`.
pub type ApplyDiffFromFn = unsafe extern "C" fn(
    h: Handle,
    id: Bytes,
    parent: Bytes,
    source: *const ReadSource,
    out: *mut u64,
    err: *const ErrorSink,
) -> Status;
/// `changes(handle, id, parent, changes, err)`.
pub type ChangesFn = unsafe extern "C" fn(
    h: Handle,
    id: Bytes,
    parent: Bytes,
    out: *const ChangeSink,
    err: *const ErrorSink,
) -> Status;
/// `diff_size(handle, id, parent, out, err)`.
pub type DiffSizeFn = unsafe extern "C" fn(
    h: Handle,
    id: Bytes,
    parent: Bytes,
    out: *mut u64,
    err: *const ErrorSink,
) -> Status;

/// The functions of a plugin, one per [`Driver`](strata_driver_api::Driver) method. Append-only: a new
/// minor adds fields at the end, and `size` says how many the plugin has.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VTable {
    /// `size_of::<VTable>()` as the plugin built it.
    pub size: usize,
    /// Makes an instance.
    pub init: Option<InitFn>,
    /// Ends an instance.
    pub destroy: Option<DestroyFn>,
    /// [`Driver::capabilities`](strata_driver_api::Driver::capabilities).
    pub capabilities: Option<CapabilitiesFn>,
    /// [`Driver::status`](strata_driver_api::Driver::status).
    pub status: Option<StatusFn>,
    /// [`Driver::create`](strata_driver_api::Driver::create) and `create_rw` (by `CreateArgs::read_write`).
    pub create: Option<CreateFn>,
    /// [`Driver::remove`](strata_driver_api::Driver::remove).
    pub remove: Option<RemoveFn>,
    /// [`Driver::get`](strata_driver_api::Driver::get).
    pub get: Option<GetFn>,
    /// [`Driver::put`](strata_driver_api::Driver::put).
    pub put: Option<IdFn>,
    /// [`Driver::is_mounted`](strata_driver_api::Driver::is_mounted).
    pub is_mounted: Option<IdBoolFn>,
    /// [`Driver::exists`](strata_driver_api::Driver::exists).
    pub exists: Option<IdBoolFn>,
    /// [`Driver::metadata`](strata_driver_api::Driver::metadata).
    pub metadata: Option<MetadataFn>,
    /// [`Driver::cleanup`](strata_driver_api::Driver::cleanup).
    pub cleanup: Option<CleanupFn>,
    /// [`Driver::diff`](strata_driver_api::Driver::diff).
    pub diff: Option<DiffFn>,
    /// [`Driver::apply_diff`](strata_driver_api::Driver::apply_diff).
    pub apply_diff: Option<ApplyDiffFn>,
    /// [`Driver::changes`](strata_driver_api::Driver::changes).
    pub changes: Option<ChangesFn>,
    /// [`Driver::diff_size`](strata_driver_api::Driver::diff_size).
    pub diff_size: Option<DiffSizeFn>,
    /// [`Driver::apply_diff`](strata_driver_api::Driver::apply_diff) from a [`ReadSource`] (ABI 1.1); a
    /// host prefers it to `apply_diff`.
    pub apply_diff_from: Option<ApplyDiffFromFn>,
    /// [`Driver::diff`](strata_driver_api::Driver::diff) as a [`Stream`] (ABI 1.1); a host that has all
    /// three stream functions prefers them to `diff`.
    pub diff_open: Option<DiffOpenFn>,
    /// Polls a [`Stream`] (ABI 1.1).
    pub stream_read: Option<StreamReadFn>,
    /// Frees a [`Stream`] (ABI 1.1).
    pub stream_close: Option<StreamCloseFn>,
}

// SAFETY: a vtable is immutable 'static data (function pointers); sharing it is sound.
unsafe impl Sync for VTable {}

/// The layout of ABI v1 on 64-bit Linux, pinned: changing any of it is a new major.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<Bytes>() == 16 && align_of::<Bytes>() == 8);
    assert!(offset_of!(Bytes, ptr) == 0 && offset_of!(Bytes, len) == 8);
    assert!(size_of::<KeyValue>() == 32 && offset_of!(KeyValue, value) == 16);
    assert!(size_of::<InitArgs>() == 56);
    assert!(offset_of!(InitArgs, size) == 0);
    assert!(offset_of!(InitArgs, home) == 8);
    assert!(offset_of!(InitArgs, options) == 24);
    assert!(offset_of!(InitArgs, options_len) == 32);
    assert!(offset_of!(InitArgs, log) == 40);
    assert!(offset_of!(InitArgs, max_level) == 48);
    assert!(size_of::<ErrorSink>() == 16 && offset_of!(ErrorSink, set) == 8);
    assert!(size_of::<BytesSink>() == 16 && offset_of!(BytesSink, write) == 8);
    assert!(size_of::<KvSink>() == 16 && offset_of!(KvSink, push) == 8);
    assert!(size_of::<ChangeSink>() == 16 && offset_of!(ChangeSink, push) == 8);
    assert!(size_of::<ReadSource>() == 16 && offset_of!(ReadSource, read) == 8);
    assert!(size_of::<WakerRef>() == 32);
    assert!(offset_of!(WakerRef, clone) == 8);
    assert!(offset_of!(WakerRef, wake) == 16);
    assert!(offset_of!(WakerRef, drop) == 24);
    assert!(size_of::<CreateArgs>() == 32);
    assert!(offset_of!(CreateArgs, read_write) == 0);
    assert!(offset_of!(CreateArgs, has_size) == 1);
    assert!(offset_of!(CreateArgs, size) == 8);
    assert!(offset_of!(CreateArgs, storage_opts) == 16);
    assert!(offset_of!(CreateArgs, storage_opts_len) == 24);
    assert!(size_of::<MountArgs>() == 24);
    assert!(offset_of!(MountArgs, read_only) == 0);
    assert!(offset_of!(MountArgs, options) == 8);
    assert!(offset_of!(MountArgs, options_len) == 16);
    assert!(size_of::<CapabilitiesOut>() == 16);
    assert!(offset_of!(CapabilitiesOut, bits) == 0);
    assert!(offset_of!(CapabilitiesOut, max_depth) == 8);
    assert!(size_of::<Descriptor>() == 88);
    assert!(offset_of!(Descriptor, magic) == 0);
    assert!(offset_of!(Descriptor, abi_major) == 8);
    assert!(offset_of!(Descriptor, abi_minor) == 12);
    assert!(offset_of!(Descriptor, size) == 16);
    assert!(offset_of!(Descriptor, name) == 24);
    assert!(offset_of!(Descriptor, plugin_version) == 40);
    assert!(offset_of!(Descriptor, api_version) == 56);
    assert!(offset_of!(Descriptor, flags) == 72);
    assert!(offset_of!(Descriptor, vtable) == 80);
    // Option<extern fn> is pointer-sized (the null niche): every slot is 8 bytes.
    assert!(size_of::<Option<InitFn>>() == 8);
    assert!(size_of::<VTable>() == 8 * 21);
    assert!(offset_of!(VTable, init) == 8);
    assert!(offset_of!(VTable, destroy) == 16);
    assert!(offset_of!(VTable, capabilities) == 24);
    assert!(offset_of!(VTable, status) == 32);
    assert!(offset_of!(VTable, create) == 40);
    assert!(offset_of!(VTable, remove) == 48);
    assert!(offset_of!(VTable, get) == 56);
    assert!(offset_of!(VTable, put) == 64);
    assert!(offset_of!(VTable, is_mounted) == 72);
    assert!(offset_of!(VTable, exists) == 80);
    assert!(offset_of!(VTable, metadata) == 88);
    assert!(offset_of!(VTable, cleanup) == 96);
    assert!(offset_of!(VTable, diff) == 104);
    assert!(offset_of!(VTable, apply_diff) == 112);
    assert!(offset_of!(VTable, changes) == 120);
    assert!(offset_of!(VTable, diff_size) == 128);
    // 1.1
    assert!(offset_of!(VTable, apply_diff_from) == 136);
    assert!(offset_of!(VTable, diff_open) == 144);
    assert!(offset_of!(VTable, stream_read) == 152);
    assert!(offset_of!(VTable, stream_close) == 160);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_and_symbol_are_pinned() {
        assert_eq!(MAGIC, 0x5354_5241_5441_4452);
        assert_eq!(ENTRY_SYMBOL, entry_symbol(ABI_MAJOR));
        assert_eq!(entry_symbol(2), "strata_driver_v2");
    }

    #[test]
    fn bits_are_pinned() {
        let caps = [
            cap::NATIVE_DIFF,
            cap::NEEDS_ROOT,
            cap::ROOTLESS,
            cap::QUOTA,
            cap::MOUNT_SPEC,
            cap::RENAME_DIR,
            cap::READ_ONLY_IMAGES,
        ];
        for (i, bit) in caps.iter().enumerate() {
            assert_eq!(*bit, 1 << i);
        }
        assert_eq!(flags::PANIC_UNWIND, 1);
        assert_eq!(
            [
                log_level::OFF,
                log_level::ERROR,
                log_level::WARN,
                log_level::INFO,
                log_level::DEBUG,
                log_level::TRACE
            ],
            [0, 1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn bytes_none_and_empty_differ() {
        // SAFETY: both point to 'static data or are null.
        unsafe {
            assert_eq!(Bytes::NONE.as_slice(), None);
            assert_eq!(Bytes::new(b"").as_slice(), Some(&b""[..]));
            assert_eq!(Bytes::opt(Some(b"ab")).as_slice(), Some(&b"ab"[..]));
        }
    }
}
