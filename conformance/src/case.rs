//! What a case is and what it needs: [`Case`] and [`Needs`], checked against the driver's
//! capabilities and the process's [`Privileges`]. Pure: skips are decided from capabilities and privileges, never from a
//! driver's name.

use std::fmt;

use strata_driver_api::Capabilities;

use crate::check::Failure;
use crate::harness::{BoxFuture, Harness, Privileges};

/// What a case needs from the driver and the process. Unmet needs skip the case, with a reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// The process must be root (to set owners, for example).
    pub root: bool,
    /// The process must be root in the initial user namespace (device nodes, `trusted.*`).
    pub full_root: bool,
    /// [`Capabilities::native_diff`].
    pub native_diff: bool,
    /// The driver must mount chains of at least this many layers (`max_depth` `None` or `>=`).
    pub min_depth: u32,
    /// [`Capabilities::quota`].
    pub quota: bool,
    /// The driver must *not* have quota (the case checks the `NotSupported` answer).
    pub no_quota: bool,
    /// [`Capabilities::read_only_images`].
    pub read_only_images: bool,
    /// [`Capabilities::rename_dir`].
    pub rename_dir: bool,
}

impl Needs {
    /// Needs nothing.
    pub const NOTHING: Needs = Needs {
        root: false,
        full_root: false,
        native_diff: false,
        min_depth: 0,
        quota: false,
        no_quota: false,
        read_only_images: false,
        rename_dir: false,
    };

    /// Also needs root.
    pub const fn root(mut self) -> Needs {
        self.root = true;
        self
    }

    /// Also needs root in the initial user namespace.
    pub const fn full_root(mut self) -> Needs {
        self.root = true;
        self.full_root = true;
        self
    }

    /// Also needs a native diff.
    pub const fn native_diff(mut self) -> Needs {
        self.native_diff = true;
        self
    }

    /// Also needs chains of `depth` layers.
    pub const fn depth(mut self, depth: u32) -> Needs {
        self.min_depth = depth;
        self
    }

    /// Also needs quota.
    pub const fn quota(mut self) -> Needs {
        self.quota = true;
        self
    }

    /// Needs a driver without quota.
    pub const fn no_quota(mut self) -> Needs {
        self.no_quota = true;
        self
    }

    /// Also needs read-only image mounts.
    pub const fn read_only_images(mut self) -> Needs {
        self.read_only_images = true;
        self
    }

    /// Also needs renaming of lower directories.
    pub const fn rename_dir(mut self) -> Needs {
        self.rename_dir = true;
        self
    }

    /// Why these needs are not met by a driver with `caps` in a process with `privs`, if they
    /// are not. Pure: decided from capabilities and privileges, never from a driver's name.
    pub fn unmet(&self, caps: &Capabilities, privs: &Privileges) -> Option<String> {
        if caps.needs_root && !privs.root {
            return Some("the driver needs root".into());
        }
        if self.full_root && !privs.full_root() {
            return Some("needs root in the initial user namespace".into());
        }
        if self.root && !privs.root {
            return Some("needs root".into());
        }
        if self.native_diff && !caps.native_diff {
            return Some("needs native diff".into());
        }
        if let Some(max) = caps.max_depth {
            if max < self.min_depth {
                return Some(format!("driver max depth {max} < {}", self.min_depth));
            }
        }
        if self.quota && !caps.quota {
            return Some("needs quota support".into());
        }
        if self.no_quota && caps.quota {
            return Some("the driver has quota (see set_quota)".into());
        }
        if self.read_only_images && !caps.read_only_images {
            return Some("needs read-only image mounts".into());
        }
        if self.rename_dir && !caps.rename_dir {
            return Some("needs renaming of lower directories".into());
        }
        None
    }
}

/// A case's function: runs against the harness's driver and returns `Ok` when it passed.
pub type CaseFn = for<'a> fn(&'a Harness) -> BoxFuture<'a, Result<(), Failure>>;

/// One conformance case, written once against `&dyn Driver`.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name, a valid Rust identifier (it is also the test's name).
    pub name: &'static str,
    /// What it needs; unmet needs skip it.
    pub needs: Needs,
    /// The case itself.
    pub run: CaseFn,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("needs", &self.needs)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_say_why() {
        let root = Privileges {
            root: true,
            init_userns: true,
        };
        let user = Privileges {
            root: false,
            init_userns: false,
        };
        let caps = Capabilities {
            max_depth: Some(128),
            ..Capabilities::default()
        };
        assert_eq!(Needs::NOTHING.unmet(&caps, &user), None);
        assert_eq!(
            Needs::NOTHING.root().unmet(&caps, &user).as_deref(),
            Some("needs root")
        );
        assert_eq!(Needs::NOTHING.root().unmet(&caps, &root), None);
        assert_eq!(
            Needs::NOTHING.depth(499).unmet(&caps, &root).as_deref(),
            Some("driver max depth 128 < 499")
        );
        let unbounded = Capabilities::default();
        assert_eq!(Needs::NOTHING.depth(499).unmet(&unbounded, &root), None);
        assert!(Needs::NOTHING.native_diff().unmet(&caps, &root).is_some());
        assert!(Needs::NOTHING.no_quota().unmet(&caps, &root).is_none());
        let quota = Capabilities {
            quota: true,
            ..Capabilities::default()
        };
        assert!(Needs::NOTHING.no_quota().unmet(&quota, &root).is_some());
        let needs_root = Capabilities {
            needs_root: true,
            ..Capabilities::default()
        };
        assert_eq!(
            Needs::NOTHING.unmet(&needs_root, &user).as_deref(),
            Some("the driver needs root")
        );
    }
}
