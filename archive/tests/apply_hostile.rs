//! Hostile names, symlinks and hardlinks (research/layer-security.md §5, cases 1-21): nothing
//! may be written, changed or deleted outside the root, and rejects are `InvalidArchive`.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;
use strata_archive::WhiteoutMode;
use strata_conformance::tarfile::{Entry, Tar, make_tar};

const REMOVE: WhiteoutMode = WhiteoutMode::Remove;

/// Case 1 and 3: names that climb out of the root are rejected, never clamped or skipped.
#[test]
fn case01_03_dotdot_names_are_rejected() {
    for name in [
        "../../etc/x",
        "../x",
        "a/../../x",
        "/../x",
        "./a/b/../../../x",
    ] {
        for mode in MODES {
            let env = Env::new();
            env.reject(&make_tar(&[Entry::file(name, "evil")]), mode);
            assert!(env.tree().is_empty(), "{name}: {:?}", env.tree());
        }
    }
    // The same for a hardlink target and for a directory entry.
    let env = Env::new();
    env.reject(&make_tar(&[Entry::dir("../d")]), REMOVE);
    assert!(env.tree().is_empty());
}

/// Case 2: absolute names land under the root.
#[test]
fn case02_absolute_names_land_under_root() {
    let env = Env::new();
    env.apply(
        &make_tar(&[
            Entry::file("/etc/x", "in root"),
            Entry::file("//a/./b", "b"),
        ]),
        REMOVE,
    )
    .unwrap();
    assert_eq!(std::fs::read(env.path("etc/x")).unwrap(), b"in root");
    assert_eq!(std::fs::read(env.path("a/b")).unwrap(), b"b");
    env.check_outside();
}

/// Case 4 (CVE-2021-29136): a symlink (or file) named `.`, `/` or empty never replaces the root.
#[test]
fn case04_root_is_never_replaced() {
    let env = Env::new();
    let target = env.outside_bytes();
    for name in [&b"."[..], b"/", b"", b"./", b"a/.."] {
        for e in [
            Entry::symlink(name, &target),
            Entry::file(name, "x"),
            Entry::hardlink(name, "f"),
            Entry::fifo(name),
        ] {
            let mut t = Tar::new();
            t.push(&Entry::file("f", "f"));
            t.push(&e);
            env.reject(&t.finish(), REMOVE);
            assert!(env.root.is_dir(), "root replaced");
            assert!(!env.root.is_symlink());
        }
    }
    // Later layers still land in the root.
    env.apply(&make_tar(&[Entry::file("later", "ok")]), REMOVE)
        .unwrap();
    assert_eq!(std::fs::read(env.path("later")).unwrap(), b"ok");
    env.check_outside();
}

/// A directory entry for the root only updates the root's attributes.
#[test]
fn root_dir_entry_updates_attributes() {
    let env = Env::new();
    env.apply(
        &make_tar(&[
            Entry::dir("./").mode(0o750).mtime(1_000_000),
            Entry::dir("/").mode(0o711),
        ]),
        REMOVE,
    )
    .unwrap();
    let m = std::fs::metadata(&env.root).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o711);
    assert_eq!(m.mtime(), 1_600_000_000);
    env.check_outside();
}

/// Case 5: names that merely look special are ordinary.
#[test]
fn case05_odd_but_legitimate_names() {
    for mode in MODES {
        let env = Env::new();
        env.apply(
            &make_tar(&[
                Entry::file("..data", "1"),
                Entry::file("...", "2"),
                Entry::file(".whfoo", "3"),
                Entry::file("a..b", "4"),
            ]),
            mode,
        )
        .unwrap();
        assert_eq!(
            env.tree(),
            expect(&[
                ("..data", "f 644 0:0 1"),
                ("...", "f 644 0:0 2"),
                (".whfoo", "f 644 0:0 3"),
                ("a..b", "f 644 0:0 4"),
            ])
            .into_iter()
            .map(|(k, v)| (
                k,
                if is_root() {
                    v
                } else {
                    v.replace("0:0", &me())
                }
            ))
            .collect()
        );
    }
}

/// Case 6: over-long paths and components are a clean error.
#[test]
fn case06_long_paths_are_rejected() {
    let env = Env::new();
    let long_comp = "c".repeat(256);
    env.reject(
        &make_tar(&[Entry::file(format!("a/{long_comp}"), "x")]),
        REMOVE,
    );
    let long_path = "abcdefghij/".repeat(410) + "f";
    env.reject(&make_tar(&[Entry::file(long_path, "x")]), REMOVE);
    let long_link = "t".repeat(5000);
    env.reject(&make_tar(&[Entry::symlink("l", long_link)]), REMOVE);
    // 255 is fine.
    let ok = "c".repeat(255);
    env.apply(&make_tar(&[Entry::file(&ok, "x")]), REMOVE)
        .unwrap();
    assert!(env.path(&ok).is_file());
    env.check_outside();
}

/// Case 7: writing through an absolute symlink stays in the root.
#[test]
fn case07_absolute_symlink_parent_resolves_in_root() {
    let env = Env::new();
    let mut e = env.outside_bytes();
    e.extend_from_slice(b"/d");
    env.apply(
        &make_tar(&[
            Entry::symlink("e", "/etc"),
            Entry::file("e/cron.d/x", "cron"),
            Entry::symlink("o", &e),
            Entry::file("o/keep", "not the host's"),
        ]),
        REMOVE,
    )
    .unwrap();
    assert_eq!(std::fs::read(env.path("etc/cron.d/x")).unwrap(), b"cron");
    let inside = env
        .root
        .join(env.outside.strip_prefix("/").unwrap())
        .join("d/keep");
    assert_eq!(std::fs::read(inside).unwrap(), b"not the host's");
    env.check_outside();
}

/// Case 8: a relative symlink with too many `..` clamps at the root.
#[test]
fn case08_relative_symlink_clamps_at_root() {
    let env = Env::new();
    env.apply(
        &make_tar(&[
            Entry::symlink("e", "../../../../.."),
            Entry::file("e/x", "x"),
        ]),
        REMOVE,
    )
    .unwrap();
    assert_eq!(std::fs::read(env.path("x")).unwrap(), b"x");
    env.check_outside();
}

/// Case 9 (RUSTSEC-2021-0080): no directory is made outside the root through `s -> ..`.
#[test]
fn case09_symlink_to_parent_creates_nothing_outside() {
    let env = Env::new();
    env.apply(
        &make_tar(&[
            Entry::symlink("s", ".."),
            Entry::file("s/exploit/foo/bar", "x"),
        ]),
        REMOVE,
    )
    .unwrap();
    assert!(env.path("exploit/foo/bar").is_file());
    assert!(!env.tmp.path().join("exploit").exists());
    env.check_outside();
}

/// Case 10: a chain of symlinks resolves in-root.
#[test]
fn case10_symlink_chain_resolves_in_root() {
    let env = Env::new();
    env.apply(
        &make_tar(&[
            Entry::symlink("a", "/b"),
            Entry::symlink("b", "../../etc"),
            Entry::file("a/x", "x"),
        ]),
        REMOVE,
    )
    .unwrap();
    assert_eq!(std::fs::read(env.path("etc/x")).unwrap(), b"x");
    env.check_outside();
}

/// Case 11: a symlink loop is rejected.
#[test]
fn case11_symlink_loop_is_rejected() {
    let env = Env::new();
    env.reject(
        &make_tar(&[
            Entry::symlink("a", "b"),
            Entry::symlink("b", "a"),
            Entry::file("a/x", "x"),
        ]),
        REMOVE,
    );
    env.reject(
        &make_tar(&[Entry::symlink("self", "self"), Entry::dir("self/d")]),
        REMOVE,
    );
}

/// Case 12 (CVE-2025-47290): a directory swapped for a symlink between entries is seen.
#[test]
fn case12_directory_swapped_for_symlink() {
    let env = Env::new();
    let outside = env.outside_bytes();
    env.apply(
        &make_tar(&[
            Entry::dir("foo/"),
            Entry::dir("foo/d/"),
            Entry::file("foo/d/a", "a"),
            Entry::symlink("foo", &outside),
            Entry::file("foo/d/x", "x"),
            Entry::dir("foo/"),
            Entry::file("foo/y", "y"),
        ]),
        REMOVE,
    )
    .unwrap();
    let inside = env.root.join(env.outside.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(inside.join("d/x")).unwrap(), b"x");
    assert!(env.path("foo").is_dir() && !env.path("foo").is_symlink());
    assert_eq!(std::fs::read(env.path("foo/y")).unwrap(), b"y");
    assert!(!env.path("foo/d").exists());
    env.check_outside();
}

/// Case 13 (RUSTSEC-2026-0067): a directory entry over a symlink replaces the symlink.
#[test]
fn case13_dir_over_symlink_replaces_it() {
    let env = Env::new();
    let mut d = env.outside_bytes();
    d.extend_from_slice(b"/d");
    env.apply(
        &make_tar(&[Entry::symlink("x", &d), Entry::dir("x/").mode(0o777)]),
        REMOVE,
    )
    .unwrap();
    let m = std::fs::symlink_metadata(env.path("x")).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o7777, 0o777);
    env.check_outside();
}

/// Case 14: a file over a symlink replaces the symlink; its target is untouched.
#[test]
fn case14_file_over_symlink_replaces_it() {
    let env = Env::new();
    let mut p = env.outside_bytes();
    p.extend_from_slice(b"/passwd");
    for mode in MODES {
        env.apply(
            &make_tar(&[
                Entry::symlink("f", &p),
                Entry::file("f", "mine").mode(0o600),
            ]),
            mode,
        )
        .unwrap();
        let m = std::fs::symlink_metadata(env.path("f")).unwrap();
        assert!(m.is_file());
        assert_eq!(std::fs::read(env.path("f")).unwrap(), b"mine");
        // And with the symlink in an earlier layer.
        env.apply(&make_tar(&[Entry::symlink("g", &p)]), mode)
            .unwrap();
        env.apply(&make_tar(&[Entry::file("g", "mine too")]), mode)
            .unwrap();
        assert_eq!(std::fs::read(env.path("g")).unwrap(), b"mine too");
        env.check_outside();
    }
}

/// Case 15: a lower `lib -> usr/lib` replaced by a directory in this layer.
#[test]
fn case15_lower_symlink_replaced_by_directory() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("usr/lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib", env.path("lib")).unwrap();
    env.apply(
        &make_tar(&[Entry::dir("lib/"), Entry::file("lib/a", "a")]),
        REMOVE,
    )
    .unwrap();
    assert!(std::fs::symlink_metadata(env.path("lib")).unwrap().is_dir());
    assert!(env.path("lib/a").is_file());
    assert!(!env.path("usr/lib/a").exists());
}

/// Case 16: an absolute hardlink target resolves in the root, or is rejected.
#[test]
fn case16_absolute_hardlink_target() {
    let env = Env::new();
    let mut p = env.outside_bytes();
    p.extend_from_slice(b"/passwd");
    env.reject(&make_tar(&[Entry::hardlink("l", &p)]), REMOVE);
    std::fs::create_dir_all(env.path("etc")).unwrap();
    std::fs::write(env.path("etc/shadow"), b"root's").unwrap();
    env.apply(&make_tar(&[Entry::hardlink("l", "/etc/shadow")]), REMOVE)
        .unwrap();
    let (a, b) = (
        std::fs::metadata(env.path("l")).unwrap(),
        std::fs::metadata(env.path("etc/shadow")).unwrap(),
    );
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    env.check_outside();
}

/// Case 17: a hardlink target that is not local is rejected.
#[test]
fn case17_dotdot_hardlink_target_is_rejected() {
    let env = Env::new();
    env.reject(
        &make_tar(&[Entry::hardlink("l", "../../etc/shadow")]),
        REMOVE,
    );
    env.reject(
        &make_tar(&[Entry::hardlink("l", "../outside/passwd")]),
        REMOVE,
    );
    assert!(env.tree().is_empty());
}

/// Case 18: a hardlink target through a symlinked directory resolves in-root.
#[test]
fn case18_hardlink_target_through_symlink() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("etc")).unwrap();
    std::fs::write(env.path("etc/passwd"), b"layer passwd").unwrap();
    env.apply(
        &make_tar(&[
            Entry::symlink("d", "/etc"),
            Entry::hardlink("l", "d/passwd"),
        ]),
        REMOVE,
    )
    .unwrap();
    let (a, b) = (
        std::fs::metadata(env.path("l")).unwrap(),
        std::fs::metadata(env.path("etc/passwd")).unwrap(),
    );
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    env.check_outside();
}

/// Case 19 (CVE-2021-32760): a hardlink to a symlink links the symlink itself, and a later
/// mode-bearing entry for it never reaches the symlink's target.
#[test]
fn case19_hardlink_to_symlink_then_chmod() {
    let env = Env::new();
    let mut p = env.outside_bytes();
    p.extend_from_slice(b"/passwd");
    env.apply(
        &make_tar(&[Entry::symlink("s", &p), Entry::hardlink("h", "s")]),
        REMOVE,
    )
    .unwrap();
    let h = std::fs::symlink_metadata(env.path("h")).unwrap();
    assert!(h.file_type().is_symlink());
    env.apply(
        &make_tar(&[
            Entry::file("h", "x").mode(0o777),
            Entry::dir("s").mode(0o777),
            Entry::hardlink("h2", "s"),
        ]),
        REMOVE,
    )
    .unwrap_err();
    env.apply(
        &make_tar(&[
            Entry::symlink("s2", &p),
            Entry::hardlink("h3", "s2"),
            Entry::dir("h3").mode(0o777),
        ]),
        REMOVE,
    )
    .unwrap();
    assert!(std::fs::symlink_metadata(env.path("h3")).unwrap().is_dir());
    env.check_outside();
}

/// Case 20 (RUSTSEC-2018-0002): a file over a hardlink is a new file; the target is unchanged.
#[test]
fn case20_file_over_hardlink_is_new() {
    let env = Env::new();
    env.apply(
        &make_tar(&[
            Entry::file("t", "target"),
            Entry::hardlink("l", "t"),
            Entry::file("l", "new content"),
        ]),
        REMOVE,
    )
    .unwrap();
    assert_eq!(std::fs::read(env.path("t")).unwrap(), b"target");
    assert_eq!(std::fs::read(env.path("l")).unwrap(), b"new content");
    assert_eq!(std::fs::metadata(env.path("t")).unwrap().nlink(), 1);
}

/// Case 21: a hardlink to a missing, later, directory or self target is rejected.
#[test]
fn case21_bad_hardlink_targets() {
    let env = Env::new();
    env.reject(&make_tar(&[Entry::hardlink("l", "missing")]), REMOVE);
    env.reject(
        &make_tar(&[Entry::hardlink("l", "later"), Entry::file("later", "x")]),
        REMOVE,
    );
    env.reject(
        &make_tar(&[Entry::dir("d"), Entry::hardlink("l", "d")]),
        REMOVE,
    );
    env.reject(&make_tar(&[Entry::hardlink("self", "self")]), REMOVE);
    env.reject(&make_tar(&[Entry::hardlink("self", "./self/")]), REMOVE);
    env.reject(&make_tar(&[Entry::hardlink("l", "/")]), REMOVE);
    env.reject(
        &make_tar(&[Entry::file("f", "x"), Entry::hardlink("l", "f/x")]),
        REMOVE,
    );
    // Linking to an existing link of the same inode is fine (the same name reached twice).
    env.apply(
        &make_tar(&[
            Entry::file("a", "a"),
            Entry::symlink("dot", "."),
            Entry::hardlink("a", "dot/a"),
        ]),
        REMOVE,
    )
    .unwrap();
    assert_eq!(std::fs::read(env.path("a")).unwrap(), b"a");
}
