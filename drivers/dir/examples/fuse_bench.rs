//! The dir driver's fuse mode against fuse-overlayfs, over the same branches in the same run
//! (a program, not a timed test). Run as root through `bench/dir-fuse.sh`, which makes a fresh
//! journaled ext4 on a loop device, or directly:
//! `cargo run --release -p strata-driver-dir --example fuse_bench -- <empty dir> [runs]`.
//!
//! The lower layers are made once, through the driver (`create` + `apply_diff` of a generated
//! tar), as plain directories without whiteouts: `files` (a 10,000-file tree and 1,000 small
//! files) and `big` over it (one 512 MiB file). The dir driver mounts a fresh container layer
//! over `big`; fuse-overlayfs gets the same two diff directories as `lowerdir`, with a fresh
//! `upperdir` and `workdir` on the same file system. Each measurement is on a fresh mount
//! (mounting is not timed); best of N runs:
//!
//! 1. sequential read of the 512 MiB file in 1 MiB reads: cold (after `sync` and
//!    `echo 3 > /proc/sys/vm/drop_caches`), then warm (the same file again, same mount);
//! 2. a walk of the 10,000-file tree in Rust: `read_dir` of every directory and `lstat` of
//!    every entry (what `find -printf` with stat fields does), on a fresh mount with the
//!    backing file system's caches warm;
//! 3. 1,000 small-file copy-ups: open for append, write one byte, close, for each lower file.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use strata_driver_api::{CreateOpts, Driver, ErrorKind, LayerId, MountOpts, stream};
use strata_driver_dir::{Config, DirDriver, MountMode};

const BIG: u64 = 512 << 20;
const TREE_DIRS: usize = 100;
const TREE_FILES: usize = 10_000;
const SMALL: usize = 1_000;

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

/// Prints one line and exits: a benchmark's errors go to its user, once.
fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("fuse_bench: {msg}");
    std::process::exit(1)
}

trait OrDie<T> {
    fn or_die(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display> OrDie<T> for Result<T, E> {
    fn or_die(self, what: &str) -> T {
        self.unwrap_or_else(|e| die(format!("{what}: {e}")))
    }
}

/// The lower layers' tars, written as they are read.
fn files_tar(out: &mut dyn Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(out);
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_path(path)?;
        h.set_cksum();
        b.append(&h, data)
    };
    for i in 0..TREE_FILES {
        let text = format!("tree file {i}\n").repeat(4);
        add(
            &format!("tree/d{:03}/f{i:05}", i % TREE_DIRS),
            text.as_bytes(),
        )?;
    }
    for i in 0..SMALL {
        add(
            &format!("small/s{i:04}"),
            format!("small file {i}\n").as_bytes(),
        )?;
    }
    b.finish()
}

fn big_tar(out: &mut dyn Write) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_size(BIG);
    h.set_path("big/file")?;
    h.set_cksum();
    let mut b = tar::Builder::new(out);
    b.append(
        &h,
        Pattern {
            left: BIG,
            x: 0x9e37_79b9_7f4a_7c15,
        },
    )?;
    b.finish()
}

/// `left` bytes of a cheap non-repeating pattern.
struct Pattern {
    left: u64,
    x: u64,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize & !7;
        let n = if n == 0 {
            (self.left as usize).min(buf.len())
        } else {
            n
        };
        for chunk in buf[..n].chunks_mut(8) {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            chunk.copy_from_slice(&self.x.to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

async fn make_layer(
    d: &DirDriver,
    layer: &str,
    parent: Option<&str>,
    tar: fn(&mut dyn Write) -> std::io::Result<()>,
) -> PathBuf {
    let parent = parent.map(id);
    d.create(&id(layer), parent.as_ref(), &CreateOpts::default())
        .await
        .or_die("create");
    let s = stream::from_blocking(move |w| {
        tar(w).map_err(|e| strata_driver_api::Error::io("write the layer tar", e))
    });
    d.apply_diff(&id(layer), parent.as_ref(), s)
        .await
        .or_die("apply_diff");
    let meta = d.metadata(&id(layer)).await.or_die("metadata");
    let dir = meta
        .iter()
        .find(|(k, _)| k == "DiffDir")
        .or_die_opt("no DiffDir");
    PathBuf::from(&dir.1)
}

trait OrDieOpt<T> {
    fn or_die_opt(self, what: &str) -> T;
}

impl<T> OrDieOpt<T> for Option<T> {
    fn or_die_opt(self, what: &str) -> T {
        self.unwrap_or_else(|| die(what))
    }
}

/// A view to measure, and how to release it.
enum View {
    Strata(String),
    Peer(PathBuf),
}

struct Bench {
    root: PathBuf,
    drv: DirDriver,
    lowers: String,
    seq: usize,
}

impl Bench {
    async fn mount(&mut self, strata: bool) -> (PathBuf, View) {
        self.seq += 1;
        if strata {
            let name = format!("c{}", self.seq);
            self.drv
                .create_rw(&id(&name), Some(&id("big")), &CreateOpts::default())
                .await
                .or_die("create_rw");
            let path = self
                .drv
                .get(&id(&name), &MountOpts::default())
                .await
                .or_die("get");
            (path, View::Strata(name))
        } else {
            let dir = self.root.join(format!("peer/{}", self.seq));
            let (upper, work, m) = (dir.join("upper"), dir.join("work"), dir.join("m"));
            for d in [&upper, &work, &m] {
                fs::create_dir_all(d).or_die("mkdir");
            }
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                self.lowers,
                upper.display(),
                work.display()
            );
            // Its stderr only on failure: it warns about every mount option it ignores.
            let out = Command::new("fuse-overlayfs")
                .args(["-o", &opts])
                .arg(&m)
                .output()
                .or_die("run fuse-overlayfs");
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                die(format!(
                    "fuse-overlayfs -o {opts} {}: {}: {}",
                    m.display(),
                    out.status,
                    err.trim()
                ));
            }
            (m.clone(), View::Peer(m))
        }
    }

    async fn release(&self, v: View) {
        match v {
            View::Strata(name) => {
                self.drv.put(&id(&name)).await.or_die("put");
                self.drv.remove(&id(&name), false).await.or_die("remove");
            }
            View::Peer(m) => {
                rustix::mount::unmount(&m, rustix::mount::UnmountFlags::empty())
                    .or_die("umount fuse-overlayfs");
            }
        }
    }
}

fn drop_caches() {
    rustix::fs::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").or_die("echo 3 > /proc/sys/vm/drop_caches");
}

fn read_all(p: &Path) -> Duration {
    let start = Instant::now();
    let mut f = fs::File::open(p).or_die("open");
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = f.read(&mut buf).or_die("read");
        if got == 0 {
            break;
        }
        n += got as u64;
    }
    let t = start.elapsed();
    if n != BIG {
        die(format!("{}: read {n} bytes, want {BIG}", p.display()));
    }
    t
}

fn walk(dir: &Path, count: &mut usize) {
    for e in fs::read_dir(dir).or_die("read_dir") {
        let p = e.or_die("read_dir").path();
        let m = fs::symlink_metadata(&p).or_die("lstat");
        *count += 1;
        if m.is_dir() {
            walk(&p, count);
        }
    }
}

fn timed_walk(root: &Path) -> Duration {
    let start = Instant::now();
    let mut n = 0;
    walk(&root.join("tree"), &mut n);
    let t = start.elapsed();
    if n != TREE_FILES + TREE_DIRS {
        die(format!(
            "walk found {n} entries, want {}",
            TREE_FILES + TREE_DIRS
        ));
    }
    t
}

fn copy_ups(root: &Path) -> Duration {
    let start = Instant::now();
    for i in 0..SMALL {
        let p = root.join(format!("small/s{i:04}"));
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .or_die("open for append");
        f.write_all(b"+").or_die("append");
    }
    start.elapsed()
}

const WORKLOADS: [&str; 4] = [
    "sequential read 512 MiB, cold cache",
    "sequential read 512 MiB, warm cache",
    "walk + lstat of a 10,000-file tree",
    "1,000 small-file copy-ups (append 1 byte)",
];

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(
        args.next()
            .unwrap_or_else(|| die("usage: fuse_bench <empty dir> [runs]")),
    );
    let runs: usize = args.next().map_or(5, |r| r.parse().or_die("runs"));
    if Command::new("fuse-overlayfs")
        .arg("--version")
        .output()
        .is_err()
    {
        die("fuse-overlayfs not found: apt-get install fuse-overlayfs");
    }
    let config = Config {
        mount: MountMode::Fuse,
        ..Config::default()
    };
    let drv = match DirDriver::new(root.join("strata/dir"), config) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotSupported => die(format!(
            "the dir driver's fuse mode is not available in this build: {e}"
        )),
        Err(e) => die(format!("DirDriver::new: {e}")),
    };
    eprintln!("fuse_bench: making the lower layers (10,000 + 1,000 files, 512 MiB)");
    let files = make_layer(&drv, "files", None, files_tar).await;
    let big = make_layer(&drv, "big", Some("files"), big_tar).await;
    let lowers = format!("{}:{}", big.display(), files.display());
    let mut b = Bench {
        root,
        drv,
        lowers,
        seq: 0,
    };

    // best[workload][0: strata, 1: fuse-overlayfs]
    let mut best = [[Duration::MAX; 2]; 4];
    for run in 0..runs {
        for (k, strata) in [(0, true), (1, false)] {
            let (m, v) = b.mount(strata).await;
            drop_caches();
            let cold = read_all(&m.join("big/file"));
            let warm = read_all(&m.join("big/file"));
            b.release(v).await;
            let (m, v) = b.mount(strata).await;
            let walked = timed_walk(&m);
            b.release(v).await;
            let (m, v) = b.mount(strata).await;
            let copied = copy_ups(&m);
            b.release(v).await;
            for (w, t) in [cold, warm, walked, copied].into_iter().enumerate() {
                best[w][k] = best[w][k].min(t);
            }
        }
        eprintln!("fuse_bench: run {} of {runs} done", run + 1);
    }

    let version = Command::new("fuse-overlayfs")
        .arg("--version")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let line = text.lines().find(|l| l.starts_with("fuse-overlayfs"));
            line.unwrap_or("fuse-overlayfs: version unknown")
                .to_string()
        })
        .unwrap_or_default();
    println!("best of {runs}; {version}; ratio = strata / fuse-overlayfs (< 1: strata is faster)");
    println!();
    println!("| workload | strata fuse | fuse-overlayfs | ratio |");
    println!("|---|---|---|---|");
    for (w, name) in WORKLOADS.iter().enumerate() {
        let [s, p] = best[w];
        let show = |d: Duration| {
            if w < 2 {
                format!("{:.0} ms ({:.0} MiB/s)", ms(d), 512.0 / d.as_secs_f64())
            } else {
                format!("{:.1} ms", ms(d))
            }
        };
        println!(
            "| {name} | {} | {} | {:.2} |",
            show(s),
            show(p),
            s.as_secs_f64() / p.as_secs_f64()
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
