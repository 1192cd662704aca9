//! Status codes: what every ABI call returns, and how they map to [`ErrorKind`] both ways.
//!
//! One code per kind, so an error keeps its kind across the boundary; [`PANIC`] and
//! [`POISONED`] are the ABI's own. A code the host does not know (from a newer minor) is a
//! `Plugin` error that names it.

use std::io;

use strata_driver_api::{Error, ErrorKind};

/// A call's outcome: [`OK`] or an error code.
pub type Status = i32;

/// Success.
pub const OK: Status = 0;
/// [`ErrorKind::NotFound`].
pub const NOT_FOUND: Status = 1;
/// [`ErrorKind::AlreadyExists`].
pub const ALREADY_EXISTS: Status = 2;
/// [`ErrorKind::ParentNotFound`].
pub const PARENT_NOT_FOUND: Status = 3;
/// [`ErrorKind::Busy`].
pub const BUSY: Status = 4;
/// [`ErrorKind::HasChildren`].
pub const HAS_CHILDREN: Status = 5;
/// [`ErrorKind::InvalidInput`].
pub const INVALID_INPUT: Status = 6;
/// [`ErrorKind::InvalidArchive`].
pub const INVALID_ARCHIVE: Status = 7;
/// [`ErrorKind::NotSupported`].
pub const NOT_SUPPORTED: Status = 8;
/// [`ErrorKind::PermissionDenied`].
pub const PERMISSION_DENIED: Status = 9;
/// [`ErrorKind::NoSpace`].
pub const NO_SPACE: Status = 10;
/// [`ErrorKind::Config`].
pub const CONFIG: Status = 11;
/// [`ErrorKind::Plugin`].
pub const PLUGIN: Status = 12;
/// [`ErrorKind::Corrupt`].
pub const CORRUPT: Status = 13;
/// [`ErrorKind::Io`].
pub const IO: Status = 14;
/// The call panicked; the instance is poisoned from now on.
pub const PANIC: Status = 100;
/// An earlier call panicked; the instance refuses every call.
pub const POISONED: Status = 101;
/// (ABI 1.1) Not an error: `stream_read` has no bytes yet and will wake the waker it was
/// given when it may have. Only `stream_read` returns it.
pub const PENDING: Status = 102;

/// The code for `kind`.
pub fn from_kind(kind: ErrorKind) -> Status {
    match kind {
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::AlreadyExists => ALREADY_EXISTS,
        ErrorKind::ParentNotFound => PARENT_NOT_FOUND,
        ErrorKind::Busy => BUSY,
        ErrorKind::HasChildren => HAS_CHILDREN,
        ErrorKind::InvalidInput => INVALID_INPUT,
        ErrorKind::InvalidArchive => INVALID_ARCHIVE,
        ErrorKind::NotSupported => NOT_SUPPORTED,
        ErrorKind::PermissionDenied => PERMISSION_DENIED,
        ErrorKind::NoSpace => NO_SPACE,
        ErrorKind::Config => CONFIG,
        ErrorKind::Plugin => PLUGIN,
        ErrorKind::Corrupt => CORRUPT,
        ErrorKind::Io => IO,
        // A kind newer than this ABI crosses as an I/O error.
        _ => IO,
    }
}

/// The kind for an error code; `None` for [`OK`] and for codes this side does not know.
/// [`PANIC`] and [`POISONED`] are `Plugin` errors.
pub fn to_kind(status: Status) -> Option<ErrorKind> {
    Some(match status {
        NOT_FOUND => ErrorKind::NotFound,
        ALREADY_EXISTS => ErrorKind::AlreadyExists,
        PARENT_NOT_FOUND => ErrorKind::ParentNotFound,
        BUSY => ErrorKind::Busy,
        HAS_CHILDREN => ErrorKind::HasChildren,
        INVALID_INPUT => ErrorKind::InvalidInput,
        INVALID_ARCHIVE => ErrorKind::InvalidArchive,
        NOT_SUPPORTED => ErrorKind::NotSupported,
        PERMISSION_DENIED => ErrorKind::PermissionDenied,
        NO_SPACE => ErrorKind::NoSpace,
        CONFIG => ErrorKind::Config,
        PLUGIN | PANIC | POISONED => ErrorKind::Plugin,
        CORRUPT => ErrorKind::Corrupt,
        IO => ErrorKind::Io,
        _ => return None,
    })
}

/// An error as it crosses the boundary: code, errno (0 if none), one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire {
    /// The status code (never [`OK`]).
    pub status: Status,
    /// The OS error number, 0 if none.
    pub errno: i32,
    /// The message, the cause included.
    pub message: String,
}

/// How the plugin side sends `err`.
pub fn encode(err: &Error) -> Wire {
    Wire {
        status: from_kind(err.kind()),
        errno: err.raw_os_error().unwrap_or(0),
        // The whole chain: the host cannot walk the plugin's causes.
        message: format!("{err:#}"),
    }
}

/// How the host side rebuilds an error from a failed call's code and what the error sink got
/// (`None` if the plugin called it not at all). The kind comes from the code; an errno comes
/// back as the error's OS cause, so `raw_os_error` still sees it.
pub fn decode(status: Status, wire: Option<Wire>, call: &str) -> Error {
    let (errno, message) = match wire {
        Some(w) => (w.errno, w.message),
        None => (0, String::new()),
    };
    let message = match (status, message.is_empty()) {
        (PANIC, _) => format!("{call} panicked in the plugin: {message}"),
        (POISONED, _) => {
            format!("{call}: the plugin instance is poisoned by an earlier panic")
        }
        (_, true) => format!("{call} failed in the plugin with status {status}"),
        (_, false) => message,
    };
    let Some(kind) = to_kind(status) else {
        return Error::new(
            ErrorKind::Plugin,
            format!("{message} (unknown status {status})"),
        );
    };
    if errno == 0 {
        return Error::new(kind, message);
    }
    // The message ends with the OS error's own text when the plugin's error had it as its
    // cause; take it off so the rebuilt error prints the same line.
    let os = io::Error::from_raw_os_error(errno);
    let suffix = format!(": {os}");
    let message = message
        .strip_suffix(&suffix)
        .unwrap_or(&message)
        .to_string();
    Error::with_source(kind, message, os)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const KINDS: [ErrorKind; 14] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::ParentNotFound,
        ErrorKind::Busy,
        ErrorKind::HasChildren,
        ErrorKind::InvalidInput,
        ErrorKind::InvalidArchive,
        ErrorKind::NotSupported,
        ErrorKind::PermissionDenied,
        ErrorKind::NoSpace,
        ErrorKind::Config,
        ErrorKind::Plugin,
        ErrorKind::Corrupt,
        ErrorKind::Io,
    ];

    #[test]
    fn codes_are_pinned() {
        let codes: Vec<Status> = KINDS.iter().map(|k| from_kind(*k)).collect();
        assert_eq!(codes, (1..=14).collect::<Vec<_>>());
        assert_eq!((OK, PANIC, POISONED, PENDING), (0, 100, 101, 102));
    }

    #[test]
    fn every_kind_round_trips() {
        for kind in KINDS {
            assert_eq!(to_kind(from_kind(kind)), Some(kind));
            let err = decode(
                from_kind(kind),
                Some(encode(&Error::new(kind, "x"))),
                "create",
            );
            assert_eq!(err.kind(), kind);
            assert_eq!(err.to_string(), "x");
        }
        assert_eq!(to_kind(OK), None);
    }

    #[test]
    fn panics_and_unknown_codes_are_plugin_errors() {
        assert_eq!(decode(PANIC, None, "get").kind(), ErrorKind::Plugin);
        assert_eq!(decode(POISONED, None, "get").kind(), ErrorKind::Plugin);
        let e = decode(4242, None, "get");
        assert_eq!(e.kind(), ErrorKind::Plugin);
        assert!(e.to_string().contains("4242"), "{e}");
    }

    #[test]
    fn os_errors_keep_errno_and_text() {
        let orig = Error::os("mkdir", Path::new("/x"), io::Error::from_raw_os_error(17));
        let wire = encode(&orig);
        assert_eq!(wire.errno, 17);
        let back = decode(wire.status, Some(wire), "create");
        assert_eq!(back.kind(), ErrorKind::AlreadyExists);
        assert_eq!(back.raw_os_error(), Some(17));
        assert_eq!(back.to_string(), orig.to_string());
    }
}
