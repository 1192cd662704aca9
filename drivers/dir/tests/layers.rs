//! Layer lifecycle: layout on disk, error kinds, removal, crash leftovers, status.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;
use strata_driver_api::{CreateOpts, Driver, ErrorKind, MountOpts};
use strata_driver_dir::{Config, DirDriver, MountMode, NAME};

#[tokio::test]
async fn layout_on_disk() {
    let f = Fixture::new();
    f.image("base", None).await;
    f.image("mid", Some("base")).await;
    f.container("top", Some("mid")).await;
    let home = f.home();
    assert_eq!(fs::read_to_string(home.join("layers/base")).unwrap(), "");
    assert_eq!(
        fs::read_to_string(home.join("layers/mid")).unwrap(),
        "base\n"
    );
    assert_eq!(
        fs::read_to_string(home.join("layers/top")).unwrap(),
        "mid\nbase\n"
    );
    for l in ["base", "mid", "top"] {
        assert!(f.diff(l).is_dir());
        assert!(f.mnt(l).is_dir());
        assert_eq!(fs::read_dir(f.mnt(l)).unwrap().count(), 0);
    }
    let m = fs::metadata(f.diff("base")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o755);
    assert_eq!(m.uid(), rustix::process::geteuid().as_raw());
    assert_eq!(
        fs::metadata(&home).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let meta = f.drv.metadata(&id("top")).await.unwrap();
    let get = |k: &str| meta.iter().find(|(key, _)| key == k).unwrap().1.clone();
    assert_eq!(get("DiffDir"), f.diff("top").display().to_string());
    assert_eq!(get("MountDir"), f.mnt("top").display().to_string());
    assert_eq!(get("Layers"), "mid:base");
    assert_eq!(get("Kind"), "container");
    assert_eq!(f.drv.name(), NAME);
}

#[tokio::test]
async fn child_root_starts_as_parents_root() {
    let f = Fixture::new();
    f.image("base", None).await;
    chmod(&f.diff("base"), 0o711);
    f.image("child", Some("base")).await;
    let m = fs::metadata(f.diff("child")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o711);
    let b = fs::metadata(f.diff("base")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (b.mtime(), b.mtime_nsec()));
}

#[tokio::test]
async fn error_kinds() {
    let f = Fixture::new();
    let d = &f.drv;
    let none = CreateOpts::default();
    f.image("a", None).await;
    assert_eq!(
        d.create(&id("a"), None, &none).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        d.create_rw(&id("a"), None, &none).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    let err = d
        .create(&id("b"), Some(&id("nope")), &none)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ParentNotFound);
    assert!(
        !d.exists(&id("b")).await.unwrap(),
        "a failed create leaves nothing"
    );
    assert!(!f.diff("b").exists());

    let sized = CreateOpts {
        size: Some(1 << 30),
        ..CreateOpts::default()
    };
    assert_eq!(
        d.create(&id("s"), None, &sized).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        d.create_rw(&id("s"), None, &sized)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotSupported
    );
    let mut opts = CreateOpts::default();
    opts.storage_opts.insert("bogus".into(), "1".into());
    assert_eq!(
        d.create(&id("s"), None, &opts).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert!(!d.exists(&id("s")).await.unwrap());

    let missing = id("missing");
    assert_eq!(
        d.remove(&missing, false).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        d.remove(&missing, true).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        d.get(&missing, &MountOpts::default())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        d.metadata(&missing).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        d.is_mounted(&missing).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        d.changes(&missing, None).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        d.diff_size(&missing, None).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(!d.exists(&missing).await.unwrap());
    // put of something not mounted is a no-op.
    d.put(&missing).await.unwrap();
    d.put(&id("a")).await.unwrap();

    let opts = MountOpts {
        options: vec!["context=x".into()],
        ..MountOpts::default()
    };
    assert_eq!(
        d.get(&id("a"), &opts).await.unwrap_err().kind(),
        ErrorKind::NotSupported
    );
}

#[tokio::test]
async fn remove_busy_force_and_cleanup_of_parts() {
    let f = Fixture::new();
    f.image("a", None).await;
    f.container("c", Some("a")).await;
    let view = f.get("c").await;
    put_file(&view, "x", "data");
    assert_eq!(
        f.drv.remove(&id("c"), false).await.unwrap_err().kind(),
        ErrorKind::Busy
    );
    assert!(f.drv.is_mounted(&id("c")).await.unwrap());
    f.drv.remove(&id("c"), true).await.unwrap();
    assert!(!f.drv.exists(&id("c")).await.unwrap());
    let home = f.home();
    for sub in ["layers", "diff", "mnt", "meta", "state"] {
        let left: Vec<_> = fs::read_dir(home.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains('c'))
            .collect();
        assert!(left.is_empty(), "{sub}: {left:?}");
    }
    // The id is free again, and put after a forced remove is harmless.
    f.drv.put(&id("c")).await.unwrap();
    f.container("c", Some("a")).await;
    assert_eq!(fs::read_dir(f.diff("c")).unwrap().count(), 0);
    f.drv.remove(&id("c"), false).await.unwrap();
    f.drv.remove(&id("a"), false).await.unwrap();
}

#[tokio::test]
async fn new_sweeps_crash_leftovers_when_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("dir");
    let first = DirDriver::new(home.clone(), common::copy_mode()).unwrap();
    first
        .create(&id("a"), None, &CreateOpts::default())
        .await
        .unwrap();
    put_file(&home, "diff/a/keep", "k");
    // A create that died before layers/<id>, a remove that died after it, staging dirs,
    // a temp file, and a view that never committed its state.
    mkdir(&home, "diff/half");
    mkdir(&home, "mnt/half");
    fs::write(home.join("meta/half"), "kind=image\n").unwrap();
    mkdir(&home, "diff/.a-folding/x");
    mkdir(&home, "diff/.b-removing");
    mkdir(&home, "mnt/.a-materialising/y");
    fs::write(home.join("layers/.a.tmp"), "").unwrap();
    put_file(&home, "mnt/a/stale", "s");
    fs::write(home.join("state/a.manifest"), "junk").unwrap();
    let leftovers = [
        "diff/half",
        "mnt/half",
        "meta/half",
        "diff/.a-folding",
        "diff/.b-removing",
        "mnt/.a-materialising",
        "layers/.a.tmp",
        "state/a.manifest",
        "mnt/a/stale",
    ];

    // While another instance is attached (another process, mid-operation perhaps), nothing
    // is swept: its work in progress would look just like this.
    let second = DirDriver::new(home.clone(), common::copy_mode()).unwrap();
    for p in leftovers {
        assert!(
            home.join(p).exists(),
            "{p} was swept under another instance"
        );
    }
    drop((first, second));

    let d = DirDriver::new(home.clone(), common::copy_mode()).unwrap();
    assert!(!d.exists(&id("half")).await.unwrap());
    for p in leftovers {
        assert!(!home.join(p).exists(), "{p} survived the sweep");
    }
    assert_eq!(fs::read_dir(home.join("mnt/a")).unwrap().count(), 0);
    assert_eq!(fs::read_to_string(home.join("diff/a/keep")).unwrap(), "k");
    // The half-made id can be created for real now.
    d.create(&id("half"), None, &CreateOpts::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn config_and_status() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = Config {
        mount: MountMode::Copy,
        ..Config::default()
    };
    let d = DirDriver::new(tmp.path().join("dir"), copy).unwrap();
    assert_eq!(d.mount_mode(), MountMode::Copy);
    let status = d.status();
    let keys: Vec<&str> = status.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["Root Dir", "Mount Mode", "Backing Filesystem"]);
    assert_eq!(status[0].1, tmp.path().join("dir").display().to_string());
    assert_eq!(status[1].1, "copy");
    assert!(!status[2].1.is_empty());
    let caps = d.capabilities();
    assert!(caps.native_diff && caps.rootless && !caps.needs_root && caps.rename_dir);
    assert!(!caps.read_only_images && !caps.quota && caps.max_depth.is_none());
    strata_driver_dir::probe().unwrap();
    drop(d);

    // A helper that is not there is a config error, named as such.
    let bogus = Config {
        mount: MountMode::Fuse,
        fuse_helper: Some(tmp.path().join("no-such-helper")),
    };
    let err = DirDriver::new(tmp.path().join("x"), bogus).unwrap_err();
    if let Err(why) = strata_driver_dir::fuse::usable() {
        assert_eq!(err.kind(), ErrorKind::NotSupported);
        strata_conformance::skip!("the fuse part: FUSE not usable here: {why}");
        return;
    }
    assert_eq!(err.kind(), ErrorKind::Config);

    let fuse = Config {
        mount: MountMode::Fuse,
        fuse_helper: Some(env!("CARGO_BIN_EXE_strata-dir-fuse").into()),
    };
    let d = DirDriver::new(tmp.path().join("dir"), fuse.clone()).unwrap();
    assert_eq!(d.mount_mode(), MountMode::Fuse);
    assert_eq!(d.status()[1].1, "fuse");
    let caps = d.capabilities();
    assert!(caps.read_only_images && !caps.rename_dir && caps.native_diff);
    drop(d);
    // auto: fuse where it works (the helper is found beside the test binary's directory).
    let auto = Config {
        fuse_helper: fuse.fuse_helper,
        ..Config::default()
    };
    let d = DirDriver::new(tmp.path().join("dir"), auto).unwrap();
    assert_eq!(d.mount_mode(), MountMode::Fuse);
}

/// A layer named as its own parent is refused, never a deadlock on its own slot.
#[tokio::test]
async fn own_parent_is_refused_without_deadlock() {
    let f = Fixture::new();
    assert!(
        f.home().join("lock").is_file(),
        "the instance lock is <home>/lock"
    );
    let opts = CreateOpts::default();
    let (a, b) = (id("a"), id("b"));
    let within = std::time::Duration::from_secs(20);
    let err = tokio::time::timeout(within, f.drv.create(&b, Some(&b), &opts))
        .await
        .expect("no deadlock")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ParentNotFound);
    f.image("a", None).await;
    let err = tokio::time::timeout(within, f.drv.create(&a, Some(&a), &opts))
        .await
        .expect("no deadlock")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
}

/// Issue 12, item 10: the FUSE helper runs with the driver's privileges, so it is checked as a
/// plugin library is: a helper anyone could rewrite (here mode 0777) is refused, and `auto`
/// falls back to copy mode saying why.
#[test]
fn a_helper_others_could_rewrite_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let helper = tmp.path().join("strata-dir-fuse");
    std::fs::copy(env!("CARGO_BIN_EXE_strata-dir-fuse"), &helper).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o777)).unwrap();
    if let Err(why) = strata_driver_dir::fuse::usable() {
        strata_conformance::skip!("FUSE not usable here: {why}");
        return;
    }
    let fuse = Config {
        mount: MountMode::Fuse,
        fuse_helper: Some(helper.clone()),
    };
    let err = DirDriver::new(tmp.path().join("dir"), fuse).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err:#}");
    assert!(err.to_string().contains("world-writable"), "{err:#}");
    let auto = Config {
        mount: MountMode::Auto,
        fuse_helper: Some(helper),
    };
    let d = DirDriver::new(tmp.path().join("dir"), auto).unwrap();
    assert_eq!(d.mount_mode(), MountMode::Copy);
    assert!(
        d.status()[1].1.contains("world-writable"),
        "{:?}",
        d.status()
    );
}
