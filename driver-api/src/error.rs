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
        strata_archive::ErrorKind::from_errno(errno).into()
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

impl From<strata_archive::ErrorKind> for ErrorKind {
    fn from(kind: strata_archive::ErrorKind) -> ErrorKind {
        use strata_archive::ErrorKind as A;
        match kind {
            A::NotFound => ErrorKind::NotFound,
            A::AlreadyExists => ErrorKind::AlreadyExists,
            A::Busy => ErrorKind::Busy,
            A::InvalidInput => ErrorKind::InvalidInput,
            A::InvalidArchive => ErrorKind::InvalidArchive,
            A::NotSupported => ErrorKind::NotSupported,
            A::PermissionDenied => ErrorKind::PermissionDenied,
            A::NoSpace => ErrorKind::NoSpace,
            _ => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error every strata library returns: a kind, a one-line message, and the cause.
///
/// `Display` prints the message alone, as `std` errors do; the cause is
/// [`source`](std::error::Error::source), so a reporter that walks the chain prints each
/// cause once. The alternate form (`{:#}`) prints the whole chain on one line,
/// `message: cause: cause`, as `anyhow` does. Syscall errors name the call and the path (see
/// [`Error::os`]).
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
        strata_archive::Error::os(call, path, err).into()
    }

    /// An I/O error in a context that is not a single path (a stream, a pipe).
    pub fn io(context: impl Into<String>, err: io::Error) -> Error {
        strata_archive::Error::io(context, err).into()
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
        strata_archive::os_error_in(self.source.as_deref().map(|e| e as _))
    }
}

impl From<strata_archive::Error> for Error {
    fn from(err: strata_archive::Error) -> Error {
        let (kind, message, source) = err.into_parts();
        Error {
            kind: kind.into(),
            message,
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        strata_archive::write_chain(f, &self.message, self.source.as_deref().map(|e| e as _))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?}: {self:#})", self.kind)
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match (err.raw_os_error(), err.kind) {
            (Some(n), _) => io::Error::from_raw_os_error(n).kind(),
            (None, ErrorKind::NotFound | ErrorKind::ParentNotFound) => io::ErrorKind::NotFound,
            (None, ErrorKind::AlreadyExists) => io::ErrorKind::AlreadyExists,
            (None, ErrorKind::InvalidInput) => io::ErrorKind::InvalidInput,
            (None, ErrorKind::InvalidArchive) => io::ErrorKind::InvalidData,
            (None, ErrorKind::PermissionDenied) => io::ErrorKind::PermissionDenied,
            (None, ErrorKind::NotSupported) => io::ErrorKind::Unsupported,
            (None, _) => io::ErrorKind::Other,
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
        assert_eq!(err.to_string(), "mkdir /x/y");
        let text = format!("{err:#}");
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
