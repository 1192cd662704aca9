//! Numeric header fields and PAX records (pure parsing, no I/O), following Go's
//! `archive/tar` where the formats leave room for two readings.

use super::reader::bad;
use crate::Result;

/// PAX records that matter, from one `x` member.
#[derive(Debug, Default)]
pub(super) struct Pax {
    pub path: Option<Vec<u8>>,
    pub linkpath: Option<Vec<u8>>,
    pub size: Option<u64>,
    pub uid: Option<i64>,
    pub gid: Option<i64>,
    pub mtime: Option<(i64, u32)>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub sparse: bool,
}

/// Parses a numeric header field: base-256 when the high bit of the first byte is set
/// (two's complement, so negative values are possible), octal otherwise. `None` if malformed
/// or out of `i64`'s range.
pub(super) fn parse_numeric(field: &[u8]) -> Option<i64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let inv: u8 = if field[0] & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &c) in field.iter().enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 != 0 {
                return None;
            }
            x = (x << 8) | u64::from(c);
        }
        if x >> 63 != 0 {
            return None;
        }
        let x = x as i64;
        return Some(if inv == 0xff { !x } else { x });
    }
    parse_octal(field)
}

/// Parses an octal field: NUL-terminated, padded with spaces or NULs; empty is 0.
pub(super) fn parse_octal(field: &[u8]) -> Option<i64> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let digits = trim(&field[..end]);
    if digits.is_empty() {
        return Some(0);
    }
    let mut x: i64 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return None;
        }
        x = x.checked_mul(8)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(x)
}

fn trim(b: &[u8]) -> &[u8] {
    let is_pad = |c: &u8| *c == b' ' || *c == 0;
    let start = b.iter().position(|c| !is_pad(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !is_pad(c)).map_or(start, |i| i + 1);
    &b[start..end]
}

/// Parses a non-negative decimal number, no sign, no spaces.
fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |x, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        x.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Parses a PAX time (`[-]seconds[.fraction]`) into seconds and nanoseconds (`0..1e9`).
///
/// Integer seconds beyond `i64` saturate; a value in another float syntax (`1e300`) is read as
/// a float and saturates too; anything else (`NaN`, garbage) is `None`.
pub(super) fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let (neg, body) = match v.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (int, frac) = match body.iter().position(|&b| b == b'.') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &b""[..]),
    };
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if int.is_empty() || !digits(int) || !digits(frac) {
        return parse_float_time(v);
    }
    let secs = match parse_decimal(int) {
        Some(s) => i64::try_from(s).unwrap_or(i64::MAX),
        None => i64::MAX,
    };
    let mut nanos: u32 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    Some(if !neg {
        (secs, nanos)
    } else if nanos == 0 {
        (secs.saturating_neg(), 0)
    } else {
        (
            secs.saturating_neg().saturating_sub(1),
            1_000_000_000 - nanos,
        )
    })
}

fn parse_float_time(v: &[u8]) -> Option<(i64, u32)> {
    let f: f64 = std::str::from_utf8(v).ok()?.parse().ok()?;
    if f.is_nan() {
        return None;
    }
    // `as` saturates for out-of-range floats, which is the clamping wanted here.
    let secs = f.floor();
    let nanos = ((f - secs) * 1e9) as u32;
    Some((secs as i64, nanos.min(999_999_999)))
}

/// Parses the records of one PAX extended header.
pub(super) fn parse_pax(mut data: &[u8]) -> Result<Pax> {
    let mut pax = Pax::default();
    while !data.is_empty() {
        let malformed = || bad("malformed PAX record");
        let sp = data
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or_else(malformed)?;
        let len = parse_decimal(&data[..sp]).ok_or_else(malformed)?;
        let len = usize::try_from(len).map_err(|_| malformed())?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(malformed());
        }
        let record = &data[sp + 1..len - 1];
        data = &data[len..];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(malformed)?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        if key.is_empty() || key.contains(&0) {
            return Err(malformed());
        }
        let number = || parse_decimal(value).ok_or_else(|| bad("invalid number in PAX record"));
        let id =
            || number().and_then(|n| i64::try_from(n).map_err(|_| bad("PAX uid/gid out of range")));
        match key {
            b"path" | b"linkpath" => {
                if value.contains(&0) {
                    return Err(bad("NUL byte in a PAX path"));
                }
                let slot = if key == b"path" {
                    &mut pax.path
                } else {
                    &mut pax.linkpath
                };
                *slot = Some(value.to_vec());
            }
            b"size" => {
                let n = number()?;
                if n > i64::MAX as u64 {
                    return Err(bad("PAX size out of range"));
                }
                pax.size = Some(n);
            }
            b"uid" => pax.uid = Some(id()?),
            b"gid" => pax.gid = Some(id()?),
            b"mtime" => {
                pax.mtime = Some(parse_pax_time(value).ok_or_else(|| bad("invalid PAX mtime"))?);
            }
            _ if key.starts_with(b"GNU.sparse.") => pax.sparse = true,
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    pax.xattrs.retain(|(n, _)| n.as_slice() != name);
                    pax.xattrs.push((name.to_vec(), value.to_vec()));
                }
            }
        }
    }
    Ok(pax)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  644 \0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"        "), Some(0));
        assert_eq!(parse_numeric(b"0009\0"), None);
        assert_eq!(parse_numeric(b"12x4\0"), None);
        // Base-256, positive and negative.
        assert_eq!(parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0x01, 0x00]), Some(256));
        assert_eq!(parse_numeric(&[0xff; 8]), Some(-1));
        assert_eq!(
            parse_numeric(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]),
            Some(-2)
        );
        // 12-byte base-256 with high bytes set does not fit i64: rejected, not truncated.
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[3] = 1;
        assert_eq!(parse_numeric(&big), None);
        // Octal overflow.
        assert_eq!(parse_numeric(b"7777777777777777777777777"), None);
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1234567890"), Some((1234567890, 0)));
        assert_eq!(parse_pax_time(b"1.5"), Some((1, 500_000_000)));
        assert_eq!(parse_pax_time(b"1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"-3"), Some((-3, 0)));
        assert_eq!(
            parse_pax_time(b"99999999999999999999999"),
            Some((i64::MAX, 0))
        );
        assert_eq!(parse_pax_time(b"1e300"), Some((i64::MAX, 0)));
        assert_eq!(parse_pax_time(b"-1e300"), Some((i64::MIN, 0)));
        assert_eq!(parse_pax_time(b"NaN"), None);
        assert_eq!(parse_pax_time(b"abc"), None);
        assert_eq!(parse_pax_time(b""), None);
    }

    fn record(k: &str, v: &[u8]) -> Vec<u8> {
        let body_len = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = body_len + 1;
        while len.to_string().len() + body_len != len {
            len += 1;
        }
        let mut out = format!("{len} {k}=").into_bytes();
        out.extend_from_slice(v);
        out.push(b'\n');
        out
    }

    #[test]
    fn pax_records() {
        let mut data = record("path", b"a/long/name");
        data.extend(record("size", b"42"));
        data.extend(record("uid", b"1000"));
        data.extend(record("mtime", b"5.000000001"));
        data.extend(record("SCHILY.xattr.user.x", b"v\0\n1"));
        data.extend(record("SCHILY.xattr.user.x", b"v2"));
        data.extend(record("LIBARCHIVE.xattr.user.y", b"djE="));
        data.extend(record("atime", b"garbage is ignored"));
        let pax = parse_pax(&data).unwrap();
        assert_eq!(pax.path.as_deref(), Some(&b"a/long/name"[..]));
        assert_eq!(pax.size, Some(42));
        assert_eq!(pax.uid, Some(1000));
        assert_eq!(pax.mtime, Some((5, 1)));
        assert_eq!(pax.xattrs, vec![(b"user.x".to_vec(), b"v2".to_vec())]);
        assert!(!pax.sparse);
        assert!(parse_pax(&record("GNU.sparse.major", b"1")).unwrap().sparse);
    }

    #[test]
    fn malformed_pax_records() {
        assert!(parse_pax(b"5 a=\n").is_ok());
        for data in [
            &b"99 path=x\n"[..],              // length past the end
            b"abc path=x\n",                  // length not a number
            b" 1 path=x\n",                   // no length
            b"11 path=x\nX",                  // record does not end in a newline at its length
            b"3 a\n",                         // length does not cover key and '='
            b"8 pathx\n",                     // no '='
            b"9 =value\n",                    // empty key
            b"11 size=-1\n",                  // negative size
            b"12 path=a\0b\n",                // NUL in a path
            b"11 uid=1x2\n",                  // not a number
            b"28 uid=99999999999999999999\n", // out of range
        ] {
            let r = parse_pax(data);
            assert_eq!(
                r.unwrap_err().kind(),
                ErrorKind::InvalidArchive,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }
}
