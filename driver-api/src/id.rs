//! Layer ids: validated once, safe everywhere after.

use std::fmt;
use std::str::FromStr;

use crate::{Error, ErrorKind, Result};

/// The longest id accepted.
pub const MAX_ID_LEN: usize = 128;

/// A layer id: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`.
///
/// An id is used as a path component and may end up in a mount option string, so it can never
/// hold `/`, `..` as a whole, `,`, `:`, whitespace or a NUL. Every way of making one validates
/// it; an invalid id is an [`ErrorKind::InvalidInput`] error before any file is touched.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct LayerId(String);

impl LayerId {
    /// Validates `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<LayerId> {
        let id = id.into();
        validate(&id)?;
        Ok(LayerId(id))
    }

    /// A fresh random id of 64 lower-case hex digits, as Docker and containers/storage use.
    ///
    /// # Panics
    ///
    /// When the kernel has no `getrandom` (before Linux 3.17): see [`crate::random::fill`].
    pub fn random() -> LayerId {
        match crate::random::hex(32) {
            Ok(s) => LayerId(s),
            Err(e) => panic!("{e:#}"),
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(id: &str) -> Result<()> {
    let invalid = |why: &str| {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!("invalid layer id {id:?}: {why}"),
        ))
    };
    let bytes = id.as_bytes();
    if bytes.is_empty() {
        return invalid("empty");
    }
    if bytes.len() > MAX_ID_LEN {
        return invalid("longer than 128 characters");
    }
    if !bytes[0].is_ascii_alphanumeric() {
        return invalid("must start with a letter or digit");
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return invalid(&format!(
            "character {c:?} not allowed (only A-Z a-z 0-9 _ . -)"
        ));
    }
    Ok(())
}

impl FromStr for LayerId {
    type Err = Error;
    fn from_str(s: &str) -> Result<LayerId> {
        LayerId::new(s)
    }
}

impl TryFrom<String> for LayerId {
    type Error = Error;
    fn try_from(s: String) -> Result<LayerId> {
        LayerId::new(s)
    }
}

impl TryFrom<&str> for LayerId {
    type Error = Error;
    fn try_from(s: &str) -> Result<LayerId> {
        LayerId::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for LayerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LayerId::new(s).map_err(serde::de::Error::custom)
    }
}

impl AsRef<str> for LayerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for LayerId {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LayerId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_ids() {
        for id in [
            "a",
            "0",
            "abc-def_1.2",
            "A".repeat(128).as_str(),
            "a..b",
            "layer.v2",
        ] {
            assert!(LayerId::new(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn rejects_invalid_ids() {
        let long = "a".repeat(129);
        for id in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/a",
            "a,b",
            "a:b",
            "-a",
            "_a",
            ".a",
            "a b",
            "a\0b",
            "a\nb",
            "é",
            long.as_str(),
            "lowerdir=x",
        ] {
            let err = LayerId::new(id).expect_err(id);
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{id}");
        }
    }

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = LayerId::random();
        let b = LayerId::random();
        assert_eq!(a.as_str().len(), 64);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(LayerId::new(a.as_str()).is_ok());
    }

    #[test]
    fn deserialize_validates() {
        let ok: std::result::Result<LayerId, _> = serde_plain_from("abc");
        assert!(ok.is_ok());
        let bad: std::result::Result<LayerId, _> = serde_plain_from("../x");
        assert!(bad.is_err());
    }

    fn serde_plain_from(s: &str) -> std::result::Result<LayerId, serde::de::value::Error> {
        use serde::de::IntoDeserializer;
        LayerId::deserialize(s.to_string().into_deserializer())
    }

    use serde::Deserialize;
}
