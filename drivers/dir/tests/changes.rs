//! The native `changes` and `diff_size`, read from hand-made diff directories.

mod common;

use std::fs;

use common::*;
use strata_driver_api::{Change, ChangeKind, Driver};

fn lines(ch: &[Change]) -> Vec<String> {
    ch.iter().map(|c| c.to_string()).collect()
}

#[tokio::test]
async fn changes_follow_the_union_rules() {
    let f = Fixture::new();
    f.image("b", None).await;
    let b = f.diff("b");
    for p in [
        "etc/passwd",
        "etc/hosts",
        "usr/bin/x",
        "opq/a",
        "opq/b",
        "opq/keep",
        "gone",
        "gonedir/z",
        "dirfile/c",
        "filedir",
        "both",
    ] {
        put_file(&b, p, "base");
    }
    mkdir(&b, "etc2");
    f.image("c", Some("b")).await;
    let c = f.diff("c");
    put_file(&c, "etc/passwd", "changed");
    put_file(&c, ".wh.gone", "");
    put_file(&c, ".wh.gonedir", "");
    put_file(&c, "opq/.wh..wh..opq", "");
    put_file(&c, "opq/keep", "kept");
    put_file(&c, "opq/new", "new");
    put_file(&c, "new/dir/f", "f");
    put_file(&c, ".wh.nothing", "");
    mkdir(&c, "usr");
    put_file(&c, "dirfile", "now a file");
    put_file(&c, "filedir/inner", "now a dir");
    put_file(&c, "both", "top");
    put_file(&c, ".wh.both", "");
    mkdir(&c, "etc2");
    chmod(&c.join("etc2"), 0o700);
    mkdir(&c, ".wh..wh.plnk");
    for d in ["etc", "opq", "usr", "new", "new/dir", "filedir"] {
        chmod(&c.join(d), 0o755);
        if b.join(d).is_dir() {
            chmod(&b.join(d), 0o755);
        }
    }

    let ch = f.drv.changes(&id("c"), Some(&id("b"))).await.unwrap();
    assert_eq!(
        lines(&ch),
        [
            "C /both",
            "C /dirfile",
            "C /etc",
            "C /etc/passwd",
            "C /etc2",
            "C /filedir",
            "A /filedir/inner",
            "D /gone",
            "D /gonedir",
            "A /new",
            "A /new/dir",
            "A /new/dir/f",
            "C /opq",
            "D /opq/a",
            "D /opq/b",
            "C /opq/keep",
            "A /opq/new",
        ]
    );
    let mut sorted = ch.clone();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(ch, sorted);

    // A base layer: everything is added; its whiteouts hide nothing.
    put_file(&b, ".wh.ghost", "");
    let base = f.drv.changes(&id("b"), None).await.unwrap();
    assert!(base.iter().all(|c| c.kind == ChangeKind::Add));
    assert_eq!(base.len(), names(&b).len() - 1);
}

#[tokio::test]
async fn deep_opaque_hides_the_whole_parent_subtree() {
    let f = Fixture::new();
    f.image("b", None).await;
    put_file(&f.diff("b"), "o/sub/x", "x");
    put_file(&f.diff("b"), "o/sub/y", "y");
    f.image("c", Some("b")).await;
    // o is opaque in c; c holds o/sub again with one new file: the old o/sub/x and y are gone.
    put_file(&f.diff("c"), "o/.wh..wh..opq", "");
    put_file(&f.diff("c"), "o/sub/z", "z");
    for d in ["o", "o/sub"] {
        chmod(&f.diff("c").join(d), 0o755);
        chmod(&f.diff("b").join(d), 0o755);
    }
    let ch = f.drv.changes(&id("c"), Some(&id("b"))).await.unwrap();
    assert_eq!(
        lines(&ch),
        ["C /o", "C /o/sub", "D /o/sub/x", "D /o/sub/y", "A /o/sub/z"]
    );
    let view = f.fresh_view("c").await;
    let under: Vec<_> = view.keys().filter(|k| k.starts_with("o/")).collect();
    assert_eq!(under, ["o/sub", "o/sub/z"]);
}

#[tokio::test]
async fn diff_size_counts_file_bytes_once() {
    let f = Fixture::new();
    f.image("b", None).await;
    let b = f.diff("b");
    put_file(&b, "a", "12345");
    put_file(&b, "d/b", "123");
    fs::hard_link(b.join("a"), b.join("d/a2")).unwrap();
    put_file(&b, ".wh.x", "");
    put_file(&b, "d/.wh..wh..opq", "");
    mkdir(&b, ".wh..wh.plnk");
    put_file(&b, ".wh..wh.plnk/1.2", "ignored");
    std::os::unix::fs::symlink("a-long-target", b.join("l")).unwrap();
    assert_eq!(f.drv.diff_size(&id("b"), None).await.unwrap(), 8);
}
