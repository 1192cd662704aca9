//! Start-up checks: whether the host can run the driver with a config ([`plan`], which only
//! reads: the probe and the start share it), and whether a tar of a layer's upper directory
//! is a faithful diff on this kernel with these mount options ([`native_diff_ok`], moby's
//! `doesSupportNativeDiff`: the one check that needs a test mount, made only by a real start,
//! under the driver's home, as `.probe-<pid>`, which the start-up sweep removes).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use strata_driver_api::{Error, ErrorKind, Result};

use crate::config::{Config, MountApi};
use crate::opts::{self, Options, Stack};
use crate::{mount2, sys};

/// Whether native diff is safe, per mount API, option string and backing file system type,
/// once per process.
static NATIVE: Mutex<Option<HashMap<String, bool>>> = Mutex::new(None);

/// What a start settles about mounting, found by reading only: nothing is created, nothing
/// mounted.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The mount API to use (`Auto` resolved).
    pub(crate) api: MountApi,
    /// The options of every mount: the driver's defaults, then the config's.
    pub(crate) opts: Options,
    /// The deepest chain the mount API takes with these options.
    pub(crate) max_depth: u32,
    /// In a user namespace: `userxattr`, overlay's xattrs under `user.overlay.*`.
    pub(crate) user_xattr: bool,
    /// The `statfs` magic of the file system the home is (or would be) on.
    pub(crate) magic: u64,
}

impl Plan {
    /// The namespace of overlay's xattrs: `user` in a user namespace, else `trusted`.
    pub(crate) fn xattr_prefix(&self) -> &'static str {
        if self.user_xattr { "user" } else { "trusted" }
    }

    /// Native diff as far as it is known without a test mount: false when the options turn
    /// on redirect_dir or metacopy; else what this process's test mount found for the same
    /// mount API, options and file system, if it made one; else true, the outcome on every
    /// kernel since 4.8 with redirect_dir and metacopy off, as the driver mounts by default.
    pub(crate) fn native_diff_estimate(&self) -> bool {
        if self.opts.breaks_native_diff() {
            return false;
        }
        let key = native_key(self.api, &self.opts, self.magic, self.xattr_prefix());
        let cache = NATIVE.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .as_ref()
            .and_then(|c| c.get(&key).copied())
            .unwrap_or(true)
    }
}

/// Checks, by reading only, whether the driver starts with `config` in `home` (which need not
/// exist yet: its nearest existing ancestor stands for its file system), and settles the
/// mount API and options: the host ([`host`]), the config's mount options (`Config` error for
/// one the driver sets itself), the backing file system (not overlayfs; `d_type`), and
/// whether the kernel takes `lowerdir+` (on an fs context that is never mounted).
pub(crate) fn plan(home: &Path, config: &Config) -> Result<Plan> {
    host()?;
    let user = Options::parse(&config.mount_options).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("drivers.overlay.mount_options: {e:#}"),
        )
    })?;
    let dir = nearest_existing(home);
    let magic = backing(home, &dir)?;
    let plus = match sys::has_lowerdir_plus(&dir) {
        Ok(p) => p,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOSYS.raw_os_error()) => false,
        Err(e) => return Err(e),
    };
    let api = match (config.mount_api, plus) {
        (MountApi::Fsconfig, false) => {
            return Err(Error::new(
                ErrorKind::NotSupported,
                "overlay driver: mount_api \"fsconfig\" needs a kernel that takes lowerdir+ (6.8+)",
            ));
        }
        (MountApi::Mount2, _) | (MountApi::Auto, false) => MountApi::Mount2,
        _ => MountApi::Fsconfig,
    };
    let user_xattr = in_user_namespace();
    let mut defaults = Vec::new();
    if user_xattr {
        defaults.push("userxattr".to_string());
    }
    for key in ["redirect_dir", "metacopy"] {
        if module_default_on(key) && user.get(key).is_none() {
            defaults.push(format!("{key}=off"));
        }
    }
    let opts = Options::parse(&defaults)?.merged(&user);
    let max_depth = match api {
        MountApi::Mount2 => opts::mount2_max_depth(&opts.param_string()),
        _ => opts::OVL_MAX_STACK as u32,
    };
    Ok(Plan {
        api,
        opts,
        max_depth,
        user_xattr,
        magic,
    })
}

/// Checks the file system of `home`, looking at `dir` (the home, or its nearest existing
/// ancestor before the home is made): not overlayfs (it cannot be an upper layer), and it
/// reports `d_type` (a directory with nothing in it to tell by passes). Returns its magic.
pub(crate) fn backing(home: &Path, dir: &Path) -> Result<u64> {
    let magic = sys::fs_magic(dir)?;
    if magic == sys::OVERLAYFS_MAGIC {
        return Err(Error::new(
            ErrorKind::NotSupported,
            format!(
                "overlay driver: {} is on overlayfs, which cannot be an upper layer; put the root elsewhere",
                home.display()
            ),
        ));
    }
    if sys::supports_d_type(dir)? == Some(false) {
        return Err(Error::new(
            ErrorKind::NotSupported,
            format!(
                "overlay driver: the file system of {} ({}) does not report d_type, which overlayfs needs; \
                 reformat xfs with -n ftype=1 or ext4 with -O filetype",
                home.display(),
                strata_driver_util::fsname::name(magic)
            ),
        ));
    }
    Ok(magic)
}

/// `path` itself if it is a directory, else its nearest ancestor that is (`.` for a relative
/// path none of whose ancestors exists).
fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.is_dir())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The key of [`NATIVE`]: mount API, option string, file system, xattr namespace.
fn native_key(api: MountApi, opts: &Options, magic: u64, prefix: &str) -> String {
    format!(
        "{}|{}|{magic:#x}|{prefix}",
        api.as_str(),
        opts.param_string()
    )
}

/// overlayfs's module parameter `name` is on by default (`Y`, or `on` for redirect_dir).
pub(crate) fn module_default_on(name: &str) -> bool {
    let path = format!("/sys/module/overlay/parameters/{name}");
    fs::read_to_string(path)
        .map(|s| matches!(s.trim(), "Y" | "y" | "1" | "on"))
        .unwrap_or(false)
}

/// Whether a tar of the upper directory is the layer's diff, mounting with `api` and `opts`
/// on the file system of `home` (cached per process). Options that turn on redirect_dir or
/// metacopy make it false without a test mount; otherwise the test mount is made in
/// `<home>/.probe-<pid>` and removed before returning. A process killed meanwhile leaves that
/// directory (and perhaps its mount) behind: the next start that finds no other instance
/// attached detaches and removes it (`Layout::sweep`). Call it only once attached.
pub(crate) fn native_diff_ok(
    home: &Path,
    api: MountApi,
    opts: &Options,
    prefix: &str,
) -> Result<bool> {
    if opts.breaks_native_diff() {
        return Ok(false);
    }
    let key = native_key(api, opts, sys::fs_magic(home)?, prefix);
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
    tracing::debug!(native_diff = ok, key = %key, "native diff test mount");
    cache.insert(key, ok);
    Ok(ok)
}

/// The test mount: `l2/d` is opaque over `l1/d` and `l1/d1`; `l3` is the upper. Writing
/// `merged/d/f` must not copy the opaque flag up (the pre-4.8 kernel bug, moby #25244);
/// renaming `merged/d1` must fail with EXDEV or leave no `overlay.redirect` xattr.
fn probe_native(dir: &Path, api: MountApi, opts: &Options, prefix: &str) -> Result<bool> {
    // A dead process's leftover with this pid: never delete through its mount.
    strata_driver_util::mountinfo::detach_under(dir)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_existing_walks_up() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        assert_eq!(nearest_existing(&deep), tmp.path());
        assert_eq!(nearest_existing(tmp.path()), tmp.path());
        assert_eq!(nearest_existing(Path::new("no-such/dir")), Path::new("."));
    }

    /// The probe reads only: a would-be home and its parents stay absent, nothing appears
    /// beside them, and nothing is mounted.
    #[test]
    fn plan_creates_nothing() {
        if let Err(e) = host() {
            eprintln!("SKIP plan_creates_nothing: {e:#}");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("root/overlay");
        let planned = plan(&home, &Config::default()).unwrap();
        assert!(planned.max_depth > 0);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
        assert!(
            strata_driver_util::mountinfo::points_under(
                &strata_driver_util::mountinfo::read().unwrap(),
                tmp.path()
            )
            .is_empty()
        );
        // Options that break native diff are known to without a test mount.
        let metacopy = Config {
            mount_options: vec!["metacopy=on".into()],
            ..Config::default()
        };
        assert!(!plan_native(&home, &metacopy));
        // One the driver sets itself is the config's error.
        let bad = Config {
            mount_options: vec!["upperdir=/x".into()],
            ..Config::default()
        };
        assert_eq!(plan(&home, &bad).unwrap_err().kind(), ErrorKind::Config);
    }

    /// A process killed during its start-up test mount leaves `<home>/.probe-<pid>` mounted;
    /// the next start that finds the home free detaches and removes it.
    #[test]
    fn a_killed_test_mount_is_swept_at_start() {
        if let Err(e) = host() {
            eprintln!("SKIP a_killed_test_mount_is_swept_at_start: {e:#}");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("overlay");
        drop(crate::OverlayDriver::new(home.clone(), Config::default()).unwrap());
        let planned = plan(&home, &Config::default()).unwrap();
        let dir = home.join(".probe-4194305");
        for sub in ["l1", "l2", "work", "merged"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let merged = dir.join("merged");
        match planned.api {
            MountApi::Mount2 => {
                let stack = Stack {
                    lowers: vec!["l1".to_string()],
                    upper: Some(("l2".to_string(), "work".to_string())),
                };
                mount2::mount(&dir, &stack, &planned.opts, false, &merged).unwrap();
            }
            _ => {
                let stack: Stack<PathBuf> = Stack {
                    lowers: vec![dir.join("l1")],
                    upper: Some((dir.join("l2"), dir.join("work"))),
                };
                sys::mount_fsconfig(&stack, &planned.opts, false, &merged).unwrap();
            }
        }
        assert!(sys::is_mount_root(&merged).unwrap());
        let started = crate::OverlayDriver::new(home.clone(), Config::default());
        let left = strata_driver_util::mountinfo::points_under(
            &strata_driver_util::mountinfo::read().unwrap(),
            &dir,
        );
        for m in &left {
            let _ = sys::unmount(m);
        }
        started.unwrap();
        assert!(left.is_empty(), "still mounted: {left:?}");
        assert!(!dir.exists());
    }

    fn plan_native(home: &Path, config: &Config) -> bool {
        plan(home, config).unwrap().native_diff_estimate()
    }
}
