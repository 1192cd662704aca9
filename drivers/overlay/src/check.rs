//! Start-up checks: whether the host can run the driver, and whether a tar of a layer's upper
//! directory is a faithful diff on this kernel with these mount options (moby's
//! `doesSupportNativeDiff`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use strata_driver_api::{Error, ErrorKind, Result};

use crate::config::MountApi;
use crate::opts::{Options, Stack};
use crate::{mount2, sys};

/// Whether native diff is safe, per mount API, option string and backing file system type,
/// once per process.
static NATIVE: Mutex<Option<HashMap<String, bool>>> = Mutex::new(None);

/// overlayfs's module parameter `name` is on by default (`Y`, or `on` for redirect_dir).
pub(crate) fn module_default_on(name: &str) -> bool {
    let path = format!("/sys/module/overlay/parameters/{name}");
    fs::read_to_string(path)
        .map(|s| matches!(s.trim(), "Y" | "y" | "1" | "on"))
        .unwrap_or(false)
}

/// Whether a tar of the upper directory is the layer's diff, mounting with `api` and `opts`
/// on the file system of `home` (cached per process). Options that turn on redirect_dir or metacopy make it false without
/// a test mount.
pub(crate) fn native_diff_ok(
    home: &Path,
    api: MountApi,
    opts: &Options,
    prefix: &str,
) -> Result<bool> {
    if opts.breaks_native_diff() {
        return Ok(false);
    }
    let key = format!(
        "{}|{}|{:#x}|{prefix}",
        api.as_str(),
        opts.param_string(),
        sys::fs_magic(home)?
    );
    // Held through the probe: one test mount per key, never two at once.
    let mut cache = NATIVE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(v) = cache.get(&key) {
        return Ok(*v);
    }
    let dir = home.join(format!(".probe-{}", std::process::id()));
    let result = probe_native(&dir, api, opts, prefix);
    let _ = sys::unmount(&dir.join("merged"));
    let cleanup = fs::remove_dir_all(&dir).map_err(|e| Error::os("remove", &dir, e));
    let ok = result?;
    cleanup?;
    cache.insert(key, ok);
    Ok(ok)
}

/// The test mount: `l2/d` is opaque over `l1/d` and `l1/d1`; `l3` is the upper. Writing
/// `merged/d/f` must not copy the opaque flag up (the pre-4.8 kernel bug, moby #25244);
/// renaming `merged/d1` must fail with EXDEV or leave no `overlay.redirect` xattr.
fn probe_native(dir: &Path, api: MountApi, opts: &Options, prefix: &str) -> Result<bool> {
    let _ = fs::remove_dir_all(dir);
    for sub in ["l1/d", "l1/d1", "l2/d", "l3", "work", "merged"] {
        let p = dir.join(sub);
        fs::create_dir_all(&p).map_err(|e| Error::os("mkdir", &p, e))?;
    }
    let opaque = dir.join("l2/d");
    rustix::fs::setxattr(
        &opaque,
        format!("{prefix}.overlay.opaque").as_str(),
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(|e| sys::os("setxattr", &opaque, e))?;
    let merged = dir.join("merged");
    match api {
        MountApi::Mount2 => {
            let stack = Stack {
                lowers: vec!["l2".to_string(), "l1".to_string()],
                upper: Some(("l3".to_string(), "work".to_string())),
            };
            mount2::mount(dir, &stack, opts, false, &merged)?;
        }
        _ => {
            let stack: Stack<PathBuf> = Stack {
                lowers: vec![dir.join("l2"), dir.join("l1")],
                upper: Some((dir.join("l3"), dir.join("work"))),
            };
            sys::mount_fsconfig(&stack, opts, false, &merged)?;
        }
    }
    let f = merged.join("d/f");
    fs::write(&f, b"").map_err(|e| Error::os("write", &f, e))?;
    let up = dir.join("l3/d");
    if xattr(&up, &format!("{prefix}.overlay.opaque"))?.is_some() {
        return Ok(false);
    }
    match fs::rename(merged.join("d1"), merged.join("d2")) {
        Ok(()) => {
            if xattr(&dir.join("l3/d2"), &format!("{prefix}.overlay.redirect"))?.is_some() {
                return Ok(false);
            }
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {}
        Err(e) => return Err(Error::os("rename", &merged.join("d1"), e)),
    }
    sys::unmount(&merged)?;
    Ok(true)
}

fn xattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NODATA) => Ok(None),
        Err(e) => Err(sys::os("lgetxattr", path, e)),
    }
}

/// Whether this process runs in a user namespace (its uid map is not the whole identity
/// map): then overlay is mounted with `userxattr` and keeps its xattrs under `user.overlay.*`.
pub(crate) fn in_user_namespace() -> bool {
    match fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// Whether this process can run the driver: root, or root of a user namespace (rootless,
/// with `userxattr`), and overlayfs in the kernel.
pub(crate) fn host() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            "overlay driver: needs root, or root in a user namespace with its own mount namespace (rootless)",
        ));
    }
    match rustix::mount::fsopen("overlay", rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(_) => Ok(()),
        Err(rustix::io::Errno::NODEV) => Err(Error::new(
            ErrorKind::NotSupported,
            "overlay driver: the kernel has no overlay file system (modprobe overlay)",
        )),
        Err(rustix::io::Errno::NOSYS) => host_classic(),
        Err(e) => Err(sys::os("fsopen", Path::new("overlay"), e)),
    }
}

/// Kernels without `fsopen`: overlay must be listed in /proc/filesystems.
fn host_classic() -> Result<()> {
    let path = Path::new("/proc/filesystems");
    let text = fs::read_to_string(path).map_err(|e| Error::os("read", path, e))?;
    if text
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::NotSupported,
            "overlay driver: overlay is not in /proc/filesystems (modprobe overlay)",
        ))
    }
}
