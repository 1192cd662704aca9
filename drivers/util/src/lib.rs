//! Plumbing shared by strata's built-in drivers, written once so that each driver reads the
//! same: the same module names for the same roles.
//!
//! Internal to strata: drivers outside this workspace should not depend on it (no stability
//! promise). The trait and its types are `strata-driver-api`'s, the tar and tree code
//! `strata-archive`'s.
//!
//! - [`lock`]: the instance lock of a driver's home (`<home>/lock`) and the crash sweep it
//!   guards.
//! - [`refcount`]: per-layer locks and mount refcounts, one concurrency model.
//! - [`mountinfo`]: the mount table, parsed (octal escapes undone).
//! - [`fsname`]: filesystem names from `statfs` magic numbers.
//! - [`clone_file`]: reflink, else sparse copy, of a file's contents.
//! - [`size`]: human sizes in configs (`"10G"`).
//! - [`trust`]: the one rule for files strata loads or runs with its privileges (plugins, the
//!   FUSE helper).
//!
//! Random bytes are `strata_driver_api::random`'s (layer ids use them too); blocking work on
//! a driver's shared state is `strata_driver_api::stream::run_blocking_with`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clone_file;
pub mod fsname;
pub mod lock;
pub mod mountinfo;
pub mod refcount;
pub mod size;
pub mod trust;
