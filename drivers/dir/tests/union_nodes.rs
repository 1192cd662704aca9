//! Special files and durability calls through the view, in each mount mode: symlinks, fifos,
//! device nodes, fsync, fdatasync and syncfs.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use common::modes::U;
use common::*;
use rustix::fs::{CWD, FileType, Mode};
use strata_conformance::tarfile::{Entry, make_tar, with_parents};

per_mode!(symlinks_fifos_and_devices, fsync_and_syncfs);

async fn symlinks_fifos_and_devices(f: U) {
    f.image(
        "l0",
        None,
        make_tar(&with_parents(&[
            Entry::symlink("ls", "target-of-lower"),
            Entry::fifo("lfifo"),
            Entry::file("t", "text"),
            Entry::symlink("lt", "t"),
        ])),
    )
    .await;
    f.container("c", Some("l0")).await;
    let v = f.get("c").await;

    assert_eq!(
        fs::read_link(v.join("ls")).unwrap().to_str(),
        Some("target-of-lower")
    );
    assert!(fs::symlink_metadata(v.join("ls")).unwrap().is_symlink());
    assert_eq!(fs::read_to_string(v.join("lt")).unwrap(), "text");
    assert!(
        fs::symlink_metadata(v.join("lfifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );

    std::os::unix::fs::symlink("t", v.join("s")).unwrap();
    assert_eq!(fs::read_link(v.join("s")).unwrap().to_str(), Some("t"));
    assert_eq!(fs::read_to_string(v.join("s")).unwrap(), "text");
    rustix::fs::mknodat(
        CWD,
        v.join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    let fifo = fs::symlink_metadata(v.join("fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o640);
    let dev = rustix::fs::makedev(1, 3);
    if is_root() {
        rustix::fs::mknodat(
            CWD,
            v.join("null"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            dev,
        )
        .unwrap();
        let m = fs::symlink_metadata(v.join("null")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), dev);
        // A lower symlink's owner changes: the link itself is copied up.
        rustix::fs::chownat(
            CWD,
            v.join("ls"),
            Some(rustix::fs::Uid::from_raw(77)),
            Some(rustix::fs::Gid::from_raw(88)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let m = fs::symlink_metadata(v.join("ls")).unwrap();
        assert_eq!((m.uid(), m.gid()), (77, 88));
    } else {
        strata_conformance::skip::print(f.test, "the device node and lchown parts need root");
    }
    let view = describe(&v);
    f.put_last("c").await;

    let mut want = vec!["fifo", "s"];
    if is_root() {
        want.extend(["ls", "null"]);
        want.sort();
    }
    assert_eq!(names(&f.diff("c")), want);
    let d = describe(&f.diff("c"));
    assert_eq!(d["s"], "link -> t");
    assert!(d["fifo"].starts_with("fifo 640 "), "{}", d["fifo"]);
    if is_root() {
        assert_eq!(d["ls"], "link -> target-of-lower");
        let m = fs::symlink_metadata(f.diff("c").join("ls")).unwrap();
        assert_eq!((m.uid(), m.gid()), (77, 88));
        let m = fs::symlink_metadata(f.diff("c").join("null")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!((m.rdev(), m.mode() & 0o7777), (dev, 0o600));
    }
    assert_eq!(f.fresh_view("c").await, view);
}

async fn fsync_and_syncfs(f: U) {
    f.image(
        "l0",
        None,
        make_tar(&with_parents(&[
            Entry::file("l", "lower"),
            Entry::file("w", "w"),
        ])),
    )
    .await;
    f.container("c", Some("l0")).await;
    let v = f.get("c").await;

    // fsync of a lower file opened for reading is not a write: no copy-up.
    let l = fs::File::open(v.join("l")).unwrap();
    l.sync_all().unwrap();
    l.sync_data().unwrap();
    drop(l);
    let mut n = fs::File::create(v.join("n")).unwrap();
    n.write_all(b"new").unwrap();
    n.sync_data().unwrap();
    n.write_all(b"+").unwrap();
    n.sync_all().unwrap();
    drop(n);
    let mut w = fs::OpenOptions::new()
        .append(true)
        .open(v.join("w"))
        .unwrap();
    w.write_all(b"+").unwrap();
    w.sync_all().unwrap();
    drop(w);
    let root = fs::File::open(&v).unwrap();
    root.sync_all().unwrap();
    rustix::fs::syncfs(&root).unwrap();
    drop(root);
    assert_eq!(fs::read_to_string(v.join("n")).unwrap(), "new+");
    assert_eq!(fs::read_to_string(v.join("w")).unwrap(), "w+");
    f.put_last("c").await;
    assert_eq!(names(&f.diff("c")), ["n", "w"]);
    assert_eq!(fs::read_to_string(f.diff("c").join("n")).unwrap(), "new+");
    assert_eq!(fs::read_to_string(f.diff("c").join("w")).unwrap(), "w+");
}
