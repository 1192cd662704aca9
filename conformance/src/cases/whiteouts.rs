//! The OCI whiteout rules (image-spec `layer.md`), through `apply_diff`: each case applies
//! tars onto a stack and compares the merged view with a flat directory built by hand.

use strata_driver_api::{CreateOpts, Driver, ErrorKind, LayerId};
use tokio::io::AsyncReadExt;

use crate::check::{Context, Failure, id};
use crate::harness::Harness;
use crate::ops::{Flat, Op, file};
use crate::tarfile::{Entry, make_tar, stream};
use crate::tree::Compare;
use crate::{ensure, ensure_eq};

/// Creates image layer `id` on `parent` and applies `entries` to it; returns the size.
pub async fn apply_layer(
    d: &dyn Driver,
    id: &LayerId,
    parent: Option<&LayerId>,
    entries: &[Entry],
) -> Result<u64, Failure> {
    d.create(id, parent, &CreateOpts::default())
        .await
        .ctx(format!("create {id}"))?;
    d.apply_diff(id, parent, stream(make_tar(entries)))
        .await
        .ctx(format!("apply_diff {id}"))
}

/// `diff(id, parent)` read into memory.
pub async fn diff_bytes(
    d: &dyn Driver,
    id: &LayerId,
    parent: Option<&LayerId>,
) -> Result<Vec<u8>, Failure> {
    let mut tar = Vec::new();
    d.diff(id, parent)
        .await
        .ctx(format!("diff {id}"))?
        .read_to_end(&mut tar)
        .await
        .ctx(format!("reading diff {id}"))?;
    Ok(tar)
}

/// Requires `diff(id, parent)` applied to a fresh child of `parent` to give the same view as
/// `flat`: the rule survives a diff round trip.
async fn ensure_round_trip(
    d: &dyn Driver,
    id: &LayerId,
    parent: &LayerId,
    flat: &Flat,
) -> Result<(), Failure> {
    let tar = diff_bytes(d, id, Some(parent)).await?;
    let copy = LayerId::new(format!("{id}-copy")).ctx("id")?;
    d.create(&copy, Some(parent), &CreateOpts::default())
        .await
        .ctx("create copy")?;
    d.apply_diff(&copy, Some(parent), stream(tar))
        .await
        .ctx("apply_diff of the diff")?;
    flat.ensure_view(d, &copy, Compare::FLAT)
        .await
        .ctx("after a diff round trip")
}

/// The opaque marker hides every lower child of its directory, but not the children the same
/// layer brings, whether they come before or after it in the tar.
pub async fn opaque_keeps_same_layer(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let lower = id("lower");
    apply_layer(
        &*d,
        &lower,
        None,
        &[
            Entry::dir("a"),
            Entry::file("a/lower1", "l1"),
            Entry::dir("a/sub"),
            Entry::file("a/sub/lower2", "l2"),
            Entry::file("b", "b"),
        ],
    )
    .await?;
    let after = id("opaque-after");
    apply_layer(
        &*d,
        &after,
        Some(&lower),
        &[
            Entry::dir("a"),
            Entry::file("a/new", "n"),
            Entry::opaque("a"),
            Entry::dir("a/sub2"),
            Entry::file("a/sub2/x", "x"),
        ],
    )
    .await?;
    let flat = Flat::new(h.scratch(), "after")?;
    flat.apply(&[
        Op::Dir("a", 0o755),
        file("a/new", "n", 0o644),
        Op::Dir("a/sub2", 0o755),
        file("a/sub2/x", "x", 0o644),
        file("b", "b", 0o644),
    ])
    .await?;
    flat.ensure_view(&*d, &after, Compare::FLAT)
        .await
        .ctx("marker after a child")?;
    ensure_round_trip(&*d, &after, &lower, &flat).await?;

    let before = id("opaque-before");
    apply_layer(
        &*d,
        &before,
        Some(&lower),
        &[
            Entry::dir("a"),
            Entry::opaque("a"),
            Entry::file("a/new", "n"),
        ],
    )
    .await?;
    let flat = Flat::new(h.scratch(), "before")?;
    flat.apply(&[
        Op::Dir("a", 0o755),
        file("a/new", "n", 0o644),
        file("b", "b", 0o644),
    ])
    .await?;
    flat.ensure_view(&*d, &before, Compare::FLAT)
        .await
        .ctx("marker before a child")?;
    ensure_round_trip(&*d, &before, &lower, &flat).await
}

/// A whiteout for a path that does not exist is a no-op.
pub async fn whiteout_missing_noop(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let (lower, upper) = (id("lower"), id("upper"));
    apply_layer(
        &*d,
        &lower,
        None,
        &[Entry::dir("d"), Entry::file("d/f", "f")],
    )
    .await?;
    apply_layer(
        &*d,
        &upper,
        Some(&lower),
        &[
            Entry::whiteout("nothere"),
            Entry::dir("d"),
            Entry::whiteout("d/nothere"),
            Entry::file("d/g", "g"),
        ],
    )
    .await?;
    let flat = Flat::new(h.scratch(), "flat")?;
    flat.apply(&[
        Op::Dir("d", 0o755),
        file("d/f", "f", 0o644),
        file("d/g", "g", 0o644),
    ])
    .await?;
    flat.ensure_view(&*d, &upper, Compare::FLAT).await
}

/// A file and its whiteout in the same layer, in either order: the whiteout only hides lower
/// layers, so the layer's own file stays.
pub async fn file_and_whiteout_same_layer(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let (lower, upper) = (id("lower"), id("upper"));
    apply_layer(
        &*d,
        &lower,
        None,
        &[Entry::file("f", "lower-f"), Entry::file("g", "lower-g")],
    )
    .await?;
    apply_layer(
        &*d,
        &upper,
        Some(&lower),
        &[
            Entry::file("f", "upper-f"),
            Entry::whiteout("f"),
            Entry::whiteout("g"),
            Entry::file("g", "upper-g"),
            Entry::file("h", "upper-h"),
            Entry::whiteout("h"),
        ],
    )
    .await?;
    let flat = Flat::new(h.scratch(), "flat")?;
    flat.apply(&[
        file("f", "upper-f", 0o644),
        file("g", "upper-g", 0o644),
        file("h", "upper-h", 0o644),
    ])
    .await?;
    flat.ensure_view(&*d, &upper, Compare::FLAT).await
}

/// Applying over existing paths: dir over dir replaces the directory's attributes and keeps
/// its children; anything else replaces the path (file over dir, dir over file, symlink over
/// file, file over symlink, dir over a symlink to a directory).
pub async fn replace_rules(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let root = h.privileges().root;
    let (lower, upper) = (id("lower"), id("upper"));
    apply_layer(
        &*d,
        &lower,
        None,
        &[
            Entry::dir("d"),
            Entry::file("d/keep", "keep"),
            Entry::file("f", "f"),
            Entry::dir("x"),
            Entry::file("x/child", "c"),
            Entry::symlink("s", "f"),
            Entry::file("y", "y"),
            Entry::dir("real"),
            Entry::file("real/inside", "i"),
            Entry::symlink("sd", "real"),
        ],
    )
    .await?;
    let owner = if root { (1, 2) } else { (0, 0) };
    apply_layer(
        &*d,
        &upper,
        Some(&lower),
        &[
            Entry::dir("d").mode(0o700).owner(owner.0, owner.1),
            Entry::file("d/new", "new"),
            Entry::file("x", "now a file"),
            Entry::dir("f"),
            Entry::file("f/inside", "in"),
            Entry::symlink("y", "x"),
            Entry::file("s", "now a file"),
            Entry::dir("sd").mode(0o750),
            Entry::file("sd/own", "own"),
        ],
    )
    .await?;
    let flat = Flat::new(h.scratch(), "flat")?;
    let mut ops = vec![
        Op::Dir("d", 0o700),
        file("d/keep", "keep", 0o644),
        file("d/new", "new", 0o644),
        file("x", "now a file", 0o644),
        Op::Dir("f", 0o755),
        file("f/inside", "in", 0o644),
        Op::Symlink("x", "y"),
        file("s", "now a file", 0o644),
        Op::Dir("real", 0o755),
        file("real/inside", "i", 0o644),
        Op::Dir("sd", 0o750),
        file("sd/own", "own", 0o644),
    ];
    if root {
        ops.push(Op::Chown("d", 1, 2));
    }
    flat.apply(&ops).await?;
    flat.ensure_view(&*d, &upper, Compare::FLAT).await?;
    ensure_round_trip(&*d, &upper, &lower, &flat).await
}

/// Hardlinks to earlier entries of the same tar share one inode; the size counts them once.
pub async fn hardlinks_in_tar(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let l = id("links");
    let size = apply_layer(
        &*d,
        &l,
        None,
        &[
            Entry::file("a", "content"),
            Entry::hardlink("b", "a"),
            Entry::dir("sub"),
            Entry::hardlink("sub/c", "a"),
        ],
    )
    .await?;
    ensure_eq!(size, 7, "apply_diff's size with a file and two links to it");
    let flat = Flat::new(h.scratch(), "flat")?;
    flat.apply(&[
        file("a", "content", 0o644),
        Op::Link("a", "b"),
        Op::Dir("sub", 0o755),
        Op::Link("a", "sub/c"),
    ])
    .await?;
    flat.ensure_view(&*d, &l, Compare::FLAT).await?;
    ensure_eq!(
        d.diff_size(&l, None).await.ctx("diff_size")?,
        7,
        "diff_size with links"
    );
    Ok(())
}

/// A whiteout of a directory hides its whole subtree, in the child and in an empty
/// grandchild; a later layer can make the name again, without the old children.
pub async fn whiteout_dir_subtree(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let (l1, l2, l3, l4) = (id("l1"), id("l2"), id("l3"), id("l4"));
    apply_layer(
        &*d,
        &l1,
        None,
        &[
            Entry::dir("d"),
            Entry::dir("d/e"),
            Entry::file("d/e/f", "f"),
            Entry::file("other", "o"),
        ],
    )
    .await?;
    apply_layer(&*d, &l2, Some(&l1), &[Entry::whiteout("d")]).await?;
    apply_layer(&*d, &l3, Some(&l2), &[]).await?;
    let flat = Flat::new(h.scratch(), "flat")?;
    flat.apply(&[file("other", "o", 0o644)]).await?;
    flat.ensure_view(&*d, &l2, Compare::FLAT)
        .await
        .ctx("the child")?;
    flat.ensure_view(&*d, &l3, Compare::FLAT)
        .await
        .ctx("the empty grandchild")?;
    apply_layer(
        &*d,
        &l4,
        Some(&l3),
        &[Entry::dir("d"), Entry::file("d/new", "n")],
    )
    .await?;
    flat.apply(&[Op::Dir("d", 0o755), file("d/new", "n", 0o644)])
        .await?;
    flat.ensure_view(&*d, &l4, Compare::FLAT)
        .await
        .ctx("re-created")?;
    ensure_round_trip(&*d, &l2, &l1, &{
        let f = Flat::new(h.scratch(), "flat-l2")?;
        f.apply(&[file("other", "o", 0o644)]).await?;
        f
    })
    .await
}

/// Names that only look special are ordinary (`..data`, `...`, `.whfoo`, `a..b`), and AUFS's
/// own `.wh..wh.*` names never show in a view.
pub async fn special_looking_names(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let l = id("names");
    apply_layer(
        &*d,
        &l,
        None,
        &[
            Entry::file("..data", "1"),
            Entry::file("...", "2"),
            Entry::file(".whfoo", "3"),
            Entry::file("a..b", "4"),
            Entry::dir(".wh..wh.plnk"),
            Entry::file(".wh..wh.plnk/123.456", "hidden"),
            Entry::file(".wh..wh.aufs", ""),
        ],
    )
    .await?;
    let flat = Flat::new(h.scratch(), "flat")?;
    flat.apply(&[
        file("..data", "1", 0o644),
        file("...", "2", 0o644),
        file(".whfoo", "3", 0o644),
        file("a..b", "4", 0o644),
    ])
    .await?;
    flat.ensure_view(&*d, &l, Compare::FLAT).await
}

/// A hardlink to a whiteout of the same tar (`.wh.foo` then `bar -> foo`, or `bar -> .wh.foo`)
/// is an invalid archive: the whiteout is no file of the layer, and linking it must not hide
/// the lower `bar`, which no entry declared. The lower layer stays as it was, the partial
/// layer can be removed, and a clean layer applied next exports what was imported.
pub async fn hardlink_to_whiteout(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let lower = id("lower");
    apply_layer(
        &*d,
        &lower,
        None,
        &[
            Entry::file("foo", "lower-foo"),
            Entry::file("bar", "lower-bar"),
        ],
    )
    .await?;
    let tars: [(&str, Vec<Entry>); 3] = [
        (
            "link-to-whited-out",
            vec![Entry::whiteout("foo"), Entry::hardlink("bar", "foo")],
        ),
        (
            "link-to-missing-whiteout",
            vec![
                Entry::whiteout("nothere"),
                Entry::hardlink("bar", "nothere"),
            ],
        ),
        (
            "link-to-whiteout-name",
            vec![Entry::whiteout("foo"), Entry::hardlink("bar", ".wh.foo")],
        ),
    ];
    for (name, entries) in tars {
        let layer = id(name);
        d.create(&layer, Some(&lower), &CreateOpts::default())
            .await
            .ctx(format!("create {name}"))?;
        let res = d
            .apply_diff(&layer, Some(&lower), stream(make_tar(&entries)))
            .await;
        crate::check::expect_kind(
            res,
            ErrorKind::InvalidArchive,
            format!("{name}: apply_diff"),
        )?;
        d.remove(&layer, false)
            .await
            .ctx(format!("{name}: remove the rejected layer"))?;
    }
    let flat = Flat::new(h.scratch(), "lower")?;
    flat.apply(&[
        file("foo", "lower-foo", 0o644),
        file("bar", "lower-bar", 0o644),
    ])
    .await?;
    flat.ensure_view(&*d, &lower, Compare::FLAT)
        .await
        .ctx("the lower layer after the rejected tars")?;
    // What a layer may do instead: whiteout foo, and make bar a file of its own.
    let upper = id("upper");
    let entries = [
        Entry::whiteout("foo"),
        Entry::file("bar", "upper-bar"),
        Entry::hardlink("baz", "bar"),
    ];
    apply_layer(&*d, &upper, Some(&lower), &entries).await?;
    let flat = Flat::new(h.scratch(), "upper")?;
    flat.apply(&[file("bar", "upper-bar", 0o644), Op::Link("bar", "baz")])
        .await?;
    flat.ensure_view(&*d, &upper, Compare::FLAT).await?;
    ensure_round_trip(&*d, &upper, &lower, &flat).await
}

/// A whiteout or opaque marker that reaches, through a symlink the same tar made, what the
/// same tar wrote under another name (`d/`, `s -> d`, `s/f`, `d/.wh.f`) leaves it: whiteouts
/// only hide lower layers. Lower content beside it is still hidden as declared.
pub async fn whiteout_through_alias(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let lower = id("lower");
    apply_layer(
        &*d,
        &lower,
        None,
        &[
            Entry::dir("d"),
            Entry::file("d/f", "lower-f"),
            Entry::file("d/g", "lower-g"),
            Entry::dir("e"),
            Entry::file("e/old", "old"),
            Entry::dir("m"),
            Entry::dir("m/sub"),
            Entry::file("m/sub/old", "old"),
            Entry::file("m/gone", "gone"),
        ],
    )
    .await?;
    let upper = id("upper");
    apply_layer(
        &*d,
        &upper,
        Some(&lower),
        &[
            // A whiteout of a file written through an alias.
            Entry::dir("d"),
            Entry::symlink("s", "d"),
            Entry::file("s/f", "upper-f, longer"),
            Entry::whiteout("d/f"),
            Entry::whiteout("s/g"),
            // An opaque marker of a directory whose new child came through an alias.
            Entry::dir("e"),
            Entry::symlink("t", "e"),
            Entry::file("t/new", "new"),
            Entry::opaque("e"),
            // A lower directory kept through an alias, then its parent made opaque.
            Entry::dir("m"),
            Entry::symlink("u", "m"),
            Entry::dir("u/sub"),
            Entry::file("u/sub/new", "new"),
            Entry::opaque("m"),
        ],
    )
    .await?;
    let flat = Flat::new(h.scratch(), "flat")?;
    flat.apply(&[
        Op::Dir("d", 0o755),
        file("d/f", "upper-f, longer", 0o644),
        Op::Symlink("d", "s"),
        Op::Dir("e", 0o755),
        file("e/new", "new", 0o644),
        Op::Symlink("e", "t"),
        Op::Dir("m", 0o755),
        Op::Dir("m/sub", 0o755),
        file("m/sub/new", "new", 0o644),
        Op::Symlink("m", "u"),
    ])
    .await?;
    flat.ensure_view(&*d, &upper, Compare::FLAT).await?;
    ensure_round_trip(&*d, &upper, &lower, &flat).await
}

/// An opaque marker at the layer root (`.wh..wh..opq` at top level) hides every lower file and
/// directory, and nothing of the layer's own; a child layer on it sees the same, and the layer
/// survives a diff round trip.
pub async fn opaque_at_root(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let lower = id("lower");
    apply_layer(
        &*d,
        &lower,
        None,
        &[
            Entry::file("old", "old"),
            Entry::dir("d"),
            Entry::file("d/old", "old"),
            Entry::file("kept", "lower-kept"),
        ],
    )
    .await?;
    let upper = id("upper");
    apply_layer(
        &*d,
        &upper,
        Some(&lower),
        &[
            Entry::file("new", "new"),
            Entry::opaque(""),
            Entry::dir("d"),
            Entry::file("d/new", "new"),
            Entry::file("kept", "upper-kept, longer"),
        ],
    )
    .await?;
    let flat = Flat::new(h.scratch(), "flat")?;
    flat.apply(&[
        file("new", "new", 0o644),
        Op::Dir("d", 0o755),
        file("d/new", "new", 0o644),
        file("kept", "upper-kept, longer", 0o644),
    ])
    .await?;
    flat.ensure_view(&*d, &upper, Compare::FLAT).await?;
    let child = id("child");
    apply_layer(&*d, &child, Some(&upper), &[Entry::file("more", "more")]).await?;
    flat.apply(&[file("more", "more", 0o644)]).await?;
    flat.ensure_view(&*d, &child, Compare::FLAT)
        .await
        .ctx("a child of the layer")?;
    let flat = Flat::new(h.scratch(), "flat-upper")?;
    flat.apply(&[
        file("new", "new", 0o644),
        Op::Dir("d", 0o755),
        file("d/new", "new", 0o644),
        file("kept", "upper-kept, longer", 0o644),
    ])
    .await?;
    ensure_round_trip(&*d, &upper, &lower, &flat).await
}

/// Whiteouts and opaque markers with nothing below to hide are no-ops that leave no trace: in
/// a base layer, and in a directory that the same tar creates (OCI: a whiteout only affects
/// lower layers). The view holds no entry that cannot be `lstat`ed, `changes` works and
/// names none of them, and the layer survives a diff round trip.
pub async fn whiteouts_with_nothing_below(h: &Harness) -> Result<(), Failure> {
    let d = h.driver();
    let base = id("base");
    apply_layer(
        &*d,
        &base,
        None,
        &[
            Entry::whiteout("x"),
            Entry::opaque(""),
            Entry::dir("d"),
            Entry::whiteout("d/y"),
            Entry::opaque("d"),
            Entry::file("f", "f"),
            Entry::dir("e"),
            Entry::file("e/old", "old"),
        ],
    )
    .await?;
    let flat = Flat::new(h.scratch(), "base")?;
    flat.apply(&[
        Op::Dir("d", 0o755),
        file("f", "f", 0o644),
        Op::Dir("e", 0o755),
        file("e/old", "old", 0o644),
    ])
    .await?;
    flat.ensure_view(&*d, &base, Compare::FLAT)
        .await
        .ctx("the base layer")?;
    let paths = |cs: &[strata_driver_api::Change]| {
        cs.iter()
            .map(|c| c.path.display().to_string())
            .collect::<Vec<_>>()
    };
    let got = d.changes(&base, None).await.ctx("changes of the base")?;
    ensure_eq!(
        paths(&got),
        ["/d", "/e", "/e/old", "/f"].map(String::from).to_vec(),
        "changes of the base"
    );

    let upper = id("upper");
    apply_layer(
        &*d,
        &upper,
        Some(&base),
        &[
            Entry::dir("n"),
            Entry::whiteout("n/z"),
            Entry::file("n/k", "k"),
            Entry::dir("n/sub"),
            Entry::opaque("n/sub"),
            Entry::whiteout("f"),
            Entry::dir("d"),
            Entry::opaque("d"),
            Entry::whiteout("d/gone"),
            // A whiteout, then its directory made opaque: the whiteout goes.
            Entry::dir("e"),
            Entry::whiteout("e/old"),
            Entry::opaque("e"),
        ],
    )
    .await?;
    let flat = Flat::new(h.scratch(), "upper")?;
    flat.apply(&[
        Op::Dir("d", 0o755),
        Op::Dir("n", 0o755),
        file("n/k", "k", 0o644),
        Op::Dir("n/sub", 0o755),
        Op::Dir("e", 0o755),
    ])
    .await?;
    flat.ensure_view(&*d, &upper, Compare::FLAT)
        .await
        .ctx("a layer on the base")?;
    let got = d
        .changes(&upper, Some(&base))
        .await
        .ctx("changes of the upper")?;
    let got = paths(&got);
    for p in ["/n/z", "/d/gone", "/x", "/d/y"] {
        ensure!(
            !got.iter().any(|g| g == p),
            "changes of the upper name {p}, which no layer had: {got:?}"
        );
    }
    ensure!(
        got.iter().any(|g| g == "/f") && got.iter().any(|g| g == "/n/k"),
        "changes of the upper miss /f or /n/k: {got:?}"
    );
    ensure_round_trip(&*d, &upper, &base, &flat).await
}
