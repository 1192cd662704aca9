//! The plugin side: generic `extern "C"` shims that run an ordinary [`Driver`] behind the ABI.
//!
//! [`export_driver!`](crate::export_driver) instantiates these for the author's type; they are
//! public so that a host can wrap a driver in them in-process (the ABI loopback tests) with
//! [`descriptor`].
//!
//! Each instance owns a tokio runtime (the plugin's own copy of tokio: the host's runtime is
//! invisible from inside a shared library) and runs every async method on it with `block_on`,
//! on the host's calling thread. Every shim catches panics; a panic poisons the instance.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::guest_tar;
use super::status::{self, OK, POISONED, Status};
use super::{
    ABI_MAJOR, ABI_MINOR, Bytes, BytesSink, CapabilitiesOut, ChangeSink, CreateArgs, Descriptor,
    ErrorSink, Handle, InitArgs, KeyValue, KvSink, MAGIC, MountArgs, VTable, cap, flags,
};
use strata_driver_api::{
    Capabilities, ChangeKind, CreateOpts, Driver, Error, ErrorKind, LayerId, MountOpts, Result,
};

/// What [`export_driver!`](crate::export_driver) knows about a plugin: its driver type, its
/// name and version, and its constructor.
pub trait Plugin: 'static {
    /// The driver. It must be `Send + Sync`: the host may call one instance from many threads
    /// at once.
    type Driver: Driver + Send + Sync + 'static;
    /// The driver's name (its config name and home directory).
    const NAME: &'static str;
    /// The plugin's version.
    const VERSION: &'static str;
    /// Whether `init` installs the subscriber that forwards tracing events to the host. Only
    /// a real shared library does: in-process, the host's own subscriber already sees them.
    const FORWARD_LOGS: bool;
    /// Makes the driver over its home directory with the config's options.
    fn construct(home: PathBuf, options: BTreeMap<String, String>) -> Result<Self::Driver>;
}

/// How many worker threads each instance's runtime has. Calls run on the host's threads
/// (`block_on`); the workers only drive tasks a driver spawns.
const WORKERS: usize = 2;

/// How long `destroy` waits for a plugin's tasks before leaving them behind.
const SHUTDOWN: Duration = Duration::from_secs(5);

pub(super) struct Instance<D> {
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) driver: D,
    poisoned: AtomicBool,
}

impl<D> Instance<D> {
    /// Runs one call's future on the instance's runtime, on the host's thread (a blocking
    /// thread of the host's): the driver's `run_blocking` work runs right there instead of
    /// hopping to yet another thread (see `stream::run_blocking`).
    pub(super) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        strata_driver_api::stream::blocking_allowed_here(|| self.rt.block_on(f))
    }
}

/// The vtable of plugin `P`.
pub const fn vtable<P: Plugin>() -> VTable {
    VTable {
        size: size_of::<VTable>(),
        init: Some(init::<P>),
        destroy: Some(destroy::<P::Driver>),
        capabilities: Some(capabilities::<P::Driver>),
        status: Some(driver_status::<P::Driver>),
        create: Some(create::<P::Driver>),
        remove: Some(remove::<P::Driver>),
        get: Some(get::<P::Driver>),
        put: Some(put::<P::Driver>),
        is_mounted: Some(is_mounted::<P::Driver>),
        exists: Some(exists::<P::Driver>),
        metadata: Some(metadata::<P::Driver>),
        cleanup: Some(cleanup::<P::Driver>),
        diff: Some(guest_tar::diff::<P::Driver>),
        apply_diff: Some(guest_tar::apply_diff::<P::Driver>),
        changes: Some(changes::<P::Driver>),
        diff_size: Some(diff_size::<P::Driver>),
        apply_diff_from: Some(guest_tar::apply_diff_from::<P::Driver>),
        diff_open: Some(guest_tar::diff_open::<P::Driver>),
        stream_read: Some(guest_tar::stream_read::<P::Driver>),
        stream_close: Some(guest_tar::stream_close::<P::Driver>),
    }
}

/// The descriptor of plugin `P` over its `vtable` (a `static` made from [`vtable`]).
pub const fn descriptor<P: Plugin>(vtable: &'static VTable) -> Descriptor {
    Descriptor {
        magic: MAGIC,
        abi_major: ABI_MAJOR,
        abi_minor: ABI_MINOR,
        size: size_of::<Descriptor>(),
        name: Bytes::new(P::NAME.as_bytes()),
        plugin_version: Bytes::new(P::VERSION.as_bytes()),
        api_version: Bytes::new(env!("CARGO_PKG_VERSION").as_bytes()),
        flags: if cfg!(panic = "unwind") {
            flags::PANIC_UNWIND
        } else {
            0
        },
        vtable,
    }
}

/// A `'static` descriptor for plugin `P`, made at run time (leaking two small structs): how a
/// host wraps a driver in the shims in-process, without a shared library.
pub fn leak_descriptor<P: Plugin>() -> &'static Descriptor {
    let vt: &'static VTable = Box::leak(Box::new(vtable::<P>()));
    Box::leak(Box::new(descriptor::<P>(vt)))
}

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

/// Sends an error through the host's sink.
fn report(err: *const ErrorSink, status: Status, errno: i32, message: &str) {
    if err.is_null() {
        return;
    }
    // SAFETY: the host passes a valid sink for the duration of the call.
    let sink = unsafe { &*err };
    (sink.set)(sink.ctx, status, errno, Bytes::new(message.as_bytes()));
}

/// Runs `f` on the instance behind `h`: refuses when poisoned, catches panics (poisoning),
/// reports errors through `err`.
pub(super) fn call<D, F>(h: Handle, err: *const ErrorSink, f: F) -> Status
where
    F: FnOnce(&Instance<D>) -> Result<()>,
{
    if h.is_null() {
        report(err, status::INVALID_INPUT, 0, "null plugin handle");
        return status::INVALID_INPUT;
    }
    // SAFETY: a non-null handle was made by `init::<P>` for this `D` (the host passes back
    // only handles it got from this vtable's init) and lives until `destroy`, which the host
    // calls with no call in flight.
    let inst = unsafe { &*(h as *const Instance<D>) };
    if inst.poisoned.load(Ordering::Acquire) {
        report(
            err,
            POISONED,
            0,
            "the plugin instance is poisoned by an earlier panic",
        );
        return POISONED;
    }
    match catch_unwind(AssertUnwindSafe(|| f(inst))) {
        Ok(Ok(())) => OK,
        Ok(Err(e)) => {
            let wire = status::encode(&e);
            report(err, wire.status, wire.errno, &wire.message);
            wire.status
        }
        Err(payload) => {
            inst.poisoned.store(true, Ordering::Release);
            report(err, status::PANIC, 0, &panic_message(payload.as_ref()));
            status::PANIC
        }
    }
}

pub(super) fn invalid(what: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, what)
}

fn text(b: Bytes, what: &str) -> Result<Option<String>> {
    // SAFETY: the host passes bytes valid for the duration of the call.
    let Some(s) = (unsafe { b.as_slice() }) else {
        return Ok(None);
    };
    let s = std::str::from_utf8(s).map_err(|_| invalid(format!("{what} is not UTF-8")))?;
    Ok(Some(s.to_string()))
}

pub(super) fn layer_id(b: Bytes) -> Result<LayerId> {
    LayerId::new(text(b, "layer id")?.ok_or_else(|| invalid("no layer id"))?)
}

pub(super) fn parent_id(b: Bytes) -> Result<Option<LayerId>> {
    text(b, "parent id")?.map(LayerId::new).transpose()
}

fn pairs(ptr: *const KeyValue, len: usize) -> Result<BTreeMap<String, String>> {
    if len == 0 {
        return Ok(BTreeMap::new());
    }
    if ptr.is_null() {
        return Err(invalid("null options"));
    }
    // SAFETY: the host passes `len` pairs valid for the duration of the call.
    let kvs = unsafe { std::slice::from_raw_parts(ptr, len) };
    kvs.iter()
        .map(|kv| {
            let k = text(kv.key, "option key")?.ok_or_else(|| invalid("null option key"))?;
            let v = text(kv.value, "option value")?.unwrap_or_default();
            Ok((k, v))
        })
        .collect()
}

fn push_pairs(out: *const KvSink, pairs: &[(String, String)]) -> Result<()> {
    if out.is_null() {
        return Err(invalid("null key/value sink"));
    }
    // SAFETY: the host passes a valid sink for the duration of the call.
    let sink = unsafe { &*out };
    for (k, v) in pairs {
        (sink.push)(sink.ctx, Bytes::new(k.as_bytes()), Bytes::new(v.as_bytes()));
    }
    Ok(())
}

pub(super) fn write_out<T: Copy>(out: *mut T, value: T) -> Result<()> {
    if out.is_null() {
        return Err(invalid("null out pointer"));
    }
    // SAFETY: the host passes a valid, writable out pointer for the duration of the call.
    unsafe { out.write(value) };
    Ok(())
}

unsafe extern "C" fn init<P: Plugin>(
    args: *const InitArgs,
    out: *mut Handle,
    err: *const ErrorSink,
) -> Status {
    let made = catch_unwind(AssertUnwindSafe(|| -> Result<Handle> {
        if args.is_null() || out.is_null() {
            return Err(invalid("null init arguments"));
        }
        // SAFETY: the host passes valid arguments for the duration of the call.
        let args = unsafe { &*args };
        if args.size < size_of::<InitArgs>() {
            return Err(invalid(format!(
                "init arguments of {} bytes, ABI {ABI_MAJOR} needs {}",
                args.size,
                size_of::<InitArgs>()
            )));
        }
        if P::FORWARD_LOGS {
            if let Some(log) = args.log {
                super::log::install(log, args.max_level);
            }
        }
        // SAFETY: as above, valid for the call.
        let home = unsafe { args.home.as_slice() }.ok_or_else(|| invalid("no home"))?;
        let home = PathBuf::from(OsStr::from_bytes(home));
        let options = pairs(args.options, args.options_len)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name(format!("{}-plugin", P::NAME))
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the plugin's runtime", e))?;
        let driver = {
            let _enter = rt.enter();
            P::construct(home, options)?
        };
        let inst = Box::new(Instance {
            rt,
            driver,
            poisoned: AtomicBool::new(false),
        });
        Ok(Box::into_raw(inst) as Handle)
    }));
    match made {
        Ok(Ok(h)) => {
            // SAFETY: checked non-null above, valid for the call.
            unsafe { out.write(h) };
            OK
        }
        Ok(Err(e)) => {
            let wire = status::encode(&e);
            report(err, wire.status, wire.errno, &wire.message);
            wire.status
        }
        Err(payload) => {
            report(err, status::PANIC, 0, &panic_message(payload.as_ref()));
            status::PANIC
        }
    }
}

unsafe extern "C" fn destroy<D: Driver>(h: Handle) {
    if h.is_null() {
        return;
    }
    // A panicking Drop loses nothing the host could act on; it must not unwind out.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `h` came from `init` for this `D`, and the host calls destroy once, with no
        // call in flight, so this is the only reference.
        let inst = unsafe { Box::from_raw(h as *mut Instance<D>) };
        let Instance { rt, driver, .. } = *inst;
        {
            let _enter = rt.enter();
            drop(driver);
        }
        rt.shutdown_timeout(SHUTDOWN);
    }));
}

unsafe extern "C" fn capabilities<D: Driver>(
    h: Handle,
    out: *mut CapabilitiesOut,
    err: *const ErrorSink,
) -> Status {
    call::<D, _>(h, err, |inst| {
        write_out(out, caps_to_abi(&inst.driver.capabilities()))
    })
}

/// The ABI form of capabilities.
pub fn caps_to_abi(c: &Capabilities) -> CapabilitiesOut {
    let bit = |on: bool, b: u64| if on { b } else { 0 };
    CapabilitiesOut {
        bits: bit(c.native_diff, cap::NATIVE_DIFF)
            | bit(c.needs_root, cap::NEEDS_ROOT)
            | bit(c.rootless, cap::ROOTLESS)
            | bit(c.quota, cap::QUOTA)
            | bit(c.mount_spec, cap::MOUNT_SPEC)
            | bit(c.rename_dir, cap::RENAME_DIR)
            | bit(c.read_only_images, cap::READ_ONLY_IMAGES),
        max_depth: c.max_depth.unwrap_or(0),
    }
}

unsafe extern "C" fn driver_status<D: Driver>(
    h: Handle,
    out: *const KvSink,
    err: *const ErrorSink,
) -> Status {
    call::<D, _>(h, err, |inst| push_pairs(out, &inst.driver.status()))
}

unsafe extern "C" fn create<D: Driver>(
    h: Handle,
    id: Bytes,
    parent: Bytes,
    args: *const CreateArgs,
    err: *const ErrorSink,
) -> Status {
    call::<D, _>(h, err, |inst| {
        let (id, parent) = (layer_id(id)?, parent_id(parent)?);
        if args.is_null() {
            return Err(invalid("null create arguments"));
        }
        // SAFETY: valid for the call.
        let args = unsafe { &*args };
        let opts = CreateOpts {
            size: (args.has_size != 0).then_some(args.size),
            storage_opts: pairs(args.storage_opts, args.storage_opts_len)?,
        };
        let d = &inst.driver;
        inst.block_on(async {
            if args.read_write != 0 {
                d.create_rw(&id, parent.as_ref(), &opts).await
            } else {
                d.create(&id, parent.as_ref(), &opts).await
            }
        })
    })
}

unsafe extern "C" fn remove<D: Driver>(
    h: Handle,
    id: Bytes,
    force: u8,
    err: *const ErrorSink,
) -> Status {
    call::<D, _>(h, err, |inst| {
        let id = layer_id(id)?;
        inst.block_on(inst.driver.remove(&id, force != 0))
    })
}

unsafe extern "C" fn get<D: Driver>(
    h: Handle,
    id: Bytes,
    args: *const MountArgs,
    path: *const BytesSink,
    err: *const ErrorSink,
) -> Status {
    call::<D, _>(h, err, |inst| {
        let id = layer_id(id)?;
        if args.is_null() || path.is_null() {
            return Err(invalid("null get arguments"));
        }
        // SAFETY: valid for the call.
        let args = unsafe { &*args };
        let options = if args.options_len == 0 {
            Vec::new()
        } else if args.options.is_null() {
            return Err(invalid("null mount options"));
        } else {
            // SAFETY: `options_len` strings, valid for the call.
            let raw = unsafe { std::slice::from_raw_parts(args.options, args.options_len) };
            raw.iter()
                .map(|b| Ok(text(*b, "mount option")?.unwrap_or_default()))
                .collect::<Result<Vec<_>>>()?
        };
        let opts = MountOpts {
            read_only: args.read_only != 0,
            options,
        };
        let p = inst.block_on(inst.driver.get(&id, &opts))?;
        // SAFETY: valid for the call.
        let sink = unsafe { &*path };
        (sink.write)(sink.ctx, Bytes::new(p.as_os_str().as_bytes()));
        Ok(())
    })
}

unsafe extern "C" fn put<D: Driver>(h: Handle, id: Bytes, err: *const ErrorSink) -> Status {
    call::<D, _>(h, err, |inst| {
        let id = layer_id(id)?;
        inst.block_on(inst.driver.put(&id))
    })
}

unsafe extern "C" fn is_mounted<D: Driver>(
    h: Handle,
    id: Bytes,
    out: *mut u8,
    err: *const ErrorSink,
) -> Status {
    call::<D, _>(h, err, |inst| {
        let id = layer_id(id)?;
        let yes = inst.block_on(inst.driver.is_mounted(&id))?;
        write_out(out, u8::from(yes))
    })
}

unsafe extern "C" fn exists<D: Driver>(
    h: Handle,
    id: Bytes,
    out: *mut u8,
    err: *const ErrorSink,
) -> Status {
    call::<D, _>(h, err, |inst| {
        let id = layer_id(id)?;
        let yes = inst.block_on(inst.driver.exists(&id))?;
        write_out(out, u8::from(yes))
    })
}

unsafe extern "C" fn metadata<D: Driver>(
    h: Handle,
    id: Bytes,
    out: *const KvSink,
    err: *const ErrorSink,
) -> Status {
    call::<D, _>(h, err, |inst| {
        let id = layer_id(id)?;
        let m = inst.block_on(inst.driver.metadata(&id))?;
        push_pairs(out, &m)
    })
}

unsafe extern "C" fn cleanup<D: Driver>(h: Handle, err: *const ErrorSink) -> Status {
    call::<D, _>(h, err, |inst| inst.block_on(inst.driver.cleanup()))
}

unsafe extern "C" fn changes<D: Driver>(
    h: Handle,
    id: Bytes,
    parent: Bytes,
    out: *const ChangeSink,
    err: *const ErrorSink,
) -> Status {
    call::<D, _>(h, err, |inst| {
        let (id, parent) = (layer_id(id)?, parent_id(parent)?);
        if out.is_null() {
            return Err(invalid("null change sink"));
        }
        let list = inst.block_on(inst.driver.changes(&id, parent.as_ref()))?;
        // SAFETY: valid for the call.
        let sink = unsafe { &*out };
        for c in list {
            let kind = match c.kind {
                ChangeKind::Modify => 0,
                ChangeKind::Add => 1,
                ChangeKind::Delete => 2,
            };
            (sink.push)(sink.ctx, kind, Bytes::new(c.path.as_os_str().as_bytes()));
        }
        Ok(())
    })
}

unsafe extern "C" fn diff_size<D: Driver>(
    h: Handle,
    id: Bytes,
    parent: Bytes,
    out: *mut u64,
    err: *const ErrorSink,
) -> Status {
    call::<D, _>(h, err, |inst| {
        let (id, parent) = (layer_id(id)?, parent_id(parent)?);
        let n = inst.block_on(inst.driver.diff_size(&id, parent.as_ref()))?;
        write_out(out, n)
    })
}
