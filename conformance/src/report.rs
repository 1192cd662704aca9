//! How cases ended and how a run reports them: one line per case, one closing line.

use std::fmt;
use std::time::Duration;

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It failed, and why (possibly several lines).
    Failed(String),
    /// It did not run, and why.
    Skipped(String),
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case's name.
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took, setup and cleanup included.
    pub elapsed: Duration,
}

impl CaseResult {
    /// The one-line report: `<name> ... ok`, `<name> ... FAILED: why`, `<name> ... skipped: why`.
    /// A multi-line reason is joined with `; `.
    pub fn line(&self) -> String {
        let one = |s: &str| s.lines().collect::<Vec<_>>().join("; ");
        match &self.outcome {
            Outcome::Passed => format!("{} ... ok", self.name),
            Outcome::Failed(why) => format!("{} ... FAILED: {}", self.name, one(why)),
            Outcome::Skipped(why) => format!("{} ... skipped: {}", self.name, one(why)),
        }
    }
}

/// Counts over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Cases that were skipped.
    pub skipped: usize,
}

impl Summary {
    /// Counts one result.
    pub fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Passed => self.passed += 1,
            Outcome::Failed(_) => self.failed += 1,
            Outcome::Skipped(_) => self.skipped += 1,
        }
    }
}

impl fmt::Display for Summary {
    /// The closing line: `N passed, N failed, N skipped`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_summary() {
        let r = CaseResult {
            name: "create_empty",
            outcome: Outcome::Failed("a\nb".into()),
            elapsed: Duration::ZERO,
        };
        assert_eq!(r.line(), "create_empty ... FAILED: a; b");
        let r = CaseResult {
            name: "x",
            outcome: Outcome::Skipped("needs root".into()),
            elapsed: Duration::ZERO,
        };
        assert_eq!(r.line(), "x ... skipped: needs root");
        let mut s = Summary::default();
        s.add(&Outcome::Passed);
        s.add(&Outcome::Passed);
        s.add(&Outcome::Skipped(String::new()));
        assert_eq!(s.to_string(), "2 passed, 0 failed, 1 skipped");
    }
}
