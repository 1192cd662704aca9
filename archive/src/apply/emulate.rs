//! `openat2(RESOLVE_IN_ROOT)` done in userspace, for kernels older than 5.6 and sandboxes
//! whose seccomp filter refuses `openat2`.
//!
//! The walk holds a descriptor for every directory it stands in, opens each component with
//! `O_NOFOLLOW` relative to the previous one, and expands symlinks itself: an absolute target
//! restarts at the root, `..` pops a descriptor and stops at the root. So, as with the
//! kernel's `RESOLVE_IN_ROOT`, nothing resolves outside the root; a component swapped for a
//! symlink between the `readlinkat` and the `openat` is refused by `O_NOFOLLOW`
//! (`O_DIRECTORY` turns it into `ENOTDIR`). It costs about two system calls per component.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

/// The kernel's limit on symlinks followed in one resolution.
const MAX_LINKS: usize = 40;

/// Opens `rel` under `root` with `oflags`, as `openat2(root, rel, oflags, RESOLVE_IN_ROOT |
/// RESOLVE_NO_MAGICLINKS [| RESOLVE_NO_SYMLINKS])` would. `O_NOFOLLOW` in `oflags` applies to
/// the last component, as with `openat2`.
pub(super) fn open_in_root(
    root: BorrowedFd<'_>,
    rel: &[u8],
    oflags: OFlags,
    no_symlinks: bool,
) -> Result<OwnedFd, Errno> {
    let mut todo: VecDeque<Vec<u8>> = split(rel).collect();
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    let follow_last = !oflags.contains(OFlags::NOFOLLOW);
    while let Some(comp) = todo.pop_front() {
        let last = todo.is_empty();
        match comp.as_slice() {
            b"." => {
                if last {
                    break;
                }
                continue;
            }
            b".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        let cur = stack.last().map_or(root, AsFd::as_fd);
        if !last || follow_last {
            match rustix::fs::readlinkat(cur, comp.as_slice(), Vec::new()) {
                Ok(target) => {
                    links += 1;
                    if no_symlinks || links > MAX_LINKS {
                        return Err(Errno::LOOP);
                    }
                    let target = target.as_bytes();
                    for c in split(target).collect::<Vec<_>>().into_iter().rev() {
                        todo.push_front(c);
                    }
                    if target.first() == Some(&b'/') {
                        stack.clear();
                    }
                    if last && todo.is_empty() {
                        // A link to the root itself (`/`): the result is the root.
                        break;
                    }
                    continue;
                }
                // Not a symlink.
                Err(Errno::INVAL) => {}
                Err(e) => return Err(e),
            }
        }
        // (With O_NOFOLLOW, a symlink as the last component is opened as itself with O_PATH,
        // or refused with ELOOP, by the kernel's openat below, exactly as openat2 does.)
        if last {
            return rustix::fs::openat(
                cur,
                comp.as_slice(),
                oflags | OFlags::NOFOLLOW,
                Mode::empty(),
            );
        }
        let next = rustix::fs::openat(
            cur,
            comp.as_slice(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        stack.push(next);
    }
    // The path ended in the directory we stand in (empty, `.`, `..` or a link to it).
    let cur = stack.last().map_or(root, AsFd::as_fd);
    rustix::fs::openat(cur, ".", oflags, Mode::empty())
}

/// The non-empty components of a path.
fn split(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::ResolveFlags;
    use std::os::unix::fs::symlink;

    fn id(fd: &OwnedFd) -> (u64, u64) {
        let st = rustix::fs::fstat(fd).unwrap();
        (st.st_dev, st.st_ino)
    }

    /// The emulation agrees with the kernel's openat2 on a tree full of awkward symlinks.
    #[test]
    fn agrees_with_openat2() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), b"x").unwrap();
        std::fs::write(tmp.path().join("outside"), b"host").unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../..", root.join("up")).unwrap();
        symlink("..", root.join("a/parent")).unwrap();
        symlink("/a/b/../b/c", root.join("chain1")).unwrap();
        symlink("chain1/../..", root.join("chain2")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        symlink("/nowhere", root.join("dangling")).unwrap();
        symlink("/", root.join("slash")).unwrap();
        symlink("etc/passwd", root.join("file")).unwrap();
        symlink(tmp.path().join("outside"), root.join("escape")).unwrap();
        let rootfd =
            rustix::fs::open(&root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let paths = [
            "",
            ".",
            "..",
            "a",
            "a/b/c",
            "abs",
            "abs/passwd",
            "up",
            "up/etc",
            "a/parent",
            "a/parent/parent/..",
            "chain1",
            "chain2",
            "chain2/etc/passwd",
            "loop1",
            "loop1/x",
            "dangling",
            "dangling/x",
            "slash",
            "slash/abs/passwd",
            "file",
            "file/x",
            "escape",
            "missing",
            "a/missing/x",
            "etc/passwd/..",
            "/abs/../a//b/./c",
        ];
        let flag_sets = [
            OFlags::PATH,
            OFlags::PATH | OFlags::DIRECTORY,
            OFlags::PATH | OFlags::NOFOLLOW,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            OFlags::RDONLY,
        ];
        for path in paths {
            for flags in flag_sets {
                for no_symlinks in [false, true] {
                    let mut resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
                    if no_symlinks {
                        resolve |= ResolveFlags::NO_SYMLINKS;
                    }
                    let p = if path.is_empty() { "." } else { path };
                    let kernel = rustix::fs::openat2(
                        &rootfd,
                        p,
                        flags | OFlags::CLOEXEC,
                        Mode::empty(),
                        resolve,
                    )
                    .map(|fd| id(&fd));
                    let ours = open_in_root(
                        rootfd.as_fd(),
                        path.as_bytes(),
                        flags | OFlags::CLOEXEC,
                        no_symlinks,
                    )
                    .map(|fd| id(&fd));
                    assert_eq!(ours, kernel, "{path:?} {flags:?} no_symlinks={no_symlinks}");
                }
            }
        }
    }
}
