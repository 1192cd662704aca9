//! The conformance suite against the block driver (ext4 images), as root with real loop devices
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
