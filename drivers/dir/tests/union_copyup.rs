//! Copy-up through the view, in each mount mode: every write path leaves the lower layer alone
//! and puts the file in the layer's own diff, keeping its metadata and hard links; a write in
//! the middle of a 1 GiB lower file stays sparse.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::modes::U;
use common::*;
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, XattrFlags};
use strata_conformance::tarfile::{Entry, make_tar, with_parents};

per_mode!(
    write_paths_copy_up_and_leave_the_lower_alone,
    copy_up_keeps_mode_owner_times_and_xattrs,
    hard_links_stay_linked_through_a_copy_up,
    a_write_in_the_middle_of_a_1gib_lower_file,
    a_lower_directory_copies_up_without_turning_opaque,
    large_sequential_writes_and_reads,
);

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(p, name, &mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("getxattr {p:?} {name}: {e}"),
    }
}

fn times(p: &Path) -> ((i64, i64), (i64, i64)) {
    let m = fs::symlink_metadata(p).unwrap();
    ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))
}

fn append(p: &Path, text: &str) {
    let mut f = fs::OpenOptions::new().append(true).open(p).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn uid() -> String {
    format!(
        "{}:{}",
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw()
    )
}

async fn write_paths_copy_up_and_leave_the_lower_alone(f: U) {
    let mut entries = vec![
        Entry::file("rx", "lower-rx")
            .xattr("user.gone", "1")
            .xattr("user.stay", "2"),
    ];
    let plain = ["w", "ow", "t", "tt", "m", "o", "u", "x", "ln", "untouched"];
    let texts: Vec<String> = plain.iter().map(|n| format!("lower-{n}")).collect();
    entries.extend(plain.iter().zip(&texts).map(|(n, t)| Entry::file(n, t)));
    entries.push(Entry::file("sub/deep", "lower-deep"));
    f.image("l0", None, make_tar(&with_parents(&entries))).await;
    f.container("c", Some("l0")).await;
    let lower_before = describe(&f.diff("l0"));
    let v = f.get("c").await;

    append(&v.join("w"), "+more");
    drop(
        fs::OpenOptions::new()
            .write(true)
            .open(v.join("ow"))
            .unwrap(),
    );
    let t = fs::OpenOptions::new()
        .write(true)
        .open(v.join("t"))
        .unwrap();
    t.set_len(3).unwrap();
    drop(t);
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(v.join("tt"))
        .unwrap();
    fs::set_permissions(v.join("m"), fs::Permissions::from_mode(0o600)).unwrap();
    if is_root() {
        std::os::unix::fs::chown(v.join("o"), Some(4321), Some(8765)).unwrap();
    } else {
        strata_conformance::skip::print(f.test, "the chown part needs root");
    }
    let ts = Timestamps {
        last_access: Timespec {
            tv_sec: 1_111_111_111,
            tv_nsec: 1,
        },
        last_modification: Timespec {
            tv_sec: 1_222_222_222,
            tv_nsec: 333,
        },
    };
    rustix::fs::utimensat(CWD, v.join("u"), &ts, AtFlags::empty()).unwrap();
    rustix::fs::setxattr(v.join("x"), "user.new", b"v", XattrFlags::empty()).unwrap();
    rustix::fs::removexattr(v.join("rx"), "user.gone").unwrap();
    fs::hard_link(v.join("ln"), v.join("ln2")).unwrap();
    append(&v.join("sub/deep"), "+");

    let read = |p: &str| fs::read_to_string(v.join(p)).unwrap();
    assert_eq!(read("w"), "lower-w+more");
    assert_eq!(read("ow"), "lower-ow");
    assert_eq!(read("t"), "low");
    assert_eq!(read("tt"), "");
    assert_eq!(read("sub/deep"), "lower-deep+");
    assert_eq!(read("untouched"), "lower-untouched");
    let mode = fs::metadata(v.join("m")).unwrap().mode();
    assert_eq!(mode & 0o7777, 0o600);
    if is_root() {
        let o = fs::metadata(v.join("o")).unwrap();
        assert_eq!((o.uid(), o.gid()), (4321, 8765));
    }
    assert_eq!(
        times(&v.join("u")),
        ((1_111_111_111, 1), (1_222_222_222, 333))
    );
    assert_eq!(xattr(&v.join("x"), "user.new").as_deref(), Some(&b"v"[..]));
    assert_eq!(xattr(&v.join("rx"), "user.gone"), None);
    assert_eq!(
        xattr(&v.join("rx"), "user.stay").as_deref(),
        Some(&b"2"[..])
    );
    let (a, b) = (
        fs::metadata(v.join("ln")).unwrap(),
        fs::metadata(v.join("ln2")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    // The lower layer is never written.
    assert_eq!(describe(&f.diff("l0")), lower_before);
    assert_eq!(
        xattr(&f.diff("l0").join("rx"), "user.gone").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(xattr(&f.diff("l0").join("x"), "user.new"), None);
    let view = describe(&v);
    f.put_last("c").await;

    let mut want = vec![
        "ln", "ln2", "m", "rx", "sub", "sub/deep", "t", "tt", "u", "w", "x",
    ];
    if is_root() {
        want.push("o");
    }
    // Opening for writing copies up in fuse mode, whether or not anything is written; copy
    // mode sees no change in the file.
    if f.is_fuse() {
        want.push("ow");
    }
    want.sort();
    assert_eq!(names(&f.diff("c")), want);
    let d = describe(&f.diff("c"));
    let u = uid();
    assert_eq!(d["w"], format!("file 644 {u} \"lower-w+more\""));
    assert_eq!(d["t"], format!("file 644 {u} \"low\""));
    assert_eq!(d["m"], format!("file 600 {u} \"lower-m\""));
    assert!(d["ln2"].ends_with("==ln"), "{}", d["ln2"]);
    let dc = f.diff("c");
    // Only the mtime: describing the view above read `u`, which may move its atime.
    assert_eq!(times(&dc.join("u")).1, (1_222_222_222, 333));
    assert_eq!(xattr(&dc.join("x"), "user.new").as_deref(), Some(&b"v"[..]));
    assert_eq!(xattr(&dc.join("rx"), "user.gone"), None);
    assert_eq!(
        xattr(&dc.join("rx"), "user.stay").as_deref(),
        Some(&b"2"[..])
    );
    if is_root() {
        assert!(d["o"].starts_with("file 644 4321:8765 "), "{}", d["o"]);
    }
    assert_eq!(describe(&f.diff("l0")), lower_before);
    assert_eq!(f.fresh_view("c").await, view);
}

async fn copy_up_keeps_mode_owner_times_and_xattrs(f: U) {
    let owner = if is_root() { (1234, 5678) } else { (0, 0) };
    let meta = |e: Entry, mode, (secs, nanos), xattrs: &[(&str, &[u8])]| {
        let e = e.mode(mode).owner(owner.0, owner.1).mtime_ns(secs, nanos);
        xattrs.iter().fold(e, |e, (k, v)| e.xattr(k, v))
    };
    let file_x: &[(&str, &[u8])] = &[("user.a", b"1"), ("user.b", b"two")];
    let ft = (1_600_000_000, 123_456_789);
    f.image(
        "l0",
        None,
        make_tar(&with_parents(&[
            meta(
                Entry::dir("p"),
                0o710,
                (1_500_000_000, 7),
                &[("user.d", b"dir")],
            ),
            meta(Entry::dir("p/q"), 0o750, (1_500_000_001, 8), &[]),
            meta(Entry::file("p/q/f", "deep"), 0o640, ft, file_x),
            meta(Entry::file("keep", "k"), 0o640, ft, file_x),
            meta(Entry::file("app", "a"), 0o604, ft, file_x),
        ])),
    )
    .await;
    f.container("c", Some("l0")).await;
    let v = f.get("c").await;
    let want_owner = if is_root() {
        owner
    } else {
        strata_conformance::skip::print(f.test, "the owner part needs root");
        let m = fs::metadata(v.join("keep")).unwrap();
        (m.uid() as u64, m.gid() as u64)
    };
    let dir_times = (times(&v.join("p")), times(&v.join("p/q")));
    // Copy-ups that change neither contents nor times, and one that appends.
    rustix::fs::setxattr(v.join("keep"), "user.c", b"3", XattrFlags::empty()).unwrap();
    rustix::fs::setxattr(v.join("p/q/f"), "user.c", b"3", XattrFlags::empty()).unwrap();
    append(&v.join("app"), "+");

    let check = |root: &Path, when: &str| {
        for (p, mode) in [("keep", 0o640), ("p/q/f", 0o640), ("app", 0o604)] {
            let m = fs::symlink_metadata(root.join(p)).unwrap();
            assert_eq!(m.mode() & 0o7777, mode, "{when}: {p} mode");
            assert_eq!(
                (m.uid() as u64, m.gid() as u64),
                want_owner,
                "{when}: {p} owner"
            );
            assert_eq!(xattr(&root.join(p), "user.a").as_deref(), Some(&b"1"[..]));
            assert_eq!(xattr(&root.join(p), "user.b").as_deref(), Some(&b"two"[..]));
        }
        for p in ["keep", "p/q/f"] {
            assert_eq!(xattr(&root.join(p), "user.c").as_deref(), Some(&b"3"[..]));
            let (atime, mtime) = times(&root.join(p));
            assert_eq!(mtime, (ft.0 as i64, ft.1 as i64), "{when}: {p} mtime");
            assert_eq!(atime, (ft.0 as i64, ft.1 as i64), "{when}: {p} atime");
        }
        assert_eq!(fs::read_to_string(root.join("app")).unwrap(), "a+");
        let p = fs::symlink_metadata(root.join("p")).unwrap();
        assert_eq!(p.mode() & 0o7777, 0o710, "{when}: p mode");
        assert_eq!(
            (p.uid() as u64, p.gid() as u64),
            want_owner,
            "{when}: p owner"
        );
        assert_eq!(
            xattr(&root.join("p"), "user.d").as_deref(),
            Some(&b"dir"[..])
        );
        let q = fs::symlink_metadata(root.join("p/q")).unwrap();
        assert_eq!(q.mode() & 0o7777, 0o750, "{when}: p/q mode");
        // A child's copy-up does not change its directories' times.
        assert_eq!(
            (times(&root.join("p")).1, times(&root.join("p/q")).1),
            (dir_times.0.1, dir_times.1.1),
            "{when}: directory mtimes"
        );
    };
    check(&v, "view");
    f.put_last("c").await;
    assert_eq!(names(&f.diff("c")), ["app", "keep", "p", "p/q", "p/q/f"]);
    check(&f.diff("c"), "diff");
}

async fn hard_links_stay_linked_through_a_copy_up(f: U) {
    f.image(
        "l0",
        None,
        make_tar(&with_parents(&[
            Entry::file("h1", "linked"),
            Entry::hardlink("h2", "h1"),
            Entry::hardlink("sub/h3", "h1"),
            Entry::file("other", "o"),
        ])),
    )
    .await;
    f.container("c", Some("l0")).await;
    let v = f.get("c").await;
    append(&v.join("h1"), "+");
    for p in ["h1", "h2", "sub/h3"] {
        assert_eq!(fs::read_to_string(v.join(p)).unwrap(), "linked+", "{p}");
    }
    let ino = |p: &str| fs::metadata(v.join(p)).unwrap().ino();
    assert_eq!((ino("h2"), ino("sub/h3")), (ino("h1"), ino("h1")));
    assert_eq!(fs::metadata(v.join("h2")).unwrap().nlink(), 3);
    // Another write through another name lands in the same file.
    append(&v.join("sub/h3"), "!");
    assert_eq!(fs::read_to_string(v.join("h2")).unwrap(), "linked+!");
    f.put_last("c").await;
    assert_eq!(names(&f.diff("c")), ["h1", "h2", "sub", "sub/h3"]);
    let d = describe(&f.diff("c"));
    assert!(
        d["h2"].ends_with("==h1") && d["sub/h3"].ends_with("==h1"),
        "{d:?}"
    );
    assert!(d["h1"].contains("\"linked+!\""), "{}", d["h1"]);
    assert_eq!(
        fs::read_to_string(f.diff("l0").join("h2")).unwrap(),
        "linked"
    );
}

const GIB: u64 = 1 << 30;

async fn a_write_in_the_middle_of_a_1gib_lower_file(f: U) {
    // The lower file is made through its own layer's view: sparse, set_len.
    f.container("p", None).await;
    let pv = f.get("p").await;
    let big = fs::File::create(pv.join("big")).unwrap();
    big.set_len(GIB).unwrap();
    big.write_all_at(b"BEGIN", 0).unwrap();
    big.write_all_at(b"END!", GIB - 4).unwrap();
    drop(big);
    f.put_last("p").await;
    f.container("c", Some("p")).await;
    let v = f.get("c").await;
    assert_eq!(fs::metadata(v.join("big")).unwrap().len(), GIB);

    let mid = GIB / 2 + 3;
    let file = fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(v.join("big"))
        .unwrap();
    file.write_all_at(b"HELLO", mid).unwrap();
    let check = |f: &fs::File, what: &str| {
        let mut buf = vec![1u8; 8192];
        f.read_exact_at(&mut buf, mid - 4096).unwrap();
        assert!(buf[..4096].iter().all(|b| *b == 0), "{what}: zeros before");
        assert_eq!(&buf[4096..4101], b"HELLO", "{what}");
        assert!(buf[4101..].iter().all(|b| *b == 0), "{what}: zeros after");
        let mut b5 = [0u8; 5];
        f.read_exact_at(&mut b5, 0).unwrap();
        assert_eq!(&b5, b"BEGIN", "{what}");
        let mut b4 = [0u8; 4];
        f.read_exact_at(&mut b4, GIB - 4).unwrap();
        assert_eq!(&b4, b"END!", "{what}");
        assert_eq!(f.metadata().unwrap().len(), GIB, "{what}");
    };
    check(&file, "view, same fd");
    drop(file);
    check(&fs::File::open(v.join("big")).unwrap(), "view, reopened");
    let lower = fs::File::open(f.diff("p").join("big")).unwrap();
    let mut b5 = [1u8; 5];
    lower.read_exact_at(&mut b5, mid).unwrap();
    assert_eq!(b5, [0; 5], "the lower file is untouched");
    f.put_last("c").await;

    assert_eq!(names(&f.diff("c")), ["big"]);
    let up = fs::File::open(f.diff("c").join("big")).unwrap();
    check(&up, "diff");
    let used = up.metadata().unwrap().blocks() * 512;
    assert!(
        used < 64 << 20,
        "the copy-up stays sparse: {used} bytes allocated"
    );
}

async fn a_lower_directory_copies_up_without_turning_opaque(f: U) {
    f.image(
        "l0",
        None,
        make_tar(&with_parents(&[
            Entry::file("d/a", "a"),
            Entry::file("d/sub/b", "b"),
            Entry::file("x/c", "c"),
        ])),
    )
    .await;
    f.container("c", Some("l0")).await;
    let v = f.get("c").await;
    fs::set_permissions(v.join("d"), fs::Permissions::from_mode(0o700)).unwrap();
    rustix::fs::setxattr(v.join("x"), "user.k", b"v", XattrFlags::empty()).unwrap();
    assert_eq!(fs::metadata(v.join("d")).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(fs::read_to_string(v.join("d/sub/b")).unwrap(), "b");
    f.put_last("c").await;
    // The directories themselves, with their new attributes; not their children, no marker.
    assert_eq!(names(&f.diff("c")), ["d", "x"]);
    let d = fs::metadata(f.diff("c").join("d")).unwrap();
    assert_eq!(d.mode() & 0o7777, 0o700);
    assert_eq!(
        xattr(&f.diff("c").join("x"), "user.k").as_deref(),
        Some(&b"v"[..])
    );
    let view = f.fresh_view("c").await;
    assert!(
        view.contains_key("d/sub/b") && view.contains_key("x/c"),
        "{view:?}"
    );
}

const BIG_IO: usize = 32 << 20;

async fn large_sequential_writes_and_reads(f: U) {
    // A 32 MiB lower file, read whole; a 32 MiB new file, written and read in 1 MiB calls.
    f.container("p", None).await;
    let pv = f.get("p").await;
    let lower: Vec<u8> = (0..BIG_IO).map(|i| (i % 251) as u8).collect();
    fs::write(pv.join("lower"), &lower).unwrap();
    f.put_last("p").await;
    f.container("c", Some("p")).await;
    let v = f.get("c").await;
    assert!(
        fs::read(v.join("lower")).unwrap() == lower,
        "lower file read whole"
    );
    let data: Vec<u8> = (0..BIG_IO).map(|i| (i % 253) as u8 ^ 0x5a).collect();
    let mut w = fs::File::create(v.join("new")).unwrap();
    for chunk in data.chunks(1 << 20) {
        w.write_all(chunk).unwrap();
    }
    w.sync_all().unwrap();
    drop(w);
    let mut got = Vec::with_capacity(BIG_IO);
    let mut r = fs::File::open(v.join("new")).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut r, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    drop(r);
    assert!(got == data, "32 MiB written and read back");
    f.put_last("c").await;
    assert_eq!(names(&f.diff("c")), ["new"]);
    assert!(fs::read(f.diff("c").join("new")).unwrap() == data);
}
