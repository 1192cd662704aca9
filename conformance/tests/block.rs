//! The conformance suite against the block driver (ext4 images, then xfs images), as root with real loop devices
//! and mounts. Without root, loop devices or mkfs.ext4 every case is skipped, saying why.
//!
//! Images are 256 MiB (sparse): big enough for every case, small enough that mkfs and clones
//! stay fast.

use std::path::Path;
use std::sync::Arc;

use strata_driver_api::Driver;
use strata_driver_block::{BlockDriver, Config, Fs};

strata_conformance::suite!(block_ext4, |home: &Path| {
    let config = Config {
        size: 256 << 20,
        fs: Fs::Ext4,
    };
    Ok(Arc::new(BlockDriver::new(home.to_path_buf(), config)?) as Arc<dyn Driver>)
});

// The same suite with xfs inside the images (clones share a UUID: mounted with `nouuid`).
// Opt-in with STRATA_BLOCK_XFS_SUITE=1, else every case is skipped, saying so: an xfs image
// holds its 64 MiB log allocated (mkfs.xfs's minimum), so on a backing filesystem without
// reflink deep_layer_read_max's 257 layers take about 16 GiB of disk and the suite about 2.5
// minutes on 2 cores. It passes in full (run as root with xfsprogs installed).
strata_conformance::suite!(block_xfs, |home: &Path| {
    if std::env::var_os("STRATA_BLOCK_XFS_SUITE").is_none_or(|v| v != "1") {
        return Err(strata_driver_api::Error::new(
            strata_driver_api::ErrorKind::NotSupported,
            "the xfs-image suite needs ~16 GiB of scratch disk; set STRATA_BLOCK_XFS_SUITE=1",
        ));
    }
    let config = Config {
        size: 320 << 20,
        fs: Fs::Xfs,
    };
    Ok(Arc::new(BlockDriver::new(home.to_path_buf(), config)?) as Arc<dyn Driver>)
});
