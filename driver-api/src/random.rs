//! Random bytes from the kernel (`getrandom(2)`), for ids and unique names: one loop, whose
//! errors are returned, never ignored. [`LayerId::random`](crate::LayerId::random) uses it,
//! and so do the drivers' short links and staging names.

use crate::{Error, ErrorKind, Result};

/// Fills `buf` with random bytes from the kernel's pool, retrying short reads and `EINTR`.
/// Any other failure (`ENOSYS` on kernels before 3.17) is an `Io` error naming `getrandom`.
pub fn fill(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(Error::with_source(
                    ErrorKind::Io,
                    "getrandom",
                    std::io::Error::from(e),
                ));
            }
        }
    }
    Ok(())
}

/// `N` random bytes (see [`fill`]).
pub fn bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
}

/// `2 * n` random lower-case hex digits (`n` random bytes; see [`fill`]).
pub fn hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    fill(&mut buf)?;
    let mut s = String::with_capacity(2 * n);
    for b in buf {
        s.push_str(&format!("{b:02x}"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_differ_and_hex_is_hex() {
        assert_ne!(bytes::<16>().unwrap(), bytes::<16>().unwrap());
        let h = hex(4).unwrap();
        assert_eq!(h.len(), 8);
        assert!(
            h.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(hex(0).unwrap(), "");
        let mut big = vec![0u8; 1 << 16];
        fill(&mut big).unwrap();
        assert!(big.iter().any(|b| *b != 0));
    }
}
