//! One opaque error type for every driver, with a kind to match on.

use std::fmt;
use std::io;
use std::path::Path;

/// What went wrong, in the terms callers act on. Match on this, never on message text.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The layer (or another named object) does not exist.
    NotFound,
    /// A layer with that id already exists.
    AlreadyExists,
    /// The named parent layer does not exist.
    ParentNotFound,
    /// The layer is in use (mounted) and the operation was not forced.
    Busy,
    /// The layer has children, so it cannot be removed.
    HasChildren,
    /// An argument was rejected before anything was touched (an invalid id, a bad option).
    InvalidInput,
    /// A layer archive was malformed or hostile (path escape, bad header, truncated stream).
    InvalidArchive,
    /// The driver or this host does not support the operation.
    NotSupported,
    /// The operation needs privileges the process does not have.
    PermissionDenied,
    /// The backing storage is full.
    NoSpace,
    /// A configuration file or value is wrong.
    Config,
    /// A plugin failed, panicked, or is incompatible.
    Plugin,
    /// Stored state is damaged or inconsistent.
    Corrupt,
    /// Any other I/O error.
    Io,
}

impl ErrorKind {
    /// The kind that an OS error number maps to.
    pub fn from_errno(errno: i32) -> ErrorKind {
        match errno {
            libc_errno::ENOENT => ErrorKind::NotFound,
            libc_errno::EEXIST => ErrorKind::AlreadyExists,
            libc_errno::EBUSY => ErrorKind::Busy,
            libc_errno::EPERM | libc_errno::EACCES => ErrorKind::PermissionDenied,
            libc_errno::ENOSPC | libc_errno::EDQUOT => ErrorKind::NoSpace,
            libc_errno::EINVAL => ErrorKind::InvalidInput,
            libc_errno::ENOTSUP | libc_errno::ENOSYS => ErrorKind::NotSupported,
            _ => ErrorKind::Io,
        }
    }

    /// A short lower-case description, used in messages and by the plugin ABI.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::ParentNotFound => "parent not found",
            ErrorKind::Busy => "busy",
            ErrorKind::HasChildren => "has children",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::InvalidArchive => "invalid archive",
            ErrorKind::NotSupported => "not supported",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::NoSpace => "no space left",
            ErrorKind::Config => "configuration error",
            ErrorKind::Plugin => "plugin error",
            ErrorKind::Corrupt => "corrupt state",
            ErrorKind::Io => "i/o error",
        }
    }
}

/// Errno values, spelled out once so this module needs no libc dependency.
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
    pub const ENOSYS: i32 = 38;
    pub const ENOTSUP: i32 = 95;
    pub const EDQUOT: i32 = 122;
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error every strata library returns: a kind, a one-line message, and the cause.
///
/// `Display` prints the message followed by the cause, on one line, so the CLI can print it
/// as it is. Syscall errors name the call and the path (see [`Error::os`]).
#[derive(thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<BoxError>,
}

/// `Result` with strata's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a message and no underlying cause.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` with a message and an underlying cause.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Error {
        Error {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A failed system call on `path`: the message names both, the kind comes from the errno.
    pub fn os(call: &str, path: &Path, err: impl Into<io::Error>) -> Error {
        let err = err.into();
        let kind = err
            .raw_os_error()
            .map_or_else(|| io_kind(&err), ErrorKind::from_errno);
        Error::with_source(kind, format!("{call} {}", path.display()), err)
    }

    /// An I/O error in a context that is not a single path (a stream, a pipe).
    pub fn io(context: impl Into<String>, err: io::Error) -> Error {
        let kind = err
            .raw_os_error()
            .map_or_else(|| io_kind(&err), ErrorKind::from_errno);
        Error::with_source(kind, context, err)
    }

    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context` put in front of its message ("context: message").
    pub fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The OS error number behind this error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|e| e as _);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                if let Some(n) = io.raw_os_error() {
                    return Some(n);
                }
            }
            if let Some(errno) = e.downcast_ref::<rustix::io::Errno>() {
                return Some(errno.raw_os_error());
            }
            cur = e.source();
        }
        None
    }
}

fn io_kind(err: &io::Error) -> ErrorKind {
    match err.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        io::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => ErrorKind::InvalidArchive,
        io::ErrorKind::Unsupported => ErrorKind::NotSupported,
        io::ErrorKind::StorageFull => ErrorKind::NoSpace,
        _ => ErrorKind::Io,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let mut cur: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|e| e as _);
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?}: {self})", self.kind)
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        if let Some(n) = err.raw_os_error() {
            return io::Error::new(io::Error::from_raw_os_error(n).kind(), err);
        }
        let kind = match err.kind {
            ErrorKind::NotFound | ErrorKind::ParentNotFound => io::ErrorKind::NotFound,
            ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
            ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
            ErrorKind::InvalidArchive => io::ErrorKind::InvalidData,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::NotSupported => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_names_call_and_path_and_keeps_errno() {
        let err = Error::os("mkdir", Path::new("/x/y"), io::Error::from_raw_os_error(17));
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(err.raw_os_error(), Some(17));
        let text = err.to_string();
        assert!(text.starts_with("mkdir /x/y: "), "{text}");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn context_prefixes_message() {
        let err = Error::new(ErrorKind::NotFound, "layer abc").context("remove");
        assert_eq!(err.to_string(), "remove: layer abc");
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(ErrorKind::from_errno(2), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_errno(16), ErrorKind::Busy);
        assert_eq!(ErrorKind::from_errno(28), ErrorKind::NoSpace);
        assert_eq!(ErrorKind::from_errno(5), ErrorKind::Io);
    }
}
