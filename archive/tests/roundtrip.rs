//! Writing and applying together (research case 54): apply(diff(A, B)) onto A gives B, and an
//! OCI tar stored in AUFS or overlay form comes back out byte for byte.

mod common;

use std::path::Path;

use common::*;
use rustix::fs::FileType;
use strata_archive::{ApplyOptions, WhiteoutFormat, WhiteoutMode, apply_tar};
use strata_archive::{changes_dirs, export_changes};
use strata_conformance::{root_or_skip, skip};

fn apply(root: &Path, tar: &[u8], mode: WhiteoutMode) {
    apply_tar(root, &mut &tar[..], &ApplyOptions::new(mode)).unwrap();
}

/// A copy of `src` made by writing it out and applying it.
fn copy(src: &Path) -> tempfile::TempDir {
    let dst = tempfile::tempdir().unwrap();
    apply(
        dst.path(),
        &tar_of_dir(src, WhiteoutFormat::Aufs),
        WhiteoutMode::Remove,
    );
    dst
}

/// The lower tree A: a bit of everything this process may make.
fn lower(r: &Path) {
    mkdir(&r.join("etc"));
    write(&r.join("etc/passwd"), b"root:x:0:0\n");
    write(&r.join("etc/hosts"), b"127.0.0.1 localhost\n");
    mkdir(&r.join("bin"));
    write(&r.join("bin/sh"), b"\x7fELF sh");
    chmod(&r.join("bin/sh"), 0o755);
    std::fs::hard_link(r.join("bin/sh"), r.join("bin/bash")).unwrap();
    write(&r.join("bin/lib"), b"shared library");
    mkdir(&r.join("var"));
    mkdir(&r.join("var/cache"));
    write(&r.join("var/cache/a"), b"a");
    write(&r.join("var/cache/b"), b"b");
    mkdir(&r.join("tmp"));
    chmod(&r.join("tmp"), 0o1777);
    ln_s("../etc/passwd", &r.join("bin/pw"));
    write(&r.join("was-file"), b"f");
    mkdir(&r.join("was-dir"));
    write(&r.join("was-dir/child"), b"c");
    mknod(&r.join("fifo"), FileType::Fifo, 0o600, 0, 0);
    if is_root() {
        mknod(&r.join("null"), FileType::CharacterDevice, 0o666, 1, 3);
        chown(&r.join("etc/passwd"), 0, 42);
    }
    freeze(r, 1_500_000_000);
}

/// B: A changed in every way the naive diff knows.
fn upper(r: &Path) {
    write(
        &r.join("etc/hosts"),
        b"127.0.0.1 localhost\n::1 localhost\n",
    );
    write(&r.join("etc/new.conf"), &vec![b'n'; 70_000]);
    chmod(&r.join("bin/sh"), 0o4755); // both names of the inode
    std::fs::hard_link(r.join("bin/lib"), r.join("etc/lib-alias")).unwrap();
    std::fs::remove_dir_all(r.join("var/cache")).unwrap();
    std::fs::remove_file(r.join("bin/pw")).unwrap();
    ln_s("/etc/shadow", &r.join("bin/pw"));
    std::fs::remove_file(r.join("was-file")).unwrap();
    mkdir(&r.join("was-file"));
    write(&r.join("was-file/inside"), b"i");
    std::fs::remove_dir_all(r.join("was-dir")).unwrap();
    write(&r.join("was-dir"), b"now a file");
    let long = "x".repeat(180);
    write(&r.join("tmp").join(&long), b"long");
    if rustix::fs::lsetxattr(
        r.join("etc/hosts"),
        "user.note",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .is_err()
    {
        skip!("the user xattr part: no user xattrs here");
    }
    if is_root() {
        setxattr(&r.join("bin/lib"), "security.capability", &capability(10));
        chown(&r.join("etc/passwd"), 0, 0);
        std::fs::remove_file(r.join("null")).unwrap();
        mknod(&r.join("null"), FileType::CharacterDevice, 0o666, 1, 5);
    }
}

#[test]
fn applying_the_diff_of_a_and_b_onto_a_gives_b() {
    let a = tempfile::tempdir().unwrap();
    lower(a.path());
    let b = copy(a.path());
    upper(b.path());

    let changes = changes_dirs(b.path(), Some(a.path())).unwrap();
    let mut diff = Vec::new();
    export_changes(b.path(), &changes, &mut diff).unwrap();

    let target = copy(a.path());
    assert_eq!(tree(target.path()), tree(a.path()), "the copy of A is A");
    apply(target.path(), &diff, WhiteoutMode::Remove);
    assert_eq!(tree(target.path()), tree(b.path()));
    let left = changes_dirs(target.path(), Some(b.path())).unwrap();
    assert!(left.is_empty(), "still differs: {left:?}");
    // The link made in B between a lower file and a new name survives the trip.
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| {
        std::fs::symlink_metadata(target.path().join(p))
            .unwrap()
            .ino()
    };
    assert_eq!(ino("bin/lib"), ino("etc/lib-alias"));
    assert_eq!(ino("bin/sh"), ino("bin/bash"));
    if is_root() {
        assert_eq!(
            get_xattr(&target.path().join("bin/lib"), "security.capability"),
            Some(capability(10))
        );
    }
}

/// A layer tar with whiteouts and an opaque marker, as `write_tar` writes one.
fn layer_with_whiteouts() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    mkdir(&r.join("d"));
    write(&r.join("d/kept"), b"k");
    write(&r.join("d/.wh.gone"), b"");
    chmod(&r.join("d/.wh.gone"), 0o600);
    mkdir(&r.join("o"));
    write(&r.join("o/.wh..wh..opq"), b"");
    chmod(&r.join("o/.wh..wh..opq"), 0o755); // the directory's permissions
    write(&r.join("o/new"), b"n");
    write(&r.join(".wh.top"), b"");
    freeze(r, 1_400_000_000);
    set_mtime(&r.join("o/.wh..wh..opq"), 0, 0);
    tar_of_dir(r, WhiteoutFormat::Aufs)
}

#[test]
fn a_tar_stored_in_aufs_form_comes_back_byte_for_byte() {
    let tar = layer_with_whiteouts();
    let dir = tempfile::tempdir().unwrap();
    apply(dir.path(), &tar, WhiteoutMode::Keep);
    assert_eq!(tar_of_dir(dir.path(), WhiteoutFormat::Aufs), tar);
}

#[test]
fn a_tar_stored_in_overlay_form_comes_back_byte_for_byte() {
    if !root_or_skip!() {
        return;
    }
    let tar = layer_with_whiteouts();
    let upper = tempfile::tempdir().unwrap();
    apply(
        upper.path(),
        &tar,
        WhiteoutMode::Overlay { user_xattr: false },
    );
    let back = tar_of_dir(upper.path(), WhiteoutFormat::Overlay { user_xattr: false });
    let (want, got) = (read_tar(&tar), read_tar(&back));
    assert_eq!(names(&got), names(&want));
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(g, w, "{}", w.path);
    }
    assert!(back == tar, "the overlay round trip changed the bytes");
}
