//! The fuse mode's mount lifecycle: a view outlives the driver instance that mounted it, a
//! killed helper's dead mount is cleaned up by the next instance or get, and the last put with
//! a file open detaches the view (as overlay does) while the open file keeps working. Fuse
//! mode only: skipped (with the reason printed) where the mode is not available.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::modes::{
    Guard, assert_released_at, fuse_config, fuse_mounts_under, kill, open_driver, processes_naming,
    wait_for,
};
use common::*;
use strata_driver_api::{CreateOpts, Driver, MountOpts};
use strata_driver_dir::{DirDriver, MountMode};

struct Paths {
    home: PathBuf,
    mnt: PathBuf,
}

fn paths(g: &Guard) -> Paths {
    let home = g.path().join("dir");
    Paths {
        mnt: home.join("mnt").join("c"),
        home,
    }
}

async fn mounted_container(d: &DirDriver, p: &Paths) -> PathBuf {
    d.create_rw(&id("c"), None, &CreateOpts::default())
        .await
        .unwrap();
    let v = d.get(&id("c"), &MountOpts::default()).await.unwrap();
    assert_eq!(v, p.mnt);
    assert!(is_fuse_mount(&v), "a FUSE mount at {v:?}");
    v
}

fn is_fuse_mount(p: &Path) -> bool {
    fuse_mounts_under(p).iter().any(|m| m.target == p)
}

/// The helper serving the view at `mnt`: the one process whose command line names the
/// mountpoint, or failing that the driver's home.
fn helper_pid(p: &Paths) -> i32 {
    let mut found = processes_naming(&p.mnt);
    if found.is_empty() {
        found = processes_naming(&p.home);
    }
    assert_eq!(
        found.len(),
        1,
        "one helper process for {:?}: {found:?}",
        p.mnt
    );
    found[0].0
}

/// Kills the helper and waits for the mount to turn dead.
fn kill_helper(p: &Paths) {
    kill(helper_pid(p));
    let notconn = rustix::io::Errno::NOTCONN.raw_os_error();
    assert!(
        wait_for(Duration::from_secs(5), || {
            fs::metadata(&p.mnt).err().and_then(|e| e.raw_os_error()) == Some(notconn)
        }),
        "a killed helper leaves \"Transport endpoint is not connected\" at {:?}",
        p.mnt
    );
}

/// Puts until the view is released (at most `max` puts), then checks nothing is left.
async fn put_until_released(d: &DirDriver, p: &Paths, max: usize) {
    for _ in 0..max {
        d.put(&id("c")).await.unwrap();
        if !d.is_mounted(&id("c")).await.unwrap() {
            assert_released_at(&p.home, &p.mnt);
            // A put of a released view is a no-op.
            d.put(&id("c")).await.unwrap();
            return;
        }
    }
    panic!("still mounted after {max} puts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_outlives_the_instance_that_mounted_it() {
    let g = Guard::new();
    let p = paths(&g);
    let Some(d1) = open_driver(
        &p.home,
        MountMode::Fuse,
        "the_view_outlives_the_instance_that_mounted_it",
    ) else {
        return;
    };
    let v = mounted_container(&d1, &p).await;
    put_file(&v, "file", "x");
    drop(d1);

    assert!(
        is_fuse_mount(&v),
        "the view stays mounted without its driver"
    );
    assert_eq!(fs::read_to_string(v.join("file")).unwrap(), "x");
    put_file(&v, "later", "y");
    let d2 = DirDriver::new(p.home.clone(), fuse_config()).unwrap();
    assert!(d2.is_mounted(&id("c")).await.unwrap());
    assert_eq!(fs::read_to_string(v.join("later")).unwrap(), "y");
    d2.put(&id("c")).await.unwrap();
    assert!(!d2.is_mounted(&id("c")).await.unwrap());
    assert_released_at(&p.home, &p.mnt);
    assert_eq!(names(&p.home.join("diff/c")), ["file", "later"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_cleans_up_after_a_killed_helper() {
    let g = Guard::new();
    let p = paths(&g);
    let Some(d1) = open_driver(
        &p.home,
        MountMode::Fuse,
        "a_new_instance_cleans_up_after_a_killed_helper",
    ) else {
        return;
    };
    let v = mounted_container(&d1, &p).await;
    put_file(&v, "a", "before the kill");
    kill_helper(&p);
    // The process that mounted it is gone too: the next instance is the only one, and sweeps.
    drop(d1);

    let d2 = DirDriver::new(p.home.clone(), fuse_config()).unwrap();
    let m = fs::metadata(&p.mnt);
    assert!(
        m.is_ok(),
        "the dead mount is gone after DirDriver::new: {m:?}"
    );
    if d2.is_mounted(&id("c")).await.unwrap() {
        // Remounted rather than released: then it must work.
        assert_eq!(fs::read_to_string(v.join("a")).unwrap(), "before the kill");
    } else {
        assert!(fuse_mounts_under(&p.home).is_empty());
    }
    let v2 = d2.get(&id("c"), &MountOpts::default()).await.unwrap();
    assert!(is_fuse_mount(&v2));
    assert_eq!(fs::read_to_string(v2.join("a")).unwrap(), "before the kill");
    put_file(&v2, "b", "after");
    put_until_released(&d2, &p, 2).await;
    assert_eq!(names(&p.home.join("diff/c")), ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_get_cleans_up_after_a_killed_helper() {
    let g = Guard::new();
    let p = paths(&g);
    let Some(d) = open_driver(
        &p.home,
        MountMode::Fuse,
        "the_next_get_cleans_up_after_a_killed_helper",
    ) else {
        return;
    };
    let v = mounted_container(&d, &p).await;
    put_file(&v, "a", "before the kill");
    kill_helper(&p);

    let v2 = d.get(&id("c"), &MountOpts::default()).await.unwrap();
    assert_eq!(v2, v);
    assert!(is_fuse_mount(&v2));
    assert_eq!(fs::read_to_string(v2.join("a")).unwrap(), "before the kill");
    put_file(&v2, "b", "after");
    // The reference taken before the kill may still count: at most two puts.
    put_until_released(&d, &p, 2).await;
    assert_eq!(names(&p.home.join("diff/c")), ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_put_with_a_file_open_detaches_and_the_file_stays_usable() {
    let g = Guard::new();
    let p = paths(&g);
    let name = "the_last_put_with_a_file_open_detaches_and_the_file_stays_usable";
    let Some(d) = open_driver(&p.home, MountMode::Fuse, name) else {
        return;
    };
    let v = mounted_container(&d, &p).await;
    let mut open = fs::File::create(v.join("open")).unwrap();
    open.write_all(b"1").unwrap();

    // As overlay views: the view leaves the mount table at once; its server stays until the
    // last open file is closed, and what is written through that file lands in the layer.
    d.put(&id("c")).await.unwrap();
    assert!(!d.is_mounted(&id("c")).await.unwrap());
    assert!(fuse_mounts_under(&p.home).is_empty());
    open.write_all(b"2").unwrap();
    open.sync_all().unwrap();
    drop(open);
    assert_released_at(&p.home, &p.mnt);
    assert_eq!(names(&p.home.join("diff/c")), ["open"]);
    assert_eq!(
        fs::read_to_string(p.home.join("diff/c/open")).unwrap(),
        "12"
    );
    // And the layer mounts again.
    let v = d.get(&id("c"), &MountOpts::default()).await.unwrap();
    assert_eq!(fs::read_to_string(v.join("open")).unwrap(), "12");
    put_until_released(&d, &p, 1).await;
}
