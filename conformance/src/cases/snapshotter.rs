//! containerd's snapshotter testsuite (`core/snapshots/testsuite/`), mapped onto this trait:
//! Prepare is `create_rw`, a committed snapshot is a layer that has children, a View is a
//! `get`. Every stack is compared against a flat directory that got the same steps.
//!
//! Not mapped: Stat/Walk/Update (the engine keeps records, not the driver) and
//! RemoveIntermediateSnapshot (the driver does not check for children: the engine does).

use std::time::Duration;

use strata_driver_api::{ChangeKind, CreateOpts, MountOpts};
use tokio::io::AsyncReadExt;

use crate::check::{Context, Failure, id};
use crate::fixtures::{blocking, with_mounted};
use crate::harness::Harness;
use crate::ops::{self, Flat, Op, check_stack, file};
use crate::tree::Compare;
use crate::{ensure, ensure_eq};

/// containerd Basic: overwrite, add and remove over a base, each layer equal to the flat
/// directory; then removing top-down works.
pub async fn basic_stacking(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let ids = check_stack(
        &*d,
        h.scratch(),
        "basic",
        &[
            vec![
                file("foo", "foo\n", 0o777),
                Op::Dir("a", 0o755),
                Op::Dir("a/b", 0o755),
                Op::Dir("a/b/c", 0o755),
            ],
            vec![
                file("bar", "bar\n", 0o777),
                file("foo", "bar\n", 0o777),
                Op::RemoveAll("a/b"),
            ],
        ],
    )
    .await?;
    for l in ids.iter().rev() {
        d.remove(l, false).await.ctx(format!("remove {l}"))?;
    }
    Ok(())
}

/// containerd Transitivity, in this trait's terms: a layer sees its grandparent through an
/// empty parent, and the empty steps have no changes and no size.
pub async fn transitivity(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let (a, b, c) = (id("a"), id("b"), id("c"));
    let flat = Flat::new(h.scratch(), "flat")?;
    let steps = [file("from-a", "a", 0o644), Op::Dir("dir-a", 0o750)];
    ops::rw_layer(&*d, &a, None, &steps).await?;
    flat.apply(&steps).await?;
    d.create(&b, Some(&a), &CreateOpts::default())
        .await
        .ctx("create b")?;
    d.create(&c, Some(&b), &CreateOpts::default())
        .await
        .ctx("create c")?;
    flat.ensure_view(&*d, &c, Compare::FLAT).await?;
    let changes = d.changes(&c, Some(&b)).await.ctx("changes(c, b)")?;
    ensure!(
        changes.is_empty(),
        "changes(c, b) of an empty layer: {changes:?}"
    );
    ensure_eq!(
        d.diff_size(&c, Some(&b)).await.ctx("diff_size(c, b)")?,
        0,
        "diff_size(c, b)"
    );
    let changes = d.changes(&c, Some(&a)).await.ctx("changes(c, a)")?;
    ensure!(
        changes.is_empty(),
        "changes(c, a) through an empty layer: {changes:?}"
    );
    Ok(())
}

/// containerd LayerFileupdate: a same-size rewrite and a mode change are seen, five times,
/// each run starting just after a second boundary (mtime granularity, moby#21555); the naive
/// or native changes see them too.
pub async fn file_update_same_second(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let l1 = vec![
        Op::Dir("etc", 0o700),
        file("etc/hosts", "mydomain 10.0.0.1", 0o644),
        file("etc/profile", "PATH=/usr/bin", 0o644),
    ];
    let l2 = vec![
        file("etc/hosts", "mydomain 10.0.0.2", 0o644),
        file("etc/profile", "PATH=/usr/bin", 0o666),
        Op::Dir("root", 0o700),
        file("root/.bashrc", "PATH=/usr/sbin:/usr/bin", 0o644),
    ];
    for run in 1..=5 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        tokio::time::sleep(Duration::from_nanos(
            1_000_000_000 - now.subsec_nanos() as u64 + 1,
        ))
        .await;
        let prefix = format!("update{run}");
        let ids = check_stack(&*d, h.scratch(), &prefix, &[l1.clone(), l2.clone()]).await?;
        let changes = d
            .changes(&ids[1], Some(&ids[0]))
            .await
            .ctx("changes(l2, l1)")?;
        for p in ["/etc/hosts", "/etc/profile"] {
            ensure!(
                changes
                    .iter()
                    .any(|c| c.path.as_os_str() == p && c.kind == ChangeKind::Modify),
                "run {run}: changes(l2, l1) misses Modify {p}: {changes:?}"
            );
        }
    }
    Ok(())
}

/// containerd RemoveDirectoryInLowerLayer: remove and recreate a directory, then add a file in
/// the next layer; the lower child stays hidden (moby#25244).
pub async fn remove_recreate_dir(h: &Harness) -> Result<(), Failure> {
    check_stack(
        &*h.driver(),
        h.scratch(),
        "lib",
        &[
            vec![Op::Dir("lib", 0o700), file("lib/hidden", "", 0o644)],
            vec![
                Op::RemoveAll("lib"),
                Op::Dir("lib", 0o755),
                file("lib/not-hidden", "", 0o644),
            ],
            vec![file("lib/newfile", "", 0o644)],
        ],
    )
    .await
    .map(drop)
}

/// containerd Chown: chown of directories and a file in an upper layer (moby#20240).
pub async fn chown_in_upper(h: &Harness) -> Result<(), Failure> {
    check_stack(
        &*h.driver(),
        h.scratch(),
        "chown",
        &[
            vec![
                Op::Dir("opt", 0o700),
                Op::Dir("opt/a", 0o700),
                Op::Dir("opt/a/b", 0o700),
                file("opt/a/b/file.txt", "hello", 0o644),
            ],
            vec![
                Op::Chown("opt", 1, 1),
                Op::Chown("opt/a", 1, 1),
                Op::Chown("opt/a/b", 1, 1),
                Op::Chown("opt/a/b/file.txt", 1, 1),
            ],
        ],
    )
    .await
    .map(drop)
}

/// containerd DirectoryPermissionOnCommit: owners across three layers with removals and
/// re-creations (moby#27298).
pub async fn dir_ownership_3_layers(h: &Harness) -> Result<(), Failure> {
    check_stack(
        &*h.driver(),
        h.scratch(),
        "perm",
        &[
            vec![
                Op::Dir("dir1", 0o700),
                Op::Dir("dir2", 0o700),
                Op::Dir("dir3", 0o700),
                Op::Dir("dir4", 0o700),
                file("dir4/f1", "...", 0o644),
                Op::Dir("dir5", 0o700),
                file("dir5/f1", "...", 0o644),
                Op::Chown("dir1", 1, 1),
                Op::Chown("dir2", 1, 1),
                Op::Chown("dir3", 1, 1),
                Op::Chown("dir5", 1, 1),
                Op::Chown("dir5/f1", 1, 1),
            ],
            vec![
                Op::Chown("dir2", 0, 0),
                Op::RemoveAll("dir3"),
                Op::Chown("dir4", 1, 1),
                Op::Chown("dir4/f1", 1, 1),
            ],
            vec![
                Op::Dir("dir3", 0o700),
                Op::Chown("dir3", 1, 1),
                Op::RemoveAll("dir5"),
                Op::Dir("dir5", 0o700),
                Op::Chown("dir5", 1, 1),
            ],
        ],
    )
    .await
    .map(drop)
}

/// containerd DeletedFilesInChildSnapshot: a file deleted in layer 2 stays deleted in an empty
/// layer 3.
pub async fn deleted_stays_deleted(h: &Harness) -> Result<(), Failure> {
    check_stack(
        &*h.driver(),
        h.scratch(),
        "deleted",
        &[
            vec![
                Op::Dir("etc", 0o700),
                file("etc/hosts", "mydomain 10.0.0.1", 0o644),
                file("etc/profile", "PATH=/usr/bin", 0o644),
            ],
            vec![Op::RemoveAll("etc/hosts")],
            vec![],
        ],
    )
    .await
    .map(drop)
}

/// containerd MoveFileFromLowerLayer: hardlink a lower file into a new directory, then delete
/// the original.
pub async fn hardlink_from_lower(h: &Harness) -> Result<(), Failure> {
    check_stack(
        &*h.driver(),
        h.scratch(),
        "move",
        &[
            vec![
                Op::Dir("dir1", 0o700),
                file("dir1/f1", "Hello", 0o644),
                Op::Dir("dir2", 0o700),
                file("dir2/f2", "...", 0o644),
            ],
            vec![
                Op::Dir("dir3", 0o700),
                file("dir3/f1", "Hello", 0o644),
                Op::RemoveAll("dir1"),
                Op::Link("dir2/f2", "dir3/f2"),
                Op::RemoveAll("dir2/f2"),
            ],
        ],
    )
    .await
    .map(drop)
}

/// containerd Rename (files): overwrite by rename and plain rename of lower files.
pub async fn rename_file(h: &Harness) -> Result<(), Failure> {
    check_stack(
        &*h.driver(),
        h.scratch(),
        "rename",
        &[
            vec![
                Op::Dir("somefiles", 0o700),
                file("somefiles/f1", "was here first!", 0o644),
                file("somefiles/f2", "nothing interesting", 0o644),
            ],
            vec![
                Op::Rename("somefiles/f1", "somefiles/f3"),
                Op::Rename("somefiles/f2", "somefiles/f1"),
            ],
        ],
    )
    .await
    .map(drop)
}

/// containerd Rename (directories): renaming a directory that came from a lower layer, with
/// its children.
pub async fn rename_lower_dir(h: &Harness) -> Result<(), Failure> {
    check_stack(
        &*h.driver(),
        h.scratch(),
        "renamedir",
        &[
            vec![
                Op::Dir("dir1", 0o700),
                file("dir1/child", "child", 0o644),
                Op::Dir("dir1/sub", 0o755),
            ],
            vec![Op::Rename("dir1", "dir2"), file("dir2/new", "new", 0o644)],
            vec![file("dir1", "a file where the directory was", 0o644)],
        ],
    )
    .await
    .map(drop)
}

/// containerd ViewReadonly: a committed image layer, mounted, refuses writes with EROFS.
pub async fn read_only_image(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let img = id("img");
    d.create(&img, None, &CreateOpts::default())
        .await
        .ctx("create")?;
    let tar = crate::tarfile::make_tar(&[crate::tarfile::Entry::file("existing", "x")]);
    d.apply_diff(&img, None, crate::tarfile::stream(tar))
        .await
        .ctx("apply_diff")?;
    with_mounted(&*d, &img, |root| {
        for (what, r) in [
            ("create a file", std::fs::write(root.join("new"), b"y")),
            ("write a file", std::fs::write(root.join("existing"), b"y")),
            ("mkdir", std::fs::create_dir(root.join("newdir"))),
        ] {
            match r {
                Err(e) if e.raw_os_error() == Some(30) => {}
                Err(e) => return Err(Failure::failed(format!("{what}: expected EROFS, got {e}"))),
                Ok(()) => {
                    return Err(Failure::failed(format!(
                        "{what} in a read-only image layer succeeded"
                    )));
                }
            }
        }
        Ok(())
    })
    .await
}

/// `MountOpts::read_only` mounts even a writable layer read-only (EROFS). Needs the
/// read-only-mount capability: a driver that cannot mount read-only declares so.
pub async fn read_only_mount(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let rw = id("rw");
    ops::rw_layer(&*d, &rw, None, &[file("existing", "x", 0o644)]).await?;
    let ro = MountOpts {
        read_only: true,
        ..MountOpts::default()
    };
    let path = d.get(&rw, &ro).await.ctx("get read-only")?;
    let r = blocking(move || Ok(std::fs::write(path.join("new"), b"y"))).await;
    d.put(&rw).await.ctx("put")?;
    match r? {
        Err(e) if e.raw_os_error() == Some(30) => Ok(()),
        Err(e) => Err(Failure::failed(format!("expected EROFS, got {e}"))),
        Ok(()) => Err(Failure::failed("writing through a read-only get succeeded")),
    }
}

/// containerd 128LayersMount: 128 stacked layers, each rewriting `/overwriteme`, adding
/// `/ADDHERE/file-<i>` and replacing `/ONLYME`; every layer equals the flat directory.
pub async fn layers_128_vs_flat(h: &Harness) -> Result<(), Failure> {
    let mut layers = vec![vec![
        file("bottom", "way at the bottom\n", 0o777),
        file("overwriteme", "FIRST!\n", 0o777),
        Op::Dir("ADDHERE", 0o755),
        Op::Dir("ONLYME", 0o755),
        file("ONLYME/bottom", "bye!\n", 0o777),
    ]];
    for i in 1..=127 {
        layers.push(vec![
            Op::FileOwned(
                "overwriteme".into(),
                format!("{i} WAS HERE!\n").into_bytes(),
                0o777,
            ),
            Op::FileOwned(format!("ADDHERE/file-{i}"), b"same\n".to_vec(), 0o755),
            Op::RemoveAll("ONLYME"),
            Op::Dir("ONLYME", 0o755),
            Op::FileOwned(format!("ONLYME/file-{i}"), b"only me!\n".to_vec(), 0o777),
        ]);
    }
    check_stack(&*h.driver(), h.scratch(), "l128", &layers)
        .await
        .map(drop)
}

/// The whole merged view as a tar (`diff(id, None)`) applied to a fresh base layer gives the
/// same tree: deletions of lower layers do not show, no whiteouts come out.
pub async fn diff_whole_view(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let ids = check_stack(
        &*d,
        h.scratch(),
        "whole",
        &[
            vec![
                Op::Dir("d", 0o755),
                file("d/gone", "x", 0o644),
                file("kept", "k", 0o600),
            ],
            vec![Op::RemoveAll("d/gone"), file("d/new", "n", 0o644)],
            vec![
                Op::RemoveAll("d"),
                Op::Dir("d", 0o711),
                file("top", "t", 0o644),
            ],
        ],
    )
    .await?;
    let top = ids.last().expect("three layers");
    let mut tar = Vec::new();
    d.diff(top, None)
        .await
        .ctx("diff(top, none)")?
        .read_to_end(&mut tar)
        .await
        .ctx("reading it")?;
    let names = crate::cases::roundtrip::tar_names(&tar)?;
    ensure!(
        !names
            .iter()
            .any(|n| n.rsplit('/').next().is_some_and(|b| b.starts_with(".wh."))),
        "diff(top, none) holds whiteouts: {names:?}"
    );
    let copy = id("copy");
    d.create(&copy, None, &CreateOpts::default())
        .await
        .ctx("create copy")?;
    d.apply_diff(&copy, None, crate::tarfile::stream(tar))
        .await
        .ctx("apply_diff")?;
    let flat = Flat::new(h.scratch(), "whole-copy")?;
    for ops in [
        vec![
            Op::Dir("d", 0o755),
            file("d/gone", "x", 0o644),
            file("kept", "k", 0o600),
        ],
        vec![Op::RemoveAll("d/gone"), file("d/new", "n", 0o644)],
        vec![
            Op::RemoveAll("d"),
            Op::Dir("d", 0o711),
            file("top", "t", 0o644),
        ],
    ] {
        flat.apply(&ops).await?;
    }
    flat.ensure_view(&*d, &copy, Compare::FLAT).await
}

/// A new hardlink to a file the upper layer did not change: the view shows one inode under
/// both names, and the diff carries the source before the link, so the layer rebuilds from
/// it (research/layer-security.md, diff case 52).
pub async fn new_link_to_lower_file(h: &Harness) -> Result<(), Failure> {
    check_stack(
        &*h.driver(),
        h.scratch(),
        "newlink",
        &[
            vec![
                Op::Dir("bin", 0o755),
                file("bin/tool", "#!/bin/true\n", 0o755),
            ],
            vec![Op::Link("bin/tool", "bin/alias"), file("other", "o", 0o644)],
        ],
    )
    .await
    .map(drop)
}
