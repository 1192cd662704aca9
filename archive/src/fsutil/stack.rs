//! Keeping the directories of a depth-first walk open, within a fixed number of descriptors.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use super::Dir;
use crate::{Error, ErrorKind, Result};

/// The most directories a [`DirStack`] keeps open at once.
pub const MAX_OPEN: usize = 128;

/// The directories from a root down to the current one, for depth-first walks: each level is
/// opened relative to the one above it, never following a symlink.
///
/// However deep the walk goes, at most [`MAX_OPEN`] directories (and the root) stay open: the
/// shallowest are closed as the walk goes deeper, and reopened, one `openat` a level from the
/// root, when the walk comes back up to them. A reopened directory must be the same one
/// (device and inode) as before, or the walk fails: a tree that changes under a walk never
/// sends it elsewhere.
#[derive(Debug)]
pub struct DirStack {
    root: Dir,
    levels: Vec<Level>,
    /// `levels[first_open..]` are open, the ones before it closed.
    first_open: usize,
}

#[derive(Debug)]
struct Level {
    name: OsString,
    dir: Option<Dir>,
    /// (device, inode), recorded when the directory is closed.
    id: Option<(u64, u64)>,
}

impl DirStack {
    /// A stack at `root`.
    pub fn new(root: Dir) -> DirStack {
        DirStack {
            root,
            levels: Vec::new(),
            first_open: 0,
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Dir {
        &self.root
    }

    /// How many levels below the root the current directory is.
    pub fn depth(&self) -> usize {
        self.levels.len()
    }

    /// The names of the levels, from the root down.
    pub fn names(&self) -> impl Iterator<Item = &OsStr> {
        self.levels.iter().map(|l| l.name.as_os_str())
    }

    /// Makes `dir`, which the caller opened as `name` in the current directory, the current
    /// directory.
    pub fn push(&mut self, name: &OsStr, dir: Dir) -> Result<()> {
        self.levels.push(Level {
            name: name.to_owned(),
            dir: Some(dir),
            id: None,
        });
        while self.levels.len() - self.first_open > MAX_OPEN {
            let level = &mut self.levels[self.first_open];
            if let Some(dir) = level.dir.take() {
                level.id = Some(dir.stat()?.id());
            }
            self.first_open += 1;
        }
        Ok(())
    }

    /// Opens the subdirectory `name` of the current directory and makes it the current one.
    pub fn push_open(&mut self, name: &OsStr) -> Result<()> {
        let dir = self.current()?.open_dir(name)?;
        self.push(name, dir)
    }

    /// Goes back up one level (at the root: nothing).
    pub fn pop(&mut self) {
        self.levels.pop();
        self.first_open = self.first_open.min(self.levels.len());
    }

    /// The current directory, reopened if the walk went deep enough to close it.
    pub fn current(&mut self) -> Result<&Dir> {
        let len = self.levels.len();
        if len > 0 && self.levels[len - 1].dir.is_none() {
            self.reopen()?;
        }
        Ok(self
            .levels
            .last()
            .and_then(|l| l.dir.as_ref())
            .unwrap_or(&self.root))
    }

    /// Reopens every level from the root, keeping the deepest [`MAX_OPEN`] open.
    fn reopen(&mut self) -> Result<()> {
        let len = self.levels.len();
        let keep_from = len.saturating_sub(MAX_OPEN);
        // Every level is closed (the open ones are always the deepest).
        let mut parent: Option<Dir> = None;
        for i in 0..len {
            let dir = {
                let above = i
                    .checked_sub(1)
                    .and_then(|j| self.levels[j].dir.as_ref())
                    .or(parent.as_ref())
                    .unwrap_or(&self.root);
                above.open_dir(&self.levels[i].name)?
            };
            if let Some(id) = self.levels[i].id {
                if dir.stat()?.id() != id {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("{} changed while being walked", dir.path().display()),
                    ));
                }
            }
            if i >= keep_from {
                self.levels[i].dir = Some(dir);
                self.levels[i].id = None;
                parent = None;
            } else {
                parent = Some(dir);
            }
        }
        self.first_open = keep_from;
        Ok(())
    }

    #[cfg(test)]
    fn open_count(&self) -> usize {
        self.levels.iter().filter(|l| l.dir.is_some()).count()
    }
}

/// Opens the parent directories of a sequence of relative paths, keeping the directories the
/// next path shares with the previous one open, so a sorted list of paths costs about one
/// `openat` per directory. No symlink is followed below the root.
#[derive(Debug)]
pub struct DirCursor {
    stack: DirStack,
}

impl DirCursor {
    /// A cursor at `root`.
    pub fn new(root: Dir) -> DirCursor {
        DirCursor {
            stack: DirStack::new(root),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Dir {
        self.stack.root()
    }

    /// Opens (or reuses) the directory `components` below the root and returns it; an empty
    /// list is the root.
    pub fn open(&mut self, components: &[&OsStr]) -> Result<&Dir> {
        let keep = self
            .stack
            .names()
            .zip(components)
            .take_while(|(have, want)| have == *want)
            .count();
        while self.stack.depth() > keep {
            self.stack.pop();
        }
        for name in &components[keep..] {
            self.stack.push_open(name)?;
        }
        self.stack.current()
    }

    /// Adds `dir`, which the caller opened as `name` in the directory [`DirCursor::open`] last
    /// returned, so that a following path below it reuses it.
    pub fn descend(&mut self, name: &OsStr, dir: Dir) -> Result<()> {
        self.stack.push(name, dir)
    }
}

/// The components of a path inside a tree (`/a/b` or `a/b`), refusing `.`, `..` and prefixes
/// with `InvalidInput`.
pub fn components(path: &Path) -> Result<Vec<&OsStr>> {
    use std::path::Component;
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(name) => out.push(name),
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "path {} is not a plain path inside the tree",
                        path.display()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain `d/d/d/...` `depth` levels deep under a new temporary directory.
    fn chain(depth: usize) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let mut p = tmp.path().to_path_buf();
        for _ in 0..depth {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        tmp
    }

    #[test]
    fn a_deep_walk_keeps_few_directories_open_and_comes_back_up() {
        let depth = MAX_OPEN * 2 + 17;
        let tmp = chain(depth);
        let mut st = DirStack::new(Dir::open(tmp.path()).unwrap());
        let d = OsStr::new("d");
        for _ in 0..depth {
            st.push_open(d).unwrap();
            assert!(st.open_count() <= MAX_OPEN);
        }
        let mut want = tmp.path().to_path_buf();
        for _ in 0..depth {
            want.push("d");
        }
        for level in (0..=depth).rev() {
            assert_eq!(st.depth(), level);
            let cur = st.current().unwrap();
            assert_eq!(cur.path(), want, "level {level}");
            assert_eq!(
                cur.stat().unwrap().id(),
                Dir::open(&want).unwrap().stat().unwrap().id()
            );
            assert!(st.open_count() <= MAX_OPEN);
            st.pop();
            want.pop();
        }
    }

    #[test]
    fn a_directory_swapped_while_closed_fails_the_walk() {
        let depth = MAX_OPEN + 3;
        let tmp = chain(depth);
        let mut st = DirStack::new(Dir::open(tmp.path()).unwrap());
        for _ in 0..depth {
            st.push_open(OsStr::new("d")).unwrap();
        }
        // Level 1 was closed; replace it with another directory of the same name.
        let first = tmp.path().join("d");
        std::fs::rename(&first, tmp.path().join("old")).unwrap();
        std::fs::create_dir_all(first.join("d")).unwrap();
        for _ in 0..depth - 1 {
            st.pop();
        }
        assert_eq!(st.current().unwrap_err().kind(), ErrorKind::Io);
    }

    #[test]
    fn cursor_reuses_shared_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b/c")).unwrap();
        std::fs::create_dir_all(tmp.path().join("a/x")).unwrap();
        std::os::unix::fs::symlink("b", tmp.path().join("a/s")).unwrap();
        let mut cur = DirCursor::new(Dir::open(tmp.path()).unwrap());
        let os = |s: &'static str| OsStr::new(s);
        assert_eq!(
            cur.open(&[os("a"), os("b"), os("c")]).unwrap().path(),
            tmp.path().join("a/b/c")
        );
        assert_eq!(
            cur.open(&[os("a"), os("x")]).unwrap().path(),
            tmp.path().join("a/x")
        );
        assert_eq!(cur.open(&[]).unwrap().path(), tmp.path());
        assert!(cur.open(&[os("a"), os("s"), os("c")]).is_err());
    }

    #[test]
    fn components_refuse_dot_dot() {
        assert_eq!(
            components(Path::new("/a/b")).unwrap(),
            [OsStr::new("a"), OsStr::new("b")]
        );
        assert_eq!(
            components(Path::new("/a/../b")).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert!(components(Path::new("/")).unwrap().is_empty());
    }
}
