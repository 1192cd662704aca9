//! How cases say that something is wrong: [`Failure`], context on errors, and kind checks.
//!
//! Cases assert on [`ErrorKind`], bytes and metadata, never on an error's message text; the
//! message only goes into the report.

use std::fmt;

use strata_driver_api::{Error, ErrorKind};

/// Why a case stopped early: it failed, or it found at run time that it cannot run here.
///
/// A run-time skip is decided from the driver's capabilities and the process's privileges only
/// (for example "max depth 128 is covered by deep_layer_read_128"), never from a driver's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The driver broke a contract; the text says which and how.
    Failed(String),
    /// The case does not apply; the text says why.
    Skipped(String),
}

impl Failure {
    /// A failure with this explanation.
    pub fn failed(why: impl Into<String>) -> Failure {
        Failure::Failed(why.into())
    }

    /// A skip with this reason.
    pub fn skip(why: impl Into<String>) -> Failure {
        Failure::Skipped(why.into())
    }

    /// The same failure with `what` put in front of its text.
    pub fn context(self, what: impl fmt::Display) -> Failure {
        match self {
            Failure::Failed(s) => Failure::Failed(format!("{what}: {s}")),
            skip => skip,
        }
    }

    pub(crate) fn into_outcome(self) -> crate::Outcome {
        match self {
            Failure::Failed(s) => crate::Outcome::Failed(s),
            Failure::Skipped(s) => crate::Outcome::Skipped(s),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Failed(s) => write!(f, "failed: {s}"),
            Failure::Skipped(s) => write!(f, "skipped: {s}"),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Failed(format!("{e:#} [{:?}]", e.kind()))
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::Failed(format!("{e:#}"))
    }
}

impl From<rustix::io::Errno> for Failure {
    fn from(e: rustix::io::Errno) -> Failure {
        Failure::Failed(std::io::Error::from(e).to_string())
    }
}

/// Puts what was being done in front of an error.
pub trait Context<T> {
    /// Maps the error to a [`Failure`] that starts with `what`.
    fn ctx(self, what: impl fmt::Display) -> Result<T, Failure>;
}

impl<T, E: Into<Failure>> Context<T> for Result<T, E> {
    fn ctx(self, what: impl fmt::Display) -> Result<T, Failure> {
        self.map_err(|e| e.into().context(what))
    }
}

/// Requires that `result` is an error of `kind`; `what` names the call in the report.
pub fn expect_kind<T: fmt::Debug>(
    result: strata_driver_api::Result<T>,
    kind: ErrorKind,
    what: impl fmt::Display,
) -> Result<(), Failure> {
    match result {
        Err(e) if e.kind() == kind => Ok(()),
        Err(e) => Err(Failure::failed(format!(
            "{what}: expected {kind:?}, got {:?} ({e:#})",
            e.kind()
        ))),
        Ok(v) => Err(Failure::failed(format!(
            "{what}: expected {kind:?}, but it succeeded ({v:?})"
        ))),
    }
}

/// Fails the case with a formatted message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failure::failed(format!($($fmt)+)));
        }
    };
}

/// Fails the case unless the two values are equal; the message shows both.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($fmt:tt)+) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err($crate::Failure::failed(format!(
                        "{}: expected {:?}, got {:?}",
                        format!($($fmt)+),
                        r,
                        l
                    )));
                }
            }
        }
    };
}

/// A [`LayerId`](strata_driver_api::LayerId) from a literal the suite knows to be valid.
pub fn id(s: &str) -> strata_driver_api::LayerId {
    strata_driver_api::LayerId::new(s).expect("the suite's own ids are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wants_kind(r: strata_driver_api::Result<u32>) -> Result<(), Failure> {
        expect_kind(r, ErrorKind::NotFound, "get x")
    }

    #[test]
    fn expect_kind_matches_kind_only() {
        assert!(wants_kind(Err(Error::new(ErrorKind::NotFound, "whatever"))).is_ok());
        assert!(matches!(
            wants_kind(Err(Error::new(ErrorKind::Busy, "not found"))),
            Err(Failure::Failed(_))
        ));
        assert!(matches!(wants_kind(Ok(1)), Err(Failure::Failed(_))));
    }

    fn uses_macros(a: u32, b: u32) -> Result<(), Failure> {
        ensure!(a < 10, "a is {a}");
        ensure_eq!(a, b, "a and b");
        Ok(())
    }

    #[test]
    fn macros_fail_and_pass() {
        assert!(uses_macros(1, 1).is_ok());
        assert!(uses_macros(11, 11).is_err());
        assert!(uses_macros(1, 2).is_err());
    }
}
