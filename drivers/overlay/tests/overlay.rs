//! The issue's own tests for the overlay driver, beyond the conformance suite (which
//! `conformance/tests/overlay.rs` runs): whiteout conversion round trips byte for byte, the
//! diff of opaque directories equals the dir driver's, start-up facts, crash leftovers, and a
//! depth limit that is an error at create time.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use strata_archive::{WhiteoutFormat, WriteOptions};
use strata_conformance::tarfile::stream;
use strata_driver_api::{CreateOpts, Driver, ErrorKind, LayerId, MountOpts};
use strata_driver_dir::DirDriver;
use strata_driver_overlay::{Config, MountApi, OverlayDriver};
use tokio::io::AsyncReadExt;

/// A temp dir whose mounts are detached (and only those) however the test ends.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(tempfile::tempdir().unwrap())
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let table = strata_driver_util::mountinfo::read().unwrap_or_default();
        for p in strata_driver_util::mountinfo::points_under(&table, self.0.path()) {
            let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

fn skip_unless_supported(test: &str) -> bool {
    if let Err(e) = strata_driver_overlay::probe() {
        strata_conformance::skip::print(test, e);
        return true;
    }
    false
}

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

fn overlay(home: &Path, api: MountApi) -> OverlayDriver {
    let config = Config {
        mount_api: api,
        ..Config::default()
    };
    OverlayDriver::new(home.to_path_buf(), config).unwrap()
}

async fn read_all(d: &dyn Driver, layer: &LayerId, parent: Option<&LayerId>) -> Vec<u8> {
    let mut out = Vec::new();
    d.diff(layer, parent)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

fn set_mtime(path: &Path, secs: u64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    File::open(path).unwrap().set_modified(t).unwrap();
}

fn write(path: &Path, data: &[u8], mode: u32) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// What `oci_layer_with_whiteouts` hides: a whiteout or opaque marker with nothing below it is
/// a no-op that overlay does not store (OCI: whiteouts apply to lower layers only).
fn lower_layer() -> Vec<u8> {
    use strata_conformance::tarfile::{Entry, make_tar};
    make_tar(&[
        Entry::dir("etc"),
        Entry::file("etc/shadow", "x"),
        Entry::dir("gone-dir"),
        Entry::file("gone-dir/f", "f"),
        Entry::dir("opq"),
        Entry::file("opq/hidden", "h"),
        Entry::dir("keep"),
        Entry::file("keep/old", "o"),
        Entry::dir("keep/sub"),
        Entry::file("keep/sub/hidden", "h"),
    ])
}

/// An OCI layer tar with whiteouts (top level and nested), opaque markers (top level and
/// nested) and ordinary content, in `write_tar`'s canonical form; each hides something of
/// [`lower_layer`].
fn oci_layer_with_whiteouts() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    for d in ["etc", "opq", "opq/sub", "keep", "keep/sub"] {
        fs::create_dir(r.join(d)).unwrap();
        fs::set_permissions(r.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    write(&r.join("etc/passwd"), b"root:x:0:0\n", 0o644);
    write(&r.join("etc/.wh.shadow"), b"", 0o600);
    write(&r.join(".wh.gone-dir"), b"", 0o644);
    write(&r.join("opq/.wh..wh..opq"), b"", 0o755);
    write(&r.join("opq/sub/new"), b"fresh", 0o640);
    write(&r.join("keep/sub/.wh..wh..opq"), b"", 0o755);
    write(&r.join("keep/.wh.old"), b"", 0o600);
    std::os::unix::fs::chown(r.join("keep/.wh.old"), Some(7), Some(8)).unwrap();
    let files = [
        "etc/passwd",
        "etc/.wh.shadow",
        ".wh.gone-dir",
        "opq/sub/new",
        "keep/.wh.old",
    ];
    for f in files {
        set_mtime(&r.join(f), 1_600_000_000);
    }
    // The opaque markers as overlay's write synthesises them: mtime 0.
    set_mtime(&r.join("opq/.wh..wh..opq"), 0);
    set_mtime(&r.join("keep/sub/.wh..wh..opq"), 0);
    for d in ["etc", "opq/sub", "opq", "keep/sub", "keep"] {
        set_mtime(&r.join(d), 1_500_000_000);
    }
    let mut out = Vec::new();
    let opts = WriteOptions {
        whiteouts: WhiteoutFormat::Aufs,
    };
    strata_archive::write_tar(r, &mut out, &opts).unwrap();
    out
}

/// OCI tar → native apply into an overlay diff dir → native diff: the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteout_conversion_round_trips_byte_for_byte() {
    if skip_unless_supported("whiteout_conversion_round_trips_byte_for_byte") {
        return;
    }
    let s = Scratch::new();
    let d = overlay(&s.path().join("overlay"), MountApi::Auto);
    assert!(d.native_diff(), "native diff is expected on this kernel");
    let (base, layer) = (id("base"), id("layer"));
    d.create(&base, None, &CreateOpts::default()).await.unwrap();
    d.apply_diff(&base, None, stream(lower_layer()))
        .await
        .unwrap();
    d.create(&layer, Some(&base), &CreateOpts::default())
        .await
        .unwrap();
    let tar = oci_layer_with_whiteouts();
    d.apply_diff(&layer, Some(&base), stream(tar.clone()))
        .await
        .unwrap();
    // Stored in overlay form: devices and xattrs, no `.wh.` files.
    let upper = s.path().join("overlay/layer/diff");
    let st = fs::symlink_metadata(upper.join("etc/shadow")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(st.file_type().is_char_device() && st.rdev() == 0);
    assert!(!upper.join("etc/.wh.shadow").exists());
    assert!(!upper.join("opq/.wh..wh..opq").exists());
    let back = read_all(&d, &layer, Some(&base)).await;
    assert!(back == tar, "the round trip changed the tar");
    d.cleanup().await.unwrap();
}

/// The same changes made through a mounted view of each driver give the same diff: opaque
/// directories (a lower directory removed and made again), a deleted file and a new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_dir_diff_matches_the_dir_driver() {
    if skip_unless_supported("opaque_dir_diff_matches_the_dir_driver") {
        return;
    }
    let s = Scratch::new();
    let ov = overlay(&s.path().join("overlay"), MountApi::Auto);
    let dir = DirDriver::new(s.path().join("dir"), Default::default()).unwrap();
    let mut diffs = Vec::new();
    for d in [&ov as &dyn Driver, &dir as &dyn Driver] {
        let (base, child) = (id("base"), id("child"));
        d.create(&base, None, &CreateOpts::default()).await.unwrap();
        let mut src = Vec::new();
        {
            let tmp = tempfile::tempdir().unwrap();
            let r = tmp.path();
            fs::create_dir_all(r.join("d/inner")).unwrap();
            write(&r.join("d/a"), b"a", 0o644);
            write(&r.join("d/inner/b"), b"b", 0o644);
            fs::create_dir(r.join("e")).unwrap();
            write(&r.join("e/x"), b"x", 0o644);
            write(&r.join("e/y"), b"y", 0o644);
            let opts = WriteOptions {
                whiteouts: WhiteoutFormat::Aufs,
            };
            strata_archive::write_tar(r, &mut src, &opts).unwrap();
        }
        d.apply_diff(&base, None, stream(src)).await.unwrap();
        d.create_rw(&child, Some(&base), &CreateOpts::default())
            .await
            .unwrap();
        let root = d.get(&child, &MountOpts::default()).await.unwrap();
        let r = root.clone();
        tokio::task::spawn_blocking(move || {
            // The new `d` is made while the old one still exists, so it cannot get an old
            // inode number back (the dir driver would then record per-child whiteouts, the
            // same view in another form: its documented limit).
            fs::create_dir(r.join("d.new")).unwrap();
            fs::set_permissions(r.join("d.new"), fs::Permissions::from_mode(0o750)).unwrap();
            write(&r.join("d.new/new"), b"new", 0o600);
            fs::remove_dir_all(r.join("d")).unwrap();
            fs::rename(r.join("d.new"), r.join("d")).unwrap();
            fs::remove_file(r.join("e/x")).unwrap();
            write(&r.join("f"), b"f", 0o644);
        })
        .await
        .unwrap();
        d.put(&child).await.unwrap();
        let tar = read_all(d, &child, Some(&base)).await;
        diffs.push(entries(&tar));
        d.cleanup().await.unwrap();
    }
    assert_eq!(
        diffs[0], diffs[1],
        "overlay's diff (left) and the dir driver's"
    );
    let names: Vec<&str> = diffs[0].iter().map(|e| e.0.as_str()).collect();
    assert!(names.contains(&"d/.wh..wh..opq"), "{names:?}");
    assert!(names.contains(&"e/.wh.x"), "{names:?}");
}

/// A tar's entries without their times (made at different moments by the two drivers):
/// (path, type, mode, uid, gid, content).
fn entries(tar: &[u8]) -> Vec<(String, u8, u32, u64, u64, Vec<u8>)> {
    let mut a = tar::Archive::new(tar);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        let is_marker = path.rsplit('/').next().unwrap().starts_with(".wh.");
        // A whiteout's permission bits are whatever stood for it on disk (a device made by
        // overlayfs is 0, a `.wh.` file the dir driver made has its own); only its name means
        // anything.
        let mode = if is_marker { 0 } else { h.mode().unwrap() };
        out.push((
            path,
            h.entry_type().as_byte(),
            mode,
            h.uid().unwrap(),
            h.gid().unwrap(),
            body,
        ));
    }
    out
}

/// Status and capabilities say what the host gave the driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_mount_api_depth_and_native_diff() {
    if skip_unless_supported("status_reports_mount_api_depth_and_native_diff") {
        return;
    }
    let s = Scratch::new();
    let d = overlay(&s.path().join("a"), MountApi::Fsconfig);
    assert_eq!(d.caps().max_depth, Some(500));
    let status = d.status();
    let get = |k: &str| {
        status
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("Native Overlay Diff").as_deref(), Some("true"));
    assert_eq!(get("Mount API").as_deref(), Some("fsconfig"));
    let m = overlay(&s.path().join("b"), MountApi::Mount2);
    let depth = m.caps().max_depth.unwrap();
    assert!((100..129).contains(&depth), "{depth}");
    let status = m.status();
    assert!(status.contains(&("Max Depth".to_string(), depth.to_string())));
    // Options that break native diff turn it off.
    let config = Config {
        mount_options: vec!["metacopy=on".into()],
        ..Config::default()
    };
    let n = OverlayDriver::new(s.path().join("c"), config).unwrap();
    assert!(!n.native_diff() && !n.caps().native_diff);
    // An option the driver sets itself is a config error.
    let config = Config {
        mount_options: vec!["lowerdir=/etc".into()],
        ..Config::default()
    };
    let err = OverlayDriver::new(s.path().join("d"), config).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

/// Past the mount(2) fallback's depth, create fails (NotSupported) and leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_deep_is_an_error_at_create() {
    if skip_unless_supported("too_deep_is_an_error_at_create") {
        return;
    }
    let s = Scratch::new();
    let d = overlay(&s.path().join("overlay"), MountApi::Mount2);
    let max = d.caps().max_depth.unwrap();
    let mut parent: Option<LayerId> = None;
    for i in 0..max {
        let l = id(&format!("l{i}"));
        d.create(&l, parent.as_ref(), &CreateOpts::default())
            .await
            .unwrap();
        parent = Some(l);
    }
    // The deepest one mounts.
    let top = parent.clone().unwrap();
    let p = d.get(&top, &MountOpts::default()).await.unwrap();
    assert!(p.is_dir());
    d.put(&top).await.unwrap();
    let over = id("over");
    let err = d
        .create_rw(&over, parent.as_ref(), &CreateOpts::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotSupported);
    assert!(!d.exists(&over).await.unwrap());
    assert!(!s.path().join("overlay/over").exists());
}

/// A crash's leftovers (a staging dir, a half-removed layer, a dangling short link) are swept
/// by the next start; live layers are kept, their missing short links made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_sweeps_crash_leftovers() {
    if skip_unless_supported("start_sweeps_crash_leftovers") {
        return;
    }
    let s = Scratch::new();
    let home = s.path().join("overlay");
    {
        let d = overlay(&home, MountApi::Auto);
        d.create(&id("live"), None, &CreateOpts::default())
            .await
            .unwrap();
    }
    fs::create_dir_all(home.join(".tmp-x-AAAA/diff")).unwrap();
    fs::create_dir_all(home.join(".removing-y-BBBB/diff")).unwrap();
    let dangling = home.join("l").join("A".repeat(26));
    std::os::unix::fs::symlink("../gone/diff", &dangling).unwrap();
    let live_lid = fs::read_to_string(home.join("live/link")).unwrap();
    fs::remove_file(home.join("l").join(&live_lid)).unwrap();
    let d = overlay(&home, MountApi::Auto);
    assert!(!home.join(".tmp-x-AAAA").exists());
    assert!(!home.join(".removing-y-BBBB").exists());
    assert!(fs::symlink_metadata(&dangling).is_err());
    assert_eq!(
        fs::read_link(home.join("l").join(&live_lid)).unwrap(),
        Path::new("../live/diff"),
        "the live layer's short link is made again"
    );
    assert!(d.exists(&id("live")).await.unwrap());
    let p = d.get(&id("live"), &MountOpts::default()).await.unwrap();
    assert!(p.is_dir());
    d.put(&id("live")).await.unwrap();
}

/// A writable layer that gets a child mounts read-only from then on (overlay2's
/// `committed`); metadata names the overlay dirs; the last put removes `merged`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_mount_read_only_and_metadata_names_the_dirs() {
    if skip_unless_supported("parents_mount_read_only_and_metadata_names_the_dirs") {
        return;
    }
    let s = Scratch::new();
    let home = s.path().join("overlay");
    let d = overlay(&home, MountApi::Auto);
    let (a, b) = (id("a"), id("b"));
    d.create_rw(&a, None, &CreateOpts::default()).await.unwrap();
    let p = d.get(&a, &MountOpts::default()).await.unwrap();
    fs::write(p.join("f"), b"a").unwrap();
    d.put(&a).await.unwrap();
    assert!(
        !home.join("a/merged").exists(),
        "put removes the mount point"
    );
    d.create_rw(&b, Some(&a), &CreateOpts::default())
        .await
        .unwrap();
    let p = d.get(&a, &MountOpts::default()).await.unwrap();
    let err = fs::write(p.join("g"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "EROFS through a parent");
    d.put(&a).await.unwrap();
    let p = d.get(&b, &MountOpts::default()).await.unwrap();
    assert_eq!(fs::read(p.join("f")).unwrap(), b"a");
    fs::write(p.join("g"), b"b").unwrap();
    let md: std::collections::HashMap<String, String> =
        d.metadata(&b).await.unwrap().into_iter().collect();
    assert_eq!(Path::new(&md["UpperDir"]), home.join("b/diff"));
    assert_eq!(Path::new(&md["WorkDir"]), home.join("b/work"));
    assert_eq!(Path::new(&md["MergedDir"]), home.join("b/merged"));
    assert_eq!(Path::new(&md["LowerDir"]), home.join("a/diff"));
    // Mounted: remove is Busy; forced, it unmounts and removes.
    assert_eq!(
        d.remove(&b, false).await.unwrap_err().kind(),
        ErrorKind::Busy
    );
    d.remove(&b, true).await.unwrap();
    assert!(!home.join("b").exists());
    assert!(!d.exists(&b).await.unwrap());
    // The reserved name is refused, never confused with the `l/` directory.
    let err = d
        .create(&id("l"), None, &CreateOpts::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(!d.exists(&id("l")).await.unwrap());
}

/// A mount leaked into a layer (a bind mount onto a directory of its diff) is detached by
/// remove, never deleted through: what it shows survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_never_deletes_through_a_mount() {
    if skip_unless_supported("remove_never_deletes_through_a_mount") {
        return;
    }
    let s = Scratch::new();
    let home = s.path().join("overlay");
    let d = overlay(&home, MountApi::Auto);
    let a = id("a");
    d.create_rw(&a, None, &CreateOpts::default()).await.unwrap();
    let outside = s.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("canary"), b"keep me").unwrap();
    let inside = home.join("a/diff/sub");
    fs::create_dir(&inside).unwrap();
    rustix::mount::mount_bind(&outside, &inside).unwrap();
    d.remove(&a, false).await.unwrap();
    assert!(!d.exists(&a).await.unwrap());
    assert_eq!(fs::read(outside.join("canary")).unwrap(), b"keep me");
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !table.contains(home.to_str().unwrap()),
        "a mount under the home is left"
    );
}

/// Rootless: in a user namespace (with its own mount namespace) the driver mounts with
/// `userxattr` and keeps overlay's xattrs under `user.overlay.*`; an opaque directory and a
/// whiteout made through a view come out of the native diff in OCI form and go back in.
/// Runs this test binary again under `unshare --user --map-root-user --mount`.
#[test]
fn rootless_in_a_user_namespace() {
    if std::env::var_os("STRATA_OVERLAY_IN_USERNS").is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(rootless_body());
        return;
    }
    if skip_unless_supported("rootless_in_a_user_namespace") {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = match std::process::Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "--propagation",
            "private",
        ])
        .arg(&exe)
        .args([
            "--exact",
            "rootless_in_a_user_namespace",
            "--test-threads=1",
        ])
        .env("STRATA_OVERLAY_IN_USERNS", "1")
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            strata_conformance::skip!("cannot run unshare: {e}");
            return;
        }
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && text.contains("unshare failed") {
        strata_conformance::skip!("no user namespaces here: {text}");
        return;
    }
    assert!(out.status.success(), "in the user namespace: {text}");
    assert!(text.contains("1 passed"), "{text}");
}

async fn rootless_body() {
    let s = Scratch::new();
    let home = s.path().join("overlay");
    let d = overlay(&home, MountApi::Auto);
    assert!(d.caps().rootless, "a user namespace is rootless mode");
    assert!(
        d.status()
            .contains(&("Rootless (userxattr)".to_string(), "true".to_string()))
    );
    let (base, child, copy) = (id("base"), id("child"), id("copy"));
    d.create_rw(&base, None, &CreateOpts::default())
        .await
        .unwrap();
    let p = d.get(&base, &MountOpts::default()).await.unwrap();
    fs::create_dir(p.join("dir")).unwrap();
    fs::write(p.join("dir/old"), b"old").unwrap();
    fs::write(p.join("gone"), b"x").unwrap();
    d.put(&base).await.unwrap();
    d.create_rw(&child, Some(&base), &CreateOpts::default())
        .await
        .unwrap();
    let p = d.get(&child, &MountOpts::default()).await.unwrap();
    fs::remove_dir_all(p.join("dir")).unwrap();
    fs::create_dir(p.join("dir")).unwrap();
    fs::write(p.join("dir/new"), b"new").unwrap();
    fs::remove_file(p.join("gone")).unwrap();
    d.put(&child).await.unwrap();
    let opaque = rustix::fs::lgetxattr(
        home.join("child/diff/dir"),
        "user.overlay.opaque",
        &mut [0u8; 8],
    );
    assert_eq!(opaque.ok(), Some(1), "user.overlay.opaque on the new dir");
    let tar = read_all(&d, &child, Some(&base)).await;
    let names: Vec<String> = entries(&tar).into_iter().map(|e| e.0).collect();
    assert!(names.contains(&"dir/.wh..wh..opq".to_string()), "{names:?}");
    assert!(names.contains(&".wh.gone".to_string()), "{names:?}");
    d.create(&copy, Some(&base), &CreateOpts::default())
        .await
        .unwrap();
    d.apply_diff(&copy, Some(&base), stream(tar)).await.unwrap();
    let p = d.get(&copy, &MountOpts::default()).await.unwrap();
    let mut seen: Vec<String> = fs::read_dir(p.join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ["new"]);
    assert!(!p.join("gone").exists());
    d.put(&copy).await.unwrap();
    d.cleanup().await.unwrap();
}

/// A layer named as its own parent is refused (as before slots were per layer), never a
/// deadlock on its own slot; the id `lock` is the instance lock's and refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_parent_and_reserved_ids_are_refused() {
    if skip_unless_supported("own_parent_and_reserved_ids_are_refused") {
        return;
    }
    let s = Scratch::new();
    let home = s.path().join("h");
    let d = overlay(&home, MountApi::Auto);
    assert!(
        home.join("lock").is_file(),
        "the instance lock is <home>/lock"
    );
    let opts = CreateOpts::default();
    let (a, b) = (id("a"), id("b"));
    let within = std::time::Duration::from_secs(20);
    let err = tokio::time::timeout(within, d.create(&b, Some(&b), &opts))
        .await
        .expect("no deadlock")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ParentNotFound);
    d.create_rw(&id("a"), None, &opts).await.unwrap();
    let err = tokio::time::timeout(within, d.create(&a, Some(&a), &opts))
        .await
        .expect("no deadlock")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    let err = d.create(&id("lock"), None, &opts).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    d.remove(&id("a"), false).await.unwrap();
}

/// Issue 12, item 14: concurrent commands each start a driver over one home; none may fail
/// (a fixed `<home>/.d_type-probe` written and unlinked by every start made some fail with
/// "unlink .d_type-probe: No such file").
#[test]
fn concurrent_starts_over_one_home_all_succeed() {
    if skip_unless_supported("concurrent_starts_over_one_home_all_succeed") {
        return;
    }
    let tmp = Scratch::new();
    let home = tmp.path().join("overlay");
    drop(OverlayDriver::new(home.clone(), Config::default()).unwrap());
    let threads = 16;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (home, barrier) = (home.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..20)
                    .map(|_| OverlayDriver::new(home.clone(), Config::default()).map(drop))
                    .filter_map(Result::err)
                    .map(|e| format!("{e:#}"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let failures: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        failures.is_empty(),
        "{} starts failed: {failures:?}",
        failures.len()
    );
}
