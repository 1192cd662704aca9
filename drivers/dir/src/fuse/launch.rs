//! The driver's side of a FUSE view: finding the helper program, starting it and waiting for
//! its word, telling a live mount from a dead one, and unmounting.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use strata_driver_api::{Error, ErrorKind, Result};

use super::serve::Args;

/// The helper program's file name.
pub const HELPER: &str = "strata-dir-fuse";

/// `statfs` magic of a FUSE file system.
const FUSE_SUPER_MAGIC: u64 = 0x6573_5546;

/// How long a helper may take to mount before the get fails.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds the helper: `configured`, else `$STRATA_DIR_FUSE_HELPER`, else beside the running
/// program or one directory up (cargo puts test binaries in `deps/`), else on `$PATH`; and
/// checks it as every program strata runs with its privileges is checked
/// (`strata_driver_util::trust`: a helper someone else could change is `PermissionDenied`).
/// Returns the resolved path, which is what runs.
pub fn find_helper(configured: Option<&Path>) -> Result<PathBuf> {
    let found = locate_helper(configured)?;
    strata_driver_util::trust::check(&found).map_err(|why| {
        Error::new(
            ErrorKind::PermissionDenied,
            format!("dir driver: the FUSE helper: {why}"),
        )
    })
}

fn locate_helper(configured: Option<&Path>) -> Result<PathBuf> {
    let explicit = match configured {
        Some(p) => Some((p.to_path_buf(), "fuse_helper ")),
        None => std::env::var_os("STRATA_DIR_FUSE_HELPER")
            .map(|p| (PathBuf::from(p), "STRATA_DIR_FUSE_HELPER=")),
    };
    if let Some((p, what)) = explicit {
        return if executable(&p) {
            Ok(p)
        } else {
            Err(Error::new(
                ErrorKind::Config,
                format!(
                    "dir driver: {what}{} is not an executable file",
                    p.display()
                ),
            ))
        };
    }
    let exe = std::env::current_exe().ok();
    let beside = exe.iter().flat_map(|e| e.ancestors().skip(1).take(2));
    beside
        .map(|dir| dir.join(HELPER))
        .find(|p| executable(p))
        .or_else(|| on_path(HELPER))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotSupported,
                format!(
                    "dir driver: the FUSE helper `{HELPER}` was not found beside this program or \
                     on PATH (build it: cargo build -p strata-driver-dir; or set fuse_helper)"
                ),
            )
        })
}

/// Whether this process can mount FUSE file systems: /dev/fuse opens read-write, and without
/// root, fusermount3 (package fuse3) is there to mount (as rootless Podman needs; a
/// /dev/fuse only root may open, as on some hosts, rules an unprivileged user out).
pub fn usable() -> std::result::Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| format!("/dev/fuse: {e}"))?;
    if !rustix::process::geteuid().is_root() {
        on_path("fusermount3").ok_or("fusermount3 not found (package fuse3)")?;
    }
    Ok(())
}

fn executable(p: &Path) -> bool {
    p.is_file() && rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok()
}

/// The executable `name` in a directory of `$PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| executable(p))
}

/// What is at a view's mountpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// A FUSE file system that answers.
    Alive,
    /// A FUSE mount whose server is gone ("Transport endpoint is not connected").
    Dead,
    /// No FUSE file system.
    NotMounted,
}

#[allow(clippy::unnecessary_cast)]
pub(crate) fn liveness(mnt: &Path) -> Result<Liveness> {
    match rustix::fs::statfs(mnt) {
        Ok(st) if (st.f_type as i64 as u64 & 0xffff_ffff) == FUSE_SUPER_MAGIC => {
            Ok(Liveness::Alive)
        }
        Ok(_) | Err(Errno::NOENT) => Ok(Liveness::NotMounted),
        Err(Errno::NOTCONN) => Ok(Liveness::Dead),
        Err(e) => Err(Error::os("statfs", mnt, std::io::Error::from(e))),
    }
}

/// Starts the helper on `args` and waits for it to mount. Returns the server's pid.
pub(crate) fn start(helper: &Path, args: &Args, log: &Path) -> Result<u32> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::os("open", log, e))?;
    let mut child = Command::new(helper)
        .args(args.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|e| Error::os("exec", helper, e))?;
    let stdout = child.stdout.take().ok_or_else(|| {
        Error::new(
            ErrorKind::Io,
            "dir driver: the FUSE helper has no stdout pipe",
        )
    })?;
    // The starter exits at once (the server is its child, then nobody's).
    let _ = child.wait();
    let line = read_line(stdout, READY_TIMEOUT, log)?;
    if let Some(pid) = line.strip_prefix("ready ") {
        return pid.trim().parse().map_err(|_| {
            Error::new(
                ErrorKind::Io,
                format!("dir driver: FUSE helper said {line:?}"),
            )
        });
    }
    let why = line.strip_prefix("error: ").unwrap_or(&line);
    Err(Error::new(
        ErrorKind::Io,
        format!(
            "dir driver: FUSE mount of {}: {why}",
            args.mountpoint.display()
        ),
    ))
}

/// The helper's one line, or an error once `timeout` has passed or it closed the pipe.
fn read_line(out: std::process::ChildStdout, timeout: Duration, log: &Path) -> Result<String> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "dir driver: the FUSE helper did not mount within {}s (log: {})",
                    timeout.as_secs(),
                    log.display()
                ),
            ));
        }
        let ts = Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(&out, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(Errno::INTR) => continue,
            Ok(_) => break,
            Err(e) => return Err(Error::io("poll the FUSE helper", e.into())),
        }
    }
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .map_err(|e| Error::io("read from the FUSE helper", e))?;
    if line.is_empty() {
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        let last = tail.lines().last().unwrap_or("no reason given");
        return Err(Error::new(
            ErrorKind::Io,
            format!("dir driver: the FUSE helper exited before mounting: {last}"),
        ));
    }
    Ok(line.trim_end().to_string())
}

/// Unmounts a live view and waits a moment for its server (`pid`) to end. A view still in use
/// (a file open in it; also, briefly, one just closed, whose release the kernel finishes
/// asynchronously) is detached instead, as overlay views are: it goes from the mount table at
/// once and its server ends with the last open file. A view that is gone already is fine.
pub(crate) fn unmount(mnt: &Path, pid: Option<u32>) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        let mut tries = 0;
        loop {
            match rustix::mount::unmount(mnt, rustix::mount::UnmountFlags::empty()) {
                Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => break,
                Err(Errno::BUSY) if tries < 20 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(Errno::BUSY) => return detach(mnt),
                Err(e) => return Err(Error::os("umount", mnt, std::io::Error::from(e))),
            }
        }
    } else {
        match fusermount(&["-u".into(), mnt.into()], mnt) {
            Err(e) if e.kind() == ErrorKind::Busy => return detach(mnt),
            other => other?,
        }
    }
    if let Some(pid) = pid {
        wait_gone(pid, Duration::from_secs(5));
    }
    Ok(())
}

/// Detaches whatever FUSE mount is at `mnt` (a dead one, or a view discarded by force).
pub(crate) fn detach(mnt: &Path) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        match rustix::mount::unmount(mnt, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::os("umount", mnt, std::io::Error::from(e))),
        }
    } else {
        fusermount(&["-u".into(), "-z".into(), mnt.into()], mnt)
    }
}

fn busy(mnt: &Path) -> Error {
    Error::new(
        ErrorKind::Busy,
        format!(
            "{} is in use (a file or directory in it is open)",
            mnt.display()
        ),
    )
}

fn fusermount(args: &[OsString], mnt: &Path) -> Result<()> {
    let out = Command::new("fusermount3")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::os("exec", Path::new("fusermount3"), e))?;
    if out.status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if msg.contains("not mounted") || msg.contains("not found in") {
        return Ok(());
    }
    if msg.contains("busy") {
        return Err(busy(mnt));
    }
    Err(Error::new(
        ErrorKind::Io,
        format!("fusermount3 -u {}: {msg}", mnt.display()),
    ))
}

/// Sends `sig` to the server `pid`.
pub(crate) fn signal(pid: u32, sig: rustix::process::Signal) -> Result<()> {
    let pid = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| Error::new(ErrorKind::Corrupt, "FUSE helper pid 0"))?;
    rustix::process::kill_process(pid, sig)
        .map_err(|e| Error::io(format!("signal FUSE helper {pid:?}"), e.into()))
}

/// Waits until process `pid` has ended, at most `timeout`.
fn wait_gone(pid: u32, timeout: Duration) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) else {
        return;
    };
    let ts = Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: 0,
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let _ = poll(&mut fds, Some(&ts));
}
