//! The loader: plugin libraries opened once, checked, never unloaded.
//!
//! Each library is opened with `RTLD_NOW` (a missing symbol fails here, not at the first
//! call), `RTLD_LOCAL` (its symbols never interpose on anyone's) and `RTLD_NODELETE`, and its
//! handle is leaked: a Rust library cannot be unloaded safely (thread-local destructors), so
//! an upgrade means a restart. The entry symbol [`ENTRY_SYMBOL`] carries the ABI major in its
//! name; a library without it is probed for other majors so the error can say which one it
//! was built for. The descriptor is then checked by [`PluginSpec::validate`].
//!
//! Loading runs the library's code with this process's privileges: load only paths an
//! administrator wrote into the config, never paths a container controls.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use strata_driver_api::{Error, ErrorKind, Result};

use crate::spec::PluginSpec;
use crate::{ABI_MAJOR, ENTRY_SYMBOL, EntryFn, entry_symbol};

/// glibc's and musl's `RTLD_NODELETE`: a stray `dlclose` leaves the library in place.
const RTLD_NODELETE: std::ffi::c_int = 0x1000;

/// The majors probed when a library lacks [`ENTRY_SYMBOL`], to name the one it was built for.
const PROBED_MAJORS: std::ops::RangeInclusive<u32> = 0..=16;

/// Libraries loaded by this process, by canonical path: loading one twice gives the first
/// load's spec.
fn loaded() -> &'static Mutex<HashMap<PathBuf, PluginSpec>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, PluginSpec>>> = OnceLock::new();
    LOADED.get_or_init(Mutex::default)
}

fn plugin_error(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Plugin,
        format!("plugin {}: {msg}", path.display()),
    )
}

/// Loads the library at `path` (once per process) and checks its descriptor.
///
/// Errors, each naming the path: `NotFound` when there is no such file; `Plugin` when someone
/// other than root or this user could change it or a directory above it
/// (`strata_driver_util::trust`: owned by another user, or writable by others), it
/// is not a loadable library, has no entry symbol (saying which ABI major it was built for when
/// it has another one's), or its descriptor is wrong (magic, major, sizes, missing functions,
/// name).
pub fn load(path: &Path) -> Result<PluginSpec> {
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Plugin
        };
        Error::with_source(kind, format!("plugin {}", path.display()), e)
    })?;
    strata_driver_util::trust::check(&canonical).map_err(|e| plugin_error(path, e))?;
    let mut loaded = loaded().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(spec) = loaded.get(&canonical) {
        return Ok(spec.clone());
    }
    // SAFETY: loading runs the library's initialisers; the config named this library as a
    // strata driver, which is the trust the operator extends to it (see the module docs).
    let lib = unsafe { Library::open(Some(&canonical), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) }
        .map_err(|e| plugin_error(path, format!("cannot load: {e}")))?;
    // Never unloaded: symbols, the descriptor and threads the plugin starts stay valid.
    let lib: &'static Library = Box::leak(Box::new(lib));
    // SAFETY: the symbol's type is ABI 1's entry function, as its name says.
    let entry = match unsafe { lib.get::<EntryFn>(ENTRY_SYMBOL.as_bytes()) } {
        Ok(sym) => *sym,
        Err(_) => return Err(no_entry(path, lib)),
    };
    // SAFETY: calling a v1 entry symbol: no arguments, returns a 'static descriptor.
    let desc = unsafe { entry() };
    // SAFETY: the descriptor is the never-unloaded library's static data.
    let spec = unsafe { PluginSpec::validate(desc) }
        .map_err(|e| e.context(format!("plugin {}", path.display())))?;
    loaded.insert(canonical, spec.clone());
    Ok(spec)
}

/// The error for a library without [`ENTRY_SYMBOL`]: which major it has, if any.
fn no_entry(path: &Path, lib: &Library) -> Error {
    let other = PROBED_MAJORS.filter(|m| *m != ABI_MAJOR).find(|m| {
        // SAFETY: only looks the symbol up; it is never called.
        unsafe { lib.get::<EntryFn>(entry_symbol(*m).as_bytes()) }.is_ok()
    });
    match other {
        Some(major) => plugin_error(
            path,
            format!(
                "built for strata driver ABI {major} (it exports {}), but this strata speaks ABI {ABI_MAJOR}",
                entry_symbol(major)
            ),
        ),
        None => plugin_error(
            path,
            format!("not a strata driver: it has no entry symbol {ENTRY_SYMBOL}"),
        ),
    }
}
