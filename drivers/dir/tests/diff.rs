//! Native diff and apply: round trips through tars, agreement with the naive diff.

mod common;

use std::collections::BTreeSet;
use std::fs;

use common::*;
use strata_conformance::tarfile::{Entry, make_tar, raw_entry, splice, stream};
use strata_driver_api::{Driver, ErrorKind, TarStream, naive};
use tokio::io::AsyncReadExt;

/// An entry at the mtime these layers use.
fn at(e: Entry) -> Entry {
    e.mtime(1_700_000_000)
}

async fn read_all(mut s: TarStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    out
}

async fn apply(f: &Fixture, layer: &str, parent: Option<&str>, bytes: Vec<u8>) -> u64 {
    let p = parent.map(id);
    f.drv
        .apply_diff(&id(layer), p.as_ref(), stream(bytes))
        .await
        .unwrap()
}

async fn diff(f: &Fixture, layer: &str, parent: Option<&str>) -> Vec<u8> {
    let p = parent.map(id);
    read_all(f.drv.diff(&id(layer), p.as_ref()).await.unwrap()).await
}

fn base_tar() -> Vec<u8> {
    make_tar(&[
        at(Entry::dir("etc")),
        at(Entry::file("etc/passwd", "root:x:0:0")),
        at(Entry::file("etc/shadow", "secret").mode(0o600)),
        at(Entry::dir("usr")),
        at(Entry::dir("usr/bin")),
        at(Entry::file("usr/bin/tool", "#!/bin/sh\n").mode(0o4755)),
        at(Entry::hardlink("usr/bin/tool2", "usr/bin/tool")),
        at(Entry::symlink("usr/bin/alias", "tool")),
        at(Entry::dir("opq")),
        at(Entry::file("opq/a", "a")),
        at(Entry::file("opq/b", "b")),
        at(Entry::dir("gone")),
        at(Entry::file("gone/x", "x")),
        at(Entry::file("del", "d")),
    ])
}

fn child_tar() -> Vec<u8> {
    make_tar(&[
        at(Entry::file(".wh.del", "")),
        at(Entry::file(".wh.gone", "")),
        at(Entry::dir("etc")),
        at(Entry::file("etc/passwd", "root:x:0:0\nuser:x:1000:1000")),
        at(Entry::dir("opq")),
        at(Entry::file("opq/.wh..wh..opq", "")),
        at(Entry::file("opq/new", "n")),
        at(Entry::dir("new").mode(0o700)),
        at(Entry::file("new/file", "brand new").mode(0o640)),
    ])
}

#[tokio::test]
async fn apply_stores_aufs_form_and_sizes_agree() {
    let f = Fixture::new();
    f.image("b", None).await;
    let size = apply(&f, "b", None, base_tar()).await;
    let expected = ["root:x:0:0", "secret", "#!/bin/sh\n", "a", "b", "x", "d"]
        .iter()
        .map(|s| s.len() as u64)
        .sum::<u64>();
    assert_eq!(size, expected, "the hardlink counts once");
    assert_eq!(f.drv.diff_size(&id("b"), None).await.unwrap(), size);

    f.image("c", Some("b")).await;
    let size = apply(&f, "c", Some("b"), child_tar()).await;
    assert_eq!(size, ("root:x:0:0\nuser:x:1000:1000".len() + 1 + 9) as u64);
    assert_eq!(
        f.drv.diff_size(&id("c"), Some(&id("b"))).await.unwrap(),
        size
    );
    // Whiteouts are stored as files, as they came.
    assert!(f.diff("c").join(".wh.del").is_file());
    assert!(f.diff("c").join("opq/.wh..wh..opq").is_file());
    let view = f.fresh_view("c").await;
    let paths: Vec<&str> = view.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "etc",
            "etc/passwd",
            "etc/shadow",
            "new",
            "new/file",
            "opq",
            "opq/new",
            "usr",
            "usr/bin",
            "usr/bin/alias",
            "usr/bin/tool",
            "usr/bin/tool2",
        ]
    );
    assert!(view["usr/bin/tool2"].ends_with("==usr/bin/tool"));
    assert!(view["usr/bin/tool"].starts_with("file 4755 "));
    assert!(view["new"].starts_with("dir 700 "));
}

#[tokio::test]
async fn native_diff_round_trips_into_another_home() {
    let a = Fixture::new();
    a.image("b", None).await;
    apply(&a, "b", None, base_tar()).await;
    a.image("c", Some("b")).await;
    apply(&a, "c", Some("b"), child_tar()).await;

    let tb = diff(&a, "b", None).await;
    let tc = diff(&a, "c", Some("b")).await;
    let b = Fixture::new();
    b.image("b", None).await;
    apply(&b, "b", None, tb.clone()).await;
    b.image("c", Some("b")).await;
    apply(&b, "c", Some("b"), tc.clone()).await;
    assert_eq!(describe(&b.diff("b")), describe(&a.diff("b")));
    assert_eq!(describe(&b.diff("c")), describe(&a.diff("c")));
    assert_eq!(b.fresh_view("c").await, a.fresh_view("c").await);
    // And the same tars again: the diff is deterministic.
    assert_eq!(diff(&b, "b", None).await, tb);
    assert_eq!(diff(&b, "c", Some("b")).await, tc);
}

#[tokio::test]
async fn apply_is_refused_while_mounted() {
    let f = Fixture::new();
    f.image("b", None).await;
    f.get("b").await;
    let err = f
        .drv
        .apply_diff(&id("b"), None, stream(base_tar()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    f.put("b").await;
    apply(&f, "b", None, base_tar()).await;
    let err = f
        .drv
        .apply_diff(&id("nope"), None, stream(base_tar()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn hostile_tar_is_invalid_archive_and_writes_nothing_outside() {
    let f = Fixture::new();
    f.image("b", None).await;
    // A GNU header, as the tar crate's builder would refuse the name.
    let bytes = splice(&raw_entry(b"../../evil", b'0', b"x"), &make_tar(&[]));
    let err = f
        .drv
        .apply_diff(&id("b"), None, stream(bytes))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArchive);
    assert!(!f.home().join("evil").exists() && !f.tmp.path().join("evil").exists());
}

/// Changes a container's view in every way the fold knows, puts it, and checks that the
/// native diff, applied elsewhere, gives the same view, and that native and naive changes agree.
#[tokio::test]
async fn folded_changes_round_trip_and_match_the_naive_diff() {
    let a = Fixture::new();
    a.image("b", None).await;
    apply(&a, "b", None, base_tar()).await;
    a.container("c", Some("b")).await;
    let v = a.get("c").await;
    put_file(&v, "etc/passwd", "changed!");
    chmod(&v.join("etc/shadow"), 0o640);
    fs::remove_dir_all(v.join("opq")).unwrap();
    put_file(&v, "opq.new/fresh", "f");
    fs::rename(v.join("opq.new"), v.join("opq")).unwrap();
    fs::remove_file(v.join("del")).unwrap();
    fs::hard_link(v.join("etc/passwd"), v.join("etc/passwd-")).unwrap();
    put_file(&v, "var/log/x", "log");
    fs::remove_dir_all(v.join("gone")).unwrap();
    a.put("c").await;

    let native = a.drv.changes(&id("c"), Some(&id("b"))).await.unwrap();
    let naive = naive::changes(&a.drv, &id("c"), Some(&id("b")))
        .await
        .unwrap();
    assert_eq!(lines(&native), lines(&naive));
    let native_size = a.drv.diff_size(&id("c"), Some(&id("b"))).await.unwrap();
    let naive_size = naive::diff_size(&a.drv, &id("c"), Some(&id("b")))
        .await
        .unwrap();
    assert_eq!(native_size, naive_size);

    let b = Fixture::new();
    b.image("b", None).await;
    apply(&b, "b", None, diff(&a, "b", None).await).await;
    b.container("c", Some("b")).await;
    apply(&b, "c", Some("b"), diff(&a, "c", Some("b")).await).await;
    assert_eq!(b.fresh_view("c").await, a.fresh_view("c").await);
}

fn lines(ch: &[strata_driver_api::Change]) -> BTreeSet<String> {
    ch.iter().map(|c| c.to_string()).collect()
}

#[tokio::test]
async fn a_diff_against_a_non_parent_is_naive_and_right() {
    let a = Fixture::new();
    a.image("b", None).await;
    apply(&a, "b", None, base_tar()).await;
    a.image("m", Some("b")).await;
    apply(&a, "m", Some("b"), child_tar()).await;
    a.image("t", Some("m")).await;
    apply(
        &a,
        "t",
        Some("m"),
        make_tar(&[at(Entry::file("top", "t")), at(Entry::file(".wh.usr", ""))]),
    )
    .await;

    // t against b, skipping m: the naive path.
    let skip = diff(&a, "t", Some("b")).await;
    let b = Fixture::new();
    b.image("b", None).await;
    apply(&b, "b", None, diff(&a, "b", None).await).await;
    b.image("t", Some("b")).await;
    apply(&b, "t", Some("b"), skip).await;
    assert_eq!(b.fresh_view("t").await, a.fresh_view("t").await);
    let ch = a.drv.changes(&id("t"), Some(&id("b"))).await.unwrap();
    assert!(ch.iter().any(|c| c.to_string() == "A /new/file"), "{ch:?}");
    // t against nothing: its whole view.
    let whole = diff(&a, "t", None).await;
    let c = Fixture::new();
    c.image("t", None).await;
    apply(&c, "t", None, whole).await;
    assert_eq!(c.fresh_view("t").await, a.fresh_view("t").await);
    assert!(
        !a.drv.is_mounted(&id("t")).await.unwrap(),
        "the naive diff releases its mounts"
    );
    assert!(!a.drv.is_mounted(&id("b")).await.unwrap());
}
