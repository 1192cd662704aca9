//! Metadata and round trips (research/layer-security.md §5, cases 32-36): modes, owners,
//! xattrs, devices, mtimes, in every whiteout mode; and a differential test against GNU tar.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;
use strata_archive::ErrorKind;
use strata_archive::{ApplyOptions, WhiteoutMode};
use strata_conformance::tarfile::{Entry, Tar, header, make_tar};
use strata_conformance::{root_or_skip, skip};

const REMOVE: WhiteoutMode = WhiteoutMode::Remove;

/// A v2 `security.capability` value granting cap_net_raw (13), effective.
const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    0x00, 0x20, 0x00, 0x00, // permitted (low 32 bits): 1 << 13
    0x00, 0x00, 0x00, 0x00, // inheritable
    0x00, 0x00, 0x00, 0x00, // permitted (high)
    0x00, 0x00, 0x00, 0x00, // inheritable (high)
];

/// A layer with one of everything.
fn rich_layer() -> Vec<u8> {
    let long_dir = "l".repeat(150);
    let long_target = format!("/{}", "t".repeat(299));
    make_tar(&[
        Entry::dir("empty/").mtime(1_000),
        Entry::dir("tmp/").mode(0o1777),
        Entry::dir("bin/"),
        Entry::file("bin/su", "su binary").mode(0o4755),
        Entry::hardlink("bin/su-link", "bin/su"),
        Entry::dir("usr/"),
        Entry::dir("usr/bin/"),
        Entry::file("usr/bin/sg", "sg").mode(0o2755).owner(0, 50),
        Entry::dir("home/").owner(1000, 1000).mode(0o750),
        Entry::file("home/file", "user data")
            .owner(1000, 1001)
            .mode(0o640)
            .pax("mtime", "1600000000.123456789"),
        Entry::symlink("abs", "/usr/bin/sg").owner(1000, 1000),
        Entry::symlink("rel", "usr/bin/sg"),
        Entry::symlink("dangling", "/nonexistent"),
        Entry::symlink("longtarget", &long_target),
        Entry::fifo("run/fifo").mode(0o600),
        Entry::char_dev("dev/null", 1, 3),
        Entry::raw("dev/sda", b'4', 0o660).owner(0, 6),
        Entry::file(format!("{long_dir}/{}", "f".repeat(200)), "long name"),
        Entry::file("caps/ping", "ping")
            .mode(0o755)
            .xattr("security.capability", CAP_NET_RAW)
            .xattr("user.mime", "text/plain")
            .xattr("trusted.overlay.opaque", "y")
            .xattr("trusted.overlay.redirect", "/x")
            .xattr("user.overlay.metacopy", "")
            .xattr("trusted.other", "kept as root"),
        Entry::file("typebits", "x").mode(0o170777),
        Entry::dir("locked/").mode(0o000),
        Entry::file("locked/inside", "inside"),
        Entry::dir("locked/sub/").mode(0o000),
        Entry::file("locked/sub/deeper", "deeper"),
        Entry::dir("home/")
            .owner(1000, 1000)
            .mode(0o750)
            .mtime(1234),
    ])
}

#[test]
fn rich_layer_round_trip_in_every_mode() {
    if !root_or_skip!() {
        return;
    }
    for mode in MODES {
        let env = Env::new();
        let stats = env.apply(&rich_layer(), mode).unwrap();
        let long = format!("{}/{}", "l".repeat(150), "f".repeat(200));
        let long_target = format!("/{}", "t".repeat(299));
        let mut want = expect(&[
            ("empty", "d 755 0:0"),
            ("tmp", "d 1777 0:0"),
            ("bin", "d 755 0:0"),
            ("bin/su", "f 4755 0:0 su binary"),
            ("bin/su-link", "f 4755 0:0 su binary"),
            ("usr", "d 755 0:0"),
            ("usr/bin", "d 755 0:0"),
            ("usr/bin/sg", "f 2755 0:50 sg"),
            ("home", "d 750 1000:1000"),
            ("home/file", "f 640 1000:1001 user data"),
            ("abs", "l 1000:1000 -> /usr/bin/sg"),
            ("rel", "l 0:0 -> usr/bin/sg"),
            ("dangling", "l 0:0 -> /nonexistent"),
            ("run", "d 755 0:0"),
            ("run/fifo", "p 600 0:0"),
            ("dev", "d 755 0:0"),
            ("dev/null", "c 666 0:0 1:3"),
            ("dev/sda", "b 660 0:6 0:0"),
            ("caps", "d 755 0:0"),
            ("caps/ping", "f 755 0:0 ping"),
            ("typebits", "f 777 0:0 x"),
            ("locked", "d 0 0:0"),
            ("locked/inside", "f 644 0:0 inside"),
            ("locked/sub", "d 0 0:0"),
            ("locked/sub/deeper", "f 644 0:0 deeper"),
        ]);
        want.insert("l".repeat(150), "d 755 0:0".into());
        want.insert(long.clone(), "f 644 0:0 long name".into());
        want.insert("longtarget".into(), format!("l 0:0 -> {long_target}"));
        assert_eq!(env.tree(), want, "{mode:?}");
        assert_eq!(stats.entries, 25);
        let content = [
            "su binary",
            "sg",
            "user data",
            "long name",
            "ping",
            "x",
            "inside",
            "deeper",
        ];
        assert_eq!(
            stats.size,
            content.iter().map(|c| c.len() as u64).sum::<u64>()
        );

        let m = |p: &str| std::fs::symlink_metadata(env.path(p)).unwrap();
        assert_eq!(m("bin/su").ino(), m("bin/su-link").ino());
        assert_eq!(
            (m("home/file").mtime(), m("home/file").mtime_nsec()),
            (1_600_000_000, 123_456_789)
        );
        assert_eq!(
            m("home").mtime(),
            1234,
            "directory mtimes are set after their children"
        );
        assert_eq!(m("empty").mtime(), 1000);
        assert_eq!(m("abs").mtime(), 1_600_000_000);
        assert_eq!(m("locked").mtime(), 1_600_000_000);
        let x = |name: &str| get_xattr(&env.path("caps/ping"), name);
        assert_eq!(x("security.capability").as_deref(), Some(&CAP_NET_RAW[..]));
        assert_eq!(x("user.mime").as_deref(), Some(&b"text/plain"[..]));
        assert_eq!(x("trusted.other").as_deref(), Some(&b"kept as root"[..]));
        for dropped in [
            "trusted.overlay.opaque",
            "trusted.overlay.redirect",
            "user.overlay.metacopy",
        ] {
            assert_eq!(x(dropped), None, "{dropped}");
        }
    }
}

/// Without privilege options, owners are the caller's and devices are skipped.
#[test]
fn unprivileged_options() {
    let env = Env::new();
    let opts = ApplyOptions {
        whiteouts: REMOVE,
        same_owner: false,
        devices: false,
        lowers: None,
    };
    let stats = env
        .apply_opts(
            &make_tar(&[
                Entry::file("f", "x").owner(1000, 1000).mode(0o4750),
                Entry::char_dev("null", 1, 3),
                Entry::raw("sda", b'4', 0o660),
                Entry::fifo("fifo"),
            ]),
            &opts,
        )
        .unwrap();
    let me = me();
    assert_eq!(
        env.tree(),
        expect(&[
            ("f", &format!("f 4750 {me} x")),
            ("fifo", &format!("p 644 {me}"))
        ])
    );
    assert_eq!(stats.entries, 4);
}

/// Case 32: overlay's own xattrs from the archive are never written, on any kind of entry.
#[test]
fn case32_overlay_xattrs_are_dropped() {
    for mode in MODES {
        let env = Env::new();
        let mut es = Vec::new();
        for (name, e) in [
            ("d", Entry::dir("d")),
            ("f", Entry::file("f", "")),
            ("l", Entry::symlink("l", "f")),
        ] {
            let _ = name;
            es.push(
                e.xattr("trusted.overlay.opaque", "y")
                    .xattr("trusted.overlay.redirect", "/etc")
                    .xattr("trusted.overlay.metacopy", "")
                    .xattr("user.overlay.opaque", "y")
                    .xattr("user.overlay.origin", "x"),
            );
        }
        env.apply(&make_tar(&es), mode).unwrap();
        for p in ["d", "f", "l"] {
            let path = env.path(p);
            let mut buf = vec![0u8; 4096];
            let n = rustix::fs::llistxattr(&path, &mut buf).unwrap();
            let names: Vec<&[u8]> = buf[..n]
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .collect();
            assert!(
                !names.iter().any(|n| n.windows(8).any(|w| w == b"overlay.")),
                "{p} in {mode:?}: {:?}",
                names
                    .iter()
                    .map(|n| String::from_utf8_lossy(n))
                    .collect::<Vec<_>>()
            );
        }
    }
}

/// Case 33: absurd xattrs are a clean `InvalidArchive`.
#[test]
fn case33_bad_xattrs_are_rejected() {
    let env = Env::new();
    let long_name = format!("user.{}", "n".repeat(251));
    env.reject(
        &make_tar(&[Entry::file("f", "").xattr(&long_name, "v")]),
        REMOVE,
    );
    env.reject(
        &make_tar(&[Entry::file("f", "").pax("SCHILY.xattr.", "v")]),
        REMOVE,
    );
    env.reject(
        &make_tar(&[Entry::file("f", "").xattr("user.big", vec![b'v'; 64 * 1024 + 1])]),
        REMOVE,
    );
    assert!(env.tree().is_empty());
    // The limits themselves are fine (the filesystem may refuse a 64 KiB value: ext4 does
    // without ea_inode, and that is an I/O error, not a malformed archive).
    let ok_name = format!("user.{}", "n".repeat(250));
    env.apply(
        &make_tar(&[Entry::file("g", "").xattr(&ok_name, "v")]),
        REMOVE,
    )
    .unwrap();
    assert_eq!(
        get_xattr(&env.path("g"), &ok_name).as_deref(),
        Some(&b"v"[..])
    );
}

/// Case 34: setuid, setgid and sticky bits survive the chown (owner first, then mode).
#[test]
fn case34_special_mode_bits() {
    if !root_or_skip!() {
        return;
    }
    let env = Env::new();
    env.apply(
        &make_tar(&[
            Entry::file("suid", "x").mode(0o4755).owner(0, 0),
            Entry::file("suid-user", "x").mode(0o4711).owner(1000, 1000),
            Entry::file("sgid", "x").mode(0o2755).owner(1000, 50),
            Entry::dir("sticky").mode(0o1777),
            Entry::dir("sgid-dir").mode(0o2775).owner(0, 50),
        ]),
        REMOVE,
    )
    .unwrap();
    let mode = |p: &str| std::fs::metadata(env.path(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("suid"), 0o4755);
    assert_eq!(mode("suid-user"), 0o4711);
    assert_eq!(mode("sgid"), 0o2755);
    assert_eq!(mode("sticky"), 0o1777);
    assert_eq!(mode("sgid-dir"), 0o2775);
}

/// Case 35: type bits in the mode are ignored; a mode-0000 directory gets its children.
#[test]
fn case35_modes() {
    let env = Env::new();
    env.apply(
        &make_tar(&[
            Entry::file("f", "x").mode(0o170_644),
            Entry::dir("locked").mode(0o000),
            Entry::dir("locked/d").mode(0o000),
            Entry::file("locked/d/f", "inside").mode(0o000),
        ]),
        REMOVE,
    )
    .unwrap();
    let mode = |p: &str| std::fs::symlink_metadata(env.path(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("f"), 0o644);
    assert_eq!(mode("locked"), 0);
    if is_root() {
        assert_eq!(mode("locked/d"), 0);
        assert_eq!(mode("locked/d/f"), 0);
        assert_eq!(std::fs::read(env.path("locked/d/f")).unwrap(), b"inside");
    }
    // Let the temp dir be removed when not root.
    std::fs::set_permissions(env.path("locked"), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(env.path("locked/d"), PermissionsExt::from_mode(0o755)).unwrap();
}

/// Case 36: devices only with `devices`; numbers checked against the kernel's range.
#[test]
fn case36_devices() {
    let env = Env::new();
    env.reject(&make_tar(&[Entry::char_dev("big", 4096, 0)]), REMOVE);
    env.reject(&make_tar(&[Entry::char_dev("big", 1, 1 << 20)]), REMOVE);
    let mut b = Entry::raw("b", b'4', 0o600);
    b.pax.push(("comment".into(), b"x".to_vec()));
    let mut h = header(b"b", b'4', 0o600, 0, b"");
    // Base-256 major of 2^33.
    h.as_mut_bytes()[329..337].copy_from_slice(&[0x80, 0, 0, 0x02, 0, 0, 0, 0]);
    env.reject(&Tar::new().member(h, b"").finish(), REMOVE);
    assert!(env.tree().is_empty());
    if !root_or_skip!("the device creation part") {
        return;
    }
    env.apply(
        &make_tar(&[
            Entry::char_dev("zero", 1, 5),
            Entry::raw("sda", b'4', 0o660).mode(0o640),
            b,
        ]),
        REMOVE,
    )
    .unwrap();
    let m = std::fs::symlink_metadata(env.path("zero")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(
        (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev())),
        (1, 5)
    );
    assert!(
        std::fs::symlink_metadata(env.path("b"))
            .unwrap()
            .file_type()
            .is_block_device()
    );
}

/// Applying over an existing tree replaces non-directories and keeps directories.
#[test]
fn applying_over_existing_paths() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("dir/sub")).unwrap();
    std::fs::write(env.path("dir/sub/x"), b"lower").unwrap();
    std::fs::write(env.path("file"), b"lower").unwrap();
    std::fs::create_dir(env.path("was-dir")).unwrap();
    std::fs::write(env.path("was-dir/x"), b"lower").unwrap();
    std::fs::write(env.path("t"), b"target").unwrap();
    std::fs::hard_link(env.path("t"), env.path("hl")).unwrap();
    env.apply(
        &make_tar(&[
            Entry::dir("dir").mode(0o700),
            Entry::file("file", "layer"),
            Entry::file("was-dir", "now a file"),
            Entry::file("hl", "new"),
        ]),
        REMOVE,
    )
    .unwrap();
    assert_eq!(std::fs::read(env.path("dir/sub/x")).unwrap(), b"lower");
    assert_eq!(
        std::fs::metadata(env.path("dir")).unwrap().mode() & 0o7777,
        0o700
    );
    assert_eq!(std::fs::read(env.path("file")).unwrap(), b"layer");
    assert_eq!(std::fs::read(env.path("was-dir")).unwrap(), b"now a file");
    assert_eq!(std::fs::read(env.path("t")).unwrap(), b"target");
    assert_eq!(std::fs::read(env.path("hl")).unwrap(), b"new");
}

/// The tree GNU tar archives is the tree `apply_tar` makes (a differential test).
#[test]
fn gnu_tar_differential() {
    if Command::new("tar").arg("--version").output().is_err() {
        skip!("no tar binary");
        return;
    }
    let env = Env::new();
    let src = env.tmp.path().join("src");
    make_tree(&src);
    for format in ["posix", "gnu", "ustar"] {
        let out = env.tmp.path().join(format!("{format}.tar"));
        let mut cmd = Command::new("tar");
        cmd.arg(format!("--format={format}"))
            .arg("--numeric-owner")
            .args(["-C"])
            .arg(&src);
        if format == "posix" {
            cmd.args(["--xattrs", "--xattrs-include=user.*"]);
        }
        let tar_out = cmd.arg("-cf").arg(&out).arg(".").output().unwrap();
        if format == "ustar" && !tar_out.status.success() {
            // ustar cannot hold the long names: expected.
            continue;
        }
        assert!(
            tar_out.status.success(),
            "{}",
            String::from_utf8_lossy(&tar_out.stderr)
        );
        let root = env.tmp.path().join(format!("root-{format}"));
        std::fs::create_dir(&root).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        strata_archive::apply_tar(&root, &mut &bytes[..], &ApplyOptions::new(REMOVE)).unwrap();
        assert_eq!(tree(&root), tree(&src), "{format}");
        assert_eq!(mtimes(&root), mtimes(&src), "{format}");
        if format == "posix" {
            assert_eq!(
                get_xattr(&root.join("xattr"), "user.k").as_deref(),
                Some(&b"v"[..])
            );
        }
    }
}

fn make_tree(src: &Path) {
    std::fs::create_dir_all(src.join("a/b/c")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::write(src.join("a/file"), b"hello").unwrap();
    std::fs::write(src.join("a/b/c/deep"), vec![7u8; 100_000]).unwrap();
    std::fs::hard_link(src.join("a/file"), src.join("hardlink")).unwrap();
    std::os::unix::fs::symlink("a/file", src.join("rel")).unwrap();
    std::os::unix::fs::symlink("/a/file", src.join("abs")).unwrap();
    std::os::unix::fs::symlink("nowhere", src.join("dangling")).unwrap();
    let long = "n".repeat(180);
    std::fs::write(src.join(&long), b"long").unwrap();
    std::os::unix::fs::symlink("t".repeat(250), src.join("longlink")).unwrap();
    std::fs::write(src.join("suid"), b"x").unwrap();
    std::fs::set_permissions(src.join("suid"), PermissionsExt::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(src.join("empty"), PermissionsExt::from_mode(0o1777)).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    std::fs::write(src.join("xattr"), b"x").unwrap();
    rustix::fs::setxattr(
        src.join("xattr"),
        "user.k",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    for (i, p) in ["a/file", "a/b", "a", "empty", "suid", "fifo", "xattr"]
        .iter()
        .enumerate()
    {
        let t = rustix::fs::Timespec {
            tv_sec: 1_500_000_000 + i as i64,
            tv_nsec: 0,
        };
        let ts = rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            src.join(p),
            &ts,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
}

/// Whole-second mtimes of everything but symlinks (GNU tar stores their time, but tar
/// implementations differ on restoring it) and the root.
fn mtimes(root: &Path) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = tree(root)
        .keys()
        .filter_map(|k| {
            let m = std::fs::symlink_metadata(root.join(k)).unwrap();
            (!m.file_type().is_symlink()).then(|| (k.clone(), m.mtime()))
        })
        .collect();
    out.sort();
    out
}

/// An `Err` from a nonsense option never panics: the root must exist.
#[test]
fn missing_root_is_not_found() {
    let env = Env::new();
    let err = strata_archive::apply_tar(
        &env.tmp.path().join("missing"),
        &mut &b""[..],
        &ApplyOptions::new(REMOVE),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// Modes the umask would cut, and xattrs on symlinks and FIFOs (set without following).
#[test]
fn special_files_modes_and_xattrs() {
    let env = Env::new();
    let target = env.outside.join("passwd");
    let mut es = vec![
        Entry::fifo("fifo-666").mode(0o666),
        Entry::fifo("fifo-sticky").mode(0o1777),
        // user.* is refused by the kernel on symlinks and FIFOs: skipped, not an error.
        Entry::symlink("link", target.as_os_str().as_encoded_bytes()).xattr("user.x", "v"),
    ];
    if is_root() {
        es.push(
            Entry::symlink("tlink", target.as_os_str().as_encoded_bytes())
                .xattr("trusted.t", "on the link"),
        );
        es.push(Entry::fifo("tfifo").xattr("trusted.t", "on the fifo"));
    }
    env.apply(&make_tar(&es), REMOVE).unwrap();
    let mode = |p: &str| std::fs::symlink_metadata(env.path(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("fifo-666"), 0o666);
    assert_eq!(mode("fifo-sticky"), 0o1777);
    assert_eq!(get_xattr(&env.path("link"), "user.x"), None);
    assert_eq!(get_xattr(&target, "user.x"), None);
    if root_or_skip!("the trusted xattrs on a symlink and a FIFO part") {
        assert_eq!(
            get_xattr(&env.path("tlink"), "trusted.t").as_deref(),
            Some(&b"on the link"[..])
        );
        assert_eq!(
            get_xattr(&env.path("tfifo"), "trusted.t").as_deref(),
            Some(&b"on the fifo"[..])
        );
        assert_eq!(
            get_xattr(&target, "trusted.t"),
            None,
            "followed the symlink"
        );
    }
    env.check_outside();
}
