//! The plugin ABI's overhead: the vfs driver called directly against the same driver loaded
//! from its `.so` and called through the ABI, in one run.
//!
//!   cargo build --release -p strata-vfs-plugin --examples
//!   target/release/examples/abi_bench DIR [RUNS]
//!
//! DIR should be on a fresh filesystem (bench/plugin.sh makes an ext4 on a loop device).
//! Measures: applying a 100 MiB layer (100 files of 1 MiB), into the page cache and made
//! durable with a syncfs as the engine's import does, 1,000 creates + 1,000 removes of
//! base layers, and 10,000 `exists` calls (the bare cost of a call). Best of RUNS, alternating
//! the two sides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_driver_api::{CreateOpts, Driver, LayerId, MountOpts};
use strata_engine::plugin::{self, PluginDriver};
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: abi_bench DIR [RUNS]")?);
    let runs: usize = args.next().map_or(Ok(5), |r| r.parse())?;
    let spec = plugin::load(&library())?;
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

    let mut best = [[Duration::MAX; 2]; 4];
    for r in 0..runs {
        for (side, d) in [&direct, &abi].into_iter().enumerate() {
            let d = &**d;
            let times = [
                apply(d, &tar, format!("a{r}"), false).await?,
                apply(d, &tar, format!("s{r}"), true).await?,
                create_remove(d, 1000).await?,
                exists(d, 10_000).await?,
            ];
            for (k, t) in times.into_iter().enumerate() {
                best[k][side] = best[k][side].min(t);
            }
        }
    }
    println!("vfs driver: direct vs through the ABI (loaded .so), best of {runs}");
    println!(
        "{:<38} {:>12} {:>12} {:>8} {:>14}",
        "operation", "direct", "via ABI", "ratio", "overhead/call"
    );
    let rows = [
        ("apply_diff 100 MiB (page cache)", 1.0),
        ("apply_diff 100 MiB + syncfs", 1.0),
        ("1,000 create + 1,000 remove", 2000.0),
        ("10,000 exists", 10_000.0),
    ];
    for (k, (name, calls)) in rows.iter().enumerate() {
        let (d, a) = (best[k][0], best[k][1]);
        let per = (a.as_secs_f64() - d.as_secs_f64()) / calls * 1e6;
        println!(
            "{name:<38} {:>10.1}ms {:>10.1}ms {:>8.3} {:>12.1}µs",
            d.as_secs_f64() * 1e3,
            a.as_secs_f64() * 1e3,
            a.as_secs_f64() / d.as_secs_f64(),
            per
        );
    }
    Ok(())
}
