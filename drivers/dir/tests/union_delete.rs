//! Deleting and renaming through the view, in each mount mode, and the AUFS form it leaves in
//! the layer's diff: whiteouts, opaque directories, EXDEV for a lower directory in fuse mode.

mod common;

use std::fs;
use std::io::ErrorKind as Io;
use std::os::unix::fs::MetadataExt;

use common::modes::U;
use common::*;
use rustix::io::Errno;
use strata_conformance::tarfile::{Entry, make_tar, with_parents};

per_mode!(
    deletes_write_whiteouts_and_mkdir_over_one_is_opaque,
    rename_copies_up_and_whites_out_the_old_name,
    an_open_file_survives_its_unlink,
);

fn errno(r: std::io::Result<()>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn deletes_write_whiteouts_and_mkdir_over_one_is_opaque(f: U) {
    f.image(
        "l0",
        None,
        make_tar(&with_parents(&[
            Entry::file("f", "f"),
            Entry::file("f2", "old f2"),
            Entry::file("d/x", "x"),
            Entry::file("d/y", "y"),
            Entry::dir("e"),
            Entry::file("n/deep/z", "z"),
            Entry::file("keep", "k"),
            Entry::file("m/a", "a"),
            Entry::file("m/b", "b"),
            Entry::file("k/child", "c"),
        ])),
    )
    .await;
    f.container("c", Some("l0")).await;
    // The container's own files, from a tar like any layer's.
    f.fill(
        "c",
        make_tar(&with_parents(&[
            Entry::file("own", "o"),
            Entry::file("ownd/f", "of"),
        ])),
    )
    .await;
    let v = f.get("c").await;

    fs::remove_file(v.join("f")).unwrap();
    fs::remove_file(v.join("own")).unwrap();
    fs::remove_dir_all(v.join("ownd")).unwrap();
    fs::remove_file(v.join("f2")).unwrap();
    put_file(&v, "f2", "new f2");
    fs::remove_file(v.join("d/x")).unwrap();
    fs::remove_file(v.join("d/y")).unwrap();
    assert!(listing(&v.join("d")).is_empty());
    fs::remove_dir(v.join("d")).unwrap();
    fs::remove_dir(v.join("e")).unwrap();
    fs::remove_dir_all(v.join("n")).unwrap();
    fs::remove_dir_all(v.join("m")).unwrap();
    fs::create_dir(v.join("m")).unwrap();
    put_file(&v, "m/new", "n");
    put_file(&v, "tmp", "t");
    fs::remove_file(v.join("tmp")).unwrap();
    // What must fail.
    let notempty = Errno::NOTEMPTY.raw_os_error();
    assert_eq!(errno(fs::remove_dir(v.join("k"))), Some(notempty));
    assert_eq!(
        errno(fs::remove_file(v.join("k"))),
        Some(Errno::ISDIR.raw_os_error())
    );
    assert_eq!(
        fs::remove_file(v.join("f")).unwrap_err().kind(),
        Io::NotFound,
        "a whited-out name is gone"
    );

    assert_eq!(listing(&v), ["f2", "k", "keep", "m"]);
    assert_eq!(listing(&v.join("m")), ["new"]);
    for gone in ["f", "d", "e", "n", "n/deep/z", "m/a", "own", "ownd", "tmp"] {
        assert_eq!(
            fs::symlink_metadata(v.join(gone)).unwrap_err().kind(),
            Io::NotFound,
            "{gone}"
        );
    }
    assert_eq!(fs::read_to_string(v.join("f2")).unwrap(), "new f2");
    let view = describe(&v);
    f.put_last("c").await;

    let opaque = strs(&[
        ".wh.d",
        ".wh.e",
        ".wh.f",
        ".wh.n",
        "f2",
        "m",
        "m/.wh..wh..opq",
        "m/new",
    ]);
    let got = names(&f.diff("c"));
    if f.is_fuse() {
        assert_eq!(got, opaque);
    } else {
        // Copy mode: a directory deleted and made again may get its old inode number back,
        // and is then folded as per-child whiteouts (the same view; see the crate docs).
        let per_child = strs(&[
            ".wh.d", ".wh.e", ".wh.f", ".wh.n", "f2", "m", "m/.wh.a", "m/.wh.b", "m/new",
        ]);
        assert!(got == opaque || got == per_child, "{got:?}");
    }
    assert_eq!(
        fs::read_to_string(f.diff("c").join("f2")).unwrap(),
        "new f2"
    );
    assert_eq!(f.fresh_view("c").await, view);
}

async fn rename_copies_up_and_whites_out_the_old_name(f: U) {
    f.image(
        "l0",
        None,
        make_tar(&with_parents(&[
            Entry::file("a", "a")
                .mode(0o640)
                .mtime_ns(1_600_000_000, 42),
            Entry::file("c", "c"),
            Entry::file("k", "k"),
            Entry::file("a2", "a2"),
            Entry::file("d/in", "in"),
            Entry::file("ld/f", "lf"),
        ])),
    )
    .await;
    f.container("c", Some("l0")).await;
    f.fill("c", make_tar(&with_parents(&[Entry::file("own", "o")])))
        .await;
    let v = f.get("c").await;

    fs::rename(v.join("a"), v.join("b")).unwrap();
    fs::rename(v.join("c"), v.join("k")).unwrap();
    fs::rename(v.join("own"), v.join("own2")).unwrap();
    fs::rename(v.join("a2"), v.join("d/a2")).unwrap();
    put_file(&v, "nd/f", "nf");
    fs::rename(v.join("nd"), v.join("nd2")).unwrap();
    let lower_dir = fs::rename(v.join("ld"), v.join("ld2"));
    if f.is_fuse() {
        // As overlayfs without redirect_dir: the caller (mv) falls back to copying.
        assert_eq!(errno(lower_dir), Some(Errno::XDEV.raw_os_error()));
    } else {
        lower_dir.unwrap();
    }
    let ld = if f.is_fuse() { "ld" } else { "ld2" };

    let b = fs::metadata(v.join("b")).unwrap();
    assert_eq!(b.mode() & 0o7777, 0o640);
    assert_eq!((b.mtime(), b.mtime_nsec()), (1_600_000_000, 42));
    assert_eq!(fs::read_to_string(v.join("k")).unwrap(), "c");
    assert_eq!(fs::read_to_string(v.join("d/a2")).unwrap(), "a2");
    assert_eq!(fs::read_to_string(v.join(format!("{ld}/f"))).unwrap(), "lf");
    let mut root = vec!["b", "d", "k", "nd2", "own2"];
    root.push(ld);
    root.sort();
    assert_eq!(listing(&v), root);
    assert_eq!(listing(&v.join("d")), ["a2", "in"]);
    let view = describe(&v);
    f.put_last("c").await;

    let mut want = strs(&[
        ".wh.a", ".wh.a2", ".wh.c", "b", "d", "d/a2", "k", "nd2", "nd2/f", "own2",
    ]);
    if !f.is_fuse() {
        want.extend(strs(&[".wh.ld", "ld2", "ld2/f"]));
        want.sort();
    }
    assert_eq!(names(&f.diff("c")), want);
    let b = fs::metadata(f.diff("c").join("b")).unwrap();
    assert_eq!(
        (b.mode() & 0o7777, b.mtime(), b.mtime_nsec()),
        (0o640, 1_600_000_000, 42)
    );
    assert_eq!(f.fresh_view("c").await, view);
}

async fn an_open_file_survives_its_unlink(f: U) {
    f.image(
        "l0",
        None,
        make_tar(&with_parents(&[
            Entry::file("low", "lower text"),
            Entry::file("keep", "k"),
        ])),
    )
    .await;
    f.container("c", Some("l0")).await;
    let v = f.get("c").await;
    put_file(&v, "mine", "my text");
    let mut low = fs::File::open(v.join("low")).unwrap();
    let mut mine = fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(v.join("mine"))
        .unwrap();
    fs::remove_file(v.join("low")).unwrap();
    fs::remove_file(v.join("mine")).unwrap();
    assert_eq!(listing(&v), ["keep"]);
    let mut s = String::new();
    std::io::Read::read_to_string(&mut low, &mut s).unwrap();
    assert_eq!(s, "lower text");
    std::io::Write::write_all(&mut mine, b"+").unwrap();
    let mut back = [0u8; 8];
    std::os::unix::fs::FileExt::read_exact_at(&mine, &mut back, 0).unwrap();
    assert_eq!(&back, b"my text+");
    drop((low, mine));
    f.put_last("c").await;
    assert_eq!(names(&f.diff("c")), [".wh.low"]);
}
