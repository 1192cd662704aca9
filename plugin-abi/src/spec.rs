//! [`PluginSpec`]: a plugin's descriptor, checked, with a copy of its vtable.

use std::fmt;

use super::host::plugin_error;
use super::{ABI_MAJOR, Bytes, Descriptor, MAGIC, VTable, flags};
use strata_driver_api::Result;

/// A validated plugin descriptor: what is needed to make instances of its driver.
#[derive(Clone)]
pub struct PluginSpec {
    name: String,
    version: String,
    api_version: String,
    flags: u64,
    pub(super) vtable: VTable,
}

impl fmt::Debug for PluginSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginSpec")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("api_version", &self.api_version)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

/// Reads text out of a plugin's descriptor.
///
/// # Safety
/// `b` must be null or point to `len` bytes valid for `'static`.
unsafe fn static_text(b: Bytes, what: &str) -> Result<String> {
    // SAFETY: the caller promises 'static bytes.
    let raw = unsafe { b.as_slice() }.ok_or_else(|| plugin_error(format!("no {what}")))?;
    String::from_utf8(raw.to_vec()).map_err(|_| plugin_error(format!("{what} is not UTF-8")))
}

/// Whether `name` can be a driver's name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 64 bytes.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl PluginSpec {
    /// Checks a descriptor returned by a plugin's entry symbol.
    ///
    /// Every way it can be wrong is a `Plugin` error that says what: null, the wrong magic
    /// (not a strata driver), another ABI major (naming both), too small, no vtable, a
    /// function ABI 1 requires missing, a name that is not a valid driver name.
    ///
    /// # Safety
    /// `desc` must be null or point to memory that stays valid and unchanged for the life of
    /// the process (a loaded, never unloaded library's static), holding at least the
    /// descriptor's first 24 bytes and, if those say so, a whole [`Descriptor`].
    pub unsafe fn validate(desc: *const Descriptor) -> Result<PluginSpec> {
        if desc.is_null() {
            return Err(plugin_error("the entry symbol returned no descriptor"));
        }
        // SAFETY: the caller promises at least the fixed header is readable; read it field by
        // field before trusting the size.
        let (magic, major, size) = unsafe {
            (
                std::ptr::addr_of!((*desc).magic).read(),
                std::ptr::addr_of!((*desc).abi_major).read(),
                std::ptr::addr_of!((*desc).size).read(),
            )
        };
        if magic != MAGIC {
            return Err(plugin_error(format!(
                "not a strata driver: descriptor magic {magic:#018x}, expected {MAGIC:#018x}"
            )));
        }
        if major != ABI_MAJOR {
            return Err(plugin_error(format!(
                "built for strata driver ABI {major}, but this strata speaks ABI {ABI_MAJOR}"
            )));
        }
        if size < size_of::<Descriptor>() {
            return Err(plugin_error(format!(
                "descriptor of {size} bytes is smaller than ABI {ABI_MAJOR}'s {}",
                size_of::<Descriptor>()
            )));
        }
        // SAFETY: the size says the whole v1 descriptor is there.
        let d = unsafe { &*desc };
        // SAFETY: descriptor strings are the plugin's 'static data.
        let name = unsafe { static_text(d.name, "driver name")? };
        if !valid_name(&name) {
            return Err(plugin_error(format!("invalid driver name {name:?}")));
        }
        // SAFETY: as above.
        let version = unsafe { static_text(d.plugin_version, "plugin version")? };
        // SAFETY: as above.
        let api_version = unsafe { static_text(d.api_version, "api version")? };
        if d.vtable.is_null() {
            return Err(plugin_error(format!("plugin {name} has no vtable")));
        }
        // SAFETY: non-null, the plugin's 'static vtable; its first field is its size.
        let vt_size = unsafe { std::ptr::addr_of!((*d.vtable).size).read() };
        let vtable = copy_vtable(d.vtable, vt_size);
        let required: [(&str, bool); 12] = [
            ("init", vtable.init.is_some()),
            ("destroy", vtable.destroy.is_some()),
            ("capabilities", vtable.capabilities.is_some()),
            ("status", vtable.status.is_some()),
            ("create", vtable.create.is_some()),
            ("remove", vtable.remove.is_some()),
            ("get", vtable.get.is_some()),
            ("put", vtable.put.is_some()),
            ("is_mounted", vtable.is_mounted.is_some()),
            ("exists", vtable.exists.is_some()),
            ("metadata", vtable.metadata.is_some()),
            ("cleanup", vtable.cleanup.is_some()),
        ];
        if let Some((missing, _)) = required.iter().find(|(_, present)| !present) {
            return Err(plugin_error(format!(
                "plugin {name} lacks the function {missing}, which ABI {ABI_MAJOR} requires"
            )));
        }
        Ok(PluginSpec {
            name,
            version,
            api_version,
            flags: d.flags,
            vtable,
        })
    }

    /// The driver's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's own version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The strata-driver-api version the plugin was built with.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// Whether the plugin catches its panics (built with `panic = "unwind"`).
    pub fn contains_panics(&self) -> bool {
        self.flags & flags::PANIC_UNWIND != 0
    }
}

/// Copies the first `size` bytes of a plugin's vtable over one whose functions are all
/// absent: a smaller (older) vtable leaves the newer functions `None`, a larger (newer) one's
/// extra functions are not read.
fn copy_vtable(src: *const VTable, size: usize) -> VTable {
    let mut vt = VTable {
        size: 0,
        init: None,
        destroy: None,
        capabilities: None,
        status: None,
        create: None,
        remove: None,
        get: None,
        put: None,
        is_mounted: None,
        exists: None,
        metadata: None,
        cleanup: None,
        diff: None,
        apply_diff: None,
        changes: None,
        diff_size: None,
        apply_diff_from: None,
        diff_open: None,
        stream_read: None,
        stream_close: None,
    };
    let n = size.min(size_of::<VTable>());
    // SAFETY: `src` is the plugin's 'static vtable of at least `size` bytes; we copy at most
    // `n <= size` bytes into a local of `size_of::<VTable>() >= n` bytes. Every field is a
    // pointer-sized `Option<extern fn>` (or the size), for which any bit pattern a C compiler
    // or rustc puts there (null or a function address) is valid.
    unsafe {
        std::ptr::copy_nonoverlapping(src as *const u8, (&raw mut vt) as *mut u8, n);
    }
    vt.size = size;
    vt
}

impl PluginSpec {
    /// The spec of plugin `P` wrapped in the guest shims in this process, without a shared
    /// library: the ABI loopback, which drives a driver through every shim and every host
    /// call exactly as a loaded plugin is driven.
    pub fn in_process<P: super::guest::Plugin>() -> Result<PluginSpec> {
        let desc = super::guest::leak_descriptor::<P>();
        // SAFETY: a descriptor this process just made and leaked: 'static and whole.
        unsafe { PluginSpec::validate(desc) }
    }
}
