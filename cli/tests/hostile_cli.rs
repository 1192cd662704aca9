//! Hostile layer tars driven through the real `strata` binary.
//!
//! Each test imports a crafted tar into a fresh store with canary files beside it (outside the
//! store root) and checks: the import is rejected with one line on stderr and no layer left
//! behind, or accepted with everything landing inside the layer; the canaries never change.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One tar entry, written by hand so names the `tar` crate refuses (`../x`) can be made.
struct Entry {
    name: Vec<u8>,
    kind: u8,
    link: Vec<u8>,
    data: Vec<u8>,
    mode: u32,
}

impl Entry {
    fn file(name: &str, data: &[u8]) -> Entry {
        Entry {
            name: name.into(),
            kind: b'0',
            link: vec![],
            data: data.to_vec(),
            mode: 0o644,
        }
    }
    fn dir(name: &str, mode: u32) -> Entry {
        Entry {
            name: name.into(),
            kind: b'5',
            link: vec![],
            data: vec![],
            mode,
        }
    }
    fn symlink(name: &str, target: &str) -> Entry {
        Entry {
            name: name.into(),
            kind: b'2',
            link: target.into(),
            data: vec![],
            mode: 0o777,
        }
    }
    fn hardlink(name: &str, target: &str) -> Entry {
        Entry {
            name: name.into(),
            kind: b'1',
            link: target.into(),
            data: vec![],
            mode: 0o644,
        }
    }
    /// A PAX extended header carrying `records` ("key=value"), applying to the next entry.
    fn pax(records: &[(&str, &[u8])]) -> Entry {
        let mut data = Vec::new();
        for (k, v) in records {
            let body_len = 1 + k.len() + 1 + v.len() + 1; // " k=v\n"
            let mut len = body_len + 1;
            while len.to_string().len() + body_len != len {
                len = len.to_string().len() + body_len;
            }
            data.extend_from_slice(len.to_string().as_bytes());
            data.push(b' ');
            data.extend_from_slice(k.as_bytes());
            data.push(b'=');
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        Entry {
            name: b"PaxHeaders/x".to_vec(),
            kind: b'x',
            link: vec![],
            data,
            mode: 0o644,
        }
    }
}

fn octal(field: &mut [u8], value: u64) {
    let s = format!("{:0width$o}", value, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

fn header(e: &Entry, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    assert!(
        e.name.len() <= 100 && e.link.len() <= 100,
        "use PAX for long names"
    );
    h[..e.name.len()].copy_from_slice(&e.name);
    octal(&mut h[100..108], u64::from(e.mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_600_000_000);
    h[156] = e.kind;
    h[157..157 + e.link.len()].copy_from_slice(&e.link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&header(e, e.data.len() as u64));
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A temp store with canaries outside it.
struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        fs::create_dir_all(base.join("outside/sub")).unwrap();
        fs::write(base.join("outside/canary"), b"canary").unwrap();
        fs::write(base.join("outside/sub/canary"), b"canary").unwrap();
        fs::set_permissions(
            base.join("outside/canary"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        fs::write(
            base.join("strata.toml"),
            format!(
                "root = {:?}\nrunroot = {:?}\ndriver = \"dir\"\n",
                base.join("root"),
                base.join("run")
            ),
        )
        .unwrap();
        Store { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn strata(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--config")
            .arg(self.path().join("strata.toml"))
            .args(args)
            .output()
            .unwrap()
    }

    fn import(&self, bytes: &[u8]) -> Output {
        let file = self.path().join("layer.tar");
        fs::write(&file, bytes).unwrap();
        self.strata(&["import", file.to_str().unwrap()])
    }

    fn layer_count(&self) -> usize {
        let out = self.strata(&["ls", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array().unwrap().len()
    }

    /// Snapshot of everything outside the store root: paths, modes, sizes, content.
    fn outside(&self) -> Vec<(PathBuf, u32, Vec<u8>)> {
        let mut out = Vec::new();
        snapshot(self.path(), &self.path().join("root"), &mut out);
        out.sort();
        out
    }

    fn diff_dir(&self, stdout: &[u8]) -> PathBuf {
        let id = String::from_utf8_lossy(stdout).trim().to_string();
        self.path().join("root/dir/diff").join(id)
    }
}

fn snapshot(dir: &Path, skip: &Path, out: &mut Vec<(PathBuf, u32, Vec<u8>)>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p == skip || p.ends_with("run") || p.ends_with("layer.tar") {
            continue;
        }
        let md = fs::symlink_metadata(&p).unwrap();
        let content = if md.is_file() {
            fs::read(&p).unwrap()
        } else {
            vec![]
        };
        out.push((p.clone(), md.mode(), content));
        if md.is_dir() {
            snapshot(&p, skip, out);
        }
    }
}

fn assert_rejected(store: &Store, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "hostile tar was accepted; stderr: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "error must be one line: {stderr}"
    );
    assert_eq!(
        store.layer_count(),
        0,
        "a rejected import left a layer behind"
    );
}

fn check(entries: Vec<Entry>, expect_reject: bool) -> (Store, Output) {
    let store = Store::new();
    let before = store.outside();
    let out = store.import(&tar(&entries));
    if expect_reject {
        assert_rejected(&store, &out);
    } else {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        before,
        store.outside(),
        "something outside the store changed"
    );
    (store, out)
}

fn up(n: usize) -> String {
    "../".repeat(n)
}

#[test]
fn dotdot_name_is_rejected() {
    check(
        vec![Entry::file(&format!("{}outside/canary", up(12)), b"pwned")],
        true,
    );
}

#[test]
fn dotdot_inside_name_is_rejected() {
    check(
        vec![Entry::file(&format!("a/{}outside/new", up(12)), b"pwned")],
        true,
    );
}

#[test]
fn absolute_name_lands_inside_layer() {
    let store = Store::new();
    let target = format!("{}/outside/canary", store.path().display());
    let before = store.outside();
    let out = store.import(&tar(&[Entry::file(&target, b"inside")]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(before, store.outside());
    let landed = store
        .diff_dir(&out.stdout)
        .join(target.trim_start_matches('/'));
    assert_eq!(fs::read(landed).unwrap(), b"inside");
}

#[test]
fn absolute_symlink_then_write_through_stays_inside() {
    let store = Store::new();
    let outside = format!("{}/outside", store.path().display());
    let before = store.outside();
    // The layer holds the same absolute path as a real directory, so the link resolves in it.
    let mut entries = Vec::new();
    let mut prefix = String::new();
    for part in outside.trim_start_matches('/').split('/') {
        prefix.push_str(part);
        prefix.push('/');
        entries.push(Entry::dir(&prefix, 0o755));
    }
    entries.push(Entry::symlink("e", &outside));
    entries.push(Entry::file("e/canary", b"pwned"));
    let out = store.import(&tar(&entries));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(before, store.outside());
    let inside = store
        .diff_dir(&out.stdout)
        .join(outside.trim_start_matches('/'))
        .join("canary");
    assert_eq!(fs::read(inside).unwrap(), b"pwned");
}

#[test]
fn relative_symlink_escape_is_clamped() {
    let (store, out) = check(
        vec![
            Entry::symlink("e", &up(20)),
            Entry::file("e/outside/canary", b"pwned"),
        ],
        false,
    );
    // `e` resolves to the layer root, as in a chroot.
    let landed = store.diff_dir(&out.stdout).join("outside/canary");
    assert_eq!(fs::read(landed).unwrap(), b"pwned");
}

#[test]
fn symlink_to_parent_then_deep_path_creates_nothing_outside() {
    // RUSTSEC-2021-0080: s -> .., then s/exploit/foo/bar.
    let (store, _) = check(
        vec![
            Entry::symlink("s", ".."),
            Entry::file("s/exploit/foo/bar", b"x"),
        ],
        false,
    );
    assert!(!store.path().join("root/dir/exploit").exists());
    assert!(!store.path().join("exploit").exists());
}

#[test]
fn hardlink_to_outside_is_rejected() {
    check(
        vec![Entry::hardlink("l", &format!("{}outside/canary", up(12)))],
        true,
    );
}

#[test]
fn hardlink_to_absolute_host_path_never_links_host_file() {
    let store = Store::new();
    let target = format!("{}/outside/canary", store.path().display());
    let before = store.outside();
    let out = store.import(&tar(&[Entry::hardlink("l", &target)]));
    // Either rejected (no such file in the layer) or linked to an in-layer file: never the host's.
    if out.status.success() {
        let l = store.diff_dir(&out.stdout).join("l");
        let host = fs::metadata(store.path().join("outside/canary")).unwrap();
        assert_ne!(fs::metadata(l).unwrap().ino(), host.ino());
    } else {
        assert_rejected(&store, &out);
    }
    assert_eq!(before, store.outside());
    assert_eq!(
        fs::metadata(store.path().join("outside/canary"))
            .unwrap()
            .nlink(),
        1
    );
}

#[test]
fn hardlink_to_symlink_then_chmod_leaves_host_alone() {
    // CVE-2021-32760: a hardlink to a symlink that points outside, then an entry that chmods it.
    let store = Store::new();
    let outside = format!("{}/outside/canary", store.path().display());
    let before = store.outside();
    let mut chmod = Entry::file("l", b"");
    chmod.mode = 0o777;
    let out = store.import(&tar(&[
        Entry::symlink("s", &outside),
        Entry::hardlink("l", "s"),
        chmod,
    ]));
    if !out.status.success() {
        assert_rejected(&store, &out);
    }
    assert_eq!(before, store.outside());
}

#[test]
fn whiteout_through_symlink_deletes_nothing_outside() {
    let store = Store::new();
    let outside = format!("{}/outside", store.path().display());
    let before = store.outside();
    let out = store.import(&tar(&[
        Entry::symlink("le", &outside),
        Entry::file("le/.wh.canary", b""),
    ]));
    if !out.status.success() {
        assert_rejected(&store, &out);
    }
    assert_eq!(before, store.outside());
}

#[test]
fn whiteout_of_parent_is_rejected() {
    for name in [".wh..", "a/.wh..", ".wh...", ".wh."] {
        check(vec![Entry::dir("a/", 0o755), Entry::file(name, b"")], true);
    }
}

#[test]
fn symlink_then_directory_entry_does_not_chmod_host_dir() {
    // RUSTSEC-2026-0067: symlink x -> outside, then a directory entry x/ with mode 0777.
    let store = Store::new();
    let outside = format!("{}/outside", store.path().display());
    let mode_before = fs::metadata(store.path().join("outside")).unwrap().mode();
    let before = store.outside();
    let out = store.import(&tar(&[
        Entry::symlink("x", &outside),
        Entry::dir("x/", 0o777),
    ]));
    if !out.status.success() {
        assert_rejected(&store, &out);
    }
    assert_eq!(before, store.outside());
    assert_eq!(
        fs::metadata(store.path().join("outside")).unwrap().mode(),
        mode_before
    );
}

#[test]
fn symlink_loop_is_rejected() {
    check(
        vec![
            Entry::symlink("a", "b"),
            Entry::symlink("b", "a"),
            Entry::file("a/x", b"x"),
        ],
        true,
    );
}

#[test]
fn huge_pax_header_is_rejected_quickly() {
    let store = Store::new();
    let big = vec![b'a'; 100 << 20];
    let entries = [Entry::pax(&[("comment", &big)]), Entry::file("f", b"x")];
    let started = std::time::Instant::now();
    let out = store.import(&tar(&entries));
    assert_rejected(&store, &out);
    assert!(
        started.elapsed().as_secs() < 30,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn overlay_xattr_smuggled_in_pax_is_not_written() {
    let store = Store::new();
    let entries = [
        Entry::pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")]),
        Entry::dir("d/", 0o755),
    ];
    let out = store.import(&tar(&entries));
    if out.status.success() {
        let d = store.diff_dir(&out.stdout).join("d");
        let v = Command::new("getfattr")
            .args(["-d", "-m", "-"])
            .arg(&d)
            .output();
        if let Ok(v) = v {
            assert!(
                !String::from_utf8_lossy(&v.stdout).contains("overlay"),
                "overlay xattr written"
            );
        }
    } else {
        assert_rejected(&store, &out);
    }
}

#[test]
fn truncated_stream_is_rejected() {
    let store = Store::new();
    let mut bytes = tar(&[Entry::file("f", &vec![b'x'; 10_000])]);
    bytes.truncate(3000);
    let out = store.import(&bytes);
    assert_rejected(&store, &out);
}

#[test]
fn symlink_named_dot_is_rejected() {
    check(vec![Entry::symlink(".", "/"), Entry::file("x", b"x")], true);
}
