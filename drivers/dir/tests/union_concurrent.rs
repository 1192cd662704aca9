//! Two threads working through one view at once, in each mount mode: a writer and a reader
//! with every byte checked, and create/unlink/rename storms in one directory.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use common::modes::U;
use common::*;
use strata_conformance::tarfile::{Entry, make_tar, with_parents};

per_mode!(
    a_writer_and_a_reader_at_once,
    create_unlink_and_rename_storms_in_one_dir
);

/// `n` bytes of a pattern that differs per `seed` and per 4 KiB block.
fn pattern(n: usize, seed: usize) -> String {
    (0..n)
        .map(|i| (b'a' + ((i * 7 + i / 4096 + seed) % 26) as u8) as char)
        .collect()
}

const CHUNK: usize = 16 << 10;

async fn a_writer_and_a_reader_at_once(f: U) {
    let a0 = pattern(256 << 10, 1);
    let b0 = pattern(4 << 20, 2);
    f.image(
        "l0",
        None,
        make_tar(&with_parents(&[
            Entry::file("a", &a0),
            Entry::file("b", &b0),
        ])),
    )
    .await;
    f.container("c", Some("l0")).await;
    let v = f.get("c").await;

    // What `a` holds once the writer is done: 64 KiB overwritten from offset 1000 in 4 KiB
    // writes, then 100 appended chunks, each telling its number.
    let mut want_a = a0.clone().into_bytes();
    want_a[1000..1000 + (64 << 10)].fill(b'X');
    let chunks: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("{i:05}").repeat(CHUNK / 5 + 1).into_bytes()[..CHUNK].to_vec())
        .collect();
    for c in &chunks {
        want_a.extend_from_slice(c);
    }
    let done = AtomicBool::new(false);
    let (pa, pb) = (v.join("a"), v.join("b"));
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let file = fs::OpenOptions::new().write(true).open(&pa).unwrap();
            for off in (0..64 << 10).step_by(4096) {
                file.write_all_at(&[b'X'; 4096], 1000 + off as u64).unwrap();
            }
            let mut end = a0.len() as u64;
            for c in &chunks {
                file.write_all_at(c, end).unwrap();
                end += c.len() as u64;
            }
            file.sync_all().unwrap();
            done.store(true, Ordering::SeqCst);
        });
        let reader = s.spawn(|| {
            let mut rounds = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                assert!(
                    fs::read(&pb).unwrap() == b0.as_bytes(),
                    "b changed under a writer"
                );
                // The first 1000 bytes of a are never written.
                let head = read_at(&pa, 0, 1000);
                assert_eq!(head, a0.as_bytes()[..1000], "a's head, round {rounds}");
                rounds += 1;
                if finished && rounds >= 3 {
                    break;
                }
            }
            rounds
        });
        writer.join().unwrap();
        let rounds = reader.join().unwrap();
        assert!(rounds >= 3);
    });
    // After the writer: every byte, through a fresh open and through the one still cached.
    assert!(fs::read(&pa).unwrap() == want_a, "a after the writer");
    assert!(fs::read(&pb).unwrap() == b0.as_bytes());
    f.put_last("c").await;
    assert_eq!(names(&f.diff("c")), ["a"]);
    assert!(fs::read(f.diff("c").join("a")).unwrap() == want_a);
    assert!(fs::read(f.diff("l0").join("a")).unwrap() == a0.as_bytes());
}

fn read_at(p: &Path, off: u64, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    fs::File::open(p)
        .unwrap()
        .read_exact_at(&mut buf, off)
        .unwrap();
    buf
}

const LOWER: usize = 100;
const ROUNDS: usize = 300;

async fn create_unlink_and_rename_storms_in_one_dir(f: U) {
    let lower: Vec<String> = (0..LOWER).map(|k| format!("storm/lower-{k:03}")).collect();
    let entries: Vec<Entry> = lower.iter().map(|p| Entry::file(p, "low")).collect();
    f.image("l0", None, make_tar(&with_parents(&entries))).await;
    f.container("c", Some("l0")).await;
    let v = f.get("c").await;
    let dir = v.join("storm");

    std::thread::scope(|s| {
        for t in 0..2 {
            let dir = &dir;
            s.spawn(move || {
                for i in 0..ROUNDS {
                    let name = dir.join(format!("t{t}-{i:03}"));
                    fs::write(&name, format!("t{t}-{i}")).unwrap();
                    match i % 3 {
                        0 => fs::remove_file(&name).unwrap(),
                        1 => fs::rename(&name, dir.join(format!("r{t}-{i:03}"))).unwrap(),
                        _ => {}
                    }
                    // Each thread deletes half of the lower files as it goes.
                    if i < LOWER && i % 2 == t {
                        fs::remove_file(dir.join(format!("lower-{i:03}"))).unwrap();
                    }
                }
            });
        }
    });

    let mut want: BTreeMap<String, String> = BTreeMap::new();
    for t in 0..2 {
        for i in 0..ROUNDS {
            match i % 3 {
                1 => want.insert(format!("r{t}-{i:03}"), format!("t{t}-{i}")),
                2 => want.insert(format!("t{t}-{i:03}"), format!("t{t}-{i}")),
                _ => None,
            };
        }
    }
    let mut got: BTreeMap<String, String> = BTreeMap::new();
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let text = fs::read_to_string(e.path()).unwrap();
        assert!(
            got.insert(name.clone(), text).is_none(),
            "{name} listed twice"
        );
    }
    assert_eq!(got, want);
    f.put_last("c").await;

    let mut diff: Vec<String> = want.keys().map(|n| format!("storm/{n}")).collect();
    diff.extend((0..LOWER).map(|k| format!("storm/.wh.lower-{k:03}")));
    diff.push("storm".into());
    diff.sort();
    assert_eq!(names(&f.diff("c")), diff);
    for (n, text) in &want {
        assert_eq!(
            &fs::read_to_string(f.diff("c").join("storm").join(n)).unwrap(),
            text
        );
    }
}
