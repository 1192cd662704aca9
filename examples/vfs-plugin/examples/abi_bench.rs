//! The plugin ABI's overhead: the vfs driver called directly against the same driver loaded
//! from its `.so` and called through the ABI, in one run.
//!
//!   cargo build --release -p strata-vfs-plugin --examples
//!   target/release/examples/abi_bench DIR [RUNS]
//!
//! DIR should be on a fresh filesystem (bench/plugin.sh makes an ext4 on a loop device).
//! Measures: applying a 100 MiB layer (100 files of 1 MiB), into the page cache and made
//! durable with a syncfs as the engine's import does, reading the same layer's diff to its
//! end, 1,000 creates + 1,000 removes of base layers, and 10,000 `exists` calls (the bare
//! cost of a call). RUNS rounds alternating the two sides (which side goes first alternates
//! too); prints the median of each side, the ratio of the medians, and the spread
//! (min–max) of each side's runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_driver_api::{CreateOpts, Driver, LayerId, MountOpts};
use strata_plugin_abi::host::PluginDriver;
use strata_plugin_abi::load;
use strata_vfs_plugin::{Options, VfsDriver};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn id(s: String) -> LayerId {
    LayerId::new(s).expect("a valid id")
}

fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    // target/<profile>/examples/abi_bench -> target/<profile>/{deps/,}libstrata_vfs_plugin.so
    let profile = exe.parent().and_then(Path::parent).expect("profile dir");
    let deps = profile.join("deps/libstrata_vfs_plugin.so");
    if deps.exists() {
        deps
    } else {
        profile.join("libstrata_vfs_plugin.so")
    }
}

/// Applies the layer; with `durable`, also makes it durable (`sync -f`, as the engine's import
/// does with one syncfs a layer) inside the timing.
async fn apply(d: &dyn Driver, tar: &Path, name: String, durable: bool) -> Res<Duration> {
    let l = id(name);
    d.create(&l, None, &CreateOpts::default()).await?;
    let file = tokio::fs::File::open(tar).await?;
    let fs = tar.parent().expect("the bench directory").to_path_buf();
    sync(&fs)?;
    let t = Instant::now();
    let n = d.apply_diff(&l, None, Box::pin(file)).await?;
    if durable {
        sync(&fs)?;
    }
    let took = t.elapsed();
    assert_eq!(n, 100 << 20);
    d.remove(&l, false).await?;
    Ok(took)
}

fn sync(dir: &Path) -> Res<()> {
    let st = std::process::Command::new("sync")
        .arg("-f")
        .arg(dir)
        .status()?;
    if !st.success() {
        return Err("sync -f failed".into());
    }
    Ok(())
}

/// Reads the whole diff of `l` (the 100 MiB layer) and drops it.
async fn diff(d: &dyn Driver, l: &LayerId) -> Res<Duration> {
    let t = Instant::now();
    let mut s = d.diff(l, None).await?;
    let n = tokio::io::copy(&mut s, &mut tokio::io::sink()).await?;
    let took = t.elapsed();
    assert!(n > 100 << 20, "a short diff: {n} bytes");
    Ok(took)
}

async fn create_remove(d: &dyn Driver, n: usize) -> Res<Duration> {
    let t = Instant::now();
    for i in 0..n {
        d.create(&id(format!("c{i}")), None, &CreateOpts::default())
            .await?;
    }
    for i in 0..n {
        d.remove(&id(format!("c{i}")), false).await?;
    }
    Ok(t.elapsed())
}

async fn exists(d: &dyn Driver, n: usize) -> Res<Duration> {
    let l = id("probe".to_string());
    let t = Instant::now();
    for _ in 0..n {
        assert!(!d.exists(&l).await?);
    }
    Ok(t.elapsed())
}

/// Median, min and max in seconds.
fn stats(v: &mut [Duration]) -> (f64, f64, f64) {
    v.sort();
    let s = |d: Duration| d.as_secs_f64();
    let n = v.len();
    let median = if n % 2 == 1 {
        s(v[n / 2])
    } else {
        (s(v[n / 2 - 1]) + s(v[n / 2])) / 2.0
    };
    (median, s(v[0]), s(v[n - 1]))
}

fn show((median, min, max): (f64, f64, f64)) -> String {
    format!("{:.1} ({:.1}-{:.1})", median * 1e3, min * 1e3, max * 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: abi_bench DIR [RUNS]")?);
    let runs: usize = args.next().map_or(Ok(5), |r| r.parse())?;
    let spec = load(&library())?;
    let direct: Arc<dyn Driver> = Arc::new(VfsDriver::new(dir.join("direct"), Options::default())?);
    let abi: Arc<dyn Driver> =
        Arc::new(PluginDriver::new(&spec, dir.join("abi"), &BTreeMap::new())?);

    // The layer: 100 files of 1 MiB, as a tar on the same filesystem.
    let src = id("src".to_string());
    direct.create_rw(&src, None, &CreateOpts::default()).await?;
    let root = direct.get(&src, &MountOpts::default()).await?;
    for i in 0..100u32 {
        let data: Vec<u8> = (0..1u32 << 20).map(|b| (b ^ i) as u8).collect();
        std::fs::write(root.join(format!("f{i:03}")), data)?;
    }
    direct.put(&src).await?;
    let tar = dir.join("layer.tar");
    let mut out = tokio::fs::File::create(&tar).await?;
    tokio::io::copy(&mut direct.diff(&src, None).await?, &mut out).await?;
    out.sync_all().await?;
    direct.remove(&src, false).await?;

    // Each side keeps one applied copy of the layer to read diffs of.
    let kept = id("kept".to_string());
    for d in [&direct, &abi] {
        d.create(&kept, None, &CreateOpts::default()).await?;
        d.apply_diff(&kept, None, Box::pin(tokio::fs::File::open(&tar).await?))
            .await?;
    }

    const ROWS: usize = 5;
    let mut times: [[Vec<Duration>; 2]; ROWS] = Default::default();
    for r in 0..runs {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let d = if side == 0 { &*direct } else { &*abi };
            let row = [
                apply(d, &tar, format!("a{r}"), false).await?,
                apply(d, &tar, format!("s{r}"), true).await?,
                diff(d, &kept).await?,
                create_remove(d, 1000).await?,
                exists(d, 10_000).await?,
            ];
            for (k, t) in row.into_iter().enumerate() {
                times[k][side].push(t);
            }
        }
    }
    println!("vfs driver: direct vs through the ABI (loaded .so), median of {runs} (min-max)");
    println!(
        "{:<34} {:>22} {:>22} {:>7} {:>13}",
        "operation", "direct ms", "via ABI ms", "ratio", "overhead/call"
    );
    let rows = [
        ("apply_diff 100 MiB (page cache)", 1.0),
        ("apply_diff 100 MiB + syncfs", 1.0),
        ("diff 100 MiB, read to the end", 1.0),
        ("1,000 create + 1,000 remove", 2000.0),
        ("10,000 exists", 10_000.0),
    ];
    for (k, (name, calls)) in rows.iter().enumerate() {
        let [d, a] = [0, 1].map(|side| stats(&mut times[k][side]));
        let per = (a.0 - d.0) / calls * 1e6;
        println!(
            "{name:<34} {:>22} {:>22} {:>7.3} {:>11.1}µs",
            show(d),
            show(a),
            a.0 / d.0,
            per
        );
    }
    Ok(())
}
