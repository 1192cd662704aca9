//! Benchmark of the block driver against util-linux and coreutils doing the same work.
//!
//! ```text
//! cargo run --release -p strata-driver-block --example block_bench [-- ROUNDS]
//! ```
//!
//! Runs as root. Makes a fresh journaled ext4 (and, if mkfs.xfs exists, an xfs with reflink)
//! on loop devices in a temporary directory, puts the driver's home there, and measures:
//!
//! 1. child creation on ext4 from a parent holding 100 MiB in a 10 GiB image (sparse copy),
//!    against `cp --sparse=always` + `sync FILE`;
//! 2. child creation on xfs (reflink), against `cp --reflink=always` + `sync FILE`;
//! 3. get + put of an image layer (loop attach, ro mount, unmount, detach), against
//!    `mount -o loop,ro` + `umount` (util-linux: LOOP_CONFIGURE too, since 2.37);
//!
//! each the median of ROUNDS (default 9), printing a table with ratios (driver / peer).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use strata_conformance::tarfile::{Entry, make_tar, stream};
use strata_driver_api::{CreateOpts, Driver, LayerId, MountOpts, TarStream};
use strata_driver_block::{BlockDriver, Config, Fs};

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("run a command");
    assert!(out.status.success(), "{cmd:?} failed: {out:?}");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A filesystem made on a loop device, unmounted (and its device detached) on drop.
struct Scratch {
    mnt: PathBuf,
}

impl Scratch {
    fn new(dir: &Path, name: &str, mkfs: &[&str], size: u64) -> Scratch {
        let img = dir.join(format!("{name}.img"));
        std::fs::File::create(&img).unwrap().set_len(size).unwrap();
        sh(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&img));
        let mnt = dir.join(name);
        std::fs::create_dir(&mnt).unwrap();
        sh(Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&img)
            .arg(&mnt));
        Scratch { mnt }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn tar_of(name: &str, len: usize) -> TarStream {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    stream(make_tar(&[Entry::file(name, data)]))
}

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

/// Child creation: the driver's `create` against `cp` with `cp_flag` + `sync FILE`.
async fn bench_create(
    d: &BlockDriver,
    home: &Path,
    rounds: usize,
    cp_flag: &str,
) -> (Duration, Duration, u64) {
    let parent = id("parent");
    d.create(&parent, None, &CreateOpts::default())
        .await
        .unwrap();
    d.apply_diff(&parent, None, tar_of("hundred", 100 << 20))
        .await
        .unwrap();
    let alloc = d.allocated(&parent).unwrap();
    let src = home.join("parent/image");
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let child = id(&format!("child-{r}"));
        let t = Instant::now();
        d.create(&child, Some(&parent), &CreateOpts::default())
            .await
            .unwrap();
        ours.push(t.elapsed());
        d.remove(&child, false).await.unwrap();

        let dst = home.join(format!("peer-{r}.img"));
        let t = Instant::now();
        sh(Command::new("cp").arg(cp_flag).arg(&src).arg(&dst));
        sh(Command::new("sync").arg(&dst));
        peer.push(t.elapsed());
        std::fs::remove_file(&dst).unwrap();
    }
    d.remove(&parent, false).await.unwrap();
    (median(ours), median(peer), alloc)
}

/// get + put of an image layer against `mount -o loop,ro` + `umount`.
async fn bench_get_put(d: &BlockDriver, home: &Path, rounds: usize) -> (Duration, Duration) {
    let l = id("mounted");
    d.create(&l, None, &CreateOpts::default()).await.unwrap();
    d.apply_diff(&l, None, tar_of("f", 4096)).await.unwrap();
    let img = home.join("mounted/image");
    let mnt = home.join("peer-mnt");
    std::fs::create_dir(&mnt).unwrap();
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        d.get(&l, &MountOpts::default()).await.unwrap();
        d.put(&l).await.unwrap();
        ours.push(t.elapsed());

        let t = Instant::now();
        sh(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,ro"])
            .arg(&img)
            .arg(&mnt));
        sh(Command::new("umount").arg(&mnt));
        peer.push(t.elapsed());
    }
    std::fs::remove_dir(&mnt).unwrap();
    d.remove(&l, false).await.unwrap();
    (median(ours), median(peer))
}

fn row(what: &str, ours: Duration, peer_name: &str, peer: Duration) {
    println!(
        "| {what:<44} | {:>9.2} ms | {peer_name:<28} | {:>9.2} ms | {:>5.2}x |",
        ours.as_secs_f64() * 1e3,
        peer.as_secs_f64() * 1e3,
        ours.as_secs_f64() / peer.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("ROUNDS"))
        .unwrap_or(9);
    if let Err(e) = strata_driver_block::probe() {
        strata_conformance::skip::print("block_bench", e);
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("strata-bench-block-")
        .tempdir()
        .unwrap();
    let ext4 = Scratch::new(tmp.path(), "ext4", &["mkfs.ext4", "-q", "-F"], 8 << 30);
    let home = ext4.mnt.join("block");
    let d = BlockDriver::new(
        home.clone(),
        Config {
            size: 10 << 30,
            fs: Fs::Ext4,
        },
    )
    .unwrap();
    let (ours, peer, alloc) = bench_create(&d, &home, rounds, "--sparse=always").await;
    println!("rounds: {rounds} (medians); backing filesystems made fresh on loop devices");
    println!(
        "| {:<44} | {:>12} | {:<28} | {:>12} | ratio  |",
        "operation", "strata", "peer", "peer"
    );
    println!("|{}|", "-".repeat(124));
    row(
        &format!(
            "create child, ext4, 10 GiB image, {} MiB alloc",
            alloc >> 20
        ),
        ours,
        "cp --sparse=always + sync",
        peer,
    );
    let (ours, peer) = bench_get_put(&d, &home, rounds).await;
    row(
        "get + put (image layer, ro)",
        ours,
        "mount -o loop,ro + umount",
        peer,
    );
    d.cleanup().await.unwrap();
    drop(d);

    if Command::new("mkfs.xfs").arg("-V").output().is_ok() {
        let xfs = Scratch::new(
            tmp.path(),
            "xfs",
            &["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
            8 << 30,
        );
        let home = xfs.mnt.join("block");
        let d = BlockDriver::new(
            home.clone(),
            Config {
                size: 10 << 30,
                fs: Fs::Ext4,
            },
        )
        .unwrap();
        assert!(d.reflink(), "no reflink on the xfs backing filesystem");
        let (ours, peer, alloc) = bench_create(&d, &home, rounds, "--reflink=always").await;
        row(
            &format!("create child, xfs reflink, {} MiB alloc", alloc >> 20),
            ours,
            "cp --reflink=always + sync",
            peer,
        );
        d.cleanup().await.unwrap();
        drop(d);
        drop(xfs);
    } else {
        strata_conformance::skip::print("block_bench", "the xfs rows: mkfs.xfs not found");
    }
    drop(ext4);
}
