//! A small benchmark of `archive::apply_tar` against GNU tar, in the same run.
//!
//! Builds an in-memory layer tar (by default 20,000 files of 4 KiB in 200 directories at depth
//! 5, plus one 256 MiB file), then extracts it with `apply_tar` and with `tar -x` (from a pipe,
//! as root `tar` also restores owners), a few times each, and prints the best times and their
//! ratio. Run it in release mode:
//!
//! ```text
//! cargo run --release -p strata-driver-api --example apply_bench -- [DIR] [FILES] [BIG_MIB]
//! ```
//!
//! `DIR` is where the trees are made (default: the system temp dir; use `/dev/shm` for tmpfs).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_archive::{ApplyOptions, WhiteoutMode, apply_tar};

fn build_tar(files: usize, big_mib: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dirs = 200.min(files.max(1));
    let data = vec![0x5au8; 4096];
    for d in 0..dirs {
        let dir = format!("a{}/b{}/c{}/d{}/e{d}", d % 2, d % 3, d % 5, d % 7);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, &dir, &[][..]).unwrap();
        for f in 0..files / dirs {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_600_000_000);
            b.append_data(&mut h, format!("{dir}/f{f}"), &data[..])
                .unwrap();
        }
    }
    if big_mib > 0 {
        let mut h = tar::Header::new_ustar();
        h.set_size((big_mib << 20) as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        let big = std::io::Read::take(std::io::repeat(0x33), (big_mib << 20) as u64);
        b.append_data(&mut h, "big", big).unwrap();
    }
    b.into_inner().unwrap()
}

fn time_strata(tar: &[u8], base: &Path, i: usize) -> Duration {
    let root = base.join(format!("strata-{i}"));
    std::fs::create_dir(&root).unwrap();
    let start = Instant::now();
    apply_tar(
        &root,
        &mut &tar[..],
        &ApplyOptions::new(WhiteoutMode::Remove),
    )
    .unwrap();
    let took = start.elapsed();
    std::fs::remove_dir_all(&root).unwrap();
    took
}

fn time_gnu_tar(tar: &[u8], base: &Path, i: usize) -> Option<Duration> {
    let root = base.join(format!("gnutar-{i}"));
    std::fs::create_dir(&root).unwrap();
    let start = Instant::now();
    let mut child = Command::new("tar")
        .args(["-x", "-p", "-f", "-", "-C"])
        .arg(&root)
        .stdin(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take().unwrap().write_all(tar).unwrap();
    let ok = child.wait().unwrap().success();
    let took = start.elapsed();
    std::fs::remove_dir_all(&root).unwrap();
    ok.then_some(took)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map_or_else(std::env::temp_dir, Into::into);
    let files: usize = args.get(2).map_or(20_000, |s| s.parse().unwrap());
    let big_mib: usize = args.get(3).map_or(256, |s| s.parse().unwrap());
    let base = tempfile::tempdir_in(&dir).unwrap();
    let tar = build_tar(files, big_mib);
    println!(
        "{} files + {big_mib} MiB file, tar of {} MiB, in {}",
        files,
        tar.len() >> 20,
        dir.display()
    );
    let (mut strata, mut gnu) = (Duration::MAX, Duration::MAX);
    for i in 0..3 {
        strata = strata.min(time_strata(&tar, base.path(), i));
        match time_gnu_tar(&tar, base.path(), i) {
            Some(t) => gnu = gnu.min(t),
            None => {
                println!("GNU tar not available; strata alone: {strata:?}");
                return;
            }
        }
    }
    println!("apply_tar: {strata:?}");
    println!("GNU tar:   {gnu:?}");
    println!(
        "ratio apply_tar / GNU tar: {:.2}",
        strata.as_secs_f64() / gnu.as_secs_f64()
    );
}
