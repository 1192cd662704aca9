//! The storage half of the trait: create, remove, exists, metadata, ids. One case per
//! sentence of the contracts in driver-api's `driver.rs`; mounting is in `mounts`.

use std::collections::BTreeMap;

use strata_driver_api::{CreateOpts, ErrorKind, LayerId, MountOpts};

use crate::check::{Context, Failure, expect_kind, id};
use crate::fixtures::{blocking, read_dir_names, verify_file, with_mounted};
use crate::harness::Harness;
use crate::ops::{self, Op, file};
use crate::tarfile::{Entry, make_tar, stream};
use crate::{ensure, ensure_eq};

fn size_opts(size: u64) -> CreateOpts {
    CreateOpts {
        size: Some(size),
        ..CreateOpts::default()
    }
}

pub(crate) async fn read_file(
    d: &dyn strata_driver_api::Driver,
    layer: &LayerId,
    path: &'static str,
) -> Result<Option<Vec<u8>>, Failure> {
    with_mounted(d, layer, move |root| match std::fs::read(root.join(path)) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::failed(format!("read {path}: {e}"))),
    })
    .await
}

/// A snapshot of the driver's home after one layer was made (so state a driver creates
/// lazily exists), to show later that refused calls left nothing behind.
async fn warm_home(h: &Harness) -> Result<crate::tree::Tree, Failure> {
    let d = h.driver();
    d.create(&id("warm"), None, &CreateOpts::default())
        .await
        .ctx("create warm")?;
    let home = h.home().to_path_buf();
    blocking(move || crate::tree::snapshot(&home)).await
}

async fn home_unchanged(
    h: &Harness,
    before: &crate::tree::Tree,
    what: &str,
) -> Result<(), Failure> {
    let home = h.home().to_path_buf();
    let now = blocking(move || crate::tree::snapshot(&home)).await?;
    crate::tree::ensure_same(&now, before, crate::tree::Compare::FLAT, what)
}

/// name() is usable as a directory name; status() has no empty keys.
pub async fn name_and_status(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let name = d.name().to_string();
    ensure!(
        !name.is_empty()
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
        "driver name {name:?} must be non-empty [A-Za-z0-9_-]"
    );
    for (k, _) in d.status() {
        ensure!(!k.is_empty(), "status() has an empty key");
    }
    Ok(())
}

/// graphtest CreateEmpty: a base layer's view is an empty 0755 root owned by 0:0 (as root).
pub async fn create_empty(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let empty = id("empty");
    d.create(&empty, None, &CreateOpts::default())
        .await
        .ctx("create empty")?;
    ensure!(
        d.exists(&empty).await.ctx("exists")?,
        "exists(empty) is false after create"
    );
    with_mounted(&*d, &empty, |root| {
        let (uid, gid) = crate::fixtures::own_ids();
        verify_file(root, true, 0o755, uid, gid)?;
        let names = read_dir_names(root)?;
        ensure!(names.is_empty(), "a fresh layer holds {names:?}");
        Ok(())
    })
    .await?;
    d.remove(&empty, false).await.ctx("remove empty")?;
    ensure!(
        !d.exists(&empty).await.ctx("exists")?,
        "exists(empty) is true after remove"
    );
    Ok(())
}

/// containerd RootPermission, for both kinds: the root of a fresh layer is 0755, absolute.
pub async fn root_permission(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let rw = id("rw");
    d.create_rw(&rw, None, &CreateOpts::default())
        .await
        .ctx("create_rw")?;
    let path = d.get(&rw, &MountOpts::default()).await.ctx("get")?;
    ensure!(
        path.is_absolute(),
        "get returned a relative path {}",
        path.display()
    );
    let checked = blocking(move || {
        let (uid, gid) = crate::fixtures::own_ids();
        verify_file(&path, true, 0o755, uid, gid)
    })
    .await;
    d.put(&rw).await.ctx("put")?;
    checked
}

/// An existing id is AlreadyExists for create and create_rw, whatever the kind, and the
/// existing layer keeps its content.
pub async fn create_exists(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let base = id("base");
    let a = id("a");
    ops::rw_layer(&*d, &base, None, &[file("base-file", "base", 0o644)]).await?;
    ops::rw_layer(&*d, &a, None, &[file("keep", "kept", 0o644)]).await?;
    let none = CreateOpts::default();
    expect_kind(
        d.create(&a, None, &none).await,
        ErrorKind::AlreadyExists,
        "create a again",
    )?;
    expect_kind(
        d.create_rw(&a, None, &none).await,
        ErrorKind::AlreadyExists,
        "create_rw a again",
    )?;
    expect_kind(
        d.create(&a, Some(&base), &none).await,
        ErrorKind::AlreadyExists,
        "create a again on another parent",
    )?;
    expect_kind(
        d.create(&base, None, &none).await,
        ErrorKind::AlreadyExists,
        "create base again",
    )?;
    ensure_eq!(
        read_file(&*d, &a, "keep").await?,
        Some(b"kept".to_vec()),
        "a/keep after the refusals"
    );
    ensure_eq!(
        read_file(&*d, &a, "base-file").await?,
        None,
        "a must not gain base's file"
    );
    Ok(())
}

/// A missing parent is ParentNotFound, for both kinds, and leaves nothing behind.
pub async fn create_missing_parent(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let before = warm_home(h).await?;
    let child = id("child");
    let ghost = id("ghost");
    let none = CreateOpts::default();
    expect_kind(
        d.create(&child, Some(&ghost), &none).await,
        ErrorKind::ParentNotFound,
        "create",
    )?;
    ensure!(
        !d.exists(&child).await.ctx("exists")?,
        "a failed create left the layer behind"
    );
    expect_kind(
        d.create_rw(&child, Some(&ghost), &none).await,
        ErrorKind::ParentNotFound,
        "create_rw",
    )?;
    ensure!(
        !d.exists(&child).await.ctx("exists")?,
        "a failed create_rw left the layer behind"
    );
    home_unchanged(h, &before, "the home after refused creates").await?;
    d.create(&child, None, &none)
        .await
        .ctx("create the id after the failures")?;
    Ok(())
}

/// `opts.size` on an image layer is InvalidInput and leaves nothing behind.
pub async fn create_image_with_size(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let before = warm_home(h).await?;
    let a = id("sized");
    expect_kind(
        d.create(&a, None, &size_opts(1 << 20)).await,
        ErrorKind::InvalidInput,
        "create with size",
    )?;
    ensure!(
        !d.exists(&a).await.ctx("exists")?,
        "a refused create left the layer behind"
    );
    home_unchanged(h, &before, "the home after refused creates").await?;
    Ok(())
}

/// An unknown storage option is InvalidInput for both kinds and leaves nothing behind.
pub async fn unknown_storage_opt(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let before = warm_home(h).await?;
    let a = id("opts");
    let opts = CreateOpts {
        storage_opts: BTreeMap::from([("strata-conformance-no-such-option".into(), "1".into())]),
        ..CreateOpts::default()
    };
    expect_kind(
        d.create(&a, None, &opts).await,
        ErrorKind::InvalidInput,
        "create",
    )?;
    expect_kind(
        d.create_rw(&a, None, &opts).await,
        ErrorKind::InvalidInput,
        "create_rw",
    )?;
    ensure!(
        !d.exists(&a).await.ctx("exists")?,
        "a refused create left the layer behind"
    );
    home_unchanged(h, &before, "the home after refused creates").await?;
    Ok(())
}

/// Without quota, `opts.size` on a writable layer is NotSupported and leaves nothing behind.
pub async fn rw_size_not_supported(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let before = warm_home(h).await?;
    let a = id("sized");
    expect_kind(
        d.create_rw(&a, None, &size_opts(50 << 20)).await,
        ErrorKind::NotSupported,
        "create_rw with size",
    )?;
    ensure!(
        !d.exists(&a).await.ctx("exists")?,
        "a refused create_rw left the layer behind"
    );
    home_unchanged(h, &before, "the home after refused creates").await?;
    Ok(())
}

/// graphtest SetQuota: a 50M layer takes 25 MiB and refuses 50 MiB with EDQUOT or ENOSPC.
pub async fn set_quota(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let base = id("Base");
    let test = id("BaseTest");
    crate::fixtures::create_base(&*d, &base).await?;
    d.create_rw(&test, Some(&base), &size_opts(50 << 20))
        .await
        .ctx("create_rw with size 50M")?;
    with_mounted(&*d, &test, |root| {
        std::fs::write(root.join("smallfile"), vec![0x5a; 25 << 20]).ctx("writing 25 MiB")?;
        match std::fs::write(root.join("bigfile"), vec![0x5a; 50 << 20]) {
            Ok(()) => Err(Failure::failed(
                "writing 50 MiB more into a 50M layer succeeded",
            )),
            Err(e) if matches!(e.raw_os_error(), Some(122) | Some(28)) => Ok(()),
            Err(e) => Err(Failure::failed(format!(
                "expected EDQUOT or ENOSPC, got {e}"
            ))),
        }
    })
    .await
}

/// Invalid ids are InvalidInput before any file is touched: they cannot be made at all, so
/// no driver call can get one. Valid edge-case ids work end to end.
pub async fn invalid_ids_rejected(h: &Harness) -> Result<(), Failure> {
    let before = crate::tree::snapshot(h.home())?;
    let long = "a".repeat(129);
    for bad in [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "/a",
        "a,b",
        "a:b",
        "-a",
        ".a",
        "a b",
        "a\0b",
        "lowerdir=x",
        &long,
    ] {
        expect_kind(
            LayerId::new(bad),
            ErrorKind::InvalidInput,
            format!("LayerId::new({bad:?})"),
        )?;
        expect_kind(
            bad.parse::<LayerId>(),
            ErrorKind::InvalidInput,
            format!("parse {bad:?}"),
        )?;
    }
    let after = crate::tree::snapshot(h.home())?;
    crate::tree::ensure_same(
        &after,
        &before,
        crate::tree::Compare::ROUND_TRIP,
        "the driver home",
    )?;
    let d = h.driver();
    let max = "A".repeat(128);
    for good in ["a..b", "0", "x_y-z.1", max.as_str()] {
        let l = id(good);
        d.create_rw(&l, None, &CreateOpts::default())
            .await
            .ctx(format!("create_rw {good}"))?;
        ops::write_ops(&*d, &l, &[file("f", good, 0o644)]).await?;
        ensure_eq!(
            read_file(&*d, &l, "f").await?,
            Some(good.as_bytes().to_vec()),
            "content of {good}"
        );
        d.remove(&l, false).await.ctx(format!("remove {good}"))?;
    }
    Ok(())
}

/// Removing a missing layer is NotFound, forced or not.
pub async fn remove_missing(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    expect_kind(
        d.remove(&id("ghost"), false).await,
        ErrorKind::NotFound,
        "remove ghost",
    )?;
    expect_kind(
        d.remove(&id("ghost"), true).await,
        ErrorKind::NotFound,
        "remove --force ghost",
    )?;
    Ok(())
}

/// containerd Remove: after remove the id is free again, and the new layer holds nothing of
/// the old one (another kind, another parent).
pub async fn remove_then_reuse_id(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let a = id("a");
    let p = id("p");
    ops::rw_layer(&*d, &a, None, &[file("old", "old", 0o644)]).await?;
    d.remove(&a, false).await.ctx("remove a")?;
    ensure!(!d.exists(&a).await.ctx("exists")?, "exists(a) after remove");
    expect_kind(
        d.get(&a, &MountOpts::default()).await,
        ErrorKind::NotFound,
        "get a after remove",
    )?;
    ops::rw_layer(&*d, &p, None, &[file("from-p", "p", 0o644)]).await?;
    d.create(&a, Some(&p), &CreateOpts::default())
        .await
        .ctx("create a again on p")?;
    ensure_eq!(
        read_file(&*d, &a, "old").await?,
        None,
        "old content in the reused id"
    );
    ensure_eq!(
        read_file(&*d, &a, "from-p").await?,
        Some(b"p".to_vec()),
        "parent content in the reused id"
    );
    Ok(())
}

fn bytes_under(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                total += md.len();
            }
        }
    }
    total
}

/// remove takes "all its data": 4 MiB written into a layer are gone from the home afterwards.
/// The home is measured after a first layer is made, so that what a driver keeps once per
/// home (a block driver's scratch image) counts on both sides.
pub async fn remove_frees_data(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let a = id("big");
    d.create(&id("warm"), None, &CreateOpts::default())
        .await
        .ctx("create warm")?;
    let home = h.home().to_path_buf();
    let h1 = home.clone();
    let before = blocking(move || Ok(bytes_under(&h1))).await?;
    d.create_rw(&a, None, &CreateOpts::default())
        .await
        .ctx("create_rw")?;
    ops::write_ops(&*d, &a, &[Op::File("big", vec![7; 4 << 20], 0o644)]).await?;
    d.remove(&a, false).await.ctx("remove")?;
    let after = blocking(move || Ok(bytes_under(&home))).await?;
    ensure!(
        after < before + (1 << 20),
        "the home held {before} bytes before the layer and {after} after removing it"
    );
    Ok(())
}

/// Every call on a missing layer is NotFound (exists is false, not an error).
pub async fn missing_layer_not_found(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let ghost = id("ghost");
    ensure!(
        !d.exists(&ghost).await.ctx("exists ghost")?,
        "exists(ghost) is true"
    );
    expect_kind(
        d.get(&ghost, &MountOpts::default()).await,
        ErrorKind::NotFound,
        "get",
    )?;
    expect_kind(
        d.is_mounted(&ghost).await,
        ErrorKind::NotFound,
        "is_mounted",
    )?;
    expect_kind(d.metadata(&ghost).await, ErrorKind::NotFound, "metadata")?;
    expect_kind(
        d.changes(&ghost, None).await,
        ErrorKind::NotFound,
        "changes",
    )?;
    expect_kind(
        d.diff_size(&ghost, None).await,
        ErrorKind::NotFound,
        "diff_size",
    )?;
    expect_kind(
        d.diff(&ghost, None).await.map(|_| ()),
        ErrorKind::NotFound,
        "diff",
    )?;
    let tar = stream(make_tar(&[Entry::file("f", "x")]));
    expect_kind(
        d.apply_diff(&ghost, None, tar).await,
        ErrorKind::NotFound,
        "apply_diff",
    )?;
    Ok(())
}

/// exists and metadata answer for both kinds.
pub async fn exists_and_metadata(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let img = id("img");
    let rw = id("rw");
    d.create(&img, None, &CreateOpts::default())
        .await
        .ctx("create")?;
    d.create_rw(&rw, Some(&img), &CreateOpts::default())
        .await
        .ctx("create_rw")?;
    for l in [&img, &rw] {
        ensure!(d.exists(l).await.ctx("exists")?, "exists({l}) is false");
        let md = d.metadata(l).await.ctx(format!("metadata {l}"))?;
        for (k, _) in md {
            ensure!(!k.is_empty(), "metadata({l}) has an empty key");
        }
    }
    Ok(())
}
