//! The naive diff, for drivers without a native one, as Docker's NaiveDiffDriver.
//!
//! The tree work is `strata-archive`'s: [`changes_dirs`] compares two trees (its documentation
//! has every rule, Docker's), [`export_changes`] writes the changes as a tar, [`changes_size`]
//! measures them. The driver-level functions ([`diff`], [`apply_diff`], [`changes`], [`diff_size`]) are what
//! the [`Driver`] trait's default methods call: they mount the layers with `get`, do the work on
//! one blocking thread, and `put` them again, whatever happens.

use std::io::Write;
use std::path::Path;

use strata_archive::{self as archive, ApplyOptions, WhiteoutMode};
pub use strata_archive::{changes_dirs, changes_size, export_changes};

use crate::stream::{self, TarStream};
use crate::{Change, Driver, LayerId, MountOpts, Result};

/// Mounts `id` (and `parent`), runs `f` on a blocking thread with their paths, and puts them
/// again whether `f` succeeded or not.
async fn with_mounted<D, T, F>(
    driver: &D,
    id: &LayerId,
    parent: Option<&LayerId>,
    f: F,
) -> Result<T>
where
    D: Driver + ?Sized,
    F: FnOnce(&Path, Option<&Path>) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let ro = MountOpts {
        read_only: true,
        ..MountOpts::default()
    };
    let new = driver.get(id, &ro).await?;
    let old = match parent {
        None => None,
        Some(p) => match driver.get(p, &ro).await {
            Ok(path) => Some(path),
            Err(e) => {
                let _ = driver.put(id).await;
                return Err(e);
            }
        },
    };
    let result = stream::run_blocking(move || f(&new, old.as_deref())).await;
    let put_new = driver.put(id).await;
    let put_old = match parent {
        Some(p) => driver.put(p).await,
        None => Ok(()),
    };
    let value = result?;
    put_new?;
    put_old?;
    Ok(value)
}

/// The naive `diff`: the changes from `parent` to `id` as a tar.
///
/// The tar is spooled to an unlinked temporary file while both layers are mounted, then the
/// layers are released and the file streamed: a `&Driver` cannot be held by a stream that
/// outlives the call, and this keeps every `get` paired with its `put` even if the reader
/// never finishes.
pub async fn diff<D: Driver + ?Sized>(
    driver: &D,
    id: &LayerId,
    parent: Option<&LayerId>,
) -> Result<TarStream> {
    let spool = with_mounted(driver, id, parent, |new, old| {
        let mut file =
            tempfile::tempfile().map_err(|e| crate::Error::io("create temporary file", e))?;
        {
            let mut w = std::io::BufWriter::with_capacity(256 * 1024, &mut file);
            match old {
                None => {
                    let opts = archive::WriteOptions {
                        whiteouts: archive::WhiteoutFormat::Aufs,
                    };
                    archive::write_tar(new, &mut w, &opts)?;
                }
                Some(old) => {
                    let changes = changes_dirs(new, Some(old))?;
                    export_changes(new, &changes, &mut w)?;
                }
            }
            w.flush()
                .map_err(|e| crate::Error::io("write temporary file", e))?;
        }
        Ok(file)
    })
    .await?;
    Ok(stream::from_blocking(move |out| {
        use std::io::{Seek, SeekFrom};
        let mut file = spool;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| crate::Error::io("seek temporary file", e))?;
        std::io::copy(&mut file, out).map_err(|e| crate::Error::io("read temporary file", e))?;
        Ok(())
    }))
}

/// The naive `apply_diff`: mounts `id` and applies the tar onto its merged view.
pub async fn apply_diff<D: Driver + ?Sized>(
    driver: &D,
    id: &LayerId,
    parent: Option<&LayerId>,
    diff: TarStream,
) -> Result<u64> {
    let _ = parent;
    let path = driver.get(id, &MountOpts::default()).await?;
    let result = stream::read_blocking(diff, move |r| {
        let opts = ApplyOptions::new(WhiteoutMode::Remove);
        Ok(archive::apply_tar(&path, r, &opts)?.size)
    })
    .await;
    let put = driver.put(id).await;
    let size = result?;
    put?;
    Ok(size)
}

/// The naive `changes`: mounts both layers and compares them.
pub async fn changes<D: Driver + ?Sized>(
    driver: &D,
    id: &LayerId,
    parent: Option<&LayerId>,
) -> Result<Vec<Change>> {
    with_mounted(driver, id, parent, |new, old| Ok(changes_dirs(new, old)?)).await
}

/// The naive `diff_size`: mounts both layers and measures the changes.
pub async fn diff_size<D: Driver + ?Sized>(
    driver: &D,
    id: &LayerId,
    parent: Option<&LayerId>,
) -> Result<u64> {
    with_mounted(driver, id, parent, |new, old| {
        let changes = changes_dirs(new, old)?;
        Ok(changes_size(new, &changes)?)
    })
    .await
}
