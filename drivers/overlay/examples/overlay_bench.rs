//! Overlay driver benchmarks (a program, not a timed test). Run on a fresh ext4 through
//! `bench/overlay.sh`, or directly: `cargo run --release -p strata-driver-overlay --example
//! bench -- <empty dir on the file system to measure> [cycle|diff|deep]...`.
//!
//! 1. create_rw + get + put + remove of a layer on a 10-layer chain (median), overlay against
//!    the dir driver (its peer in this workspace).
//! 2. diff of 10 changed files over a 10,000-file lower: native against naive, same driver.
//! 3. mount (get) time of the top of a 500-layer chain (499 lowers under it) with fsconfig,
//!    and of the deepest chain mount(2) can take, against fsconfig at that depth.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use strata_archive::{WhiteoutFormat, WriteOptions};
use strata_driver_api::{CreateOpts, Driver, LayerId, MountOpts, naive};
use strata_driver_dir::DirDriver;
use strata_driver_overlay::{Config, MountApi, OverlayDriver};
use tokio::io::AsyncReadExt;

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn tar_of(files: usize, prefix: &str) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..files {
        let dir = tmp.path().join(format!("d{}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{prefix}{i}")), format!("content {i}\n")).unwrap();
    }
    let mut out = Vec::new();
    let opts = WriteOptions {
        whiteouts: WhiteoutFormat::Aufs,
    };
    strata_archive::write_tar(tmp.path(), &mut out, &opts).unwrap();
    out
}

async fn drain(mut s: strata_driver_api::TarStream) -> usize {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    buf.len()
}

fn overlay(home: PathBuf, api: MountApi) -> OverlayDriver {
    let config = Config {
        mount_api: api,
        ..Config::default()
    };
    OverlayDriver::new(home, config).unwrap()
}

/// A chain of `n` image layers `c0..c{n-1}`, each with one small file; returns the top.
async fn chain(d: &dyn Driver, n: usize, prefix: &str) -> LayerId {
    let mut parent: Option<LayerId> = None;
    for i in 0..n {
        let l = id(&format!("{prefix}{i}"));
        d.create(&l, parent.as_ref(), &CreateOpts::default())
            .await
            .unwrap();
        let tar = tar_of(1, &format!("layer{i}-"));
        d.apply_diff(&l, parent.as_ref(), Box::pin(std::io::Cursor::new(tar)))
            .await
            .unwrap();
        parent = Some(l);
    }
    parent.unwrap()
}

/// The median cycle, and the median of each step (create_rw, get, put, remove).
async fn cycle(d: &dyn Driver, top: &LayerId, rounds: usize) -> (Duration, [Duration; 4]) {
    let mut times = Vec::with_capacity(rounds);
    let mut steps: [Vec<Duration>; 4] = Default::default();
    for i in 0..rounds {
        let l = id(&format!("cycle{i}"));
        let t = Instant::now();
        d.create_rw(&l, Some(top), &CreateOpts::default())
            .await
            .unwrap();
        let t1 = Instant::now();
        d.get(&l, &MountOpts::default()).await.unwrap();
        let t2 = Instant::now();
        d.put(&l).await.unwrap();
        let t3 = Instant::now();
        d.remove(&l, false).await.unwrap();
        let t4 = Instant::now();
        times.push(t4 - t);
        for (k, v) in [t1 - t, t2 - t1, t3 - t2, t4 - t3].into_iter().enumerate() {
            steps[k].push(v);
        }
    }
    let steps = steps.map(median);
    (median(times), steps)
}

fn steps(s: &[Duration; 4]) -> String {
    format!(
        "create_rw {} / get {} / put {} / remove {}",
        ms(s[0]),
        ms(s[1]),
        ms(s[2]),
        ms(s[3])
    )
}

async fn mount_time(d: &dyn Driver, top: &LayerId, rounds: usize) -> Duration {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        d.get(top, &MountOpts::default()).await.unwrap();
        times.push(t.elapsed());
        d.put(top).await.unwrap();
    }
    median(times)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let base: PathBuf = std::env::args()
        .nth(1)
        .expect("usage: bench <empty directory on the file system to measure>")
        .into();
    let only: Vec<String> = std::env::args().skip(2).collect();
    let run = |what: &str| only.is_empty() || only.iter().any(|o| o == what);
    let fs_dir = |name: &str| -> PathBuf {
        let p = base.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    println!("| benchmark | overlay | peer | ratio |");
    println!("|---|---|---|---|");

    // 1. The lifecycle cycle on a 10-layer chain.
    if run("cycle") {
        let ov = overlay(fs_dir("cycle-overlay"), MountApi::Fsconfig);
        let dir = DirDriver::new(fs_dir("cycle-dir"), Default::default()).unwrap();
        let top_o = chain(&ov, 10, "c").await;
        let top_d = chain(&dir, 10, "c").await;
        let (o, os) = cycle(&ov, &top_o, 101).await;
        let (p, ps) = cycle(&dir, &top_d, 101).await;
        println!(
            "| create_rw+get+put+remove on a 10-layer chain (median of 101; peer: dir driver) | {} | {} | {:.1}x faster |",
            ms(o),
            ms(p),
            p.as_secs_f64() / o.as_secs_f64()
        );
        let m2 = overlay(fs_dir("cycle-mount2"), MountApi::Mount2);
        let top_m = chain(&m2, 10, "c").await;
        let (m, ms_) = cycle(&m2, &top_m, 101).await;
        println!(
            "| same, overlay with mount(2) (peer: overlay fsconfig) | {} | {} | {:.2}x |",
            ms(m),
            ms(o),
            o.as_secs_f64() / m.as_secs_f64()
        );
        println!("| steps, overlay fsconfig | {} | | |", steps(&os));
        println!("| steps, overlay mount(2) | {} | | |", steps(&ms_));
        println!("| steps, dir | {} | | |", steps(&ps));
        ov.cleanup().await.unwrap();
        dir.cleanup().await.unwrap();
        m2.cleanup().await.unwrap();
    }

    // 2. Native against naive diff: 10 changed files over 10,000.
    if run("diff") {
        let d = overlay(fs_dir("diff"), MountApi::Fsconfig);
        assert!(d.native_diff(), "native diff is off on this host");
        let (lower, upper) = (id("lower"), id("upper"));
        d.create(&lower, None, &CreateOpts::default())
            .await
            .unwrap();
        d.apply_diff(
            &lower,
            None,
            Box::pin(std::io::Cursor::new(tar_of(10_000, "f"))),
        )
        .await
        .unwrap();
        d.create_rw(&upper, Some(&lower), &CreateOpts::default())
            .await
            .unwrap();
        let root = d.get(&upper, &MountOpts::default()).await.unwrap();
        for i in 0..10 {
            let p = root.join(format!("d{}/f{}", i * 7, i * 700));
            std::fs::write(&p, b"changed\n").unwrap();
        }
        d.put(&upper).await.unwrap();
        let (mut native, mut slow) = (Vec::new(), Vec::new());
        let (mut nbytes, mut sbytes) = (0, 0);
        for _ in 0..5 {
            let t = Instant::now();
            nbytes = drain(d.diff(&upper, Some(&lower)).await.unwrap()).await;
            native.push(t.elapsed());
            let t = Instant::now();
            sbytes = drain(naive::diff(&d, &upper, Some(&lower)).await.unwrap()).await;
            slow.push(t.elapsed());
        }
        let (n, s) = (median(native), median(slow));
        println!(
            "| diff of 10 changed files over 10,000 (median of 5; peer: naive diff) | {} ({nbytes} B) | {} ({sbytes} B) | {:.0}x faster |",
            ms(n),
            ms(s),
            s.as_secs_f64() / n.as_secs_f64()
        );
        d.cleanup().await.unwrap();
    }

    // 3. Mount time of deep chains.
    if run("deep") {
        let deep = overlay(fs_dir("deep"), MountApi::Fsconfig);
        let top = chain(&deep, 500, "x").await;
        let t500 = mount_time(&deep, &top, 5).await;
        let m2 = overlay(fs_dir("deep-mount2"), MountApi::Mount2);
        let depth = m2.caps().max_depth.unwrap() as usize;
        let top_m = chain(&m2, depth, "x").await;
        let tm = mount_time(&m2, &top_m, 5).await;
        let top_same = id(&format!("x{}", depth - 1));
        let tf = mount_time(&deep, &top_same, 5).await;
        let t10 = mount_time(&deep, &id("x9"), 5).await;
        println!(
            "| get of a 500-layer chain's top (500 lowers, fsconfig; median of 5; peer: 10-layer chain) | {} | {} | {:.1}x slower |",
            ms(t500),
            ms(t10),
            t500.as_secs_f64() / t10.as_secs_f64()
        );
        println!(
            "| get of a {depth}-layer chain's top: mount(2) (peer: fsconfig, same depth) | {} | {} | {:.2}x |",
            ms(tm),
            ms(tf),
            tf.as_secs_f64() / tm.as_secs_f64()
        );
        deep.cleanup().await.unwrap();
        m2.cleanup().await.unwrap();
    }
}
