//! Plumbing shared by strata's built-in drivers, written once so that each driver reads the
//! same: the same module names for the same roles.
//!
//! Internal to strata: drivers outside this workspace should not depend on it (no stability
//! promise). The trait and its types are `strata-driver-api`'s, the tar and tree code
//! `strata-archive`'s.
//!
//! - [`size`]: human sizes in configs (`"10G"`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod size;
