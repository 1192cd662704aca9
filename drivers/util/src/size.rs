//! Human sizes in configs and options: `"10G"`, `"512M"`, `"1.5G"`.
//!
//! Units are binary (1K = 1024), as Docker's and containers/storage's `size=` options read them.
//! Drivers parse their own config sizes with it (a block driver's image size, a quota option),
//! and the engine uses the same function, so a size means the same everywhere.

use strata_driver_api::{Error, ErrorKind, Result};

const UNITS: [(char, u32); 6] = [
    ('B', 0),
    ('K', 10),
    ('M', 20),
    ('G', 30),
    ('T', 40),
    ('P', 50),
];

/// Parses a size such as `"10G"`, `"512M"`, `"1.5G"`, `"4096"`, `"2KiB"` or `"3 gb"` into bytes.
///
/// The number may have a fraction (rounded down to whole bytes); the unit is one of
/// B, K, M, G, T, P (case-insensitive, binary multiples), optionally followed by `iB` or `B`.
/// No unit means bytes. Anything else, or a size that does not fit in 64 bits, is
/// `InvalidInput`.
pub fn parse_size(text: &str) -> Result<u64> {
    let invalid = |why: &str| {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!("invalid size {text:?}: {why}"),
        ))
    };
    let s = text.trim();
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..num_end], s[num_end..].trim_start());
    if number.is_empty() {
        return invalid("expected a number, like 10G or 512M");
    }
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() || frac.contains('.') || (number.contains('.') && frac.is_empty()) {
        return invalid("malformed number");
    }
    let shift = match unit_shift(unit) {
        Some(shift) => shift,
        None => return invalid("unknown unit (use B, K, M, G, T or P)"),
    };
    let Ok(whole) = whole.parse::<u64>() else {
        return invalid("number too large");
    };
    let Some(mut bytes) = whole.checked_mul(1u64 << shift) else {
        return invalid("too large");
    };
    if !frac.is_empty() {
        // Only the digits that can matter: 19 keeps 10^digits inside u128 comfortably.
        let digits = &frac[..frac.len().min(19)];
        let numerator: u128 = digits.parse().unwrap_or(0);
        let denominator = 10u128.pow(digits.len() as u32);
        let part = (numerator << shift) / denominator;
        bytes = match bytes.checked_add(part as u64) {
            Some(b) => b,
            None => return invalid("too large"),
        };
    }
    Ok(bytes)
}

fn unit_shift(unit: &str) -> Option<u32> {
    if unit.is_empty() {
        return Some(0);
    }
    let upper = unit.to_ascii_uppercase();
    let mut chars = upper.chars();
    let first = chars.next()?;
    let rest: String = chars.collect();
    let (_, shift) = UNITS.iter().find(|(c, _)| *c == first)?;
    let ok = match rest.as_str() {
        "" => true,
        "B" | "IB" => first != 'B',
        _ => false,
    };
    ok.then_some(*shift)
}

/// A serde `deserialize_with` for sizes: a string such as `"10G"` (see [`parse_size`]) or a
/// non-negative number of bytes.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a size such as \"10G\" or a number of bytes")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<u64, E> {
            parse_size(v).map_err(|e| E::custom(e.message()))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("a size cannot be negative"))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<u64, E> {
            Ok(v)
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("2KiB").unwrap(), 2048);
        assert_eq!(parse_size("3 gb").unwrap(), 3 << 30);
        assert_eq!(parse_size("1t").unwrap(), 1 << 40);
        assert_eq!(parse_size("7B").unwrap(), 7);
        assert_eq!(parse_size(" 1P ").unwrap(), 1 << 50);
        assert_eq!(parse_size("0.5K").unwrap(), 512);
        assert_eq!(parse_size("0.0001K").unwrap(), 0);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "G",
            "-1G",
            "1.5.5G",
            "1.G",
            ".5G",
            "10X",
            "10GG",
            "1iB",
            "10 G B",
            "1BB",
            "99999999999P",
            "18446744073709551616",
        ] {
            let err = parse_size(bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }
}
