//! The runner: a fresh driver per case, skips decided from capabilities, panics and hangs caught,
//! and the home cleaned up whatever the case did.
//!
//! It must not decide anything from a driver's name, and it never touches a mount outside the
//! temporary directory it made for the case.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_driver_api::ErrorKind;

use crate::case::{Case, Needs};
use crate::harness::{Factory, Harness, Privileges};
use crate::report::{CaseResult, Outcome, Summary};

/// How to run the suite.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run only cases whose name contains this text.
    pub filter: Option<String>,
    /// A case still running after this long fails ("timed out"); its blocking work cannot be
    /// stopped, but the run goes on.
    pub timeout: Duration,
    /// Where the per-case temporary directories go (default: the system temp dir). A driver
    /// that cannot use that filesystem (overlay on overlay, say) needs another one.
    pub tmpdir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            filter: None,
            timeout: Duration::from_secs(900),
            tmpdir: None,
        }
    }
}

fn make_case_dir(opts: &Options) -> std::io::Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix("strata-conformance-");
    let dir = match &opts.tmpdir {
        Some(parent) => b.tempdir_in(parent)?,
        None => b.tempdir()?,
    };
    // Drivers may hand views to other users (FUSE `allow_other`, rootless helpers).
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    for sub in ["home", "scratch", "outside"] {
        std::fs::create_dir(dir.path().join(sub))?;
    }
    Ok(dir)
}

/// Runs one case against a fresh driver made by `factory`, and cleans up after it.
pub async fn run_case(factory: &Factory, case: &Case, opts: &Options) -> CaseResult {
    let start = Instant::now();
    let outcome = run_case_inner(factory, case, opts).await;
    CaseResult {
        name: case.name,
        outcome,
        elapsed: start.elapsed(),
    }
}

async fn run_case_inner(factory: &Factory, case: &Case, opts: &Options) -> Outcome {
    let run = case.run;
    let timeout = opts.timeout;
    with_harness(factory, case.needs, opts, move |harness| async move {
        let h = harness.clone();
        let task = tokio::spawn(async move { run(&h).await });
        let abort = task.abort_handle();
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(Ok(()))) => Outcome::Passed,
            Ok(Ok(Err(f))) => f.into_outcome(),
            Ok(Err(join)) if join.is_panic() => {
                let payload = join.into_panic();
                Outcome::Failed(format!("panicked: {}", panic_text(&*payload)))
            }
            Ok(Err(join)) => Outcome::Failed(format!("case task failed: {join}")),
            Err(_) => {
                abort.abort();
                Outcome::Failed(format!("timed out after {timeout:?}"))
            }
        }
    })
    .await
}

/// Sets up a fresh case directory and driver, checks `needs`, runs `body` (which must not
/// panic: callers spawn what might), and cleans up: `cleanup()`, leftover mounts, the
/// directory. Problems in cleanup turn the outcome into a failure.
pub(crate) async fn with_harness<F, Fut>(
    factory: &Factory,
    needs: Needs,
    opts: &Options,
    body: F,
) -> Outcome
where
    F: FnOnce(Arc<Harness>) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let tmp = match make_case_dir(opts) {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(format!("making the case's temporary directory: {e}")),
    };
    let dir = tmp.path().to_path_buf();
    let home = dir.join("home");
    let driver = match factory(&home) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotSupported => {
            return finish_dir(
                tmp,
                Outcome::Skipped(format!("driver not supported here: {e:#}")),
            );
        }
        Err(e) => {
            return finish_dir(tmp, Outcome::Failed(format!("making the driver: {e}")));
        }
    };
    let privileges = Privileges::detect();
    if let Some(why) = needs.unmet(&driver.capabilities(), &privileges) {
        let outcome = match driver.cleanup().await {
            Ok(()) => Outcome::Skipped(why),
            Err(e) => Outcome::Failed(format!("cleanup of an unused driver: {e}")),
        };
        drop(driver);
        return finish_dir(tmp, outcome);
    }
    let harness = Arc::new(Harness::new(factory.clone(), dir, driver, privileges));

    let outcome = body(harness.clone()).await;

    // Clean up: the current instance, then whatever mounts are left under our directory.
    let driver = harness.driver();
    let mut problems = Vec::new();
    if let Err(e) = driver.cleanup().await {
        problems.push(format!("driver cleanup failed: {e}"));
    }
    drop(driver);
    let leftovers = detach_mounts_under(harness.dir());
    if !leftovers.is_empty() {
        problems.push(format!(
            "mounts left after cleanup (detached by the harness): {}",
            leftovers.join(", ")
        ));
    }
    // Abandoned instances go last: they stand for processes that died.
    drop(harness);
    let outcome = match (outcome, problems.is_empty()) {
        (o, true) => o,
        (Outcome::Failed(why), false) => Outcome::Failed(format!("{why}\n{}", problems.join("\n"))),
        (_, false) => Outcome::Failed(problems.join("\n")),
    };
    finish_dir(tmp, outcome)
}

fn finish_dir(tmp: tempfile::TempDir, outcome: Outcome) -> Outcome {
    let path = tmp.keep();
    if !detach_mounts_under(&path).is_empty() {
        // Never delete through a mount we could not take away.
        return outcome;
    }
    match remove_tree(&path) {
        Ok(()) => outcome,
        Err(e) => {
            let why = format!("removing {}: {e}", path.display());
            match outcome {
                Outcome::Failed(first) => Outcome::Failed(format!("{first}\n{why}")),
                _ => Outcome::Failed(why),
            }
        }
    }
}

/// Removes a case directory. Layers may hold directories without write or search permission
/// (a mode-0 directory is a valid layer entry), which stop an unprivileged removal: on a
/// failure, every directory is made 0700 (symlinks are never followed) and removal retried.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    std::fs::remove_dir_all(path)
}

/// Lazily detaches every mount at or below `dir` (deepest first) and returns their paths.
/// Only mounts under the case's own temporary directory are touched.
fn detach_mounts_under(dir: &Path) -> Vec<String> {
    let Ok(table) = strata_driver_util::mountinfo::read() else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for p in strata_driver_util::mountinfo::points_under(&table, dir) {
        let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
        names.push(p.display().to_string());
    }
    names
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".to_string()
    }
}

/// Runs every case (or those whose name contains `opts.filter`) one after another, each with
/// a fresh driver, calling `report` after each, and returns the counts.
pub async fn run(
    factory: &Factory,
    opts: &Options,
    report: &mut dyn FnMut(&CaseResult),
) -> Summary {
    let mut summary = Summary::default();
    for case in crate::cases() {
        if let Some(f) = &opts.filter {
            if !case.name.contains(f.as_str()) {
                continue;
            }
        }
        let result = run_case(factory, case, opts).await;
        summary.add(&result.outcome);
        report(&result);
    }
    summary
}

/// What the test macro [`suite!`](crate::suite) calls for each generated test: runs the named
/// case, prints the skip line `SKIP <case>: <reason>` to stderr for a skip (cargo test has no
/// skip status, so the test passes but says so; see [`skip`](mod@crate::skip)), and panics with
/// the reason on a failure.
pub async fn run_test(factory: Factory, name: &str) {
    let case = crate::cases()
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no conformance case named {name}"));
    let mut opts = Options::default();
    if let Some(secs) = std::env::var("STRATA_CONFORMANCE_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        opts.timeout = Duration::from_secs(secs);
    }
    if let Ok(dir) = std::env::var("STRATA_CONFORMANCE_TMPDIR") {
        opts.tmpdir = Some(PathBuf::from(dir));
    }
    let result = run_case(&factory, case, &opts).await;
    match result.outcome {
        Outcome::Passed => {}
        Outcome::Skipped(why) => {
            let test = crate::skip::current_test().unwrap_or_else(|| name.to_string());
            crate::skip::print(&test, why)
        }
        Outcome::Failed(why) => panic!("{name} FAILED:\n{why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_points_are_unescaped() {
        let table = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n\
                     37 35 98:0 / /tmp rw - tmpfs tmpfs rw\n";
        // The harness reads the table with the drivers' parser: it must undo the escapes.
        let points: Vec<PathBuf> = strata_driver_util::mountinfo::parse(table)
            .into_iter()
            .map(|m| m.target)
            .collect();
        assert_eq!(
            points,
            vec![PathBuf::from("/mnt/a b"), PathBuf::from("/tmp")]
        );
    }
}
