//! Docker's graphtest (`daemon/graphdriver/graphtest/graphtest_unix.go`), with its numbers.

use strata_driver_api::{CreateOpts, Driver, LayerId};
use tokio::io::AsyncReadExt;

use crate::check::{Context, Failure, id};
use crate::ensure_eq;
use crate::fixtures::{self, with_mounted};
use crate::harness::Harness;
use crate::ops::{self, Op, file};

/// graphtest CreateBase: modes, sticky and setuid bits and owners round-trip through a
/// writable layer.
pub async fn create_base(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let base = id("Base");
    fixtures::create_base(&*d, &base).await?;
    fixtures::verify_base(&*d, &base).await?;
    d.remove(&base, false).await.ctx("remove Base")?;
    Ok(())
}

/// graphtest CreateSnap: a child sees its parent's two entries with identical metadata.
pub async fn create_snap(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let (base, snap) = (id("Base"), id("Snap"));
    fixtures::create_base(&*d, &base).await?;
    d.create(&snap, Some(&base), &CreateOpts::default())
        .await
        .ctx("create Snap")?;
    fixtures::verify_base(&*d, &snap).await?;
    d.remove(&snap, false).await.ctx("remove Snap")?;
    d.remove(&base, false).await.ctx("remove Base")?;
    Ok(())
}

/// graphtest DeepLayerRead: `count` layers on a base (a chain of `count + 1`); every layer is
/// visible in order and the base's `testfile.txt` reads through all of them.
pub async fn deep_layer_read(d: &dyn Driver, count: usize) -> Result<(), Failure> {
    let base = id("base");
    ops::rw_layer(
        d,
        &base,
        None,
        &[file("testfile.txt", "test content", 0o755)],
    )
    .await?;
    let top = fixtures::add_many_layers(d, &base, count).await?;
    fixtures::check_many_layers(d, &top, count).await?;
    let content = with_mounted(d, &top, |root| {
        std::fs::read(root.join("testfile.txt")).ctx("read testfile.txt")
    })
    .await?;
    ensure_eq!(
        content,
        b"test content".to_vec(),
        "testfile.txt through {count} layers"
    );
    Ok(())
}

/// graphtest DeepLayerRead with 20 layers.
pub async fn deep_layer_read_20(h: &Harness) -> Result<(), Failure> {
    deep_layer_read(&*h.driver(), 20).await
}

/// graphtest DeepLayerRead with 128 layers (overlay2's limit).
pub async fn deep_layer_read_128(h: &Harness) -> Result<(), Failure> {
    deep_layer_read(&*h.driver(), 128).await
}

/// The chain an unbounded driver is read through: twice overlay2's 128. Deeper proves little
/// more and costs quadratic time in drivers that materialise views (each layer's first `get`
/// copies everything below it).
pub const UNBOUNDED_DEPTH: u32 = 256;

/// DeepLayerRead at the driver's declared maximum depth (a chain of exactly `max_depth`), or
/// of [`UNBOUNDED_DEPTH`] for a driver without one. Skipped when the maximum is exactly 21 or
/// 129, the chains deep_layer_read_20 and deep_layer_read_128 already read.
pub async fn deep_layer_read_max(h: &Harness) -> Result<(), Failure> {
    let chain = match h.capabilities().max_depth {
        // Exactly the chains deep_layer_read_20 and _128 read; any other bound (114 for
        // overlay's mount(2) fallback) is read here.
        Some(m @ (21 | 129)) => {
            return Err(Failure::skip(format!(
                "max depth {m} is covered by deep_layer_read_{}",
                m - 1
            )));
        }
        Some(m) => m,
        None => UNBOUNDED_DEPTH,
    };
    deep_layer_read(&*h.driver(), chain as usize - 1).await
}

/// graphtest DiffApply: a diff from an upper that rewrote N files and removed a file and a
/// directory, applied onto a fresh child of the same base, returns exactly the diff size and
/// gives the upper's content, whiteouts included.
pub async fn diff_apply(d: &dyn Driver, count: usize) -> Result<(), Failure> {
    let (base, upper, diff) = (id("base"), id("upper"), id("diff"));
    d.create_rw(&base, None, &CreateOpts::default())
        .await
        .ctx("create base")?;
    fixtures::add_many_files(d, &base, count, 3).await?;
    ops::write_ops(
        d,
        &base,
        &[
            file(
                "file-remove.txt",
                "This file should get removed in upper!",
                0o755,
            ),
            Op::Dir("var/lib", 0o755),
        ],
    )
    .await?;

    d.create_rw(&upper, Some(&base), &CreateOpts::default())
        .await
        .ctx("create upper")?;
    fixtures::add_many_files(d, &upper, count, 6).await?;
    ops::write_ops(
        d,
        &upper,
        &[Op::RemoveAll("file-remove.txt"), Op::RemoveAll("var/lib")],
    )
    .await?;

    let diff_size = d
        .diff_size(&upper, None)
        .await
        .ctx("diff_size(upper, none)")?;
    ensure_eq!(
        diff_size,
        64 * count as u64,
        "diff_size(upper, none): the merged upper's bytes"
    );

    d.create(&diff, Some(&base), &CreateOpts::default())
        .await
        .ctx("create diff")?;
    fixtures::check_many_files(d, &diff, count, 3).await?;
    ensure_eq!(
        exists_in(d, &diff, "file-remove.txt").await?,
        true,
        "file-remove.txt in the new layer before apply"
    );

    let mut tar = Vec::new();
    d.diff(&upper, Some(&base))
        .await
        .ctx("diff(upper, base)")?
        .read_to_end(&mut tar)
        .await
        .ctx("reading diff(upper, base)")?;
    let applied = d
        .apply_diff(&diff, Some(&base), crate::tarfile::stream(tar))
        .await
        .ctx("apply_diff")?;
    ensure_eq!(
        applied,
        diff_size,
        "apply_diff's size against diff_size(upper, none)"
    );
    // The trait says apply's size equals diff_size afterwards. A naive diff_size cannot keep
    // that here: the rewrites have the same size and, within one second, the same whole-second
    // mtime the tar carries (Docker's rule), so only a native diff is held to it.
    if d.capabilities().native_diff {
        let after = d
            .diff_size(&diff, Some(&base))
            .await
            .ctx("diff_size(diff, base)")?;
        ensure_eq!(
            after,
            applied,
            "diff_size(diff, base) after apply against apply_diff's size"
        );
    }

    fixtures::check_many_files(d, &diff, count, 6).await?;
    ensure_eq!(
        exists_in(d, &diff, "file-remove.txt").await?,
        false,
        "file-remove.txt after apply"
    );
    ensure_eq!(
        exists_in(d, &diff, "var/lib").await?,
        false,
        "var/lib after apply"
    );
    ensure_eq!(exists_in(d, &diff, "var").await?, true, "var after apply");
    Ok(())
}

async fn exists_in(d: &dyn Driver, layer: &LayerId, path: &'static str) -> Result<bool, Failure> {
    with_mounted(d, layer, move |root| {
        Ok(std::fs::symlink_metadata(root.join(path)).is_ok())
    })
    .await
}

/// graphtest DiffApply with 10 files.
pub async fn diff_apply_10(h: &Harness) -> Result<(), Failure> {
    diff_apply(&*h.driver(), 10).await
}

/// graphtest DiffApply with 1,000 files.
pub async fn diff_apply_1000(h: &Harness) -> Result<(), Failure> {
    diff_apply(&*h.driver(), 1000).await
}

/// graphtest Changes: 20 files changed as `changeManyFiles` does give exactly the 21 expected
/// changes (one directory Modify, 7 Modify, 7 Add, 6 Delete), sorted by path.
pub async fn changes_20(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let (base, upper) = (id("base"), id("upper"));
    d.create_rw(&base, None, &CreateOpts::default())
        .await
        .ctx("create base")?;
    fixtures::add_many_files(&*d, &base, 20, 3).await?;
    d.create_rw(&upper, Some(&base), &CreateOpts::default())
        .await
        .ctx("create upper")?;
    let want = fixtures::change_many_files(&*d, &upper, 20, 6).await?;
    ensure_eq!(want.len(), 21, "graphtest's expected change count");
    let got = d
        .changes(&upper, Some(&base))
        .await
        .ctx("changes(upper, base)")?;
    let mut sorted = got.clone();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    ensure_eq!(
        got.iter().map(|c| c.path.clone()).collect::<Vec<_>>(),
        sorted.iter().map(|c| c.path.clone()).collect::<Vec<_>>(),
        "changes must come sorted by path"
    );
    fixtures::check_changes(&got, &want)
}

/// The change kinds, exactly: a mode change and a content change are Modify, a new file Add
/// (and its directory Modify), a removed file Delete, a file replaced by a directory Modify
/// with its new children Add, a removed directory one Delete (not one per child); sorted.
pub async fn changes_kinds(h: &Harness) -> Result<(), Failure> {
    use strata_driver_api::{Change, ChangeKind};
    let d = h.driver();
    let (base, upper) = (id("base"), id("upper"));
    ops::rw_layer(
        &*d,
        &base,
        None,
        &[
            file("a", "a", 0o644),
            file("b", "b", 0o644),
            file("c", "c", 0o644),
            file("e", "e", 0o644),
            Op::Dir("d", 0o755),
            file("d/x", "x", 0o644),
            Op::Dir("gone", 0o755),
            file("gone/1", "1", 0o644),
            file("gone/2", "2", 0o644),
            Op::Dir("same", 0o755),
            file("same/s", "s", 0o644),
        ],
    )
    .await?;
    d.create_rw(&upper, Some(&base), &CreateOpts::default())
        .await
        .ctx("create upper")?;
    ops::write_ops(
        &*d,
        &upper,
        &[
            Op::Chmod("a", 0o600),
            Op::RemoveAll("b"),
            file("c", "C, longer", 0o644),
            file("d/y", "y", 0o644),
            Op::RemoveAll("e"),
            Op::Dir("e", 0o755),
            file("e/inside", "i", 0o644),
            Op::RemoveAll("gone"),
        ],
    )
    .await?;
    let c = |p: &str, kind| Change {
        path: p.into(),
        kind,
    };
    let want = vec![
        c("/a", ChangeKind::Modify),
        c("/b", ChangeKind::Delete),
        c("/c", ChangeKind::Modify),
        c("/d", ChangeKind::Modify),
        c("/d/y", ChangeKind::Add),
        c("/e", ChangeKind::Modify),
        c("/e/inside", ChangeKind::Add),
        c("/gone", ChangeKind::Delete),
    ];
    let got = d
        .changes(&upper, Some(&base))
        .await
        .ctx("changes(upper, base)")?;
    ensure_eq!(got, want, "changes(upper, base), in order");
    Ok(())
}
