//! Hostile tars through `apply_diff` (research/layer-security.md, section 5): names, symlinks,
//! hardlinks and whiteouts aimed outside the layer. Malformed archives are in `malformed`.
//!
//! Canary files live in the harness's `outside/` directory, beside the driver's home, and tars
//! aim at them by `..`, absolute names, symlinks, hardlinks and whiteouts. After every attempt
//! the canaries and the lower layer must be exactly as before (content, modes, mtimes, link
//! counts); a rejected tar must be `InvalidArchive` where the rule is clear, must not hang, and
//! the partly applied layer must be removable.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_driver_api::{CreateOpts, Driver, ErrorKind, LayerId};

use crate::cases::whiteouts::{apply_layer, diff_bytes};
use crate::check::{Context, Failure, id};
use crate::fixtures::{blocking, with_mounted};
use crate::harness::Harness;
use crate::tarfile::{Entry, make_tar, stream};
use crate::tree::{self, Compare, Tree};
use crate::{ensure, ensure_eq};

/// How long one apply may take before the case calls it a hang.
const APPLY_LIMIT: Duration = Duration::from_secs(120);

/// What a hostile tar must lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// `InvalidArchive`.
    Reject,
    /// Some error (the kind depends on how the resolver refuses, e.g. ELOOP).
    Fail,
    /// Success (resolved inside the layer) or `InvalidArchive`.
    InRootOrReject,
    /// Success.
    Accept,
    /// Anything: only the canaries and the lower layer matter (the outcome depends on how
    /// the resolver clamps; a missing parent may be an error or made).
    Any,
}

/// The canaries and the lower layer as they were, to compare after each attempt.
pub(crate) struct Guard {
    outside: PathBuf,
    before: Tree,
    lower: LayerId,
    lower_view: Tree,
}

impl Guard {
    pub(crate) async fn new(h: &Harness, d: &dyn Driver) -> Result<Guard, Failure> {
        let outside = h.outside().to_path_buf();
        let o = outside.clone();
        let before = blocking(move || {
            std::fs::write(o.join("canary"), b"canary").ctx("write canary")?;
            std::fs::create_dir(o.join("canary-dir")).ctx("mkdir canary-dir")?;
            std::fs::write(o.join("canary-dir/inner"), b"inner").ctx("write inner canary")?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(o.join("canary-dir"), std::fs::Permissions::from_mode(0o750))
                .ctx("chmod canary-dir")?;
            tree::snapshot(&o)
        })
        .await?;
        let lower = id("lower");
        let lower_entries = [
            Entry::dir("etc"),
            Entry::file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
            Entry::dir("d"),
            Entry::file("d/keep", "keep"),
            Entry::symlink("link", format!("{}/canary", outside.display())),
            Entry::file("t", "target"),
        ];
        apply_layer(d, &lower, None, &lower_entries).await?;
        let lower_view = with_mounted(d, &lower, tree::snapshot).await?;
        Ok(Guard {
            outside,
            before,
            lower,
            lower_view,
        })
    }

    async fn check(&self, d: &dyn Driver, what: &str) -> Result<(), Failure> {
        let o = self.outside.clone();
        let now = blocking(move || tree::snapshot(&o)).await?;
        tree::ensure_same(
            &now,
            &self.before,
            Compare::ROUND_TRIP,
            &format!("{what}: outside the driver home"),
        )?;
        let nlink = std::fs::symlink_metadata(self.outside.join("canary"))
            .ctx("lstat canary")?
            .nlink();
        ensure_eq!(
            nlink,
            1,
            "{what}: link count of the canary outside the home"
        );
        let view = with_mounted(d, &self.lower, tree::snapshot).await?;
        tree::ensure_same(
            &view,
            &self.lower_view,
            Compare::ROUND_TRIP,
            &format!("{what}: the lower layer"),
        )
    }

    /// `outside`'s absolute path without the leading `/`.
    fn outside_rel(&self) -> String {
        self.outside
            .display()
            .to_string()
            .trim_start_matches('/')
            .to_string()
    }
}

fn dotdots() -> String {
    "../".repeat(64)
}

/// Applies `tar` to a fresh image layer on the guard's lower layer, checks the outcome
/// against `expect` and the guard, and returns the layer when it was kept (applied fine).
pub(crate) async fn attempt(
    d: &dyn Driver,
    g: &Guard,
    name: &str,
    tar: Vec<u8>,
    expect: Expect,
) -> Result<Option<LayerId>, Failure> {
    let layer = LayerId::new(format!("t-{name}")).ctx("id")?;
    d.create(&layer, Some(&g.lower), &CreateOpts::default())
        .await
        .ctx(format!("{name}: create"))?;
    let result = match tokio::time::timeout(
        APPLY_LIMIT,
        d.apply_diff(&layer, Some(&g.lower), stream(tar)),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => {
            return Err(Failure::failed(format!(
                "{name}: apply_diff hung for {APPLY_LIMIT:?}"
            )));
        }
    };
    let kept = match (&result, expect) {
        (Err(e), Expect::Reject | Expect::InRootOrReject)
            if e.kind() == ErrorKind::InvalidArchive =>
        {
            false
        }
        (Err(_), Expect::Fail) => false,
        (Ok(_), Expect::Accept | Expect::InRootOrReject | Expect::Any) => true,
        (Err(_), Expect::Any) => false,
        (Err(e), _) => {
            return Err(Failure::failed(format!(
                "{name}: expected {expect:?}, got {:?} ({e:#})",
                e.kind()
            )));
        }
        (Ok(size), _) => {
            return Err(Failure::failed(format!(
                "{name}: expected {expect:?}, but apply_diff succeeded ({size} bytes)"
            )));
        }
    };
    g.check(d, name).await?;
    if kept {
        let ok = with_mounted(d, &layer, |root| {
            Ok(std::fs::symlink_metadata(root)
                .map(|m| m.is_dir())
                .unwrap_or(false))
        })
        .await
        .ctx(format!("{name}: mounting the applied layer"))?;
        ensure!(ok, "{name}: the layer's root is no longer a directory");
        Ok(Some(layer))
    } else {
        d.remove(&layer, false)
            .await
            .ctx(format!("{name}: removing the rejected layer"))?;
        ensure!(
            !d.exists(&layer).await.ctx("exists")?,
            "{name}: the rejected layer is still there"
        );
        Ok(None)
    }
}

/// Names that climb out by `..`, and hardlinks that do, are InvalidArchive.
pub async fn hostile_dotdot(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let g = Guard::new(h, &*d).await?;
    let out = g.outside_rel();
    let up = dotdots();
    let cases: Vec<(&str, Vec<Entry>)> = vec![
        (
            "dotdot-file",
            vec![Entry::file(format!("{up}{out}/pwned"), "x")],
        ),
        (
            "dotdot-canary",
            vec![Entry::file(format!("{up}{out}/canary"), "pwned")],
        ),
        (
            "dotdot-inner",
            vec![
                Entry::dir("a"),
                Entry::file(format!("a/../../{up}{out}/pwned"), "x"),
            ],
        ),
        (
            "dotdot-dir",
            vec![Entry::dir(format!("{up}{out}/pwned-dir"))],
        ),
        (
            "dotdot-symlink",
            vec![Entry::symlink(format!("{up}{out}/pwned-link"), "/")],
        ),
        (
            "dotdot-hardlink",
            vec![Entry::hardlink("l", format!("{up}{out}/canary"))],
        ),
        ("dotdot-plain", vec![Entry::file("../escape", "x")]),
    ];
    for (name, entries) in cases {
        attempt(&*d, &g, name, make_tar(&entries), Expect::Reject).await?;
    }
    Ok(())
}

/// Absolute names are taken as relative to the layer root.
pub async fn hostile_absolute(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let g = Guard::new(h, &*d).await?;
    let out = h.outside().display().to_string();
    let kept = attempt(
        &*d,
        &g,
        "abs-file",
        make_tar(&[Entry::dir("/abs"), Entry::file("/abs/file", "in")]),
        Expect::Accept,
    )
    .await?
    .expect("accepted");
    let content = with_mounted(&*d, &kept, |root| {
        std::fs::read(root.join("abs/file")).ctx("read abs/file")
    })
    .await?;
    ensure_eq!(content, b"in".to_vec(), "/abs/file stored inside the layer");
    attempt(
        &*d,
        &g,
        "abs-canary",
        make_tar(&[Entry::file(format!("{out}/canary"), "pwned")]),
        Expect::Any,
    )
    .await?;
    Ok(())
}

/// Symlinks in the layer resolve as in a chroot: writes through them stay inside.
pub async fn hostile_symlinks(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let g = Guard::new(h, &*d).await?;
    let out = h.outside().display().to_string();
    let up = dotdots();
    let anything: Vec<(&str, Vec<Entry>)> = vec![
        (
            "abs-symlink-write",
            vec![
                Entry::symlink("e", &out),
                Entry::file("e/pwned", "x"),
                Entry::file("e/canary", "pwned"),
            ],
        ),
        (
            "rel-symlink-write",
            vec![
                Entry::symlink("e", format!("{up}{}", g.outside_rel())),
                Entry::file("e/canary", "pwned"),
            ],
        ),
        (
            "dotdot-symlink-mkdir",
            vec![
                Entry::symlink("s", ".."),
                Entry::dir("s/exploit"),
                Entry::file("s/exploit/foo", "x"),
            ],
        ),
        (
            "symlink-chain",
            vec![
                Entry::symlink("a", "/b"),
                Entry::symlink("b", format!("{up}{}", g.outside_rel())),
                Entry::file("a/canary", "pwned"),
            ],
        ),
    ];
    let anything2: Vec<(&str, Vec<Entry>)> = vec![
        // CVE-2025-47290: a directory swapped for a symlink mid-archive.
        (
            "dir-swapped-for-symlink",
            vec![
                Entry::dir("foo"),
                Entry::dir("foo/canary-dir"),
                Entry::file("foo/canary-dir/a", "a"),
                Entry::symlink("foo", &out),
                Entry::file("foo/canary-dir/x", "pwned"),
                Entry::dir("foo").mode(0o777),
            ],
        ),
        // CVE-2021-32760: a chmod-bearing entry over a hardlink to a symlink to outside.
        (
            "chmod-through-link",
            vec![
                Entry::symlink("s", format!("{out}/canary")),
                Entry::hardlink("hl", "s"),
                Entry::file("hl", "x").mode(0o777),
                Entry::dir("s").mode(0o777),
            ],
        ),
    ];
    for (name, entries) in anything.into_iter().chain(anything2) {
        attempt(&*d, &g, name, make_tar(&entries), Expect::Any).await?;
    }
    let replaced: Vec<(&str, Vec<Entry>, &str)> = vec![
        (
            "symlink-over-canary",
            vec![
                Entry::symlink("f", format!("{out}/canary")),
                Entry::file("f", "replaced"),
            ],
            "f",
        ),
        (
            "lower-symlink-write",
            vec![Entry::file("link", "replaces the lower symlink")],
            "link",
        ),
        (
            "symlink-then-dir",
            vec![
                Entry::symlink("x", format!("{out}/canary-dir")),
                Entry::dir("x").mode(0o777),
                Entry::file("x/inner", "pwned"),
            ],
            "x",
        ),
    ];
    for (name, entries, path) in replaced {
        let l = attempt(&*d, &g, name, make_tar(&entries), Expect::Accept)
            .await?
            .expect("accepted");
        let is_link = with_mounted(&*d, &l, move |root| {
            Ok(std::fs::symlink_metadata(root.join(path))
                .map(|m| m.is_symlink())
                .unwrap_or(true))
        })
        .await?;
        ensure!(
            !is_link,
            "{name}: {path} must be replaced by the entry after the symlink"
        );
    }
    attempt(
        &*d,
        &g,
        "symlink-loop",
        make_tar(&[
            Entry::symlink("a", "b"),
            Entry::symlink("b", "a"),
            Entry::file("a/x", "x"),
        ]),
        Expect::Fail,
    )
    .await?;
    for (name, entry) in [
        ("symlink-dot", Entry::symlink(".", &out)),
        ("symlink-slash", Entry::symlink("/", &out)),
        ("symlink-empty", Entry::symlink("", &out)),
    ] {
        attempt(
            &*d,
            &g,
            name,
            make_tar(&[entry, Entry::file("after", "x")]),
            Expect::Any,
        )
        .await?;
    }
    Ok(())
}

/// Hardlinks to outside (absolute, or through a symlink) never link the host's file; a
/// regular entry over a hardlink does not write through to the link's target.
pub async fn hostile_hardlinks(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let g = Guard::new(h, &*d).await?;
    let out = h.outside().display().to_string();
    attempt(
        &*d,
        &g,
        "hardlink-abs",
        make_tar(&[Entry::hardlink("l", format!("{out}/canary"))]),
        Expect::Fail,
    )
    .await?;
    attempt(
        &*d,
        &g,
        "hardlink-via-symlink",
        make_tar(&[
            Entry::symlink("dd", &out),
            Entry::hardlink("l", "dd/canary"),
        ]),
        Expect::Fail,
    )
    .await?;
    attempt(
        &*d,
        &g,
        "hardlink-lower-symlink",
        make_tar(&[
            Entry::hardlink("l", "link"),
            Entry::file("l", "through").mode(0o777),
        ]),
        Expect::Any,
    )
    .await?;
    attempt(
        &*d,
        &g,
        "hardlink-missing",
        make_tar(&[Entry::hardlink("l", "no-such-file")]),
        Expect::Fail,
    )
    .await?;
    attempt(
        &*d,
        &g,
        "hardlink-self",
        make_tar(&[Entry::hardlink("l", "l")]),
        Expect::Fail,
    )
    .await?;
    attempt(
        &*d,
        &g,
        "hardlink-dir",
        make_tar(&[Entry::dir("dir"), Entry::hardlink("l", "dir")]),
        Expect::Fail,
    )
    .await?;
    let kept = attempt(
        &*d,
        &g,
        "file-over-hardlink",
        make_tar(&[
            Entry::file("t2", "target"),
            Entry::hardlink("l", "t2"),
            Entry::file("l", "replaced"),
        ]),
        Expect::Accept,
    )
    .await?
    .expect("accepted");
    let (t, l) = with_mounted(&*d, &kept, |root| {
        Ok((
            std::fs::read(root.join("t2")).ctx("read t2")?,
            std::fs::read(root.join("l")).ctx("read l")?,
        ))
    })
    .await?;
    ensure_eq!(
        t,
        b"target".to_vec(),
        "the hardlink's target after a file replaced the link"
    );
    ensure_eq!(l, b"replaced".to_vec(), "the replaced link");
    Ok(())
}

/// Whiteouts that name a parent are InvalidArchive; whiteouts through symlinks never reach
/// outside; whiteout of a symlink removes the symlink, not its target.
pub async fn hostile_whiteouts(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let g = Guard::new(h, &*d).await?;
    let out = h.outside().display().to_string();
    for (name, path) in [
        ("wh-dotdot", ".wh.."),
        ("wh-dotdotdot", ".wh..."),
        ("wh-empty", ".wh."),
        ("wh-nested-dotdot", "etc/.wh.."),
    ] {
        attempt(
            &*d,
            &g,
            name,
            make_tar(&[Entry::dir("etc"), Entry::file(path, "")]),
            Expect::Reject,
        )
        .await?;
    }
    attempt(
        &*d,
        &g,
        "wh-through-symlink",
        make_tar(&[Entry::symlink("le", &out), Entry::file("le/.wh.canary", "")]),
        Expect::Any,
    )
    .await?;
    attempt(
        &*d,
        &g,
        "opaque-through-symlink",
        make_tar(&[
            Entry::symlink("od", &out),
            Entry::file("od/.wh..wh..opq", ""),
        ]),
        Expect::Any,
    )
    .await?;
    let kept = attempt(
        &*d,
        &g,
        "wh-of-symlink",
        make_tar(&[Entry::whiteout("link")]),
        Expect::Accept,
    )
    .await?
    .expect("accepted");
    let gone = with_mounted(&*d, &kept, |root| {
        Ok(std::fs::symlink_metadata(root.join("link")).is_err())
    })
    .await?;
    ensure!(gone, "the whiteout of a symlink left it in the view");
    Ok(())
}

/// Overlay's own xattrs in PAX records never take effect and never come back out.
pub async fn hostile_overlay_xattrs(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let g = Guard::new(h, &*d).await?;
    let tar = make_tar(&[
        Entry::dir("d")
            .xattr("trusted.overlay.opaque", "y")
            .xattr("user.overlay.opaque", "y"),
        Entry::file("d/new", "n")
            .xattr("trusted.overlay.redirect", "/etc")
            .xattr("user.overlay.metacopy", ""),
        Entry::file("plain", "p").xattr("trusted.overlay.origin", "x"),
    ]);
    let Some(l) = attempt(&*d, &g, "overlay-xattrs", tar, Expect::InRootOrReject).await? else {
        return Ok(());
    };
    let keep = with_mounted(&*d, &l, |root| {
        for p in ["d", "d/new", "plain"] {
            let names = raw_xattr_names(&root.join(p)).ctx(format!("xattrs of {p}"))?;
            for n in names {
                ensure!(
                    !strata_archive::whiteout::is_overlay_xattr(&n),
                    "{p} carries {} from the tar",
                    String::from_utf8_lossy(&n)
                );
            }
        }
        Ok(std::fs::read(root.join("d/keep")).ok())
    })
    .await?;
    ensure_eq!(
        keep,
        Some(b"keep".to_vec()),
        "d/keep under a smuggled opaque xattr"
    );
    let tar = diff_bytes(&*d, &l, Some(&g.lower)).await?;
    for (name, key) in crate::cases::roundtrip::tar_pax_keys(&tar)? {
        ensure!(!key.contains("overlay."), "diff carries {key} on {name}");
    }
    Ok(())
}

/// Every xattr name of `path`, unfiltered.
fn raw_xattr_names(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let len = match rustix::fs::llistxattr_query(path) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut list = vec![0u8; len];
    let n = if len == 0 {
        0
    } else {
        rustix::fs::llistxattr(path, &mut list[..])?
    };
    list.truncate(n);
    Ok(list
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}
