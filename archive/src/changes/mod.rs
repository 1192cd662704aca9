//! What differs between two trees: [`Change`]s, found by [`changes_dirs`], written as a layer
//! tar by [`export_changes`] and measured by [`changes_size`].
//!
//! Docker's rules (`pkg/archive/changes.go`): a path is Modify when its mode, uid, gid or rdev
//! differ, or, for a non-directory, its size or mtime (seconds, with whole-second leniency when
//! one side has no nanoseconds) or its `security.capability` xattr; a directory whose children
//! changed is Modify too. A path only in the new tree is Add, only in the old one Delete.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod compare;
mod export;

pub use compare::changes_dirs;
pub use export::{changes_size, export_changes};

/// What happened to a path between two layers, as `docker diff` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The path exists in both and differs (for a directory: its attributes or its children).
    Modify,
    /// The path is new.
    Add,
    /// The path was removed.
    Delete,
}

impl ChangeKind {
    /// The letter `docker diff` uses: `C`, `A` or `D`.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modify => 'C',
            ChangeKind::Add => 'A',
            ChangeKind::Delete => 'D',
        }
    }
}

/// One changed path. `path` is absolute within the layer ("/etc/passwd").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Change {
    /// The path, absolute within the layer, starting with `/`.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.letter(), self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_prints_like_docker_diff() {
        let c = Change {
            path: "/etc/passwd".into(),
            kind: ChangeKind::Modify,
        };
        assert_eq!(c.to_string(), "C /etc/passwd");
        let d = Change {
            path: "/tmp/x".into(),
            kind: ChangeKind::Delete,
        };
        assert_eq!(d.to_string(), "D /tmp/x");
    }
}
