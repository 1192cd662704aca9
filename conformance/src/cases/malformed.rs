//! Malformed archives through `apply_diff`: truncated streams, bad checksums, huge headers,
//! absurd metadata, duplicate entries (research/layer-security.md, section 5, "Metadata" and
//! "Parsing and denial of service"). The same guard as `hostile`: canaries outside the home
//! and the lower layer must stay exactly as they were.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::cases::hostile::{Expect, Guard, attempt};
use crate::check::{Context, Failure};
use crate::ensure_eq;
use crate::fixtures::with_mounted;
use crate::harness::Harness;
use crate::tarfile::{self, Entry, make_tar};

/// Truncated streams and bad checksums are InvalidArchive.
pub async fn hostile_truncated(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let g = Guard::new(h, &*d).await?;
    let whole = make_tar(&[Entry::file("a", vec![7u8; 10_000]), Entry::file("b", "b")]);
    attempt(
        &*d,
        &g,
        "cut-in-data",
        whole[..512 + 4000].to_vec(),
        Expect::Reject,
    )
    .await?;
    attempt(
        &*d,
        &g,
        "cut-in-header",
        whole[..512 + 10_240 + 100].to_vec(),
        Expect::Reject,
    )
    .await?;
    attempt(
        &*d,
        &g,
        "bad-checksum",
        tarfile::break_first_checksum(whole.clone()),
        Expect::Reject,
    )
    .await?;
    let mut bad_second = whole.clone();
    bad_second[512 + 10_240 + 10] ^= 0x20;
    attempt(&*d, &g, "bad-checksum-later", bad_second, Expect::Reject).await?;
    Ok(())
}

/// Huge PAX headers and GNU long names are InvalidArchive, without hanging.
pub async fn hostile_huge_headers(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let g = Guard::new(h, &*d).await?;
    let huge_pax = make_tar(&[Entry::file("a", "x").pax("comment", vec![b'c'; 16 << 20])]);
    attempt(&*d, &g, "pax-16mib", huge_pax, Expect::Reject).await?;
    let long = tarfile::splice(
        &tarfile::raw_entry(b"././@LongLink", b'L', &vec![b'n'; 2 << 20]),
        &make_tar(&[Entry::file("short", "x")]),
    );
    attempt(&*d, &g, "gnu-longname-2mib", long, Expect::Reject).await?;
    let long_path = make_tar(&[Entry::file(format!("{}/f", "d".repeat(5000)), "x")]);
    attempt(&*d, &g, "path-5000", long_path, Expect::Fail).await?;
    Ok(())
}

/// Absurd metadata: owners of 2^32-1 and beyond and over-long xattr names or values are
/// InvalidArchive (no wrap-around to 0); far-future mtimes and type bits in the mode field are
/// taken in stride; a mode-0 directory still gets its children.
pub async fn hostile_metadata(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let g = Guard::new(h, &*d).await?;
    let rejects: Vec<(&str, Entry)> = vec![
        ("uid-max", Entry::file("f", "x").owner(u32::MAX as u64, 0)),
        ("gid-2-32", Entry::file("f", "x").owner(0, 1 << 32)),
        (
            "xattr-name-256",
            Entry::file("f", "x").xattr(&format!("user.{}", "n".repeat(251)), "v"),
        ),
        (
            "xattr-value-65k",
            Entry::file("f", "x").xattr("user.big", vec![b'v'; 65 * 1024 + 1]),
        ),
    ];
    for (name, e) in rejects {
        attempt(&*d, &g, name, make_tar(&[e]), Expect::Reject).await?;
    }
    let year_3000 = 32_503_680_000;
    let kept = attempt(
        &*d,
        &g,
        "odd-but-fine",
        make_tar(&[
            Entry::file("future", "f").mtime(year_3000),
            Entry::file("typebits", "t").mode(0o170_755),
            Entry::dir("locked").mode(0o000),
            Entry::file("locked/inside", "i"),
        ]),
        Expect::Accept,
    )
    .await?
    .expect("accepted");
    let root_user = h.privileges().root;
    let (mode, typebits, inside) = with_mounted(&*d, &kept, move |root| {
        let mode = std::fs::symlink_metadata(root.join("locked"))
            .ctx("lstat locked")?
            .mode()
            & 0o7777;
        let tb = std::fs::symlink_metadata(root.join("typebits")).ctx("lstat typebits")?;
        let inside = if root_user {
            Some(std::fs::read(root.join("locked/inside")).ctx("read locked/inside")?)
        } else {
            None
        };
        Ok((mode, (tb.is_file(), tb.mode() & 0o7777), inside))
    })
    .await?;
    ensure_eq!(mode, 0, "mode of a mode-0 directory after its children");
    ensure_eq!(
        typebits,
        (true, 0o755),
        "a file whose mode field carries type bits"
    );
    if let Some(inside) = inside {
        ensure_eq!(inside, b"i".to_vec(), "the child of a mode-0 directory");
    }
    attempt(
        &*d,
        &g,
        "pax-mtime-1e300",
        make_tar(&[Entry::file("f", "x").pax("mtime", "1e300")]),
        Expect::InRootOrReject,
    )
    .await?;
    Ok(())
}

/// Duplicate entries: the last one wins, or the tar is refused; never a mix.
pub async fn hostile_duplicates(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let g = Guard::new(h, &*d).await?;
    let tries: Vec<(&str, Vec<Entry>, &str)> = vec![
        (
            "dup-file-then-dir",
            vec![
                Entry::file("x", "f"),
                Entry::dir("x"),
                Entry::file("x/in", "i"),
            ],
            "dir",
        ),
        (
            "dup-dir-then-file",
            vec![
                Entry::dir("x"),
                Entry::file("x/in", "i"),
                Entry::file("x", "f"),
            ],
            "file",
        ),
        (
            "dup-file-twice",
            vec![Entry::file("x", "first"), Entry::file("x", "second")],
            "second",
        ),
    ];
    for (name, entries, want) in tries {
        if let Some(l) = attempt(&*d, &g, name, make_tar(&entries), Expect::InRootOrReject).await? {
            let path: &Path = Path::new("x");
            let got = with_mounted(&*d, &l, move |root| {
                let md = std::fs::symlink_metadata(root.join(path)).ctx("lstat x")?;
                Ok(if md.is_dir() {
                    "dir".to_string()
                } else {
                    let c = std::fs::read(root.join(path)).ctx("read x")?;
                    if c == b"f" {
                        "file".into()
                    } else {
                        String::from_utf8_lossy(&c).into_owned()
                    }
                })
            })
            .await?;
            ensure_eq!(got.as_str(), want, "{name}: the last entry must win");
        }
    }
    Ok(())
}
