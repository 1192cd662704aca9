//! Telling an image archive from a layer tar at the start of the stream.
//!
//! `docker save` writes a docker-archive (`manifest.json`, and either `<id>/layer.tar`
//! directories or, since Docker 25, an OCI layout), and `skopeo`/`buildah` write OCI image
//! layouts (`oci-layout`, `index.json`, `blobs/sha256/...`). Applied as a layer, either makes
//! one junk layer holding the image's files. [`refuse_images`] reads the first entries of the
//! (decompressed) tar, within [`PEEK_BYTES`], and refuses the stream when they are an image's;
//! the bytes it read are handed on unchanged.

use std::io::{self, Read};

use strata_driver_api::{Error, ErrorKind};

/// How much of the tar is read ahead: the first entries within this many bytes.
const PEEK_BYTES: usize = 1 << 20;
/// At most this many entries are looked at.
const PEEK_ENTRIES: usize = 64;
/// A `manifest.json` or extended header larger than this is not read.
const MAX_META: usize = 64 << 10;
const BLOCK: usize = 512;

/// Reads the first entries of the tar in `plain`, keeping every byte read in `head` (the
/// caller hands them on before the rest), and refuses an image archive: `InvalidInput`
/// naming what it is and which command takes it. A read error is returned as it is.
pub(crate) fn refuse_images(
    plain: &mut impl Read,
    head: &mut Vec<u8>,
) -> io::Result<std::result::Result<(), Error>> {
    Ok(match image_kind(plain, head)? {
        Some(what) => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the stream is {what}, not a layer tar; an image is imported by \
                 `strata image import` (not yet available), a layer by `strata import`"
            ),
        )),
        None => Ok(()),
    })
}

/// Reads `r` into `head` until it holds `n` bytes; false if the stream ends first.
fn fill_to(r: &mut impl Read, head: &mut Vec<u8>, n: usize) -> io::Result<bool> {
    if head.len() < n {
        let want = (n - head.len()) as u64;
        r.by_ref().take(want).read_to_end(head)?;
    }
    Ok(head.len() >= n)
}

/// What image the first entries of the tar in `r` say it is, if any; every byte read is left
/// in `head`.
fn image_kind(r: &mut impl Read, head: &mut Vec<u8>) -> io::Result<Option<&'static str>> {
    let mut at = 0usize;
    let mut next_name: Option<Vec<u8>> = None;
    for _ in 0..PEEK_ENTRIES {
        if !fill_to(r, head, at + BLOCK)? {
            return Ok(None);
        }
        let header = &head[at..at + BLOCK];
        if header.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let Some(size) = octal(&header[124..136]).and_then(|s| usize::try_from(s).ok()) else {
            return Ok(None);
        };
        let typeflag = header[156];
        let name = next_name.take().unwrap_or_else(|| ustar_name(header));
        let data = at + BLOCK;
        let Some(end) = size
            .checked_next_multiple_of(BLOCK)
            .and_then(|s| s.checked_add(data))
            .filter(|&end| end <= PEEK_BYTES)
        else {
            return Ok(None);
        };
        let content = |head: &Vec<u8>| head[data..data + size].to_vec();
        match typeflag {
            // GNU long name, pax extended header: the name of the next entry.
            b'L' | b'x' if size <= MAX_META => {
                if !fill_to(r, head, end)? {
                    return Ok(None);
                }
                let body = content(head);
                next_name = if typeflag == b'L' {
                    Some(body.split(|&b| b == 0).next().unwrap_or_default().to_vec())
                } else {
                    pax_path(&body)
                };
            }
            b'0' | 0 | b'7' => {
                let name = clean(&name);
                if name == b"oci-layout" || is_blob(name) {
                    return Ok(Some("an OCI image layout"));
                }
                if is_legacy_docker(name) {
                    return Ok(Some("a docker-archive image (docker save)"));
                }
                if name == b"manifest.json" && size <= MAX_META {
                    if !fill_to(r, head, end)? {
                        return Ok(None);
                    }
                    if is_docker_manifest(&head[data..data + size]) {
                        return Ok(Some("a docker-archive image (docker save)"));
                    }
                }
            }
            _ => {}
        }
        if !fill_to(r, head, end)? {
            return Ok(None);
        }
        at = end;
    }
    Ok(None)
}

/// A tar number field: octal digits between spaces and NULs (base-256 is not read here).
fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// The name in a header: `prefix/name` for ustar, the name field else.
fn ustar_name(header: &[u8]) -> Vec<u8> {
    let field = |f: &[u8]| f.split(|&b| b == 0).next().unwrap_or_default().to_vec();
    let name = field(&header[0..100]);
    if &header[257..262] != b"ustar" {
        return name;
    }
    let prefix = field(&header[345..500]);
    if prefix.is_empty() {
        return name;
    }
    let mut full = prefix;
    full.push(b'/');
    full.extend_from_slice(&name);
    full
}

/// The `path` record of a pax extended header, if it has one.
fn pax_path(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut path = None;
    while !body.is_empty() {
        let space = body.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&body[..space]).ok()?.parse().ok()?;
        let record = body.get(space + 1..len)?;
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(b"path=") {
            path = Some(value.to_vec());
        }
        body = &body[len..];
    }
    path
}

/// The name without a leading `./` or `/`.
fn clean(mut name: &[u8]) -> &[u8] {
    loop {
        if let Some(rest) = name.strip_prefix(b"./") {
            name = rest;
        } else if let Some(rest) = name.strip_prefix(b"/") {
            name = rest;
        } else {
            return name;
        }
    }
}

fn is_hex64(s: &[u8]) -> bool {
    s.len() == 64 && s.iter().all(u8::is_ascii_hexdigit)
}

/// `blobs/sha256/<64 hex digits>`: a blob of an OCI layout.
fn is_blob(name: &[u8]) -> bool {
    name.strip_prefix(b"blobs/sha256/").is_some_and(is_hex64)
}

/// `<64 hex digits>/VERSION` or `/layer.tar`: a layer directory of the first docker-archive
/// format.
fn is_legacy_docker(name: &[u8]) -> bool {
    match name.split_at_checked(64) {
        Some((id, rest)) => is_hex64(id) && (rest == b"/VERSION" || rest == b"/layer.tar"),
        None => false,
    }
}

/// A docker-archive `manifest.json`: a JSON array of objects with a `Layers` array.
fn is_docker_manifest(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Array(items)) => {
            !items.is_empty() && items.iter().all(|i| i["Layers"].is_array())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn check(bytes: Vec<u8>) -> Option<String> {
        let mut reader = bytes.as_slice();
        let mut head = Vec::new();
        let verdict = refuse_images(&mut reader, &mut head).unwrap();
        // What was read ahead and what is left are the stream, whole.
        head.extend_from_slice(reader);
        assert_eq!(head, bytes);
        verdict.err().map(|e| e.to_string())
    }

    #[test]
    fn layers_pass_whole() {
        let layer = tar(&[
            ("etc/hosts", b"x"),
            ("manifest.json", br#"{"name":"app"}"#),
            ("blobs/sha256/abc", b"short"),
        ]);
        assert_eq!(check(layer), None);
        assert_eq!(check(Vec::new()), None);
        assert_eq!(check(vec![0; 100]), None);
    }

    #[test]
    fn images_are_named() {
        let hex = "0f".repeat(32);
        let manifest = format!(r#"[{{"Config":"c.json","Layers":["{hex}/layer.tar"]}}]"#);
        let docker = tar(&[("manifest.json", manifest.as_bytes())]);
        assert!(check(docker).unwrap().contains("docker-archive"));
        let legacy = tar(&[(&format!("{hex}/VERSION"), b"1.0")]);
        assert!(check(legacy).unwrap().contains("docker-archive"));
        let oci = tar(&[("./oci-layout", b"{}")]);
        assert!(check(oci).unwrap().contains("OCI image layout"));
        let long = format!("{}/{}", "d".repeat(120), "x");
        let blob = format!("blobs/sha256/{hex}");
        let later = tar(&[(long.as_str(), b"x"), (blob.as_str(), b"{}")]);
        assert!(check(later).unwrap().contains("OCI image layout"));
    }
}
