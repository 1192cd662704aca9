//! The helper program's side: mount the union file system and serve it until it is
//! unmounted, detached from whoever asked for it.
//!
//! ```text
//! strata-dir-fuse --mountpoint M --work W [--read-only] [--fsname NAME] -- BRANCH...
//! ```
//!
//! The process the driver starts only starts the server (the same program with `--serve`) and
//! exits, so the server belongs to no caller (as fuse-overlayfs under Podman) and the caller
//! has no child to reap. The server makes its own session, mounts, and once the kernel's
//! INIT is answered writes one line to its standard output — `ready <pid>` or
//! `error: <why>` — which the driver waits for; then standard output goes to /dev/null. Its
//! standard error is the log file the driver gave it.
//!
//! Signals: SIGUSR1 makes a read-only view writable (a later writable `get` of the layer);
//! SIGTERM unmounts (lazily) and ends the server; SIGHUP and SIGINT are ignored.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;

use fuser::{Config, MountOption, Session, SessionACL};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use super::fs::UnionFs;

/// The helper's arguments.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Args {
    pub mountpoint: PathBuf,
    pub work: PathBuf,
    pub read_only: bool,
    pub fsname: String,
    pub branches: Vec<PathBuf>,
    /// This process is the server (not the starter).
    pub serve: bool,
}

impl Args {
    pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
        let mut out = Args {
            fsname: "strata-dir".into(),
            ..Args::default()
        };
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let mut value = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value"));
            match a.to_str() {
                Some("--mountpoint") => out.mountpoint = value("--mountpoint")?.into(),
                Some("--work") => out.work = value("--work")?.into(),
                Some("--fsname") => {
                    out.fsname = value("--fsname")?
                        .into_string()
                        .map_err(|_| "--fsname must be UTF-8".to_string())?
                }
                Some("--read-only") => out.read_only = true,
                Some("--serve") => out.serve = true,
                Some("--") => {
                    out.branches = it.by_ref().map(PathBuf::from).collect();
                    break;
                }
                _ => return Err(format!("unexpected argument {a:?}")),
            }
        }
        if out.mountpoint.as_os_str().is_empty() || out.work.as_os_str().is_empty() {
            return Err("--mountpoint and --work are required".into());
        }
        if out.branches.is_empty() {
            return Err("no branches after --".into());
        }
        Ok(out)
    }

    /// The arguments that give `self` back (for the server, `--serve` added).
    pub(crate) fn to_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "--mountpoint".into(),
            self.mountpoint.clone().into(),
            "--work".into(),
            self.work.clone().into(),
            "--fsname".into(),
            self.fsname.clone().into(),
        ];
        if self.read_only {
            v.push("--read-only".into());
        }
        if self.serve {
            v.push("--serve".into());
        }
        v.push("--".into());
        v.extend(self.branches.iter().map(|b| b.clone().into_os_string()));
        v
    }
}

/// The helper program's `main`: see the module docs.
pub fn helper_main() -> ExitCode {
    let args = match Args::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => return report_error(&format!("strata-dir-fuse: {e:#}")),
    };
    if !args.serve {
        return start_server(args);
    }
    serve(args)
}

fn report_error(msg: &str) -> ExitCode {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "error: {msg}");
    let _ = out.flush();
    ExitCode::FAILURE
}

/// Starts the server with the same arguments and standard streams, and returns at once.
fn start_server(mut args: Args) -> ExitCode {
    args.serve = true;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return report_error(&format!("cannot find this program: {e:#}")),
    };
    match Command::new(exe)
        .args(args.to_args())
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => report_error(&format!("cannot start the server: {e:#}")),
    }
}

fn serve(args: Args) -> ExitCode {
    // A session of its own: no terminal's hangup or Ctrl-C reaches it.
    let _ = rustix::process::setsid();
    // Modes of what it makes are the caller's, with the caller's umask already applied by
    // the kernel.
    rustix::process::umask(rustix::fs::Mode::empty());
    let signals = match Signals::new([SIGUSR1, SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => return report_error(&format!("signals: {e:#}")),
    };
    let fs = match UnionFs::new(&args.branches, &args.work, !args.read_only) {
        Ok(fs) => fs,
        Err(e) => return report_error(&format!("{e:#}")),
    };
    let writable = fs.writable.clone();
    let root = rustix::process::geteuid().is_root();
    let mut config = Config::default();
    config.n_threads = Some(4);
    config.clone_fd = true;
    let session = if root {
        let options = vec![
            MountOption::FSName(args.fsname.clone()),
            MountOption::Subtype("strata-dir".into()),
            MountOption::DefaultPermissions,
            MountOption::Dev,
            MountOption::Suid,
        ];
        config.mount_options = options;
        // Anyone may use a view root made: containers run as other users.
        config.acl = SessionACL::All;
        Session::new(fs, &args.mountpoint, &config)
    } else {
        // fusermount3 opens /dev/fuse and mounts for an unprivileged user (who may not open
        // /dev/fuse at all). The view is the user's alone: allow_other would need
        // user_allow_other in /etc/fuse.conf.
        let opts = format!(
            "fsname={},subtype=strata-dir,default_permissions",
            args.fsname
        );
        fusermount_fd(&args.mountpoint, &opts)
            .and_then(|fd| Session::from_fd(fs, fd, SessionACL::Owner, config))
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            return report_error(&format!("mount {} (fuse): {e}", args.mountpoint.display()));
        }
    };
    let background = match session.spawn() {
        Ok(b) => b,
        Err(e) => return report_error(&format!("start serving: {e:#}")),
    };
    if root {
        raise_readahead(&args.mountpoint);
    }
    let handle = signals.handle();
    let joiner = std::thread::spawn(move || {
        let ended = background.join();
        handle.close();
        ended
    });
    {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready {}", std::process::id());
        let _ = out.flush();
    }
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
    let mut signals = signals;
    for sig in signals.forever() {
        match sig {
            SIGUSR1 => writable.store(true, Ordering::Relaxed),
            SIGTERM => {
                let _ = super::launch::detach(&args.mountpoint);
            }
            _ => {}
        }
    }
    match joiner.join() {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("strata-dir-fuse: {}: {e}", args.mountpoint.display());
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
    }
}

/// Reads of a FUSE file reach the server in readahead-sized requests, 128 KiB by default (the
/// INIT reply can only lower it); a view's readahead is raised to the largest request the
/// kernel takes (1 MiB), through the mount's backing device info. Best effort: a host that
/// refuses keeps the default.
fn raise_readahead(mountpoint: &std::path::Path) {
    #[allow(clippy::unnecessary_cast)]
    if let Ok(st) = rustix::fs::stat(mountpoint) {
        let dev = st.st_dev as u64;
        let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
        let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
        let _ = std::fs::write(knob, "1024");
    }
}

/// Mounts through fusermount3 and returns the /dev/fuse descriptor it passes back over a
/// socket (`_FUSE_COMMFD`, libfuse's protocol).
fn fusermount_fd(mountpoint: &std::path::Path, opts: &str) -> std::io::Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    let (ours, theirs) = UnixStream::pair()?;
    // fusermount3 inherits its end (this process has no other thread starting programs).
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())?;
    let mut child = Command::new("fusermount3")
        .arg("-o")
        .arg(opts)
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .spawn()?;
    drop(theirs);
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let received = recvmsg(
        &ours,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    );
    let fd = control.drain().find_map(|m| match m {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    let status = child.wait()?;
    received?;
    match fd {
        Some(fd) if status.success() => Ok(fd),
        _ => Err(std::io::Error::other(format!(
            "fusermount3 failed ({status})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip() {
        let a = Args {
            mountpoint: "/m".into(),
            work: "/w".into(),
            read_only: true,
            fsname: "strata-dir".into(),
            branches: vec!["/b0".into(), "/b1".into()],
            serve: true,
        };
        assert_eq!(Args::parse(a.to_args()).unwrap(), a);
        assert!(Args::parse(["--mountpoint".into()]).is_err());
        assert!(
            Args::parse([
                "--mountpoint".into(),
                "/m".into(),
                "--work".into(),
                "/w".into()
            ])
            .is_err()
        );
        assert!(Args::parse(["--bogus".into()]).is_err());
    }
}
