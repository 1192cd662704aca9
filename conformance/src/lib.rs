//! The strata conformance suite: every case written once, against `&dyn Driver`, and run
//! against any driver, built-in or plugin.
//!
//! A driver author's first question is "does my driver behave like the others?". Each
//! [`Case`] answers one sentence of a contract: the documentation of the
//! [`Driver`](strata_driver_api::Driver) trait, Docker's graphtest (with its numbers), containerd's
//! snapshotter testsuite (mapped onto this trait), the OCI whiteout rules, metadata round trips,
//! and hostile archives (`research/layer-security.md` section 5). Cases assert on
//! [`ErrorKind`](strata_driver_api::ErrorKind), bytes and metadata, never on message text.
//!
//! # Running
//!
//! - In a driver's tests, [`suite!`] generates one `#[test]` per case:
//!
//!   ```ignore
//!   strata_conformance::suite!(dir, |home: &std::path::Path| {
//!       let d = strata_driver_dir::DirDriver::new(home.to_path_buf(), Default::default())?;
//!       Ok(std::sync::Arc::new(d) as std::sync::Arc<dyn strata_driver_api::Driver>)
//!   });
//!   ```
//!
//!   gives tests named `dir::create_empty`, `dir::deep_layer_read_128`, and so on. cargo test
//!   has no "skipped" status: a skipped case passes and prints `SKIP <test>: <reason>` on
//!   stderr (the one skip line of every test, see [`mod@skip`]) (shown with `--nocapture`, and in the output of a failing run). Environment:
//!   `STRATA_CONFORMANCE_TIMEOUT` (seconds a case may take, default 900) and
//!   `STRATA_CONFORMANCE_TMPDIR` (where case directories go, default the system temp dir).
//! - A runner (the `strata conformance` command) calls [`run`], printing
//!   [`CaseResult::line`] for each case (`<name> ... ok`, `... FAILED: why`,
//!   `... skipped: why`) and the [`Summary`] as the closing `N passed, N failed, N skipped`.
//! - [`bench::bench`] runs graphtest's nine benchmarks against any driver (a fresh driver
//!   each) and [`bench::table`] prints them; `cargo bench -p strata-conformance` does so for the
//!   built-in drivers (`benches/graphbench.rs`).
//!
//! # The harness
//!
//! Each case gets a fresh driver from a [`Factory`] (`Fn(&Path) -> Result<Arc<dyn Driver>>`)
//! over an empty home in its own temporary directory, beside a `scratch/` directory for
//! oracles and an `outside/` directory for canaries. Whatever the case does (fail, panic, hang
//! past the timeout), the harness then calls `cleanup()`, lazily detaches any mount still left
//! under the case's directory (reporting it as a failure: cleanup must unmount everything), and
//! removes the directory; it never deletes through a mount it could not take away.
//!
//! Skips are decided from [`Needs`] against the driver's
//! [`Capabilities`](strata_driver_api::Capabilities) and the process's [`Privileges`], never
//! from a driver's name, and always say why ("needs root", "driver max depth 128 < 129").
//! A case may also skip itself at run time with [`Failure::Skipped`], on the same grounds.
//!
//! # Conventions
//!
//! - Writing into a layer: `get`, plain file calls on the returned path on a blocking thread,
//!   `put` (see [`fixtures::with_mounted`]). Layers written that way are made with `create_rw`;
//!   image layers (`create`) are filled with `apply_diff` only, since a driver may mount them
//!   read-only.
//! - `deep_layer_read_N` stacks N layers on a base, as graphtest does: a chain of N + 1.
//!   `deep_layer_read_max` reads a chain of exactly the driver's `max_depth`, or of
//!   [`cases::graphtest::UNBOUNDED_DEPTH`] (256, twice overlay2's limit) for an unbounded driver.
//! - Stacks are compared with a flat directory that received the same steps ([`ops::Flat`],
//!   [`tree`]): types, contents, modes, owners, xattrs and hardlink structure; times only in
//!   round trips through a tar. Every stack is also rebuilt layer by layer from
//!   `diff(layer, parent)` applied onto a fresh image layer, which must give the same views.
//! - Judgement calls where a contract meets a limit of the naive diff or of a capability:
//!   `apply_diff`'s size must equal `diff_size` afterwards only for native diffs (a naive
//!   `diff_size` cannot see a same-size rewrite within one second, Docker's mtime rule);
//!   `read_only_mount` (`MountOpts::read_only` gives EROFS) needs `read_only_images`, the only
//!   capability that says a driver can mount read-only at all; a file and its own whiteout in
//!   one layer keep the file, in either order (image-spec: whiteouts affect lower layers only).
//! - Not mapped from containerd: Stat/Walk/Update (records are the engine's) and
//!   RemoveIntermediateSnapshot (the driver does not check for children; the engine does).

#![deny(missing_docs)]

pub mod bench;
mod case;
pub mod cases;
mod check;
pub mod fixtures;
mod harness;
pub mod ops;
mod report;
mod runner;
pub mod skip;
pub mod tarfile;
pub mod tree;

pub use case::{Case, CaseFn, Needs};
pub use check::{Context, Failure, expect_kind, id};
pub use harness::{BoxFuture, Factory, Harness, Privileges, factory};
pub use report::{CaseResult, Outcome, Summary};
pub use runner::{Options, run, run_case, run_test};

/// Runs one generated test on a fresh multi-threaded runtime (what [`suite!`] expands to).
#[doc(hidden)]
pub fn __run_test_blocking(factory: Factory, name: &str) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime for a conformance test")
        .block_on(run_test(factory, name));
}

/// Defines [`cases`] and [`suite!`] from one list, so the two cannot drift apart.
/// `$d` is a literal `$`, for the inner macro's own variables.
macro_rules! case_table {
    ($d:tt $( $name:ident => $func:path, $needs:expr; )*) => {
        /// Every case, in the order [`run`] runs them.
        pub fn cases() -> &'static [Case] {
            static CASES: &[Case] = &[
                $( Case { name: stringify!($name), needs: $needs, run: |h| Box::pin($func(h)) }, )*
            ];
            CASES
        }

        /// Generates a module of tests, one per conformance case, for one driver.
        ///
        /// `suite!(name, factory)`: `name` becomes the module (tests are `name::<case>`),
        /// `factory` is a closure `Fn(&Path) -> strata_driver_api::Result<Arc<dyn Driver>>`
        /// making a driver whose home is the given directory. A skipped case passes and prints
        /// `SKIP <test>: <reason>` on stderr; a failed one panics with the reason.
        #[macro_export]
        macro_rules! suite {
            ($d module:ident, $d factory:expr) => {
                mod $d module {
                    #[allow(unused_imports)]
                    use super::*;
                    fn factory() -> $crate::Factory {
                        $crate::factory($d factory)
                    }
                    $(
                        #[test]
                        fn $name() {
                            $crate::__run_test_blocking(factory(), stringify!($name));
                        }
                    )*
                }
            };
        }
    };
}

use cases::{graphtest, hostile, lifecycle, malformed, mounts, roundtrip, snapshotter, whiteouts};

const ANY: Needs = Needs::NOTHING;

case_table! { $
    name_and_status => lifecycle::name_and_status, ANY;
    create_empty => lifecycle::create_empty, ANY;
    root_permission => lifecycle::root_permission, ANY;
    create_exists => lifecycle::create_exists, ANY;
    create_missing_parent => lifecycle::create_missing_parent, ANY;
    create_image_with_size => lifecycle::create_image_with_size, ANY;
    unknown_storage_opt => lifecycle::unknown_storage_opt, ANY;
    rw_size_not_supported => lifecycle::rw_size_not_supported, ANY.no_quota();
    set_quota => lifecycle::set_quota, ANY.quota();
    invalid_ids_rejected => lifecycle::invalid_ids_rejected, ANY;
    remove_missing => lifecycle::remove_missing, ANY;
    remove_then_reuse_id => lifecycle::remove_then_reuse_id, ANY;
    remove_frees_data => lifecycle::remove_frees_data, ANY;
    missing_layer_not_found => lifecycle::missing_layer_not_found, ANY;
    exists_and_metadata => lifecycle::exists_and_metadata, ANY;
    refcounted_get_put => mounts::refcounted_get_put, ANY;
    remove_mounted_busy => mounts::remove_mounted_busy, ANY;
    get_survives_restart => mounts::get_survives_restart, ANY;
    cleanup_unmounts => mounts::cleanup_unmounts, ANY;
    concurrent_get_put => mounts::concurrent_get_put, ANY;
    concurrent_creates => mounts::concurrent_creates, ANY;

    create_base => graphtest::create_base, ANY;
    create_snap => graphtest::create_snap, ANY;
    deep_layer_read_20 => graphtest::deep_layer_read_20, ANY.depth(21);
    deep_layer_read_128 => graphtest::deep_layer_read_128, ANY.depth(129);
    deep_layer_read_max => graphtest::deep_layer_read_max, ANY;
    diff_apply_10 => graphtest::diff_apply_10, ANY;
    diff_apply_1000 => graphtest::diff_apply_1000, ANY;
    changes_20 => graphtest::changes_20, ANY;
    changes_kinds => graphtest::changes_kinds, ANY;

    basic_stacking => snapshotter::basic_stacking, ANY;
    transitivity => snapshotter::transitivity, ANY;
    file_update_same_second => snapshotter::file_update_same_second, ANY;
    remove_recreate_dir => snapshotter::remove_recreate_dir, ANY;
    chown_in_upper => snapshotter::chown_in_upper, ANY.root();
    dir_ownership_3_layers => snapshotter::dir_ownership_3_layers, ANY.root();
    deleted_stays_deleted => snapshotter::deleted_stays_deleted, ANY;
    hardlink_from_lower => snapshotter::hardlink_from_lower, ANY;
    new_link_to_lower_file => snapshotter::new_link_to_lower_file, ANY;
    rename_file => snapshotter::rename_file, ANY;
    rename_lower_dir => snapshotter::rename_lower_dir, ANY.rename_dir();
    read_only_image => snapshotter::read_only_image, ANY.read_only_images();
    read_only_mount => snapshotter::read_only_mount, ANY.read_only_images();
    layers_128_vs_flat => snapshotter::layers_128_vs_flat, ANY.depth(128);
    diff_whole_view => snapshotter::diff_whole_view, ANY;

    opaque_keeps_same_layer => whiteouts::opaque_keeps_same_layer, ANY;
    whiteout_missing_noop => whiteouts::whiteout_missing_noop, ANY;
    file_and_whiteout_same_layer => whiteouts::file_and_whiteout_same_layer, ANY;
    replace_rules => whiteouts::replace_rules, ANY;
    hardlinks_in_tar => whiteouts::hardlinks_in_tar, ANY;
    whiteout_dir_subtree => whiteouts::whiteout_dir_subtree, ANY;
    special_looking_names => whiteouts::special_looking_names, ANY;
    hardlink_to_whiteout => whiteouts::hardlink_to_whiteout, ANY;
    whiteout_through_alias => whiteouts::whiteout_through_alias, ANY;
    opaque_at_root => whiteouts::opaque_at_root, ANY;
    whiteouts_with_nothing_below => whiteouts::whiteouts_with_nothing_below, ANY;

    metadata_roundtrip_apply => roundtrip::metadata_roundtrip_apply, ANY;
    metadata_roundtrip_write => roundtrip::metadata_roundtrip_write, ANY;
    diff_deterministic => roundtrip::diff_deterministic, ANY;
    apply_size_and_diff_size => roundtrip::apply_size_and_diff_size, ANY;
    apply_failing_stream => roundtrip::apply_failing_stream, ANY;
    diff_holds_only_changes => roundtrip::diff_holds_only_changes, ANY;
    native_matches_naive => roundtrip::native_matches_naive, ANY.native_diff();

    hostile_dotdot => hostile::hostile_dotdot, ANY;
    hostile_absolute => hostile::hostile_absolute, ANY;
    hostile_symlinks => hostile::hostile_symlinks, ANY;
    hostile_hardlinks => hostile::hostile_hardlinks, ANY;
    hostile_whiteouts => hostile::hostile_whiteouts, ANY;
    hostile_overlay_xattrs => hostile::hostile_overlay_xattrs, ANY;
    hostile_truncated => malformed::hostile_truncated, ANY;
    hostile_huge_headers => malformed::hostile_huge_headers, ANY;
    hostile_duplicates => malformed::hostile_duplicates, ANY;
    hostile_metadata => malformed::hostile_metadata, ANY;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_unique_identifiers() {
        let mut seen = std::collections::BTreeSet::new();
        for c in cases() {
            assert!(seen.insert(c.name), "duplicate case {}", c.name);
            assert!(
                c.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{} is not a snake_case identifier",
                c.name
            );
        }
        assert!(cases().len() >= 60);
    }
}
