//! Metadata round trips (apply → mount → diff → apply elsewhere, and write → diff → apply),
//! sizes, and deterministic diffs.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use strata_driver_api::CreateOpts;

use crate::Privileges;
use crate::cases::whiteouts::{apply_layer, diff_bytes};
use crate::check::{Context, Failure, id};
use crate::fixtures::with_mounted;
use crate::harness::Harness;
use crate::ops::{self, Op, file};
use crate::tarfile::{Entry, Verify, stream, verify_entries};
use crate::tree::{self, Compare};
use crate::{ensure, ensure_eq};

/// The names in a tar, in order, PAX paths resolved.
pub fn tar_names(tar: &[u8]) -> Result<Vec<String>, Failure> {
    let mut a = tar::Archive::new(std::io::Cursor::new(tar));
    let mut names = Vec::new();
    for e in a.entries().ctx("reading a tar")? {
        let e = e.ctx("reading a tar entry")?;
        names.push(String::from_utf8_lossy(&e.path_bytes()).into_owned());
    }
    Ok(names)
}

/// Every PAX record key of every entry of a tar.
pub fn tar_pax_keys(tar: &[u8]) -> Result<Vec<(String, String)>, Failure> {
    let mut a = tar::Archive::new(std::io::Cursor::new(tar));
    let mut keys = Vec::new();
    for e in a.entries().ctx("reading a tar")? {
        let mut e = e.ctx("reading a tar entry")?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if let Some(ext) = e.pax_extensions().ctx("pax records")? {
            for r in ext {
                let r = r.ctx("a pax record")?;
                keys.push((
                    name.clone(),
                    String::from_utf8_lossy(r.key_bytes()).into_owned(),
                ));
            }
        }
    }
    Ok(keys)
}

/// A VFS_CAP_REVISION_2 `security.capability` value granting CAP_NET_BIND_SERVICE, effective.
pub fn file_capability() -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    v.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    v.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

/// A tar exercising every kind of metadata a layer carries; owners, devices and
/// `security.capability` only when the process may set them.
pub fn rich_entries(p: Privileges) -> Vec<Entry> {
    let long_dir = format!("long/{}", "n".repeat(150));
    let max_name = format!("long/{}", "x".repeat(255));
    let long_target = format!("{}/end", "t".repeat(300));
    let owner = |e: Entry, u, g| if p.root { e.owner(u, g) } else { e };
    let mut v = vec![
        Entry::dir("dirs"),
        Entry::dir("dirs/sticky").mode(0o1777),
        Entry::dir("dirs/setgid").mode(0o2755),
        Entry::dir("dirs/empty").mode(0o700).mtime(1_000_000_000),
        owner(Entry::dir("dirs/owned").mode(0o750), 1, 2),
        Entry::dir("files").mode(0o711),
        Entry::file("files/setuid", "suid").mode(0o4755),
        Entry::file("files/setgid", "sgid").mode(0o2755),
        owner(
            Entry::file("files/plain", "plain content").mode(0o640),
            1000,
            1000,
        )
        .mtime(1_234_567_890),
        Entry::file("files/empty", "").mode(0o600),
        Entry::file("files/ro", "read only").mode(0o444),
        Entry::file("files/zeros", vec![0u8; 1 << 20]),
        Entry::dir("links"),
        Entry::symlink("links/abs", "/etc/passwd"),
        Entry::symlink("links/rel", "../files/plain"),
        Entry::symlink("links/dangling", "nowhere/at/all"),
        Entry::symlink("links/long", &long_target),
        Entry::hardlink("links/hard", "files/plain"),
        Entry::dir("special"),
        Entry::fifo("special/fifo").mode(0o640),
        Entry::dir("xattr"),
        Entry::file("xattr/user", "x")
            .xattr("user.foo", "bar")
            .xattr("user.empty", ""),
        Entry::dir("xattr/dir").xattr("user.dirattr", "d"),
        Entry::dir("long"),
        Entry::dir(&long_dir),
        Entry::file(format!("{long_dir}/file"), "deep"),
        Entry::file(&max_name, "255"),
    ];
    if p.full_root() {
        v.push(Entry::char_dev("special/null", 1, 3));
        v.push(Entry::block_dev("special/loop", 7, 200));
        v.push(
            Entry::file("xattr/cap", "cap")
                .mode(0o755)
                .xattr("security.capability", file_capability()),
        );
    }
    v
}

/// Regular-file bytes of entries, hardlinks once: what apply_diff must return.
fn content_size(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .filter(|e| !e.is_whiteout())
        .map(|e| match &e.kind {
            crate::tarfile::EntryKind::File(c) => c.len() as u64,
            _ => 0,
        })
        .sum()
}

/// apply → mount → diff → apply elsewhere keeps modes (setuid, setgid, sticky), owners,
/// symlinks (absolute, relative, dangling, 300-byte targets), hardlinks, fifos, devices,
/// xattrs (user.*, security.capability), mtimes, empty dirs and long names; the diff carries
/// no overlay xattrs; apply returns the content size.
pub async fn metadata_roundtrip_apply(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let p = h.privileges();
    let entries = rich_entries(p);
    let a = id("a");
    let size = apply_layer(&*d, &a, None, &entries).await?;
    ensure_eq!(size, content_size(&entries), "apply_diff's size");
    let spec = entries.clone();
    let how = Verify {
        owners: p.root,
        mtimes: true,
    };
    let want = with_mounted(&*d, &a, move |root| {
        verify_entries(root, &spec, how)?;
        let tree = tree::snapshot(root)?;
        // Exactly the tar's paths: nothing the driver keeps for itself shows in a view.
        let mut expected: std::collections::BTreeSet<std::path::PathBuf> = spec
            .iter()
            .map(|e| std::path::Path::new("/").join(String::from_utf8_lossy(&e.path).as_ref()))
            .collect();
        expected.insert("/".into());
        let got: std::collections::BTreeSet<_> = tree.keys().cloned().collect();
        let extra: Vec<_> = got.difference(&expected).collect();
        ensure!(
            extra.is_empty(),
            "the view holds paths the tar did not: {extra:?}"
        );
        Ok(tree)
    })
    .await
    .ctx("the applied layer against the tar")?;
    let tar = diff_bytes(&*d, &a, None).await?;
    for (name, key) in tar_pax_keys(&tar)? {
        ensure!(
            !strata_archive::whiteout::is_overlay_xattr(
                key.trim_start_matches("SCHILY.xattr.").as_bytes()
            ),
            "diff carries overlay xattr {key} on {name}"
        );
    }
    let c = id("c");
    d.create(&c, None, &CreateOpts::default())
        .await
        .ctx("create c")?;
    let tar = diff_bytes(&*d, &a, None).await?;
    let size_c = d
        .apply_diff(&c, None, stream(tar))
        .await
        .ctx("apply_diff of the diff")?;
    ensure_eq!(size_c, size, "apply_diff's size for the diff");
    let got = with_mounted(&*d, &c, tree::snapshot).await?;
    tree::ensure_same(
        &got,
        &want,
        Compare::ROUND_TRIP,
        "the layer rebuilt from its diff",
    )
}

/// A layer written through `get` (sparse file, setuid by chmod, xattrs, hardlinks, fifo,
/// device, symlinks, an explicit mtime), diffed and applied to a fresh layer, gives the same
/// tree; a sparse file's content (holes as zeros) survives.
pub async fn metadata_roundtrip_write(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let p = h.privileges();
    let (w, c) = (id("written"), id("copy"));
    d.create_rw(&w, None, &CreateOpts::default())
        .await
        .ctx("create_rw")?;
    let want = with_mounted(&*d, &w, move |root| {
        write_rich_tree(root, p)?;
        tree::snapshot(root)
    })
    .await
    .ctx("writing the layer")?;
    let tar = diff_bytes(&*d, &w, None).await?;
    d.create(&c, None, &CreateOpts::default())
        .await
        .ctx("create copy")?;
    d.apply_diff(&c, None, stream(tar))
        .await
        .ctx("apply_diff")?;
    let got = with_mounted(&*d, &c, tree::snapshot).await?;
    tree::ensure_same(
        &got,
        &want,
        Compare::ROUND_TRIP,
        "the copy of a written layer",
    )
}

fn write_rich_tree(root: &std::path::Path, p: Privileges) -> Result<(), Failure> {
    let chmod = |path: &std::path::Path, m: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(m))
            .ctx(format!("chmod {}", path.display()))
    };
    ops::apply(
        root,
        &[
            Op::Dir("bin", 0o755),
            file("bin/suid", "#!/bin/true\n", 0o4755),
            Op::Dir("tmp", 0o1777),
            Op::Dir("empty", 0o700),
            file("data", "some data", 0o644),
            Op::Link("data", "data-link"),
            Op::Symlink("/bin/suid", "abs-link"),
            Op::Symlink("../nowhere", "dangling"),
        ],
    )?;
    let sparse = root.join("sparse");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(&sparse).ctx("create sparse")?;
        f.write_all(b"head").ctx("write sparse")?;
        f.seek(SeekFrom::Start(7 << 20)).ctx("seek")?;
        f.write_all(b"tail").ctx("write sparse tail")?;
        f.set_len(8 << 20).ctx("set_len")?;
    }
    chmod(&sparse, 0o644)?;
    let fifo = root.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .ctx("mkfifo")?;
    chmod(&fifo, 0o620)?;
    rustix::fs::lsetxattr(
        root.join("data"),
        "user.note",
        b"hello",
        rustix::fs::XattrFlags::empty(),
    )
    .ctx("setxattr user.note")?;
    let stamp = fs::File::options()
        .write(true)
        .open(root.join("data"))
        .ctx("open data")?;
    stamp
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000))
        .ctx("set mtime")?;
    if p.root {
        std::os::unix::fs::lchown(root.join("data"), Some(123), Some(456)).ctx("chown")?;
        std::os::unix::fs::lchown(root.join("dangling"), Some(7), Some(8)).ctx("lchown symlink")?;
    }
    if p.full_root() {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .ctx("mknod")?;
        chmod(&root.join("null"), 0o666)?;
        fs::write(root.join("bin/capped"), b"cap").ctx("write capped")?;
        chmod(&root.join("bin/capped"), 0o755)?;
        rustix::fs::lsetxattr(
            root.join("bin/capped"),
            "security.capability",
            &file_capability(),
            rustix::fs::XattrFlags::empty(),
        )
        .ctx("setxattr security.capability")?;
    }
    Ok(())
}

/// The same layer diffed twice gives byte-identical tars, for a base and for a child.
pub async fn diff_deterministic(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let (a, b) = (id("a"), id("b"));
    apply_layer(&*d, &a, None, &rich_entries(h.privileges())).await?;
    let one = diff_bytes(&*d, &a, None).await?;
    let two = diff_bytes(&*d, &a, None).await?;
    ensure!(
        one == two,
        "diff(a) twice: {} and {} bytes, not identical",
        one.len(),
        two.len()
    );
    ops::rw_layer(
        &*d,
        &b,
        Some(&a),
        &[
            file("files/new", "n", 0o644),
            Op::RemoveAll("links"),
            Op::Chmod("dirs", 0o700),
        ],
    )
    .await?;
    let one = diff_bytes(&*d, &b, Some(&a)).await?;
    let two = diff_bytes(&*d, &b, Some(&a)).await?;
    ensure!(
        one == two,
        "diff(b, a) twice: {} and {} bytes, not identical",
        one.len(),
        two.len()
    );
    let names = tar_names(&one)?;
    ensure!(
        names
            .iter()
            .any(|n| n.trim_end_matches('/').ends_with(".wh.links")),
        "diff(b, a) lacks the whiteout of links: {names:?}"
    );
    Ok(())
}

/// apply_diff returns the bytes of regular files, hardlinks once, and diff_size agrees;
/// whiteouts, dirs, symlinks and fifos count nothing.
pub async fn apply_size_and_diff_size(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let (lower, upper) = (id("lower"), id("upper"));
    apply_layer(
        &*d,
        &lower,
        None,
        &[Entry::file("lower-file", vec![1u8; 5000])],
    )
    .await?;
    let size = apply_layer(
        &*d,
        &upper,
        Some(&lower),
        &[
            Entry::file("a", vec![2u8; 100]),
            Entry::hardlink("b", "a"),
            Entry::file("c", vec![3u8; 10]),
            Entry::symlink("s", "a"),
            Entry::dir("dir"),
            Entry::fifo("dir/fifo"),
            Entry::whiteout("lower-file"),
        ],
    )
    .await?;
    ensure_eq!(size, 110, "apply_diff's size");
    ensure_eq!(
        d.diff_size(&upper, Some(&lower)).await.ctx("diff_size")?,
        110,
        "diff_size(upper, lower)"
    );
    ensure_eq!(
        d.diff_size(&lower, None).await.ctx("diff_size")?,
        5000,
        "diff_size(lower, none)"
    );
    let changes = d.changes(&upper, Some(&lower)).await.ctx("changes")?;
    let mut sorted = changes.clone();
    sorted.sort_by(|x, y| x.path.cmp(&y.path));
    ensure_eq!(changes, sorted, "changes must be sorted by path");
    ensure!(
        changes.iter().any(|c| c.path.as_os_str() == "/lower-file"
            && c.kind == strata_driver_api::ChangeKind::Delete),
        "changes miss D /lower-file: {changes:?}"
    );
    Ok(())
}

/// A stream that fails midway makes apply_diff fail (never a silent short apply), and the
/// layer can then be removed.
pub async fn apply_failing_stream(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let l = id("broken");
    d.create(&l, None, &CreateOpts::default())
        .await
        .ctx("create")?;
    let tar =
        crate::tarfile::make_tar(&[Entry::file("a", vec![9u8; 200_000]), Entry::file("b", "b")]);
    let failing = FailAfter {
        data: tar,
        pos: 0,
        fail_at: 50_000,
    };
    let r = d.apply_diff(&l, None, Box::pin(failing)).await;
    ensure!(
        r.is_err(),
        "apply_diff of a stream that failed midway succeeded: {r:?}"
    );
    d.remove(&l, false)
        .await
        .ctx("remove the partly applied layer")?;
    ensure!(
        !d.exists(&l).await.ctx("exists")?,
        "the layer is still there"
    );
    Ok(())
}

struct FailAfter {
    data: Vec<u8>,
    pos: usize,
    fail_at: usize,
}

impl tokio::io::AsyncRead for FailAfter {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.pos >= self.fail_at {
            return std::task::Poll::Ready(Err(std::io::Error::other("the source broke")));
        }
        let end = self
            .fail_at
            .min(self.data.len())
            .min(self.pos + buf.remaining());
        let pos = self.pos;
        buf.put_slice(&self.data[pos..end]);
        self.pos = end;
        std::task::Poll::Ready(Ok(()))
    }
}

/// `diff(child, parent)` holds the child's changes and nothing else of the image: the
/// changed files, the whiteout of a deleted one, and at most their parent directories.
pub async fn diff_holds_only_changes(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let (base, child) = (id("base"), id("child"));
    d.create_rw(&base, None, &CreateOpts::default())
        .await
        .ctx("create base")?;
    crate::fixtures::add_many_files(&*d, &base, 250, 3).await?;
    ops::rw_layer(
        &*d,
        &child,
        Some(&base),
        &[
            Op::File("directory-100/file-150", b"changed".to_vec(), 0o755),
            file("directory-200/new", "new", 0o644),
            Op::RemoveAll("directory-0/file-7"),
        ],
    )
    .await?;
    let names: Vec<String> = tar_names(&diff_bytes(&*d, &child, Some(&base)).await?)?
        .into_iter()
        .map(|n| n.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect();
    let must = [
        "directory-100/file-150",
        "directory-200/new",
        "directory-0/.wh.file-7",
    ];
    let may = ["directory-100", "directory-200", "directory-0"];
    for m in must {
        ensure!(
            names.iter().any(|n| n == m),
            "diff(child, base) lacks {m}: {names:?}"
        );
    }
    let extra: Vec<&String> = names
        .iter()
        .filter(|n| !must.contains(&n.as_str()) && !may.contains(&n.as_str()) && !n.is_empty())
        .collect();
    ensure!(
        extra.is_empty(),
        "diff(child, base) holds unchanged paths: {extra:?}"
    );
    let changes = d.changes(&base, None).await.ctx("changes(base, none)")?;
    ensure!(
        changes
            .iter()
            .all(|c| c.kind == strata_driver_api::ChangeKind::Add),
        "changes of a base layer must all be Add"
    );
    ensure_eq!(
        changes.len(),
        250 + 3,
        "changes(base, none): 250 files in 3 directories"
    );
    Ok(())
}

/// A native diff agrees with the naive one computed from the same two mounted views: the same
/// changes, the same size, and tars that rebuild the same view.
pub async fn native_matches_naive(h: &Harness) -> Result<(), Failure> {
    use strata_driver_api::naive;
    let d = h.driver();
    let (base, upper) = (id("base"), id("upper"));
    ops::rw_layer(
        &*d,
        &base,
        None,
        &[
            file("a", "aaaa", 0o644),
            file("b", "bbbb", 0o644),
            Op::File("c", vec![5; 3000], 0o600),
            Op::Dir("d", 0o755),
            file("d/x", "x", 0o644),
            Op::Dir("keep", 0o700),
            file("keep/k", "k", 0o644),
            Op::Symlink("a", "s"),
            file("h1", "linked", 0o644),
            Op::Link("h1", "h2"),
        ],
    )
    .await?;
    ops::rw_layer(
        &*d,
        &upper,
        Some(&base),
        &[
            Op::Chmod("a", 0o600),
            file("b", "BBBB", 0o644),
            Op::RemoveAll("c"),
            file("d/y", "y", 0o644),
            Op::RemoveAll("keep"),
            Op::RemoveAll("s"),
            Op::Symlink("b", "s"),
            Op::Dir("new", 0o750),
            Op::File("new/big", vec![9; 100_000], 0o644),
        ],
    )
    .await?;
    let native = d.changes(&upper, Some(&base)).await.ctx("changes")?;
    let naive_changes = naive::changes(&*d, &upper, Some(&base))
        .await
        .ctx("naive changes")?;
    ensure_eq!(
        native,
        naive_changes,
        "native changes against the naive ones"
    );
    let native_size = d.diff_size(&upper, Some(&base)).await.ctx("diff_size")?;
    let naive_size = naive::diff_size(&*d, &upper, Some(&base))
        .await
        .ctx("naive diff_size")?;
    ensure_eq!(
        native_size,
        naive_size,
        "native diff_size against the naive one"
    );

    let want = with_mounted(&*d, &upper, tree::snapshot).await?;
    let how = Compare {
        hardlinks: false,
        ..Compare::FLAT
    };
    for (name, naive_side) in [("native", false), ("naive", true)] {
        let copy = id(&format!("copy-{name}"));
        d.create(&copy, Some(&base), &CreateOpts::default())
            .await
            .ctx("create copy")?;
        let tar = if naive_side {
            naive::diff(&*d, &upper, Some(&base))
                .await
                .ctx("naive diff")?
        } else {
            d.diff(&upper, Some(&base)).await.ctx("diff")?
        };
        d.apply_diff(&copy, Some(&base), tar)
            .await
            .ctx(format!("apply the {name} diff"))?;
        let got = with_mounted(&*d, &copy, tree::snapshot).await?;
        tree::ensure_same(
            &got,
            &want,
            how,
            &format!("upper rebuilt from the {name} diff"),
        )?;
    }
    Ok(())
}
