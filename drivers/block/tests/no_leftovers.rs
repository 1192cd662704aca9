//! After conformance cases that mount, fail midway, restart and clean up, no loop device is
//! left attached to a file under the cases' directories (`/sys/block/loop*/loop/backing_file`)
//! and nothing is left mounted there. The whole suite runs per case in
//! `conformance/tests/block.rs`; this runs the cases that stress teardown, in one process,
//! and then scans.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{TestDir, rt};
use strata_conformance::{Options, factory, run};
use strata_driver_api::Driver;
use strata_driver_block::{BlockDriver, Config, Fs};

/// Substrings of case names: refcounts, restarts, cleanup, forced and refused removal,
/// concurrency, failing and hostile applies, read-only mounts, naive diffs of two mounts.
const FILTERS: &[&str] = &[
    "get",
    "remove",
    "cleanup",
    "concurrent",
    "apply_failing_stream",
    "hostile_truncated",
    "hostile_symlinks",
    "read_only",
    "changes_kinds",
    "diff_whole_view",
];

#[test]
fn no_loop_device_left_after_the_suite() {
    need_block!();
    let t = TestDir::new();
    let make = factory(|home: &Path| {
        let config = Config {
            size: 128 << 20,
            fs: Fs::Ext4,
        };
        Ok(Arc::new(BlockDriver::new(home.to_path_buf(), config)?) as Arc<dyn Driver>)
    });
    let mut failures = Vec::new();
    let mut ran = 0;
    rt(async {
        for f in FILTERS {
            let opts = Options {
                filter: Some(f.to_string()),
                tmpdir: Some(t.path().to_path_buf()),
                ..Options::default()
            };
            let summary = run(&make, &opts, &mut |r| {
                eprintln!("{} ({:.2?})", r.line(), r.elapsed);
                if !matches!(r.outcome, strata_conformance::Outcome::Passed) {
                    failures.push(r.line());
                }
            })
            .await;
            ran += summary.passed + summary.failed + summary.skipped;
        }
    });
    assert!(ran >= 15, "only {ran} cases ran");
    assert!(failures.is_empty(), "cases did not pass: {failures:#?}");
    t.assert_clean();
}
