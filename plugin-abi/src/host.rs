//! The host side: [`PluginDriver`], the async [`Driver`] over a plugin's vtable.
//!
//! [`PluginSpec::validate`] checks a descriptor (magic, ABI major, sizes, name, the functions
//! ABI 1 requires) and keeps a copy of its vtable; [`PluginDriver::new`] makes an instance over
//! a home directory. Each call runs on a blocking thread (`spawn_blocking`) while the async
//! caller waits. Tar streams cross in place through host callbacks (ABI 1.1), or through pipes
//! for a plugin built for ABI 1.0; either way a stream that failed midway is a read error.

use std::collections::BTreeMap;
use std::ffi::{OsString, c_void};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;

use strata_driver_api::async_trait;

use super::host_tar;
pub use super::spec::{PluginSpec, valid_name};
use super::status::{self, OK, Status, Wire};
use super::{
    Bytes, BytesSink, CapabilitiesOut, ChangeSink, CreateArgs, ErrorSink, Handle, InitArgs,
    KeyValue, KvSink, MountArgs, VTable, cap,
};
use strata_driver_api::stream::run_blocking_with;
use strata_driver_api::{
    Capabilities, Change, ChangeKind, CreateOpts, Driver, Error, ErrorKind, LayerId, MountOpts,
    Result, TarStream, naive,
};

pub(super) fn plugin_error(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Plugin, msg)
}

/// One live instance: the plugin's handle and the functions to call on it.
pub(super) struct Instance {
    pub(super) vt: VTable,
    pub(super) handle: Handle,
}

// SAFETY: ABI 1 requires every function of a plugin to be callable concurrently on one handle
// from any thread (export_driver! enforces `Send + Sync` on the driver type); the handle is
// only an address passed back to those functions.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

struct SendHandle(Handle);
// SAFETY: see `Instance`: the handle may be used from any thread.
unsafe impl Send for SendHandle {}

impl Drop for Instance {
    fn drop(&mut self) {
        let Some(destroy) = self.vt.destroy else {
            return;
        };
        let h = SendHandle(self.handle);
        // On a thread of its own, outside any async context: the plugin shuts its runtime
        // down, which must be allowed to block. No call is in flight: each holds an Arc.
        std::thread::scope(|s| {
            s.spawn(move || {
                let h = h;
                // SAFETY: the handle came from this vtable's init and is destroyed once.
                unsafe { destroy(h.0) }
            });
        });
    }
}

extern "C" fn set_error(ctx: *mut c_void, status: Status, errno: i32, message: Bytes) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ctx is the `Option<Wire>` `invoke` passed, alive for the call; the bytes are
        // valid for this call.
        let (slot, msg) = unsafe { (&mut *(ctx as *mut Option<Wire>), message.as_slice()) };
        *slot = Some(Wire {
            status,
            errno,
            message: String::from_utf8_lossy(msg.unwrap_or_default()).into_owned(),
        });
    }));
}

extern "C" fn push_bytes(ctx: *mut c_void, data: Bytes) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ctx is the `Vec<u8>` the caller passed, alive for the call.
        let (out, data) = unsafe { (&mut *(ctx as *mut Vec<u8>), data.as_slice()) };
        out.extend_from_slice(data.unwrap_or_default());
    }));
}

extern "C" fn push_pair(ctx: *mut c_void, key: Bytes, value: Bytes) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ctx is the pairs vector the caller passed, alive for the call.
        let (out, k, v) = unsafe {
            (
                &mut *(ctx as *mut Vec<(String, String)>),
                key.as_slice(),
                value.as_slice(),
            )
        };
        out.push((
            String::from_utf8_lossy(k.unwrap_or_default()).into_owned(),
            String::from_utf8_lossy(v.unwrap_or_default()).into_owned(),
        ));
    }));
}

extern "C" fn push_change(ctx: *mut c_void, kind: u8, path: Bytes) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ctx is the `Vec<Option<Change>>` the caller passed, alive for the call.
        let (out, p) = unsafe { (&mut *(ctx as *mut Vec<Option<Change>>), path.as_slice()) };
        let kind = match kind {
            0 => Some(ChangeKind::Modify),
            1 => Some(ChangeKind::Add),
            2 => Some(ChangeKind::Delete),
            _ => None,
        };
        let path = PathBuf::from(OsString::from_vec(p.unwrap_or_default().to_vec()));
        // An unknown kind is kept as None and refused after the call.
        out.push(kind.map(|kind| Change { path, kind }));
    }));
}

/// Calls a plugin function with an error sink: its status and what the sink got.
pub(super) fn invoke_raw(f: impl FnOnce(*const ErrorSink) -> Status) -> (Status, Option<Wire>) {
    let mut slot: Option<Wire> = None;
    let sink = ErrorSink {
        ctx: (&raw mut slot) as *mut c_void,
        set: set_error,
    };
    let st = f(&sink);
    (st, slot)
}

/// Calls a plugin function with an error sink and turns its status into a result.
pub(super) fn invoke(call: &str, f: impl FnOnce(*const ErrorSink) -> Status) -> Result<()> {
    match invoke_raw(f) {
        (OK, _) => Ok(()),
        (st, slot) => Err(status::decode(st, slot, call)),
    }
}

fn absent(call: &str) -> Error {
    Error::new(
        ErrorKind::NotSupported,
        format!("the plugin has no {call} function"),
    )
}

pub(super) fn id_bytes(id: &str) -> Bytes {
    Bytes::new(id.as_bytes())
}

pub(super) fn parent_bytes(parent: &Option<String>) -> Bytes {
    Bytes::opt(parent.as_deref().map(str::as_bytes))
}

fn kv_array(map: &BTreeMap<String, String>) -> Vec<KeyValue> {
    map.iter()
        .map(|(k, v)| KeyValue {
            key: Bytes::new(k.as_bytes()),
            value: Bytes::new(v.as_bytes()),
        })
        .collect()
}

fn caps_from_abi(c: CapabilitiesOut) -> Capabilities {
    let on = |b: u64| c.bits & b != 0;
    Capabilities {
        native_diff: on(cap::NATIVE_DIFF),
        needs_root: on(cap::NEEDS_ROOT),
        rootless: on(cap::ROOTLESS),
        max_depth: (c.max_depth != 0).then_some(c.max_depth),
        quota: on(cap::QUOTA),
        mount_spec: on(cap::MOUNT_SPEC),
        rename_dir: on(cap::RENAME_DIR),
        read_only_images: on(cap::READ_ONLY_IMAGES),
    }
}

/// A storage driver living in a plugin, driven through the ABI.
pub struct PluginDriver {
    inner: Arc<Instance>,
    name: String,
    caps: Capabilities,
}

impl fmt::Debug for PluginDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginDriver")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PluginDriver {
    /// Makes an instance of the plugin's driver over `home` with the config's `options`; its
    /// tracing events go to this process's subscriber.
    pub fn new(
        spec: &PluginSpec,
        home: PathBuf,
        options: &BTreeMap<String, String>,
    ) -> Result<PluginDriver> {
        let init = spec.vtable.init.ok_or_else(|| absent("init"))?;
        let opts = kv_array(options);
        let args = InitArgs {
            size: size_of::<InitArgs>(),
            home: Bytes::new(home.as_os_str().as_bytes()),
            options: opts.as_ptr(),
            options_len: opts.len(),
            log: Some(super::log::host_log),
            max_level: super::log::host_max_level(),
        };
        let mut handle: Handle = std::ptr::null_mut();
        invoke("init", |err| {
            // SAFETY: a validated vtable's init, with arguments alive for the call.
            unsafe { init(&args, &mut handle, err) }
        })
        .map_err(|e| e.context(format!("start plugin driver {}", spec.name())))?;
        if handle.is_null() {
            return Err(plugin_error(format!(
                "plugin {}: init returned no instance",
                spec.name()
            )));
        }
        let inner = Arc::new(Instance {
            vt: spec.vtable,
            handle,
        });
        let caps_fn = inner
            .vt
            .capabilities
            .ok_or_else(|| absent("capabilities"))?;
        let mut caps = CapabilitiesOut::default();
        invoke("capabilities", |err| {
            // SAFETY: a live handle of this vtable; `caps` outlives the call.
            unsafe { caps_fn(inner.handle, &mut caps, err) }
        })?;
        Ok(PluginDriver {
            inner,
            name: spec.name().to_string(),
            caps: caps_from_abi(caps),
        })
    }

    /// One id in, nothing out (`put`).
    async fn id_call(&self, call: &'static str, id: &LayerId) -> Result<()> {
        let f = match call {
            "put" => self.inner.vt.put,
            _ => None,
        }
        .ok_or_else(|| absent(call))?;
        let id = id.to_string();
        run_blocking_with(&self.inner, move |inst| {
            invoke(call, |err| {
                // SAFETY: a live handle of this vtable; arguments alive for the call.
                unsafe { f(inst.handle, id_bytes(&id), err) }
            })
        })
        .await
    }

    /// One id in, a yes or no out (`exists`, `is_mounted`).
    async fn bool_call(&self, call: &'static str, id: &LayerId) -> Result<bool> {
        let f = match call {
            "exists" => self.inner.vt.exists,
            _ => self.inner.vt.is_mounted,
        }
        .ok_or_else(|| absent(call))?;
        let id = id.to_string();
        run_blocking_with(&self.inner, move |inst| {
            let mut out = 0u8;
            invoke(call, |err| {
                // SAFETY: a live handle of this vtable; arguments alive for the call.
                unsafe { f(inst.handle, id_bytes(&id), &mut out, err) }
            })?;
            Ok(out != 0)
        })
        .await
    }

    async fn create_call(
        &self,
        rw: bool,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        let f = self.inner.vt.create.ok_or_else(|| absent("create"))?;
        let (id, parent) = (id.to_string(), parent.map(LayerId::to_string));
        let opts = opts.clone();
        run_blocking_with(&self.inner, move |inst| {
            let kvs = kv_array(&opts.storage_opts);
            let args = CreateArgs {
                read_write: u8::from(rw),
                has_size: u8::from(opts.size.is_some()),
                size: opts.size.unwrap_or(0),
                storage_opts: kvs.as_ptr(),
                storage_opts_len: kvs.len(),
            };
            invoke("create", |err| {
                // SAFETY: a live handle of this vtable; arguments alive for the call.
                unsafe {
                    f(
                        inst.handle,
                        id_bytes(&id),
                        parent_bytes(&parent),
                        &args,
                        err,
                    )
                }
            })
        })
        .await
    }
}

#[async_trait]
impl Driver for PluginDriver {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    fn status(&self) -> Vec<(String, String)> {
        let Some(f) = self.inner.vt.status else {
            return Vec::new();
        };
        let mut pairs: Vec<(String, String)> = Vec::new();
        let sink = KvSink {
            ctx: (&raw mut pairs) as *mut c_void,
            push: push_pair,
        };
        let res = invoke("status", |err| {
            // SAFETY: a live handle of this vtable; the sink outlives the call.
            unsafe { f(self.inner.handle, &sink, err) }
        });
        match res {
            Ok(()) => pairs,
            // The trait's status cannot fail; say what happened where the pairs would be.
            Err(e) => vec![("plugin error".to_string(), format!("{e:#}"))],
        }
    }

    async fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        self.create_call(false, id, parent, opts).await
    }

    async fn create_rw(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        self.create_call(true, id, parent, opts).await
    }

    async fn remove(&self, id: &LayerId, force: bool) -> Result<()> {
        let f = self.inner.vt.remove.ok_or_else(|| absent("remove"))?;
        let id = id.to_string();
        run_blocking_with(&self.inner, move |inst| {
            invoke("remove", |err| {
                // SAFETY: a live handle of this vtable; arguments alive for the call.
                unsafe { f(inst.handle, id_bytes(&id), u8::from(force), err) }
            })
        })
        .await
    }

    async fn get(&self, id: &LayerId, opts: &MountOpts) -> Result<PathBuf> {
        let f = self.inner.vt.get.ok_or_else(|| absent("get"))?;
        let id = id.to_string();
        let opts = opts.clone();
        run_blocking_with(&self.inner, move |inst| {
            let options: Vec<Bytes> = opts.options.iter().map(|o| id_bytes(o)).collect();
            let args = MountArgs {
                read_only: u8::from(opts.read_only),
                options: options.as_ptr(),
                options_len: options.len(),
            };
            let mut path: Vec<u8> = Vec::new();
            let sink = BytesSink {
                ctx: (&raw mut path) as *mut c_void,
                write: push_bytes,
            };
            invoke("get", |err| {
                // SAFETY: a live handle of this vtable; arguments and sink alive for the call.
                unsafe { f(inst.handle, id_bytes(&id), &args, &sink, err) }
            })?;
            if path.is_empty() {
                return Err(plugin_error(format!("get {id}: the plugin gave no path")));
            }
            Ok(PathBuf::from(OsString::from_vec(path)))
        })
        .await
    }

    async fn put(&self, id: &LayerId) -> Result<()> {
        self.id_call("put", id).await
    }

    async fn is_mounted(&self, id: &LayerId) -> Result<bool> {
        self.bool_call("is_mounted", id).await
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        self.bool_call("exists", id).await
    }

    async fn metadata(&self, id: &LayerId) -> Result<Vec<(String, String)>> {
        let f = self.inner.vt.metadata.ok_or_else(|| absent("metadata"))?;
        let id = id.to_string();
        run_blocking_with(&self.inner, move |inst| {
            let mut pairs: Vec<(String, String)> = Vec::new();
            let sink = KvSink {
                ctx: (&raw mut pairs) as *mut c_void,
                push: push_pair,
            };
            invoke("metadata", |err| {
                // SAFETY: a live handle of this vtable; arguments and sink alive for the call.
                unsafe { f(inst.handle, id_bytes(&id), &sink, err) }
            })?;
            Ok(pairs)
        })
        .await
    }

    async fn cleanup(&self) -> Result<()> {
        let f = self.inner.vt.cleanup.ok_or_else(|| absent("cleanup"))?;
        run_blocking_with(&self.inner, move |inst| {
            invoke("cleanup", |err| {
                // SAFETY: a live handle of this vtable.
                unsafe { f(inst.handle, err) }
            })
        })
        .await
    }

    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        let ids = (id.to_string(), parent.map(LayerId::to_string));
        let inst = self.inner.clone();
        let vt = &self.inner.vt;
        if let (Some(open), Some(read), Some(close)) =
            (vt.diff_open, vt.stream_read, vt.stream_close)
        {
            let fns = host_tar::StreamFns { open, read, close };
            return host_tar::diff_open(inst, fns, ids).await;
        }
        match vt.diff {
            Some(f) => host_tar::diff_pipe(inst, f, ids).await,
            None => naive::diff(self, id, parent).await,
        }
    }

    async fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: TarStream,
    ) -> Result<u64> {
        let ids = (id.to_string(), parent.map(LayerId::to_string));
        let inst = self.inner.clone();
        match (self.inner.vt.apply_diff_from, self.inner.vt.apply_diff) {
            (Some(f), _) => host_tar::apply_diff_from(inst, f, ids, diff).await,
            (None, Some(f)) => host_tar::apply_diff_pipe(inst, f, ids, diff).await,
            (None, None) => naive::apply_diff(self, id, parent, diff).await,
        }
    }

    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        let Some(f) = self.inner.vt.changes else {
            return naive::changes(self, id, parent).await;
        };
        let (id, parent) = (id.to_string(), parent.map(LayerId::to_string));
        run_blocking_with(&self.inner, move |inst| {
            let mut out: Vec<Option<Change>> = Vec::new();
            let sink = ChangeSink {
                ctx: (&raw mut out) as *mut c_void,
                push: push_change,
            };
            invoke("changes", |err| {
                // SAFETY: a live handle of this vtable; arguments and sink alive for the call.
                unsafe {
                    f(
                        inst.handle,
                        id_bytes(&id),
                        parent_bytes(&parent),
                        &sink,
                        err,
                    )
                }
            })?;
            out.into_iter()
                .map(|c| c.ok_or_else(|| plugin_error("changes: unknown change kind")))
                .collect()
        })
        .await
    }

    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        let Some(f) = self.inner.vt.diff_size else {
            return naive::diff_size(self, id, parent).await;
        };
        let (id, parent) = (id.to_string(), parent.map(LayerId::to_string));
        run_blocking_with(&self.inner, move |inst| {
            let mut n = 0u64;
            invoke("diff_size", |err| {
                // SAFETY: a live handle of this vtable; arguments alive for the call.
                unsafe {
                    f(
                        inst.handle,
                        id_bytes(&id),
                        parent_bytes(&parent),
                        &mut n,
                        err,
                    )
                }
            })?;
            Ok(n)
        })
        .await
    }
}
