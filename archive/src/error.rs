//! The archive crate's error: a kind to match on, a one-line message, and the cause.
//!
//! The kinds are the ones an archive or a file system operation can have: a malformed or
//! hostile archive, a rejected argument, and what an OS error number says. Callers with kinds
//! of their own (the driver API's `ErrorKind` adds layer-level ones) convert from this one;
//! the tables that map OS error numbers and `std::io` kinds are here, once.

use std::fmt;
use std::io;
use std::path::Path;

/// What went wrong, in the terms callers act on. Match on this, never on message text.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A file or directory does not exist (`ENOENT`).
    NotFound,
    /// A file or directory exists already (`EEXIST`).
    AlreadyExists,
    /// A file system object is in use (`EBUSY`).
    Busy,
    /// An argument was rejected before anything was touched.
    InvalidInput,
    /// A layer archive was malformed or hostile (path escape, bad header, truncated stream).
    InvalidArchive,
    /// The file system or this host does not support the operation.
    NotSupported,
    /// The operation needs privileges the process does not have.
    PermissionDenied,
    /// The backing storage is full.
    NoSpace,
    /// Any other I/O error.
    Io,
}

impl ErrorKind {
    /// The kind that an OS error number maps to.
    pub fn from_errno(errno: i32) -> ErrorKind {
        use rustix::io::Errno;
        match Errno::from_raw_os_error(errno) {
            Errno::NOENT => ErrorKind::NotFound,
            Errno::EXIST => ErrorKind::AlreadyExists,
            Errno::BUSY => ErrorKind::Busy,
            Errno::PERM | Errno::ACCESS => ErrorKind::PermissionDenied,
            Errno::NOSPC | Errno::DQUOT => ErrorKind::NoSpace,
            Errno::INVAL => ErrorKind::InvalidInput,
            Errno::NOTSUP | Errno::NOSYS => ErrorKind::NotSupported,
            _ => ErrorKind::Io,
        }
    }

    /// The kind of an I/O error: from its OS error number when it has one, else from its
    /// `std::io` kind.
    pub fn of_io(err: &io::Error) -> ErrorKind {
        if let Some(n) = err.raw_os_error() {
            return ErrorKind::from_errno(n);
        }
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

    /// The `std::io` kind closest to this one.
    pub fn io_kind(self) -> io::ErrorKind {
        match self {
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
            ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
            ErrorKind::InvalidArchive => io::ErrorKind::InvalidData,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::NotSupported => io::ErrorKind::Unsupported,
            ErrorKind::NoSpace => io::ErrorKind::StorageFull,
            ErrorKind::Busy => io::ErrorKind::ResourceBusy,
            ErrorKind::Io => io::ErrorKind::Other,
        }
    }
}

/// The boxed cause of an error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of this crate: a kind, a one-line message, and the cause.
///
/// `Display` prints the message alone, as `std` errors do; the cause is [`source`]. The
/// alternate form (`{:#}`) prints the whole chain on one line, `message: cause: cause`, as
/// `anyhow` does. Syscall errors name the call and the path (see [`Error::os`]).
///
/// [`source`]: std::error::Error::source
#[derive(thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<BoxError>,
}

/// `Result` with this crate's [`Error`].
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
        Error::io(format!("{call} {}", path.display()), err.into())
    }

    /// An I/O error in a context that is not a single path (a stream, a pipe).
    pub fn io(context: impl Into<String>, err: io::Error) -> Error {
        Error::with_source(ErrorKind::of_io(&err), context, err)
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
        os_error_in(self.source.as_deref().map(|e| e as _))
    }

    /// Takes the error apart: kind, message, cause (for a caller that converts it into an
    /// error type of its own).
    pub fn into_parts(self) -> (ErrorKind, String, Option<BoxError>) {
        (self.kind, self.message, self.source)
    }
}

/// The first OS error number in a chain of causes: an `io::Error` or a `rustix` errno.
pub fn os_error_in(mut cur: Option<&(dyn std::error::Error + 'static)>) -> Option<i32> {
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

/// Writes `message`, then with `{:#}` every cause in `source`'s chain, `: `-separated.
pub fn write_chain(
    f: &mut fmt::Formatter<'_>,
    message: &str,
    source: Option<&(dyn std::error::Error + 'static)>,
) -> fmt::Result {
    f.write_str(message)?;
    if f.alternate() {
        let mut cur = source;
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
    }
    Ok(())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_chain(f, &self.message, self.source.as_deref().map(|e| e as _))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?}: {self:#})", self.kind)
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match err.raw_os_error() {
            Some(n) => io::Error::from_raw_os_error(n).kind(),
            None => err.kind.io_kind(),
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
    fn display_is_the_message_and_the_chain_is_walked_once() {
        let err = Error::io("read layer", io::Error::other("inner"));
        assert_eq!(err.to_string(), "read layer");
        let mut chain = vec![err.to_string()];
        let mut cur = std::error::Error::source(&err);
        while let Some(e) = cur {
            chain.push(e.to_string());
            cur = e.source();
        }
        assert_eq!(chain, ["read layer", "inner"]);
        assert_eq!(format!("{err:#}"), "read layer: inner");
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(ErrorKind::from_errno(2), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_errno(16), ErrorKind::Busy);
        assert_eq!(ErrorKind::from_errno(28), ErrorKind::NoSpace);
        assert_eq!(ErrorKind::from_errno(5), ErrorKind::Io);
    }
}
