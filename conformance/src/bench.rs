//! Graphtest's benchmarks (`graphbench_unix.go`), for any driver, so drivers can be compared
//! on one machine in one run: each benchmark sets up its own fresh driver, times only what
//! graphtest times, and reports the time per operation.

use std::time::{Duration, Instant};

use strata_driver_api::{CreateOpts, Driver, MountOpts};
use tokio::io::AsyncReadExt;

use crate::check::{Context, Failure, id};
use crate::fixtures::{self, with_mounted};
use crate::harness::{BoxFuture, Factory, Harness};
use crate::ops::{self, file};
use crate::runner::{Options, with_harness};
use crate::{Needs, Outcome};

/// A benchmark's body: sets up, then runs `iterations` timed operations and returns the time
/// they took (setup and checks excluded).
pub type BenchFn = for<'a> fn(&'a Harness, u32) -> BoxFuture<'a, Result<Duration, Failure>>;

/// One benchmark.
#[derive(Clone, Copy)]
pub struct Bench {
    /// Its name, graphtest's without the `DriverBench` prefix.
    pub name: &'static str,
    /// How many timed operations by default (the slow ones run fewer).
    pub iterations: u32,
    /// The body.
    pub run: BenchFn,
}

impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bench")
            .field("name", &self.name)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The result of one benchmark.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// The benchmark's name.
    pub name: &'static str,
    /// Timed operations run.
    pub iterations: u32,
    /// Time of all timed operations.
    pub total: Duration,
    /// `Passed` with the timing above, or why it failed or was skipped.
    pub outcome: Outcome,
}

impl BenchResult {
    /// Mean time per operation.
    pub fn per_op(&self) -> Duration {
        self.total / self.iterations.max(1)
    }

    /// One table row: name, iterations, time per operation (or the failure).
    pub fn line(&self) -> String {
        match &self.outcome {
            Outcome::Passed => format!(
                "{:<24} {:>6} {:>14}",
                self.name,
                self.iterations,
                format!("{:.3?}/op", self.per_op())
            ),
            Outcome::Failed(why) => {
                format!("{:<24} FAILED: {}", self.name, why.replace('\n', "; "))
            }
            Outcome::Skipped(why) => format!("{:<24} skipped: {why}", self.name),
        }
    }
}

macro_rules! bench_list {
    ($( $name:literal, $n:expr => $f:expr; )*) => {
        /// Graphtest's nine benchmarks, in its order.
        pub fn benches() -> &'static [Bench] {
            static BENCHES: &[Bench] = &[
                $( Bench { name: $name, iterations: $n, run: |h, n| Box::pin($f(h, n)) }, )*
            ];
            BENCHES
        }
    };
}

bench_list! {
    "Exists", 1000 => exists;
    "GetEmpty", 100 => get_empty;
    "DiffBase", 20 => diff_base;
    "DiffSmallUpper", 20 => diff_small_upper;
    "Diff10KFileUpper", 5 => diff_10k_file_upper;
    "Diff10KFilesBottom", 5 => diff_10k_files_bottom;
    "DiffApply100", 10 => diff_apply_100;
    "DeepLayerDiff20", 10 => deep_layer_diff_20;
    "DeepLayerRead20", 100 => deep_layer_read_20;
}

/// Runs the benchmarks whose name contains `opts.filter` (all without one), each with a fresh
/// driver, `iterations` times each (`None`: each benchmark's default), calling `report` after
/// each.
pub async fn bench(
    factory: &Factory,
    opts: &Options,
    iterations: Option<u32>,
    report: &mut dyn FnMut(&BenchResult),
) -> Vec<BenchResult> {
    let mut results = Vec::new();
    for b in benches() {
        if let Some(f) = &opts.filter {
            if !b.name.contains(f.as_str()) {
                continue;
            }
        }
        let n = iterations.unwrap_or(b.iterations).max(1);
        let mut total = Duration::ZERO;
        let run = b.run;
        let timed = &mut total;
        let outcome = with_harness(factory, Needs::NOTHING, opts, move |h| async move {
            let task = tokio::spawn(async move { run(&h, n).await });
            match tokio::time::timeout(opts.timeout, task).await {
                Ok(Ok(Ok(t))) => {
                    *timed = t;
                    Outcome::Passed
                }
                Ok(Ok(Err(f))) => f.into_outcome(),
                Ok(Err(e)) => Outcome::Failed(format!("benchmark task failed: {e}")),
                Err(_) => Outcome::Failed(format!("timed out after {:?}", opts.timeout)),
            }
        })
        .await;
        let r = BenchResult {
            name: b.name,
            iterations: n,
            total,
            outcome,
        };
        report(&r);
        results.push(r);
    }
    results
}

async fn drain(d: &dyn Driver, layer: &strata_driver_api::LayerId) -> Result<u64, Failure> {
    let mut s = d.diff(layer, None).await.ctx("diff")?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let got = s.read(&mut buf).await.ctx("reading the diff")?;
        if got == 0 {
            return Ok(n);
        }
        n += got as u64;
    }
}

async fn exists(h: &Harness, n: u32) -> Result<Duration, Failure> {
    let d = h.driver();
    let base = id("base");
    d.create(&base, None, &CreateOpts::default())
        .await
        .ctx("create")?;
    let start = Instant::now();
    for _ in 0..n {
        if !d.exists(&base).await.ctx("exists")? {
            return Err(Failure::failed("exists is false"));
        }
    }
    Ok(start.elapsed())
}

async fn get_empty(h: &Harness, n: u32) -> Result<Duration, Failure> {
    let d = h.driver();
    let base = id("base");
    d.create(&base, None, &CreateOpts::default())
        .await
        .ctx("create")?;
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let start = Instant::now();
        d.get(&base, &MountOpts::default()).await.ctx("get")?;
        total += start.elapsed();
        d.put(&base).await.ctx("put")?;
    }
    Ok(total)
}

async fn diff_base(h: &Harness, n: u32) -> Result<Duration, Failure> {
    let d = h.driver();
    let base = id("base");
    d.create_rw(&base, None, &CreateOpts::default())
        .await
        .ctx("create")?;
    fixtures::add_files(&*d, &base, 3).await?;
    let start = Instant::now();
    for _ in 0..n {
        drain(&*d, &base).await?;
    }
    Ok(start.elapsed())
}

async fn diff_n(h: &Harness, n: u32, bottom: usize, top: usize) -> Result<Duration, Failure> {
    let d = h.driver();
    let (base, upper) = (id("base"), id("upper"));
    d.create_rw(&base, None, &CreateOpts::default())
        .await
        .ctx("create base")?;
    fixtures::add_many_files(&*d, &base, bottom, 3).await?;
    d.create_rw(&upper, Some(&base), &CreateOpts::default())
        .await
        .ctx("create upper")?;
    fixtures::add_many_files(&*d, &upper, top, 6).await?;
    let start = Instant::now();
    for _ in 0..n {
        drain(&*d, &upper).await?;
    }
    Ok(start.elapsed())
}

async fn diff_small_upper(h: &Harness, n: u32) -> Result<Duration, Failure> {
    diff_n(h, n, 10, 10).await
}

async fn diff_10k_file_upper(h: &Harness, n: u32) -> Result<Duration, Failure> {
    diff_n(h, n, 10, 10_000).await
}

async fn diff_10k_files_bottom(h: &Harness, n: u32) -> Result<Duration, Failure> {
    diff_n(h, n, 10_000, 10).await
}

async fn diff_apply_100(h: &Harness, n: u32) -> Result<Duration, Failure> {
    let d = h.driver();
    let (base, upper) = (id("base"), id("upper"));
    d.create_rw(&base, None, &CreateOpts::default())
        .await
        .ctx("create base")?;
    fixtures::add_many_files(&*d, &base, 100, 3).await?;
    d.create_rw(&upper, Some(&base), &CreateOpts::default())
        .await
        .ctx("create upper")?;
    fixtures::add_many_files(&*d, &upper, 100, 6).await?;
    let mut total = Duration::ZERO;
    for i in 0..n {
        let diff = strata_driver_api::LayerId::new(format!("diff-{i}")).ctx("id")?;
        d.create(&diff, Some(&base), &CreateOpts::default())
            .await
            .ctx("create diff")?;
        fixtures::check_many_files(&*d, &diff, 100, 3).await?;
        let start = Instant::now();
        let tar = d.diff(&upper, Some(&base)).await.ctx("diff")?;
        d.apply_diff(&diff, Some(&base), tar)
            .await
            .ctx("apply_diff")?;
        total += start.elapsed();
        fixtures::check_many_files(&*d, &diff, 100, 6).await?;
    }
    Ok(total)
}

async fn deep_layer_diff_20(h: &Harness, n: u32) -> Result<Duration, Failure> {
    let d = h.driver();
    let base = id("base");
    d.create_rw(&base, None, &CreateOpts::default())
        .await
        .ctx("create base")?;
    fixtures::add_files(&*d, &base, 50).await?;
    let top = fixtures::add_many_layers(&*d, &base, 20).await?;
    let start = Instant::now();
    for _ in 0..n {
        drain(&*d, &top).await?;
    }
    Ok(start.elapsed())
}

async fn deep_layer_read_20(h: &Harness, n: u32) -> Result<Duration, Failure> {
    let d = h.driver();
    let base = id("base");
    ops::rw_layer(
        &*d,
        &base,
        None,
        &[file("testfile.txt", "test content", 0o755)],
    )
    .await?;
    let top = fixtures::add_many_layers(&*d, &base, 20).await?;
    with_mounted(&*d, &top, move |root| {
        let path = root.join("testfile.txt");
        let start = Instant::now();
        let mut last = Vec::new();
        for _ in 0..n {
            last = std::fs::read(&path).ctx("read testfile.txt")?;
        }
        let t = start.elapsed();
        if last != b"test content" {
            return Err(Failure::failed("testfile.txt content differs"));
        }
        Ok(t)
    })
    .await
}

/// The results as a table with a header line.
pub fn table(results: &[BenchResult]) -> String {
    let mut out = format!("{:<24} {:>6} {:>14}\n", "benchmark", "ops", "time");
    for r in results {
        out.push_str(&r.line());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphtests_benchmarks_are_all_there() {
        let names: Vec<&str> = benches().iter().map(|b| b.name).collect();
        assert_eq!(names.len(), 9);
        for n in [
            "Exists",
            "GetEmpty",
            "DiffBase",
            "DiffApply100",
            "DeepLayerRead20",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        let r = BenchResult {
            name: "Exists",
            iterations: 4,
            total: Duration::from_millis(8),
            outcome: Outcome::Passed,
        };
        assert_eq!(r.per_op(), Duration::from_millis(2));
        assert!(table(&[r]).lines().nth(1).unwrap().starts_with("Exists"));
    }
}
