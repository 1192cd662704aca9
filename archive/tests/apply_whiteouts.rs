//! Whiteouts in the three modes (research/layer-security.md §5, cases 22-31): nothing outside
//! the root is ever deleted, same-layer content survives its own whiteouts, and many opaque
//! markers stay linear.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::{Duration, Instant};

use common::*;
use strata_archive::{ApplyOptions, WhiteoutMode};
use strata_conformance::tarfile::{Entry, Tar, make_tar};
use strata_conformance::{root_or_skip, skip};

const KEEP: WhiteoutMode = WhiteoutMode::Keep;
const REMOVE: WhiteoutMode = WhiteoutMode::Remove;
const OVERLAY: WhiteoutMode = WhiteoutMode::Overlay { user_xattr: false };
const OVERLAY_USER: WhiteoutMode = WhiteoutMode::Overlay { user_xattr: true };

fn owner() -> String {
    if is_root() { "0:0".into() } else { me() }
}

/// A lower layer in the root: `keep`, `etc/passwd`, `a/old`, `a/b/oldb`.
fn lower(env: &Env) {
    std::fs::write(env.path("keep"), b"keep").unwrap();
    std::fs::create_dir_all(env.path("etc")).unwrap();
    std::fs::write(env.path("etc/passwd"), b"lower passwd").unwrap();
    std::fs::create_dir_all(env.path("a/b")).unwrap();
    std::fs::write(env.path("a/old"), b"old").unwrap();
    std::fs::write(env.path("a/b/oldb"), b"oldb").unwrap();
}

fn is_whiteout_dev(path: &std::path::Path) -> bool {
    let m = std::fs::symlink_metadata(path).unwrap();
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Case 22: whiteouts naming a directory or its parent reject the archive; nothing deleted.
#[test]
fn case22_invalid_whiteouts_are_rejected() {
    for mode in MODES {
        for name in [
            ".wh..",
            ".wh...",
            "etc/.wh..",
            ".wh.",
            "a/b/.wh...",
            ".wh../x",
        ] {
            let env = Env::new();
            lower(&env);
            let before = env.tree();
            env.reject(&make_tar(&[Entry::file(name, "")]), mode);
            assert_eq!(env.tree(), before, "{name} in {mode:?}");
        }
    }
}

/// A whiteout name used as a directory on the way rejects the archive.
#[test]
fn whiteout_as_directory_is_rejected() {
    for mode in MODES {
        let env = Env::new();
        env.reject(&make_tar(&[Entry::file(".wh.x/y", "")]), mode);
        env.reject(&make_tar(&[Entry::file("a/.wh..wh..opq/y", "")]), mode);
        assert!(env.tree().is_empty());
    }
}

/// Case 23: a whiteout under a symlinked directory resolves in-root.
#[test]
fn case23_whiteout_through_symlink_stays_in_root() {
    for mode in MODES {
        let env = Env::new();
        let inside = env.root.join(env.outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("passwd"), b"layer copy").unwrap();
        std::os::unix::fs::symlink(&env.outside, env.path("le")).unwrap();
        if mode != KEEP && mode != REMOVE && !is_root() {
            skip!("the overlay part needs root for mknod");
            continue;
        }
        env.apply(&make_tar(&[Entry::file("le/.wh.passwd", "")]), mode)
            .unwrap();
        match mode {
            KEEP => {
                assert!(inside.join(".wh.passwd").is_file());
                assert!(inside.join("passwd").is_file());
            }
            REMOVE => assert!(!inside.join("passwd").exists()),
            _ => assert!(is_whiteout_dev(&inside.join("passwd"))),
        }
        env.check_outside();
    }
}

/// Case 24: the whiteout of a symlink removes the symlink, not its target.
#[test]
fn case24_whiteout_of_symlink_removes_the_link() {
    let env = Env::new();
    std::os::unix::fs::symlink(&env.outside, env.path("link")).unwrap();
    env.apply(&make_tar(&[Entry::file(".wh.link", "")]), REMOVE)
        .unwrap();
    assert!(std::fs::symlink_metadata(env.path("link")).is_err());
    env.check_outside();
    if root_or_skip!("the overlay part") {
        std::os::unix::fs::symlink(&env.outside, env.path("link")).unwrap();
        env.apply(&make_tar(&[Entry::file(".wh.link", "")]), OVERLAY)
            .unwrap();
        assert!(is_whiteout_dev(&env.path("link")));
        env.check_outside();
    }
}

/// Case 25: an opaque marker under a symlink to `/` acts on the root, never outside it.
#[test]
fn case25_opaque_through_symlink_to_slash() {
    let env = Env::new();
    lower(&env);
    env.apply(
        &make_tar(&[
            Entry::file("new", "new"),
            Entry::symlink("d", "/"),
            Entry::file("d/.wh..wh..opq", ""),
        ]),
        REMOVE,
    )
    .unwrap();
    let o = owner();
    assert_eq!(
        env.tree(),
        expect(&[
            ("d", &format!("l {o} -> /")),
            ("new", &format!("f 644 {o} new"))
        ])
    );
    env.check_outside();

    let env = Env::new();
    env.apply(
        &make_tar(&[Entry::symlink("d", "/"), Entry::file("d/.wh..wh..opq", "")]),
        OVERLAY_USER,
    )
    .unwrap();
    assert_eq!(
        get_xattr(&env.root, "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    env.check_outside();

    let env = Env::new();
    env.apply(
        &make_tar(&[Entry::symlink("d", "/"), Entry::file("d/.wh..wh..opq", "")]),
        KEEP,
    )
    .unwrap();
    assert!(env.path(".wh..wh..opq").is_file());
    env.check_outside();
}

/// Case 26: an opaque marker hides the lower children of its directory, recursively, and
/// keeps what the same layer made before it.
#[test]
fn case26_opaque_keeps_same_layer_entries() {
    let env = Env::new();
    lower(&env);
    std::fs::write(env.path("a/b/c_lower"), b"x").unwrap();
    env.apply(
        &make_tar(&[
            Entry::file("a/b/c/foo", "foo"),
            Entry::file("a/.wh..wh..opq", ""),
            Entry::file("a/after", "after"),
        ]),
        REMOVE,
    )
    .unwrap();
    let o = owner();
    let me = me();
    assert_eq!(
        env.tree(),
        expect(&[
            ("a", &format!("d 755 {me}")),
            ("a/after", &format!("f 644 {o} after")),
            ("a/b", &format!("d 755 {me}")),
            ("a/b/c", &format!("d 755 {me}")),
            ("a/b/c/foo", &format!("f 644 {o} foo")),
            ("etc", &format!("d 755 {me}")),
            ("etc/passwd", &format!("f 644 {me} lower passwd")),
            ("keep", &format!("f 644 {me} keep")),
        ])
    );
    // Overlay form: the xattr on `a`; Keep: the marker stored.
    for (mode, xattr) in [(OVERLAY_USER, Some("user.overlay.opaque")), (KEEP, None)] {
        if mode == OVERLAY && !is_root() {
            continue;
        }
        let env = Env::new();
        env.apply(
            &make_tar(&[Entry::dir("a"), Entry::file("a/.wh..wh..opq", "")]),
            mode,
        )
        .unwrap();
        match xattr {
            Some(x) => {
                assert_eq!(get_xattr(&env.path("a"), x).as_deref(), Some(&b"y"[..]));
                assert!(!env.path("a/.wh..wh..opq").exists());
            }
            None => assert!(env.path("a/.wh..wh..opq").is_file()),
        }
    }
    if root_or_skip!("the trusted.overlay.opaque part") {
        let env = Env::new();
        env.apply(&make_tar(&[Entry::file("a/.wh..wh..opq", "")]), OVERLAY)
            .unwrap();
        assert_eq!(
            get_xattr(&env.path("a"), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
    }
}

/// Case 27: a file and its whiteout in the same layer, in either order: the file remains.
#[test]
fn case27_file_and_its_whiteout_in_one_layer() {
    for mode in [REMOVE, OVERLAY] {
        if mode == OVERLAY && !root_or_skip!("the overlay part") {
            continue;
        }
        for order in [0, 1] {
            let env = Env::new();
            std::fs::create_dir(env.path("a")).unwrap();
            std::fs::write(env.path("a/f"), b"lower").unwrap();
            let (f, wh) = (Entry::file("a/f", "layer"), Entry::file("a/.wh.f", ""));
            let entries = if order == 0 { [f, wh] } else { [wh, f] };
            env.apply(&make_tar(&entries), mode).unwrap();
            assert_eq!(
                std::fs::read(env.path("a/f")).unwrap(),
                b"layer",
                "{mode:?} {order}"
            );
            assert!(!env.path("a/.wh.f").exists());
        }
    }
    let env = Env::new();
    env.apply(
        &make_tar(&[Entry::file("a/f", "layer"), Entry::file("a/.wh.f", "")]),
        KEEP,
    )
    .unwrap();
    assert!(env.path("a/f").is_file() && env.path("a/.wh.f").is_file());
}

/// A whiteout of a directory that holds what this layer made clears only the lower content.
#[test]
fn whiteout_of_directory_with_layer_content() {
    let env = Env::new();
    lower(&env);
    env.apply(
        &make_tar(&[
            Entry::file("a/b/new", "new"),
            Entry::file(".wh.a", ""),
            Entry::file(".wh.etc", ""),
        ]),
        REMOVE,
    )
    .unwrap();
    let o = owner();
    let me = me();
    assert_eq!(
        env.tree(),
        expect(&[
            ("a", &format!("d 755 {me}")),
            ("a/b", &format!("d 755 {me}")),
            ("a/b/new", &format!("f 644 {o} new")),
            ("keep", &format!("f 644 {me} keep")),
        ])
    );
}

/// Case 28: a whiteout for a path that does not exist is a no-op.
#[test]
fn case28_whiteout_of_missing_path() {
    let env = Env::new();
    lower(&env);
    let before = env.tree();
    env.apply(
        &make_tar(&[
            Entry::file(".wh.nothing", ""),
            Entry::file("no/such/dir/.wh.x", ""),
            Entry::file("keep/.wh.x", ""),
        ]),
        REMOVE,
    )
    .unwrap();
    assert_eq!(env.tree(), before);
    env.apply(&make_tar(&[Entry::file("nodir/.wh..wh..opq", "")]), REMOVE)
        .unwrap();
    assert_eq!(env.tree(), before);
    if root_or_skip!("the overlay part") {
        let env = Env::new();
        env.apply(
            &make_tar(&[Entry::file("x/.wh.gone", "").owner(1000, 1001)]),
            OVERLAY,
        )
        .unwrap();
        assert!(is_whiteout_dev(&env.path("x/gone")));
        let m = std::fs::symlink_metadata(env.path("x/gone")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1001));
    }
}

/// Case 29 (CVE-2026-95838): many opaque markers and files in one directory stay linear.
#[test]
fn case29_many_opaque_markers_are_linear() {
    const N: usize = 30_000;
    let env = Env::new();
    std::fs::create_dir(env.path("d")).unwrap();
    for i in 0..2_000 {
        std::fs::write(env.path(&format!("d/lower{i}")), b"").unwrap();
    }
    let mut t = Tar::new();
    t.push(&Entry::dir("d"));
    for i in 0..N {
        t.push(&Entry::file(format!("d/f{i}"), ""));
        t.push(&Entry::file("d/.wh..wh..opq", ""));
    }
    let tar = t.finish();
    for mode in [REMOVE, OVERLAY_USER, KEEP] {
        let start = Instant::now();
        let stats = env.apply(&tar, mode).unwrap();
        let took = start.elapsed();
        assert_eq!(stats.entries, 2 * N as u64 + 1);
        assert!(took < Duration::from_secs(60), "{mode:?} took {took:?}");
        eprintln!("{mode:?}: {} entries in {took:?}", stats.entries);
    }
    assert!(!env.path("d/lower0").exists());
    assert!(env.path(&format!("d/f{}", N - 1)).is_file());
}

/// Case 30: AUFS metadata names are never materialised.
#[test]
fn case30_aufs_metadata_is_skipped() {
    for mode in MODES {
        let env = Env::new();
        let stats = env
            .apply(
                &make_tar(&[
                    Entry::dir(".wh..wh.plnk"),
                    Entry::file(".wh..wh.plnk/1234.5678", "x"),
                    Entry::file(".wh..wh.aufs", ""),
                    Entry::dir("a/.wh..wh.orph"),
                    Entry::file("ok", "ok"),
                ]),
                mode,
            )
            .unwrap();
        assert_eq!(stats.entries, 5);
        assert_eq!(env.tree().keys().collect::<Vec<_>>(), ["ok"], "{mode:?}");
    }
}

/// Case 31: a 0/0 character device entry is an undeclared whiteout: rejected in every mode,
/// with devices enabled or not.
#[test]
fn case31_char_device_0_0_is_rejected() {
    for mode in MODES {
        for devices in [true, false] {
            let env = Env::new();
            let opts = ApplyOptions {
                whiteouts: mode,
                same_owner: is_root(),
                devices,
                lowers: None,
            };
            let err = env
                .apply_opts(&make_tar(&[Entry::char_dev("x", 0, 0)]), &opts)
                .unwrap_err();
            assert_eq!(err.kind(), strata_archive::ErrorKind::InvalidArchive);
            assert!(env.tree().is_empty());
        }
    }
}

/// In Remove mode a whiteout of a lower directory removes it with its content; a whiteout
/// entry of any type works by its name.
#[test]
fn remove_mode_removes_lower_trees() {
    let env = Env::new();
    lower(&env);
    std::os::unix::fs::symlink("/etc", env.path("a/b/link")).unwrap();
    env.apply(
        &make_tar(&[Entry::dir(".wh.a"), Entry::symlink("etc/.wh.passwd", "x")]),
        REMOVE,
    )
    .unwrap();
    let me = me();
    assert_eq!(
        env.tree(),
        expect(&[
            ("etc", &format!("d 755 {me}")),
            ("keep", &format!("f 644 {me} keep"))
        ])
    );
}

/// Issue 12, item 4: a whiteout or opaque marker that reaches, through a symlink of the same
/// tar, what the same tar wrote under another name leaves it (Remove and Overlay modes); the
/// lower content beside it is still hidden.
#[test]
fn whiteout_through_alias_keeps_same_layer() {
    for mode in [REMOVE, OVERLAY] {
        let env = Env::new();
        lower(&env);
        let tar = make_tar(&[
            Entry::dir("a"),
            Entry::symlink("s", "a"),
            Entry::file("s/old", "new"),
            Entry::whiteout("a/old"),
            Entry::symlink("t", "a"),
            Entry::dir("t/b"),
            Entry::file("t/b/newb", "newb"),
            Entry::opaque("a"),
            Entry::opaque("a/b"),
        ]);
        env.apply(&tar, mode).unwrap();
        assert_eq!(
            std::fs::read(env.path("a/old")).unwrap(),
            b"new",
            "{mode:?}"
        );
        assert_eq!(
            std::fs::read(env.path("a/b/newb")).unwrap(),
            b"newb",
            "{mode:?}"
        );
        assert!(!is_whiteout_dev(&env.path("a/old")), "{mode:?}");
        if mode == REMOVE {
            assert!(!env.path("a/b/oldb").exists(), "{mode:?}");
        }
    }
}

/// Issue 12, item 1: `.wh.foo` then a link `bar -> foo` (or `bar -> .wh.foo`) is invalid.
#[test]
fn hardlink_to_whiteout_is_rejected() {
    for mode in MODES {
        // In Keep mode the root holds only this layer (a diff directory), so no `keep` there.
        let targets: &[&str] = if mode == KEEP {
            &[".wh.keep"]
        } else {
            &["keep", ".wh.keep"]
        };
        for &target in targets {
            let env = Env::new();
            lower(&env);
            let tar = make_tar(&[Entry::whiteout("keep"), Entry::hardlink("bar", target)]);
            env.reject(&tar, mode);
        }
    }
}

/// Issue 12, item 2: in Overlay mode with the lower layers known, a whiteout or opaque marker
/// with nothing below to hide writes nothing (a base layer; a directory the lower layers do
/// not have; a directory made opaque by this tar), and one with something below does.
#[test]
fn overlay_whiteouts_only_over_lower_content() {
    if !root_or_skip!() {
        return; // trusted.overlay.opaque needs root
    }
    let lower = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(lower.path().join("a/b")).unwrap();
    std::fs::write(lower.path().join("a/x"), b"x").unwrap();
    std::fs::write(lower.path().join("a/b/y"), b"y").unwrap();
    let tar = make_tar(&[
        Entry::whiteout("top"),
        Entry::dir("a"),
        Entry::whiteout("a/x"),
        Entry::whiteout("a/nothere"),
        Entry::dir("a/b"),
        Entry::opaque("a/b"),
        Entry::whiteout("a/b/y"),
        Entry::dir("n"),
        Entry::whiteout("n/z"),
        Entry::opaque("n"),
    ]);
    for (lowers, below) in [(vec![], false), (vec![lower.path().to_path_buf()], true)] {
        let env = Env::new();
        let opts = ApplyOptions {
            lowers: Some(lowers),
            ..ApplyOptions::new(OVERLAY)
        };
        env.apply_opts(&tar, &opts).unwrap();
        let opaque = |p: &str| get_xattr(&env.path(p), "trusted.overlay.opaque").is_some();
        let dev = std::fs::symlink_metadata(env.path("a/x"))
            .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0);
        assert_eq!(dev, below, "a/x");
        assert_eq!(opaque("a/b"), below, "a/b");
        assert!(!env.path("top").exists() && std::fs::symlink_metadata(env.path("top")).is_err());
        assert!(std::fs::symlink_metadata(env.path("a/nothere")).is_err());
        assert!(std::fs::symlink_metadata(env.path("a/b/y")).is_err());
        assert!(std::fs::symlink_metadata(env.path("n/z")).is_err());
        assert!(!opaque("") && !opaque("n"));
    }
    // Under a root made opaque, nothing below shows: no whiteout either, before or after.
    let env = Env::new();
    let opts = ApplyOptions {
        lowers: Some(vec![lower.path().to_path_buf()]),
        ..ApplyOptions::new(OVERLAY)
    };
    let tar = make_tar(&[
        Entry::dir("a"),
        Entry::whiteout("a/x"),
        Entry::opaque(""),
        Entry::whiteout("a/b/y"),
    ]);
    env.apply_opts(&tar, &opts).unwrap();
    assert!(get_xattr(&env.root, "trusted.overlay.opaque").is_some());
    assert!(std::fs::symlink_metadata(env.path("a/x")).is_err());
    assert!(std::fs::symlink_metadata(env.path("a/b/y")).is_err());
}

/// With the lower layers known, a whiteout reached through a dangling symlink of this layer
/// that shadows a lower directory is applied as without them (no error from the lookup).
#[test]
fn overlay_lower_lookup_through_dangling_symlink() {
    let lower = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(lower.path().join("s")).unwrap();
    std::fs::write(lower.path().join("s/x"), b"x").unwrap();
    let tar = make_tar(&[Entry::symlink("s", "nowhere/deep"), Entry::whiteout("s/x")]);
    let with = Env::new();
    let opts = ApplyOptions {
        lowers: Some(vec![lower.path().to_path_buf()]),
        ..ApplyOptions::new(OVERLAY_USER)
    };
    with.apply_opts(&tar, &opts).unwrap();
    let without = Env::new();
    without.apply(&tar, OVERLAY_USER).unwrap();
    assert_eq!(with.tree(), without.tree());
}
