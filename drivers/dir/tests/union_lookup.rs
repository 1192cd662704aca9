//! The union view, read through the mount with ordinary file operations, in each mount mode:
//! lookup and getattr fall through, whiteouts and opaque directories stop them, readdir
//! merges, inode numbers stay, statfs answers.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind as Io, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::modes::U;
use common::*;
use strata_conformance::tarfile::{Entry, make_tar, with_parents};

per_mode!(
    lookup_falls_through_and_stops_at_whiteouts_and_opaque_dirs,
    readdir_merges_each_name_once_and_hides_internals,
    inode_numbers_stay_for_the_life_of_the_mount,
    statfs_reports_the_layer_file_system,
    read_only_views_refuse_writes_in_fuse_mode,
    a_deep_chain_resolves_through_every_branch,
);

fn not_found(p: &Path) {
    match fs::symlink_metadata(p) {
        Err(e) => assert_eq!(e.kind(), Io::NotFound, "{p:?}: {e}"),
        Ok(m) => panic!("{p:?} is visible: {m:?}"),
    }
}

async fn lookup_falls_through_and_stops_at_whiteouts_and_opaque_dirs(f: U) {
    f.image(
        "l0",
        None,
        make_tar(&with_parents(&[
            Entry::file("a", "a0"),
            Entry::file("gone", "g"),
            Entry::file("dir/x", "x0"),
            Entry::file("dir/y", "y0"),
            Entry::file("opq/old", "o"),
            Entry::file("sub/deep/f", "f"),
            Entry::file("low", "lower only")
                .mode(0o600)
                .mtime_ns(1_600_000_000, 500),
            Entry::file("fileover/d", "in a dir"),
        ])),
    )
    .await;
    f.image(
        "l1",
        Some("l0"),
        make_tar(&with_parents(&[
            Entry::file("a", "a1"),
            Entry::whiteout("gone"),
            Entry::opaque("opq"),
            Entry::file("opq/new", "n"),
            Entry::file("dir/z", "z1"),
            Entry::whiteout("dir/x"),
            Entry::whiteout("sub"),
            Entry::file("fileover", "now a file"),
        ])),
    )
    .await;
    f.container("c", Some("l1")).await;
    let v = f.get("c").await;

    assert_eq!(fs::read_to_string(v.join("a")).unwrap(), "a1");
    assert_eq!(fs::metadata(v.join("a")).unwrap().len(), 2);
    let m = fs::metadata(v.join("low")).unwrap();
    assert_eq!(fs::read_to_string(v.join("low")).unwrap(), "lower only");
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 500));
    assert_eq!(m.len(), 10);
    for hidden in [
        "gone",
        "dir/x",
        "opq/old",
        "sub",
        "sub/deep/f",
        ".wh.gone",
        "dir/.wh.x",
        "opq/.wh..wh..opq",
        ".wh.sub",
    ] {
        not_found(&v.join(hidden));
    }
    assert_eq!(fs::read_to_string(v.join("dir/y")).unwrap(), "y0");
    assert_eq!(fs::read_to_string(v.join("dir/z")).unwrap(), "z1");
    assert_eq!(fs::read_to_string(v.join("opq/new")).unwrap(), "n");
    assert!(fs::metadata(v.join("dir")).unwrap().is_dir());
    // A file over a lower directory ends the lookup.
    assert!(fs::metadata(v.join("fileover")).unwrap().is_file());
    let e = fs::metadata(v.join("fileover/d")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc_enotdir()), "{e}");
    assert_eq!(listing(&v), ["a", "dir", "fileover", "low", "opq"]);
    assert_eq!(listing(&v.join("opq")), ["new"]);
    f.put_last("c").await;
    // Looking never writes.
    assert!(names(&f.diff("c")).is_empty(), "{:?}", names(&f.diff("c")));
}

fn libc_enotdir() -> i32 {
    rustix::io::Errno::NOTDIR.raw_os_error()
}

async fn readdir_merges_each_name_once_and_hides_internals(f: U) {
    let big0: Vec<String> = (0..600).map(|i| format!("big/n{i:04}")).collect();
    let big1: Vec<String> = (300..900).map(|i| format!("big/n{i:04}")).collect();
    let wh1: Vec<String> = (0..100).map(|i| format!("big/n{i:04}")).collect();
    let mut e0 = vec![
        Entry::file("d/a", "a"),
        Entry::file("d/b", "b0"),
        Entry::file("d/c", "c0"),
        Entry::dir("d/sub"),
    ];
    e0.extend(big0.iter().map(|p| Entry::file(p, "0")));
    f.image("l0", None, make_tar(&with_parents(&e0))).await;
    let mut e1 = vec![
        Entry::file("d/b", "b1"),
        Entry::file("d/e", "e1"),
        Entry::whiteout("d/a"),
        Entry::dir("d/.wh..wh.plnk"),
        Entry::file("d/.wh..wh.aufs", ""),
    ];
    e1.extend(big1.iter().map(|p| Entry::file(p, "1")));
    e1.extend(wh1.iter().map(|p| Entry::whiteout(p)));
    f.image("l1", Some("l0"), make_tar(&with_parents(&e1)))
        .await;
    f.image(
        "l2",
        Some("l1"),
        make_tar(&with_parents(&[
            Entry::file("d/f", "f2"),
            Entry::file("d/b", "b2"),
            Entry::whiteout("d/e"),
        ])),
    )
    .await;
    f.container("c", Some("l2")).await;
    let v = f.get("c").await;

    let d = v.join("d");
    assert_eq!(listing(&d), ["b", "c", "f", "sub"]);
    assert_eq!(fs::read_to_string(d.join("b")).unwrap(), "b2");
    // Each name once, with the type and inode number that lookup gives.
    for dir in [&v, &d, &v.join("big")] {
        let mut seen = BTreeSet::new();
        for ent in fs::read_dir(dir).unwrap() {
            let ent = ent.unwrap();
            let name = ent.file_name();
            assert!(
                seen.insert(name.clone()),
                "{name:?} listed twice in {dir:?}"
            );
            let m = fs::symlink_metadata(ent.path()).unwrap();
            assert_eq!(ent.file_type().unwrap(), m.file_type(), "{name:?}");
            assert_eq!(
                std::os::unix::fs::DirEntryExt::ino(&ent),
                m.ino(),
                "{name:?}: d_ino"
            );
        }
    }
    let big = listing(&v.join("big"));
    let want: Vec<String> = (100..900).map(|i| format!("n{i:04}")).collect();
    assert_eq!(big, want);
    assert_eq!(fs::read_to_string(v.join("big/n0450")).unwrap(), "1");
    assert_eq!(fs::read_to_string(v.join("big/n0150")).unwrap(), "0");

    // The listing follows changes made through the view.
    put_file(&v, "d/new", "n");
    fs::remove_file(d.join("b")).unwrap();
    assert_eq!(listing(&d), ["c", "f", "new", "sub"]);
    f.put_last("c").await;
    assert_eq!(names(&f.diff("c")), ["d", "d/.wh.b", "d/new"]);
}

async fn inode_numbers_stay_for_the_life_of_the_mount(f: U) {
    f.image(
        "l0",
        None,
        make_tar(&with_parents(&[
            Entry::file("f", "f"),
            Entry::file("g", "g"),
            Entry::file("d/h", "h"),
            Entry::file("mv", "m"),
            Entry::file("hl1", "linked"),
            Entry::hardlink("hl2", "hl1"),
        ])),
    )
    .await;
    f.container("c", Some("l0")).await;
    let v = f.get("c").await;
    let ino = |p: &str| fs::symlink_metadata(v.join(p)).unwrap().ino();
    let paths = ["", "f", "g", "d", "d/h", "mv", "hl1"];
    let before: Vec<u64> = paths.iter().map(|p| ino(p)).collect();
    for _ in 0..3 {
        assert_eq!(paths.iter().map(|p| ino(p)).collect::<Vec<_>>(), before);
    }
    assert_eq!(
        before.iter().collect::<BTreeSet<_>>().len(),
        paths.len(),
        "distinct files, distinct numbers: {before:?}"
    );
    assert_eq!(ino("hl2"), ino("hl1"), "lower hard links are one inode");

    // An fd opened before the copy-up sees the same number after it.
    let early = fs::File::open(v.join("f")).unwrap();
    let mut w = fs::OpenOptions::new()
        .append(true)
        .open(v.join("f"))
        .unwrap();
    w.write_all(b"+").unwrap();
    drop(w);
    fs::set_permissions(v.join("g"), fs::Permissions::from_mode(0o600)).unwrap();
    put_file(&v, "d/h", "h2");
    fs::rename(v.join("mv"), v.join("mv2")).unwrap();
    let mut l = fs::OpenOptions::new()
        .append(true)
        .open(v.join("hl1"))
        .unwrap();
    l.write_all(b"+").unwrap();
    drop(l);
    let after: Vec<u64> = ["", "f", "g", "d", "d/h", "mv2", "hl1"]
        .iter()
        .map(|p| ino(p))
        .collect();
    assert_eq!(after, before, "copy-ups and a rename keep inode numbers");
    assert_eq!(early.metadata().unwrap().ino(), before[1]);
    assert_eq!(ino("hl2"), ino("hl1"));
    put_file(&v, "new", "n");
    assert!(!before.contains(&ino("new")));
    drop(early);
    f.put_last("c").await;
}

async fn statfs_reports_the_layer_file_system(f: U) {
    f.image(
        "l0",
        None,
        make_tar(&with_parents(&[Entry::file("f", "f")])),
    )
    .await;
    f.container("c", Some("l0")).await;
    let v = f.get("c").await;
    let s = rustix::fs::statvfs(&v).unwrap();
    let backing = rustix::fs::statvfs(f.diff("c")).unwrap();
    let shown = (
        s.f_bsize,
        s.f_frsize,
        s.f_blocks,
        s.f_bfree,
        s.f_bavail,
        s.f_namemax,
    );
    assert!(
        s.f_bsize > 0 && s.f_frsize > 0 && s.f_namemax > 0,
        "{shown:?}"
    );
    assert!(
        s.f_bfree <= s.f_blocks && s.f_bavail <= s.f_blocks,
        "{shown:?}"
    );
    assert_eq!(
        s.f_blocks * s.f_frsize,
        backing.f_blocks * backing.f_frsize,
        "the view's size is the size of the file system that holds the layer"
    );
    f.put_last("c").await;
}

async fn read_only_views_refuse_writes_in_fuse_mode(f: U) {
    f.image(
        "l0",
        None,
        make_tar(&with_parents(&[
            Entry::file("f", "f"),
            Entry::file("d/g", "g"),
        ])),
    )
    .await;
    f.container("c", Some("l0")).await;
    // A read-only get of a container layer, and any get of an image layer.
    let views = [("c", f.get_ro("c").await), ("l0", f.get("l0").await)];
    for (layer, v) in &views {
        let tries: [(&str, std::io::Result<()>); 5] = [
            ("create", fs::write(v.join("new"), "n")),
            (
                "open for writing",
                fs::OpenOptions::new()
                    .append(true)
                    .open(v.join("f"))
                    .map(drop),
            ),
            ("unlink", fs::remove_file(v.join("f"))),
            ("mkdir", fs::create_dir(v.join("d/sub"))),
            (
                "chmod",
                fs::set_permissions(v.join("d"), fs::Permissions::from_mode(0o700)),
            ),
        ];
        for (what, r) in tries {
            if f.is_fuse() {
                let erofs = rustix::io::Errno::ROFS.raw_os_error();
                assert_eq!(
                    r.err().and_then(|e| e.raw_os_error()),
                    Some(erofs),
                    "{layer}: {what}"
                );
            } else {
                // Copy mode: nothing stops a write to a copied view.
                r.unwrap();
            }
        }
    }
    f.put("c").await;
    f.put_last("l0").await;
    f.assert_released("c").await;
    assert!(
        names(&f.diff("c")).is_empty(),
        "a read-only view never folds"
    );
    if f.is_fuse() {
        assert_eq!(names(&f.diff("l0")), ["d", "d/g", "f"]);
    } else {
        // A writable get of an image layer folds in copy mode.
        assert_eq!(names(&f.diff("l0")), ["d", "d/g", "d/sub", "new"]);
    }
}

async fn a_deep_chain_resolves_through_every_branch(f: U) {
    let names_: Vec<String> = (0..40).map(|i| format!("l{i:02}")).collect();
    for (i, n) in names_.iter().enumerate() {
        let keep = format!("keep/{n}");
        let tmp = format!("tmp{i}");
        let prev = format!("tmp{}", i.wrapping_sub(1));
        let mut e = vec![
            Entry::file(&keep, n),
            Entry::file("shared", n),
            Entry::file(&tmp, n),
        ];
        if i > 0 {
            e.push(Entry::whiteout(&prev));
        }
        let parent = i.checked_sub(1).map(|p| names_[p].as_str());
        f.image(n, parent, make_tar(&with_parents(&e))).await;
    }
    f.container("c", Some("l39")).await;
    let v = f.get("c").await;
    let keep = listing(&v.join("keep"));
    assert_eq!(keep, names_);
    for n in &names_ {
        assert_eq!(fs::read_to_string(v.join("keep").join(n)).unwrap(), *n);
    }
    assert_eq!(fs::read_to_string(v.join("shared")).unwrap(), "l39");
    assert_eq!(listing(&v), ["keep", "shared", "tmp39"]);
    // A write to a file from the bottom of the chain.
    put_file(&v, "keep/l00", "top");
    f.put_last("c").await;
    assert_eq!(names(&f.diff("c")), ["keep", "keep/l00"]);
    assert_eq!(
        fs::read_to_string(f.diff("l00").join("keep/l00")).unwrap(),
        "l00"
    );
}
