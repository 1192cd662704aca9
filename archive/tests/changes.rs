//! The naive diff on real trees: `changes_dirs`, `export_changes`, `changes_size`.

mod common;

use std::path::Path;

use common::*;
use strata_archive::WhiteoutFormat;
use strata_archive::{Change, ChangeKind, ErrorKind};
use strata_archive::{changes_dirs, changes_size, export_changes};
use strata_conformance::root_or_skip;
use tar::EntryType;

/// `docker diff`-style lines.
fn diff(new: &Path, old: Option<&Path>) -> Vec<String> {
    changes_dirs(new, old)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn export(root: &Path, changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::new();
    let n = export_changes(root, changes, &mut out).unwrap();
    assert_eq!(n, out.len() as u64);
    out
}

/// Two temporary trees built by the same function, with all mtimes frozen.
fn pair(build: impl Fn(&Path)) -> (tempfile::TempDir, tempfile::TempDir) {
    let old = tempfile::tempdir().unwrap();
    let new = tempfile::tempdir().unwrap();
    build(old.path());
    build(new.path());
    freeze(old.path(), 1_000_000);
    freeze(new.path(), 1_000_000);
    (old, new)
}

fn base(r: &Path) {
    write(&r.join("a"), b"a");
    mkdir(&r.join("d"));
    write(&r.join("d/x"), b"x");
    write(&r.join("d/y"), b"y");
    write(&r.join("gone"), b"g");
    mkdir(&r.join("gonedir"));
    mkdir(&r.join("gonedir/sub"));
    write(&r.join("gonedir/sub/f"), b"f");
    mkdir(&r.join("same"));
    write(&r.join("same/s"), b"s");
    ln_s("a", &r.join("ln"));
}

#[test]
fn identical_trees_have_no_changes() {
    let (old, new) = pair(base);
    assert!(diff(new.path(), Some(old.path())).is_empty());
}

#[test]
fn adds_modifies_and_deletes() {
    let (old, new) = pair(base);
    let n = new.path();
    write(&n.join("d/x"), b"xx");
    mkdir(&n.join("d/newdir"));
    write(&n.join("d/newdir/f"), b"f");
    std::fs::remove_file(n.join("gone")).unwrap();
    std::fs::remove_dir_all(n.join("gonedir")).unwrap();
    write(&n.join("new"), b"n");
    freeze(&n.join("same"), 1_000_000);
    assert_eq!(
        diff(n, Some(old.path())),
        [
            "C /d",
            "A /d/newdir",
            "A /d/newdir/f",
            "C /d/x",
            "D /gone",
            "D /gonedir",
            "A /new"
        ]
    );
}

#[test]
fn a_directory_is_not_modified_by_its_own_mtime_only() {
    let (old, new) = pair(base);
    set_mtime(&new.path().join("d"), 5, 0);
    write(&new.path().join("d/tmp"), b"");
    std::fs::remove_file(new.path().join("d/tmp")).unwrap();
    set_mtime(new.path(), 7, 0);
    assert!(diff(new.path(), Some(old.path())).is_empty());
}

#[test]
fn permission_owner_and_symlink_changes() {
    let (old, new) = pair(base);
    let n = new.path();
    chmod(&n.join("a"), 0o600);
    chmod(&n.join("d"), 0o700);
    std::fs::remove_file(n.join("ln")).unwrap();
    ln_s("b", &n.join("ln"));
    set_mtime(&n.join("ln"), 1_000_000, 0);
    if is_root() {
        chown(&n.join("same/s"), 1, 0);
        set_mtime(&n.join("same"), 1_000_000, 0);
    }
    let mut want = vec!["C /a", "C /d"];
    // Same length target ("a" -> "b"), same mtime: Docker does not see it either.
    if is_root() {
        want.extend(["C /same", "C /same/s"]);
    }
    assert_eq!(diff(n, Some(old.path())), want);
}

#[test]
fn mtime_rules_with_whole_second_leniency() {
    let (old, new) = pair(|r| {
        write(&r.join("f"), b"12345");
        write(&r.join("g"), b"12345");
        write(&r.join("h"), b"12345");
    });
    let (o, n) = (old.path(), new.path());
    // Same size, another second: modified.
    set_mtime(&n.join("f"), 1_000_001, 0);
    // Same second, one side without nanoseconds (as after a tar): not modified.
    set_mtime(&o.join("g"), 1_000_000, 0);
    set_mtime(&n.join("g"), 1_000_000, 123);
    // Same second, both with nanoseconds that differ: modified.
    set_mtime(&o.join("h"), 1_000_000, 5);
    set_mtime(&n.join("h"), 1_000_000, 6);
    assert_eq!(diff(n, Some(o)), ["C /f", "C /h"]);
}

#[test]
fn type_changes() {
    let (old, new) = pair(|r| {
        write(&r.join("p"), b"file");
        mkdir(&r.join("q"));
        write(&r.join("q/child"), b"c");
        write(&r.join("s"), b"file");
    });
    let n = new.path();
    std::fs::remove_file(n.join("p")).unwrap();
    mkdir(&n.join("p"));
    write(&n.join("p/c"), b"c");
    std::fs::remove_dir_all(n.join("q")).unwrap();
    write(&n.join("q"), b"now a file");
    std::fs::remove_file(n.join("s")).unwrap();
    ln_s("file", &n.join("s"));
    // Docker: a file that became a directory is Modify, its children Adds; a directory that
    // became a file is Modify, its old children are not listed.
    assert_eq!(
        diff(n, Some(old.path())),
        ["C /p", "A /p/c", "C /q", "C /s"]
    );
}

#[test]
fn capability_changes_are_modifications() {
    if !root_or_skip!() {
        return;
    }
    let (old, new) = pair(|r| {
        write(&r.join("ping"), b"elf");
        write(&r.join("other"), b"elf");
    });
    setxattr(
        &new.path().join("ping"),
        "security.capability",
        &capability(13),
    );
    setxattr(
        &old.path().join("other"),
        "security.capability",
        &capability(12),
    );
    setxattr(
        &new.path().join("other"),
        "security.capability",
        &capability(13),
    );
    assert_eq!(diff(new.path(), Some(old.path())), ["C /other", "C /ping"]);
}

#[test]
fn without_old_everything_is_added_and_exports_like_write_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    base(r);
    std::fs::hard_link(r.join("d/x"), r.join("hl")).unwrap();
    write(&r.join("d/.wh.w"), b"");
    let changes = diff(r, None);
    assert_eq!(
        changes,
        [
            "A /a",
            "A /d",
            "A /d/.wh.w",
            "A /d/x",
            "A /d/y",
            "A /gone",
            "A /gonedir",
            "A /gonedir/sub",
            "A /gonedir/sub/f",
            "A /hl",
            "A /ln",
            "A /same",
            "A /same/s"
        ]
    );
    let exported = export(r, &changes_dirs(r, None).unwrap());
    assert_eq!(exported, tar_of_dir(r, WhiteoutFormat::Aufs));
}

#[test]
fn export_writes_deletes_as_whiteouts_in_tar_order() {
    let (old, new) = pair(base);
    let n = new.path();
    std::fs::remove_file(n.join("gone")).unwrap();
    std::fs::remove_dir_all(n.join("gonedir")).unwrap();
    std::fs::remove_file(n.join("d/y")).unwrap();
    write(&n.join("d/z"), b"zz");
    set_mtime(&n.join("d/z"), 42, 0);
    let changes = changes_dirs(n, Some(old.path())).unwrap();
    let entries = read_tar(&export(n, &changes));
    assert_eq!(
        names(&entries),
        [".wh.gone", ".wh.gonedir", "d/", "d/.wh.y", "d/z"]
    );
    for wh in [".wh.gone", ".wh.gonedir", "d/.wh.y"] {
        let e = find(&entries, wh);
        assert_eq!(
            (e.kind, e.mode, e.uid, e.gid, e.mtime, e.data.len()),
            (EntryType::Regular, 0o600, 0, 0, 0, 0),
            "{wh}"
        );
    }
    assert_eq!(find(&entries, "d/z").data, b"zz");
    assert_eq!(find(&entries, "d/z").mtime, 42);
}

#[test]
fn a_new_link_to_an_unchanged_file_carries_the_file() {
    let (old, new) = pair(|r| {
        write(&r.join("lib"), b"library");
        mkdir(&r.join("sub"));
    });
    let n = new.path();
    std::fs::hard_link(n.join("lib"), n.join("sub/alias")).unwrap();
    set_mtime(&n.join("sub"), 1_000_000, 0);
    let changes = changes_dirs(n, Some(old.path())).unwrap();
    let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
    assert_eq!(lines, ["C /lib", "C /sub", "A /sub/alias"]);
    let entries = read_tar(&export(n, &changes));
    assert_eq!(names(&entries), ["lib", "sub/", "sub/alias"]);
    assert_eq!(find(&entries, "lib").data, b"library");
    let alias = find(&entries, "sub/alias");
    assert_eq!(alias.kind, EntryType::Link);
    assert_eq!(alias.link.as_deref(), Some(&b"lib"[..]));
}

#[test]
fn shared_inodes_are_skipped_and_a_link_to_one_is_a_whole_file() {
    let old = tempfile::tempdir().unwrap();
    let new = tempfile::tempdir().unwrap();
    let (o, n) = (old.path(), new.path());
    mkdir(&o.join("d"));
    write(&o.join("d/shared"), b"shared");
    write(&o.join("d/replaced"), b"old");
    freeze(o, 1_000_000);
    mkdir(&n.join("d"));
    // The new tree shares the old one's files, as a hardlinked copy would.
    std::fs::hard_link(o.join("d/shared"), n.join("d/shared")).unwrap();
    write(&n.join("d/replaced"), b"newer");
    std::fs::hard_link(o.join("d/shared"), n.join("alias")).unwrap();
    freeze(n, 1_000_000);
    let changes = changes_dirs(n, Some(o)).unwrap();
    let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
    // d/shared is the same file in both trees: skipped without a look.
    assert_eq!(lines, ["A /alias", "C /d", "C /d/replaced"]);
    let entries = read_tar(&export(n, &changes));
    let alias = find(&entries, "alias");
    assert_eq!(
        (alias.kind, alias.data.as_slice()),
        (EntryType::Regular, &b"shared"[..])
    );
}

#[test]
fn changes_size_counts_regular_files_once_per_inode() {
    let (old, new) = pair(|r| {
        write(&r.join("kept"), &[1; 100]);
        write(&r.join("gone"), &[1; 1000]);
    });
    let n = new.path();
    write(&n.join("kept"), &[2; 150]);
    write(&n.join("big"), &[3; 10_000]);
    std::fs::hard_link(n.join("big"), n.join("big2")).unwrap();
    mkdir(&n.join("dir"));
    ln_s("some/long/target", &n.join("dir/ln"));
    std::fs::remove_file(n.join("gone")).unwrap();
    let changes = changes_dirs(n, Some(old.path())).unwrap();
    assert_eq!(changes_size(n, &changes).unwrap(), 150 + 10_000);
}

#[test]
fn export_refuses_paths_that_leave_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = [Change {
        path: "/a/../../etc/passwd".into(),
        kind: ChangeKind::Add,
    }];
    let err = export_changes(tmp.path(), &bad, &mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = changes_size(tmp.path(), &bad).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn export_does_not_follow_a_symlinked_parent() {
    let tmp = tempfile::tempdir().unwrap();
    ln_s("/etc", &tmp.path().join("etc"));
    let changes = [Change {
        path: "/etc/hostname".into(),
        kind: ChangeKind::Add,
    }];
    assert!(export_changes(tmp.path(), &changes, &mut Vec::new()).is_err());
    assert!(changes_size(tmp.path(), &changes).is_err());
}

#[test]
fn a_missing_changed_path_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let changes = [Change {
        path: "/nope".into(),
        kind: ChangeKind::Modify,
    }];
    let err = export_changes(tmp.path(), &changes, &mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// A chain of `depth` directories `d`, each holding a file `f` (which sorts after `d`, so the
/// walks write it on the way back up, past the directories they had to close).
fn deep(root: &Path, depth: usize) {
    let mut p = root.to_path_buf();
    for level in 0..depth {
        p.push("d");
        mkdir(&p);
        write(&p.join("f"), level.to_string().as_bytes());
    }
}

#[test]
fn trees_deeper_than_the_open_directory_budget() {
    let depth = strata_archive::fsutil::MAX_OPEN * 2 + 30;
    let (old, new) = pair(|r| deep(r, depth));
    let (o, n) = (old.path(), new.path());

    let entries = read_tar(&tar_of_dir(n, WhiteoutFormat::Aufs));
    assert_eq!(entries.len(), depth * 2);
    let mut want = String::new();
    for e in &entries[..depth] {
        want.push_str("d/");
        assert_eq!(e.path, want);
    }
    // Files come after the deepest directory, deepest first.
    assert_eq!(entries[depth].data, (depth - 1).to_string().as_bytes());
    assert_eq!(entries[depth * 2 - 1].path, "d/f");

    // Change the file at the top and at the bottom.
    let mut bottom = n.to_path_buf();
    for _ in 0..depth {
        bottom.push("d");
    }
    write(&bottom.join("f"), b"changed at the bottom");
    write(&n.join("d/f"), b"changed at the top");
    let changes = changes_dirs(n, Some(o)).unwrap();
    // Every directory on the way (they hold a change) and the two files.
    assert_eq!(changes.len(), depth + 2);
    assert!(changes.iter().all(|c| c.kind == ChangeKind::Modify));
    let entries = read_tar(&export(n, &changes));
    assert_eq!(entries.len(), depth + 2);
    assert_eq!(entries[depth].data, b"changed at the bottom");
    assert_eq!(entries[depth + 1].path, "d/f");
    assert_eq!(entries[depth + 1].data, b"changed at the top");
    assert_eq!(
        changes_size(n, &changes).unwrap(),
        (b"changed at the bottom".len() + b"changed at the top".len()) as u64
    );
}
