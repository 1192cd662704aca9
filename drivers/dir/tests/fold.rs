//! Folding a view's changes back into the layer: the diff directory it leaves, and the view a
//! fresh driver instance materialises from it.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use strata_driver_api::{ChangeKind, Driver};

/// A base image with a bit of everything, and a container layer over it that already holds a
/// file of its own.
async fn base_and_container(f: &Fixture) {
    f.image("b", None).await;
    let d = f.diff("b");
    for (p, t) in [
        ("keep", "k"),
        ("mod", "m0"),
        ("chm", "c"),
        ("del", "d"),
        ("dir/a", "a"),
        ("dir/b", "b"),
        ("rmdir/x", "x"),
        ("rmdir/sub/y", "y"),
        ("deep/nested/file", "f0"),
        ("deep/other", "o"),
        ("ln/src", "s"),
        ("mv/me", "m"),
        ("was-dir/child", "c"),
        ("was-file", "w"),
    ] {
        put_file(&d, p, t);
    }
    f.container("c", Some("b")).await;
    put_file(&f.diff("c"), "own", "mine");
    put_file(&f.diff("c"), "own2", "mine too");
    put_file(&f.diff("c"), "ownd/f", "in my dir");
}

fn edit_view(v: &Path) {
    put_file(v, "new", "n");
    put_file(v, "mod", "m1");
    chmod(&v.join("chm"), 0o600);
    fs::remove_file(v.join("del")).unwrap();
    fs::remove_file(v.join("own")).unwrap();
    fs::remove_dir_all(v.join("ownd")).unwrap();
    // Deleted and made again. (Made first and renamed into place, so that the file system
    // cannot hand the new directory the old one's inode number: with a reused inode the fold
    // still gives the same view, but as per-child whiteouts instead of an opaque directory.)
    put_file(v, "dir.new/c", "c");
    fs::remove_dir_all(v.join("dir")).unwrap();
    fs::rename(v.join("dir.new"), v.join("dir")).unwrap();
    fs::remove_dir_all(v.join("rmdir")).unwrap();
    put_file(v, "deep/nested/file", "f1");
    put_file(v, "newlink1", "pair");
    fs::hard_link(v.join("newlink1"), v.join("newlink2")).unwrap();
    fs::hard_link(v.join("ln/src"), v.join("ln/dst")).unwrap();
    std::os::unix::fs::symlink("new", v.join("sym")).unwrap();
    fs::rename(v.join("mv"), v.join("moved")).unwrap();
    fs::remove_dir_all(v.join("was-dir")).unwrap();
    put_file(v, "was-dir", "now a file");
    fs::remove_file(v.join("was-file")).unwrap();
    put_file(v, "was-file/inside", "now a dir");
    put_file(v, ".wh.sneaky", "a name no layer can hold");
}

#[tokio::test]
async fn fold_back_and_rematerialise_in_a_fresh_instance() {
    let f = Fixture::new();
    base_and_container(&f).await;
    let v = f.get("c").await;
    edit_view(&v);
    let mut before = describe(&v);
    before.remove(".wh.sneaky");
    f.put("c").await;

    let expected_diff = [
        ".wh.del",
        ".wh.mv",
        ".wh.rmdir",
        "chm",
        "deep",
        "deep/nested",
        "deep/nested/file",
        "dir",
        "dir/.wh..wh..opq",
        "dir/c",
        "ln",
        "ln/dst",
        "ln/src",
        "mod",
        "moved",
        "moved/me",
        "new",
        "newlink1",
        "newlink2",
        "own2",
        "sym",
        "was-dir",
        "was-file",
        "was-file/.wh..wh..opq",
        "was-file/inside",
    ];
    assert_eq!(names(&f.diff("c")), expected_diff);
    let diff = describe(&f.diff("c"));
    assert!(
        diff["newlink2"].ends_with("==newlink1"),
        "{}",
        diff["newlink2"]
    );
    assert!(diff["ln/src"].ends_with("==ln/dst"), "{}", diff["ln/src"]);
    assert!(diff["chm"].starts_with("file 600 "));
    // The base layer is untouched.
    assert_eq!(fs::read_to_string(f.diff("b").join("mod")).unwrap(), "m0");
    assert!(f.diff("b").join("del").exists());

    assert_eq!(f.fresh_view("c").await, before);
}

#[tokio::test]
async fn a_put_with_no_changes_leaves_the_diff_alone() {
    let f = Fixture::new();
    base_and_container(&f).await;
    let ino = fs::metadata(f.diff("c")).unwrap().ino();
    let before = describe(&f.diff("c"));
    let v = f.get("c").await;
    let _ = fs::read(v.join("keep")).unwrap();
    f.put("c").await;
    assert_eq!(
        fs::metadata(f.diff("c")).unwrap().ino(),
        ino,
        "no fold, no swap"
    );
    assert_eq!(describe(&f.diff("c")), before);
}

#[tokio::test]
async fn times_and_attributes_fold_back() {
    let f = Fixture::new();
    base_and_container(&f).await;
    let v = f.get("c").await;
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 42,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_600_000_000,
            tv_nsec: 123_456_789,
        },
    };
    // Only the mtime of a lower file changes: its inode's ctime shows it.
    rustix::fs::utimensat(
        rustix::fs::CWD,
        v.join("keep"),
        &t,
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    // A lower directory's mode changes: it is copied up with the new mode only.
    chmod(&v.join("deep"), 0o700);
    rustix::fs::utimensat(
        rustix::fs::CWD,
        v.join("deep"),
        &t,
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    let xattr = rustix::fs::setxattr(
        v.join("mod"),
        "user.k",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
    f.put("c").await;
    let mut want = vec!["deep", "keep", "own", "own2", "ownd", "ownd/f"];
    if xattr {
        want.push("mod");
        want.sort();
    }
    assert_eq!(names(&f.diff("c")), want);
    let view_path = f.reopen().get(&id("c"), &Default::default()).await.unwrap();
    let k = fs::metadata(view_path.join("keep")).unwrap();
    assert_eq!((k.mtime(), k.mtime_nsec()), (1_600_000_000, 123_456_789));
    let d = fs::metadata(view_path.join("deep")).unwrap();
    assert_eq!(d.mode() & 0o777, 0o700);
    assert_eq!((d.mtime(), d.mtime_nsec()), (1_600_000_000, 123_456_789));
    assert!(
        view_path.join("deep/nested/file").exists(),
        "a copied-up directory is not opaque"
    );
    if xattr {
        let mut buf = [0u8; 4];
        let n = rustix::fs::getxattr(view_path.join("mod"), "user.k", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"v");
    }
}

#[tokio::test]
async fn deleting_a_recreated_lower_path_whites_it_out_again() {
    let f = Fixture::new();
    base_and_container(&f).await;
    let v = f.get("c").await;
    fs::remove_file(v.join("keep")).unwrap();
    f.put("c").await;
    assert!(f.diff("c").join(".wh.keep").exists());
    // Next session: make it again (the whiteout goes), then a third: delete it (it comes back).
    let v = f.get("c").await;
    put_file(&v, "keep", "again");
    f.put("c").await;
    assert!(!f.diff("c").join(".wh.keep").exists());
    assert_eq!(
        fs::read_to_string(f.diff("c").join("keep")).unwrap(),
        "again"
    );
    let v = f.get("c").await;
    fs::remove_file(v.join("keep")).unwrap();
    f.put("c").await;
    assert!(f.diff("c").join(".wh.keep").exists());
    assert!(!f.diff("c").join("keep").exists());
    assert!(!f.fresh_view("c").await.contains_key("keep"));
    // A directory made where a whited-out lower directory was is opaque.
    let v = f.get("c").await;
    fs::remove_dir_all(v.join("rmdir")).unwrap();
    f.put("c").await;
    let v = f.get("c").await;
    put_file(&v, "rmdir/fresh", "f");
    f.put("c").await;
    assert!(f.diff("c").join("rmdir/.wh..wh..opq").exists());
    assert!(!f.diff("c").join(".wh.rmdir").exists());
    let view = f.fresh_view("c").await;
    let under: Vec<_> = view.keys().filter(|k| k.starts_with("rmdir/")).collect();
    assert_eq!(under, ["rmdir/fresh"]);
}

#[tokio::test]
async fn changes_of_a_mounted_layer_include_the_view() {
    let f = Fixture::new();
    base_and_container(&f).await;
    let v = f.get("c").await;
    put_file(&v, "late", "l");
    fs::remove_file(v.join("keep")).unwrap();
    let ch = f.drv.changes(&id("c"), Some(&id("b"))).await.unwrap();
    let has = |p: &str, k: ChangeKind| ch.iter().any(|c| c.path == Path::new(p) && c.kind == k);
    assert!(has("/late", ChangeKind::Add), "{ch:?}");
    assert!(has("/keep", ChangeKind::Delete), "{ch:?}");
    assert!(
        f.drv.is_mounted(&id("c")).await.unwrap(),
        "syncing keeps the view mounted"
    );
    // The view goes on; the put folds only what came after.
    put_file(&v, "later", "l2");
    f.put("c").await;
    assert_eq!(
        names(&f.diff("c")),
        [".wh.keep", "late", "later", "own", "own2", "ownd", "ownd/f"]
    );
}

#[tokio::test]
async fn a_stale_fold_staging_dir_does_not_stop_a_put() {
    let f = Fixture::new();
    base_and_container(&f).await;
    let v = f.get("c").await;
    put_file(&v, "n", "n");
    mkdir(&f.home(), "diff/.c-folding/junk");
    f.put("c").await;
    assert!(f.diff("c").join("n").exists());
    assert!(!f.home().join("diff/.c-folding").exists());
}

#[tokio::test]
async fn image_layers_fold_unless_read_only() {
    // Docker's graphtest writes into image layers through get: that must stick.
    let f = Fixture::new();
    f.image("i", None).await;
    let v = f.get("i").await;
    put_file(&v, "d/f", "x");
    f.put("i").await;
    assert_eq!(fs::read_to_string(f.diff("i").join("d/f")).unwrap(), "x");
}
