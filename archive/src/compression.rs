//! Compression sniffing: a layer may come plain, gzip'd (all members) or zstd'd.

use std::io::{self, BufReader, Read};

/// How a layer stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip, possibly several members (all are decoded).
    Gzip,
    /// zstd.
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// The largest zstd window accepted (2^27 = 128 MiB), so a hostile frame cannot demand 2 GiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

impl Compression {
    /// Detects the compression from the first bytes of a stream.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps `reader` in the decompressor its first bytes call for.
pub fn decompress<R: Read + Send + 'static>(
    mut reader: R,
) -> io::Result<(Compression, Box<dyn Read + Send>)> {
    // Read the magic by hand: a pipe may hand over fewer bytes than asked for.
    let mut head = [0u8; 4];
    let mut len = 0;
    while len < head.len() {
        match reader.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let kind = Compression::sniff(&head[..len]);
    let whole = BufReader::with_capacity(
        256 * 1024,
        io::Cursor::new(head[..len].to_vec()).chain(reader),
    );
    let out: Box<dyn Read + Send> = match kind {
        Compression::None => Box::new(whole),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(whole)),
        Compression::Zstd => {
            let mut dec = zstd::stream::read::Decoder::with_buffer(whole)?;
            dec.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(dec)
        }
    };
    Ok((kind, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sniffs() {
        assert_eq!(Compression::sniff(b"\x1f\x8b\x08\x00"), Compression::Gzip);
        assert_eq!(
            Compression::sniff(b"\x28\xb5\x2f\xfd\x00"),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"usta"), Compression::None);
        assert_eq!(Compression::sniff(b""), Compression::None);
    }

    #[test]
    fn decodes_every_gzip_member() {
        let mut data = Vec::new();
        for part in [b"hello ".as_slice(), b"world"] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            data.extend(e.finish().unwrap());
        }
        let (kind, mut r) = decompress(io::Cursor::new(data)).unwrap();
        assert_eq!(kind, Compression::Gzip);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");
    }

    #[test]
    fn decodes_zstd_and_plain() {
        let z = zstd::encode_all(io::Cursor::new(b"abc".to_vec()), 3).unwrap();
        let (kind, mut r) = decompress(io::Cursor::new(z)).unwrap();
        assert_eq!(kind, Compression::Zstd);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");

        let (kind, mut r) = decompress(io::Cursor::new(b"plain".to_vec())).unwrap();
        assert_eq!(kind, Compression::None);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "plain");
    }

    /// Issue 12, item 7: a zstd frame that asks for a window larger than 128 MiB (here 2 GiB,
    /// which the decoder would allocate) is refused, not decoded.
    #[test]
    fn refuses_a_huge_zstd_window() {
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(31))
            .unwrap();
        enc.set_parameter(zstd::stream::raw::CParameter::EnableLongDistanceMatching(
            true,
        ))
        .unwrap();
        enc.write_all(&vec![7u8; 1 << 20]).unwrap();
        let z = enc.finish().unwrap();
        let (kind, mut r) = decompress(io::Cursor::new(z)).unwrap();
        assert_eq!(kind, Compression::Zstd);
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
        // The same frame with a 128 MiB window decodes.
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
            .unwrap();
        enc.write_all(&vec![7u8; 1 << 20]).unwrap();
        let z = enc.finish().unwrap();
        let (_, mut r) = decompress(io::Cursor::new(z)).unwrap();
        assert_eq!(r.read_to_end(&mut Vec::new()).unwrap(), 1 << 20);
    }
}
