//! `archive::write_tar` on real trees: order, determinism, every file type, whiteout formats,
//! and GNU tar reading what it writes.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;
use rustix::fs::FileType;
use strata_archive::WhiteoutFormat;
use strata_conformance::{root_or_skip, skip};
use tar::EntryType;

const AUFS: WhiteoutFormat = WhiteoutFormat::Aufs;
const OVERLAY: WhiteoutFormat = WhiteoutFormat::Overlay { user_xattr: false };

type Step = Box<dyn Fn(&Path)>;

/// A tree with a bit of everything an unprivileged user can make, created in one order or the
/// reverse.
fn build(root: &Path, reversed: bool) {
    let mut steps: Vec<Step> = vec![
        Box::new(|r| mkdir(&r.join("etc"))),
        Box::new(|r| mkdir(&r.join("usr"))),
        Box::new(|r| mkdir(&r.join("a.b"))),
        Box::new(|r| mkdir(&r.join("a"))),
    ];
    let files: Vec<Step> = vec![
        Box::new(|r| write(&r.join("etc/passwd"), b"root:x:0:0\n")),
        Box::new(|r| write(&r.join("etc/.wh.shadow"), b"")),
        Box::new(|r| write(&r.join("usr/big"), &vec![7u8; 3 * 1024 * 1024 + 5])),
        Box::new(|r| write(&r.join("a/z"), b"z")),
        Box::new(|r| write(&r.join("a/B"), b"B")),
        Box::new(|r| write(&r.join("a.b/x"), b"x")),
        Box::new(|r| ln_s("../etc/passwd", &r.join("a/link"))),
    ];
    if reversed {
        steps.reverse();
    }
    for s in &steps {
        s(root);
    }
    let mut files = files;
    if reversed {
        files.reverse();
    }
    for f in &files {
        f(root);
    }
    chmod(&root.join("etc/.wh.shadow"), 0o600);
    freeze(root, 1_600_000_000);
}

#[test]
fn same_tree_gives_the_same_bytes_whatever_the_creation_order() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    build(one.path(), false);
    build(two.path(), true);
    let a = tar_of_dir(one.path(), AUFS);
    let b = tar_of_dir(one.path(), AUFS);
    assert_eq!(a, b, "written twice");
    let c = tar_of_dir(two.path(), AUFS);
    assert_eq!(a, c, "built in another order");
}

#[test]
fn entries_are_sorted_directories_first_whiteouts_first() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), false);
    let entries = read_tar(&tar_of_dir(tmp.path(), AUFS));
    assert_eq!(
        names(&entries),
        [
            "a/",
            "a/B",
            "a/link",
            "a/z",
            "a.b/",
            "a.b/x",
            "etc/",
            "etc/.wh.shadow",
            "etc/passwd",
            "usr/",
            "usr/big",
        ]
    );
    let passwd = find(&entries, "etc/passwd");
    assert_eq!(passwd.data, b"root:x:0:0\n");
    assert_eq!(passwd.kind, EntryType::Regular);
    assert_eq!(passwd.mtime, 1_600_000_000);
    let big = find(&entries, "usr/big");
    assert_eq!(big.data, vec![7u8; 3 * 1024 * 1024 + 5]);
    let link = find(&entries, "a/link");
    assert_eq!(link.kind, EntryType::Symlink);
    assert_eq!(link.link.as_deref(), Some(&b"../etc/passwd"[..]));
    let wh = find(&entries, "etc/.wh.shadow");
    assert_eq!(
        (wh.kind, wh.mode, wh.data.len()),
        (EntryType::Regular, 0o600, 0)
    );
}

#[test]
fn whiteouts_sort_before_their_siblings_and_the_opaque_marker_first() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    mkdir(&r.join("d"));
    for n in [
        "0",
        "A",
        ".a",
        ".wh.zz",
        ".wh..wh..opq",
        ".wh..a",
        ".wh..wh.aufs",
    ] {
        write(&r.join("d").join(n), b"");
    }
    mkdir(&r.join(".wh..wh.plnk"));
    write(&r.join(".wh..wh.plnk/123.456"), b"hidden");
    let entries = read_tar(&tar_of_dir(r, AUFS));
    assert_eq!(
        names(&entries),
        [
            "d/",
            "d/.wh..wh..opq",
            "d/.wh..a",
            "d/.wh.zz",
            "d/.a",
            "d/0",
            "d/A"
        ]
    );
}

#[test]
fn aufs_whiteouts_keep_their_attributes_and_lose_content_and_xattrs() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    write(&r.join(".wh.gone"), b"not empty");
    chmod(&r.join(".wh.gone"), 0o444);
    set_mtime(&r.join(".wh.gone"), 1234, 0);
    let entries = read_tar(&tar_of_dir(r, AUFS));
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.path, ".wh.gone");
    assert_eq!((e.kind, e.mode, e.mtime), (EntryType::Regular, 0o444, 1234));
    assert!(e.data.is_empty());
    assert!(e.pax.is_empty());
}

#[test]
fn hardlinks_become_links_to_the_first_name() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    mkdir(&r.join("d"));
    write(&r.join("d/b"), b"shared");
    std::fs::hard_link(r.join("d/b"), r.join("a")).unwrap();
    std::fs::hard_link(r.join("d/b"), r.join("d/c")).unwrap();
    write(&r.join("single"), b"one");
    let entries = read_tar(&tar_of_dir(r, AUFS));
    assert_eq!(names(&entries), ["a", "d/", "d/b", "d/c", "single"]);
    let a = find(&entries, "a");
    assert_eq!(
        (a.kind, a.data.as_slice()),
        (EntryType::Regular, &b"shared"[..])
    );
    for n in ["d/b", "d/c"] {
        let e = find(&entries, n);
        assert_eq!(e.kind, EntryType::Link, "{n}");
        assert_eq!(e.link.as_deref(), Some(&b"a"[..]));
        assert!(e.data.is_empty());
    }
    assert_eq!(find(&entries, "single").kind, EntryType::Regular);
}

#[test]
fn long_names_and_link_targets_use_pax() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    let long_dir = "d".repeat(120);
    let long_file = "f".repeat(200);
    mkdir(&r.join(&long_dir));
    write(&r.join(&long_dir).join(&long_file), b"deep");
    let target = format!("/{}", "t".repeat(300));
    ln_s(&target, &r.join("s"));
    std::fs::hard_link(
        r.join(&long_dir).join(&long_file),
        r.join(&long_dir).join("h"),
    )
    .unwrap();
    let bytes = tar_of_dir(r, AUFS);
    let entries = read_tar(&bytes);
    let file = format!("{long_dir}/{long_file}");
    assert_eq!(
        names(&entries),
        [
            format!("{long_dir}/"),
            format!("{long_dir}/{long_file}"),
            format!("{long_dir}/h"),
            "s".into()
        ]
    );
    assert_eq!(find(&entries, &file).data, b"deep");
    let s = find(&entries, "s");
    assert_eq!(s.link.as_deref(), Some(target.as_bytes()));
    assert!(s.pax.iter().any(|(k, _)| k == "linkpath"));
    let h = find(&entries, &format!("{long_dir}/h"));
    assert_eq!(h.link.as_deref(), Some(file.as_bytes()));

    // GNU tar reads the same names.
    let Some(listing) = gnu_tar(&["-tf", "-"], Some(&bytes), r) else {
        skip!("the GNU tar part: /usr/bin/tar is not installed");
        return;
    };
    let listed: Vec<&str> = listing.lines().collect();
    assert_eq!(listed, names(&entries));
}

#[test]
fn mtime_is_whole_seconds_and_modes_keep_special_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    write(&r.join("suid"), b"");
    chmod(&r.join("suid"), 0o4755);
    write(&r.join("sgid"), b"");
    chmod(&r.join("sgid"), 0o2711);
    mkdir(&r.join("tmp"));
    chmod(&r.join("tmp"), 0o1777);
    set_mtime(&r.join("suid"), 1_700_000_000, 999_999_999);
    let fifo = r.join("fifo");
    mknod(&fifo, FileType::Fifo, 0o640, 0, 0);
    let sock = std::os::unix::net::UnixListener::bind(r.join("sock")).unwrap();
    let entries = read_tar(&tar_of_dir(r, AUFS));
    drop(sock);
    assert_eq!(
        names(&entries),
        ["fifo", "sgid", "suid", "tmp/"],
        "the socket is left out"
    );
    assert_eq!(find(&entries, "suid").mode, 0o4755);
    assert_eq!(find(&entries, "suid").mtime, 1_700_000_000);
    assert_eq!(find(&entries, "sgid").mode, 0o2711);
    assert_eq!(find(&entries, "tmp/").mode, 0o1777);
    assert_eq!(find(&entries, "tmp/").kind, EntryType::Directory);
    let f = find(&entries, "fifo");
    assert_eq!((f.kind, f.mode), (EntryType::Fifo, 0o640));
    let me = rustix::process::geteuid().as_raw() as u64;
    assert!(entries.iter().all(|e| e.uid == me));
}

#[test]
fn owners_devices_and_capabilities_as_root() {
    if !root_or_skip!() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    mknod(&r.join("null"), FileType::CharacterDevice, 0o666, 1, 3);
    mknod(&r.join("loop9"), FileType::BlockDevice, 0o660, 7, 9);
    write(&r.join("ping"), b"\x7fELF");
    chmod(&r.join("ping"), 0o755);
    setxattr(&r.join("ping"), "security.capability", &capability(13));
    chown(&r.join("ping"), 1000, 4_000_000_000);
    setxattr(&r.join("ping"), "security.capability", &capability(13));
    setxattr(&r.join("ping"), "trusted.overlay.origin", b"xx");
    setxattr(&r.join("ping"), "trusted.other", b"t");
    let entries = read_tar(&tar_of_dir(r, AUFS));
    let null = find(&entries, "null");
    assert_eq!(
        (null.kind, null.dev, null.mode),
        (EntryType::Char, Some((1, 3)), 0o666)
    );
    let lp = find(&entries, "loop9");
    assert_eq!((lp.kind, lp.dev), (EntryType::Block, Some((7, 9))));
    let ping = find(&entries, "ping");
    assert_eq!((ping.uid, ping.gid), (1000, 4_000_000_000));
    assert_eq!(ping.xattr("security.capability"), Some(&capability(13)[..]));
    assert_eq!(ping.xattr("trusted.other"), Some(&b"t"[..]));
    assert!(ping.xattr("trusted.overlay.origin").is_none());
    assert!(
        ping.pax
            .iter()
            .any(|(k, v)| k == "gid" && v == b"4000000000")
    );
}

#[test]
fn user_xattrs_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    mkdir(&r.join("d"));
    write(&r.join("d/f"), b"");
    if rustix::fs::lsetxattr(
        r.join("d/f"),
        "user.test",
        b"v\0bin",
        rustix::fs::XattrFlags::empty(),
    )
    .is_err()
    {
        skip!("no user xattrs on this filesystem");
        return;
    }
    setxattr(&r.join("d"), "user.dir", b"1");
    setxattr(&r.join("d"), "user.overlay.opaque", b"y");
    let entries = read_tar(&tar_of_dir(r, AUFS));
    assert_eq!(
        find(&entries, "d/f").xattr("user.test"),
        Some(&b"v\0bin"[..])
    );
    let d = find(&entries, "d/");
    assert_eq!(d.xattr_names(), ["user.dir"]);
    // In AUFS form the overlay xattr means nothing: no marker, and still never exported.
    assert_eq!(names(&entries), ["d/", "d/f"]);
}

#[test]
fn overlay_whiteouts_and_opaque_dirs_become_aufs_entries() {
    if !root_or_skip!() {
        return;
    }
    for user_xattr in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let prefix = if user_xattr { "user" } else { "trusted" };
        mkdir(&r.join("o"));
        chmod(&r.join("o"), 0o2750);
        chown(&r.join("o"), 5, 6);
        set_mtime(&r.join("o"), 777, 0);
        setxattr(&r.join("o"), &format!("{prefix}.overlay.opaque"), b"y");
        setxattr(&r.join("o"), &format!("{prefix}.overlay.impure"), b"y");
        write(&r.join("o/kept"), b"k");
        mknod(&r.join("o/gone"), FileType::CharacterDevice, 0o000, 0, 0);
        chown(&r.join("o/gone"), 3, 4);
        set_mtime(&r.join("o/gone"), 555, 0);
        mknod(&r.join("null"), FileType::CharacterDevice, 0o666, 1, 3);
        mkdir(&r.join("notopaque"));
        setxattr(
            &r.join("notopaque"),
            &format!("{prefix}.overlay.opaque"),
            b"n",
        );
        let format = WhiteoutFormat::Overlay { user_xattr };
        let bytes = tar_of_dir(r, format);
        let entries = read_tar(&bytes);
        assert_eq!(
            names(&entries),
            [
                "notopaque/",
                "null",
                "o/",
                "o/.wh..wh..opq",
                "o/.wh.gone",
                "o/kept"
            ],
            "user_xattr={user_xattr}"
        );
        let opq = find(&entries, "o/.wh..wh..opq");
        assert_eq!(
            (
                opq.kind,
                opq.mode,
                opq.uid,
                opq.gid,
                opq.mtime,
                opq.data.len()
            ),
            (EntryType::Regular, 0o750, 5, 6, 0, 0)
        );
        let gone = find(&entries, "o/.wh.gone");
        assert_eq!(
            (gone.kind, gone.mode, gone.uid, gone.gid, gone.mtime),
            (EntryType::Regular, 0o000, 3, 4, 555)
        );
        assert_eq!(find(&entries, "null").kind, EntryType::Char);
        for e in &entries {
            for x in e.xattr_names() {
                assert!(!x.contains("overlay"), "{} carries {x}", e.path);
            }
        }
        assert_eq!(bytes, tar_of_dir(r, format), "deterministic");
    }
}

#[test]
fn overlay_whiteouts_sharing_one_inode_are_not_hardlinks() {
    if !root_or_skip!() {
        return;
    }
    // overlayfs links its whiteouts to one shared inode.
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    mknod(&r.join("a"), FileType::CharacterDevice, 0, 0, 0);
    std::fs::hard_link(r.join("a"), r.join("b")).unwrap();
    let entries = read_tar(&tar_of_dir(r, OVERLAY));
    assert_eq!(names(&entries), [".wh.a", ".wh.b"]);
    assert!(entries.iter().all(|e| e.kind == EntryType::Regular));
}

#[test]
fn a_symlink_to_a_host_file_is_written_as_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    ln_s("/etc/shadow", &tmp.path().join("x"));
    ln_s("/etc", &tmp.path().join("e"));
    let entries = read_tar(&tar_of_dir(tmp.path(), AUFS));
    assert_eq!(names(&entries), ["e", "x"]);
    assert!(
        entries
            .iter()
            .all(|e| e.kind == EntryType::Symlink && e.data.is_empty())
    );
}

#[test]
fn a_missing_root_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let err = strata_archive::write_tar(
        &tmp.path().join("nope"),
        &mut out,
        &strata_archive::WriteOptions { whiteouts: AUFS },
    )
    .unwrap_err();
    assert_eq!(err.kind(), strata_archive::ErrorKind::NotFound);
}

#[test]
fn gnu_tar_extracts_the_same_tree() {
    let src = tempfile::tempdir().unwrap();
    let r = src.path();
    build(r, false);
    std::fs::remove_file(r.join("etc/.wh.shadow")).unwrap(); // GNU tar would make it a file
    write(&r.join("a/exec"), b"#!/bin/sh\n");
    chmod(&r.join("a/exec"), 0o4755);
    std::fs::hard_link(r.join("a/z"), r.join("usr/z2")).unwrap();
    let long = "l".repeat(150);
    write(&r.join("usr").join(&long), b"long");
    let xattrs = rustix::fs::lsetxattr(
        r.join("a/B"),
        "user.k",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
    if is_root() {
        chown(&r.join("a/B"), 123, 456);
    }
    freeze(r, 1_650_000_000);
    let bytes = tar_of_dir(r, AUFS);

    let dst = tempfile::tempdir().unwrap();
    let mut args = vec!["--xattrs", "--xattrs-include=*", "-xpf", "-"];
    if is_root() {
        args.push("--same-owner");
    }
    if gnu_tar(&args, Some(&bytes), dst.path()).is_none() {
        skip!("the GNU tar part: /usr/bin/tar is not installed");
        return;
    }
    let d = dst.path();
    assert_eq!(std::fs::read(d.join("a.b/x")).unwrap(), b"x");
    assert_eq!(std::fs::read(d.join("usr").join(&long)).unwrap(), b"long");
    assert_eq!(
        std::fs::read(d.join("usr/big")).unwrap().len(),
        3 * 1024 * 1024 + 5
    );
    assert_eq!(
        std::fs::read_link(d.join("a/link")).unwrap(),
        Path::new("../etc/passwd")
    );
    let md = |p: &str| std::fs::symlink_metadata(d.join(p)).unwrap();
    assert_eq!(md("a/exec").mode() & 0o7777, 0o4755);
    assert_eq!(md("a/z").ino(), md("usr/z2").ino(), "hardlink kept");
    assert_eq!(md("etc/passwd").mtime(), 1_650_000_000);
    if xattrs {
        let v = rustix::fs::lgetxattr(d.join("a/B"), "user.k", &mut [0u8; 16]).unwrap();
        assert_eq!(v, 1);
    }
    if is_root() {
        assert_eq!((md("a/B").uid(), md("a/B").gid()), (123, 456));
    }
    // And the naive diff sees no difference between the two trees.
    let changes = strata_archive::changes_dirs(d, Some(r)).unwrap();
    assert!(changes.is_empty(), "{changes:?}");
}

/// Runs GNU tar in `dir` with `input` on stdin; `None` if it is not installed (the caller
/// skips, saying so).
fn gnu_tar(args: &[&str], input: Option<&[u8]>, dir: &Path) -> Option<String> {
    use std::io::Write;
    let tar = Path::new("/usr/bin/tar");
    if !tar.exists() {
        return None;
    }
    let mut child = Command::new(tar)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.unwrap_or_default().to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(
        out.status.success(),
        "tar {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "tar warned: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}
