//! Mounting: refcounted `get`/`put`, `is_mounted`, Busy removal, adoption after a restart,
//! `cleanup`, and all of it from many tasks at once (the engine holds one `Arc<dyn Driver>`
//! for every caller).

use std::path::PathBuf;

use strata_driver_api::{CreateOpts, ErrorKind, MountOpts};

use crate::cases::lifecycle::read_file;
use crate::check::{Context, Failure, expect_kind, id};
use crate::fixtures::blocking;
use crate::harness::Harness;
use crate::ops::{self, file};
use crate::{ensure, ensure_eq};

/// graphtest's refcounts: two gets, one put: still mounted and readable; the second put
/// unmounts; a put of a layer that is not mounted is a no-op.
pub async fn refcounted_get_put(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let a = id("a");
    ops::rw_layer(&*d, &a, None, &[file("f", "data", 0o644)]).await?;
    ensure!(
        !d.is_mounted(&a).await.ctx("is_mounted")?,
        "mounted before any get"
    );
    d.put(&a).await.ctx("put of a layer never mounted")?;
    let p1 = d.get(&a, &MountOpts::default()).await.ctx("first get")?;
    let p2 = d.get(&a, &MountOpts::default()).await.ctx("second get")?;
    ensure!(
        d.is_mounted(&a).await.ctx("is_mounted")?,
        "not mounted after get"
    );
    d.put(&a).await.ctx("first put")?;
    ensure!(
        d.is_mounted(&a).await.ctx("is_mounted")?,
        "unmounted by the first of two puts"
    );
    let content = blocking(move || std::fs::read(p2.join("f")).ctx("read after one put")).await?;
    ensure_eq!(content, b"data".to_vec(), "content after one put");
    d.put(&a).await.ctx("second put")?;
    ensure!(
        !d.is_mounted(&a).await.ctx("is_mounted")?,
        "still mounted after the last put"
    );
    d.put(&a).await.ctx("put after the last put")?;
    ensure!(p1.is_absolute(), "get returned a relative path");
    Ok(())
}

/// A mounted layer is Busy to remove; forced, it is unmounted and removed.
pub async fn remove_mounted_busy(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let a = id("a");
    ops::rw_layer(&*d, &a, None, &[file("f", "data", 0o644)]).await?;
    let path = d.get(&a, &MountOpts::default()).await.ctx("get")?;
    expect_kind(
        d.remove(&a, false).await,
        ErrorKind::Busy,
        "remove while mounted",
    )?;
    ensure!(
        d.exists(&a).await.ctx("exists")?,
        "a refused remove removed the layer"
    );
    ensure!(
        d.is_mounted(&a).await.ctx("is_mounted")?,
        "a refused remove unmounted the layer"
    );
    let p = path.clone();
    let content =
        blocking(move || std::fs::read(p.join("f")).ctx("read after refused remove")).await?;
    ensure_eq!(content, b"data".to_vec(), "content after a refused remove");
    d.remove(&a, true)
        .await
        .ctx("remove --force while mounted")?;
    ensure!(
        !d.exists(&a).await.ctx("exists")?,
        "exists after a forced remove"
    );
    Ok(())
}

/// The refcount survives a restart: a new instance sees the mount, adopts it with a count of
/// one, and its put unmounts it, keeping what was written.
pub async fn get_survives_restart(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let a = id("a");
    d.create_rw(&a, None, &CreateOpts::default())
        .await
        .ctx("create_rw")?;
    let path = d.get(&a, &MountOpts::default()).await.ctx("get")?;
    blocking(move || std::fs::write(path.join("written"), b"before restart").ctx("write")).await?;
    let d = h.restart()?;
    ensure!(
        d.is_mounted(&a).await.ctx("is_mounted after restart")?,
        "the new instance does not see the mount"
    );
    d.put(&a).await.ctx("put by the new instance")?;
    ensure!(
        !d.is_mounted(&a).await.ctx("is_mounted")?,
        "still mounted after the adopted mount's put"
    );
    ensure_eq!(
        read_file(&*d, &a, "written").await?,
        Some(b"before restart".to_vec()),
        "what was written before the restart"
    );
    Ok(())
}

/// cleanup unmounts everything, and the layers (and what was written) survive it.
pub async fn cleanup_unmounts(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let (a, b) = (id("a"), id("b"));
    d.create_rw(&a, None, &CreateOpts::default())
        .await
        .ctx("create_rw a")?;
    d.create_rw(&b, Some(&a), &CreateOpts::default())
        .await
        .ctx("create_rw b")?;
    let pa = d.get(&a, &MountOpts::default()).await.ctx("get a")?;
    d.get(&a, &MountOpts::default()).await.ctx("get a again")?;
    let pb: PathBuf = d.get(&b, &MountOpts::default()).await.ctx("get b")?;
    blocking(move || std::fs::write(pb.join("in-b"), b"b").ctx("write b")).await?;
    drop(pa);
    d.cleanup().await.ctx("cleanup")?;
    ensure!(
        !d.is_mounted(&a).await.ctx("is_mounted a")?,
        "a still mounted after cleanup"
    );
    ensure!(
        !d.is_mounted(&b).await.ctx("is_mounted b")?,
        "b still mounted after cleanup"
    );
    let d = h.restart()?;
    ensure!(
        d.exists(&a).await.ctx("exists")? && d.exists(&b).await.ctx("exists")?,
        "layers gone after cleanup"
    );
    ensure_eq!(
        read_file(&*d, &b, "in-b").await?,
        Some(b"b".to_vec()),
        "b's file after cleanup"
    );
    Ok(())
}

/// Eight tasks get, read and put the same layer at once, five times each: every read sees
/// the content, and at the end the layer is not mounted and still whole.
pub async fn concurrent_get_put(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let a = id("shared");
    ops::rw_layer(&*d, &a, None, &[file("f", "shared content", 0o644)]).await?;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let d = d.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..5 {
                let path = d
                    .get(&a, &MountOpts::default())
                    .await
                    .ctx(format!("task {t} round {round}: get"))?;
                let read = blocking(move || std::fs::read(path.join("f")).ctx("read f")).await;
                d.put(&a)
                    .await
                    .ctx(format!("task {t} round {round}: put"))?;
                ensure_eq!(
                    read?,
                    b"shared content".to_vec(),
                    "task {t} round {round}: content"
                );
            }
            Ok::<(), Failure>(())
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| Failure::failed(format!("a task failed: {e}")))??;
    }
    ensure!(
        !d.is_mounted(&a).await.ctx("is_mounted")?,
        "mounted after every get was put"
    );
    ensure_eq!(
        read_file(&*d, &a, "f").await?,
        Some(b"shared content".to_vec()),
        "f afterwards"
    );
    Ok(())
}

/// Sixteen layers created at once on one parent (half image, half writable), each written
/// through its own mount at once: each sees the parent and only its own file.
pub async fn concurrent_creates(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let base = id("base");
    ops::rw_layer(&*d, &base, None, &[file("from-base", "base", 0o644)]).await?;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let d = d.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let l = id(&format!("child-{i}"));
            let none = CreateOpts::default();
            if i % 2 == 0 {
                d.create(&l, Some(&base), &none)
                    .await
                    .ctx(format!("create {l}"))?;
                let tar = crate::tarfile::make_tar(&[crate::tarfile::Entry::file(
                    format!("own-{i}"),
                    "mine",
                )]);
                d.apply_diff(&l, Some(&base), crate::tarfile::stream(tar))
                    .await
                    .ctx(format!("apply {l}"))?;
            } else {
                d.create_rw(&l, Some(&base), &none)
                    .await
                    .ctx(format!("create_rw {l}"))?;
                let own = format!("own-{i}");
                crate::fixtures::with_mounted(&*d, &l, move |root| {
                    std::fs::write(root.join(own), b"mine").ctx("write")
                })
                .await?;
            }
            let names = crate::fixtures::with_mounted(&*d, &l, |root| {
                crate::fixtures::read_dir_names(root)
            })
            .await?;
            ensure_eq!(
                names,
                vec!["from-base".to_string(), format!("own-{i}")],
                "entries of {l}"
            );
            Ok::<(), Failure>(())
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| Failure::failed(format!("a task failed: {e}")))??;
    }
    Ok(())
}
