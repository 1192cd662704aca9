//! The `strata` binary end to end: each test has its own root, runroot and config file.
//!
//! Tests that need a working storage driver skip (with a printed reason) when this build's
//! `dir` driver is missing or unsupported here.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use strata_conformance::tarfile::{Entry, make_tar};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// A root of its own; unmounts whatever is still mounted when dropped.
struct Strata {
    tmp: tempfile::TempDir,
    config: PathBuf,
}

impl Strata {
    /// A fresh root using `dir` in `mode`; `None` (after saying why) when it cannot run here.
    fn new(mode: &str) -> Option<Strata> {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("strata.toml");
        fs::write(
            &config,
            format!(
                "root = \"{0}/root\"\nrunroot = \"{0}/run\"\ndriver = \"dir\"\n\n[drivers.dir]\nmount = \"{mode}\"\n",
                tmp.path().display()
            ),
        )
        .unwrap();
        let s = Strata { tmp, config };
        let drivers: serde_json::Value =
            serde_json::from_slice(&s.ok(&["--json", "drivers"])).unwrap();
        let dir = drivers
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "dir");
        match dir {
            Some(d) if d["supported"] == true => Some(s),
            Some(d) => {
                strata_conformance::skip!("the dir driver is not supported here: {}", d["reason"]);
                None
            }
            None => {
                strata_conformance::skip!("this strata has no dir driver");
                None
            }
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("STRATA_DRIVER")
            .env_remove("STRATA_CONFIG")
            .env_remove("RUST_LOG");
        c
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(bytes) = stdin {
            child.stdin.take().unwrap().write_all(bytes).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args, None);
        assert!(
            out.status.success(),
            "strata {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn ok_text(&self, args: &[&str]) -> String {
        String::from_utf8(self.ok(args))
            .unwrap()
            .trim_end()
            .to_string()
    }

    /// Runs a command that must fail with exit code 1 and one line on stderr; returns it.
    fn fail(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert_eq!(out.status.code(), Some(1), "strata {args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(err.starts_with("strata: error: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    }

    fn import(&self, tar: &Path, parent: Option<&str>, id: &str) -> String {
        let mut args = vec!["import", "--id", id];
        if let Some(p) = parent {
            args.extend(["--parent", p]);
        }
        let tar = tar.to_str().unwrap();
        args.push(tar);
        self.ok_text(&args)
    }

    fn ls(&self) -> Vec<serde_json::Value> {
        serde_json::from_slice::<serde_json::Value>(&self.ok(&["--json", "ls"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Strata {
    fn drop(&mut self) {
        // Release every mount this test left, so no mount outlives its temp dir.
        let Ok(out) = self.cmd(&["--json", "ls"]).output() else {
            return;
        };
        let Ok(serde_json::Value::Array(layers)) = serde_json::from_slice(&out.stdout) else {
            return;
        };
        for layer in layers {
            let id = layer["id"].as_str().unwrap_or_default().to_string();
            for _ in 0..layer["mounts"].as_u64().unwrap_or(0) {
                let _ = self.cmd(&["umount", &id]).output();
            }
        }
    }
}

/// Writes the tar of `entries` to `path`, gzip'd if asked.
fn write_tar(path: &Path, entries: &[Entry], gzip: bool) {
    let bytes = make_tar(entries);
    if gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        fs::write(path, gz.finish().unwrap()).unwrap();
    } else {
        fs::write(path, bytes).unwrap();
    }
}

/// A tree as comparable data: path → "dir 755", "file 644 <content>", "link -> target".
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("link -> {}", fs::read_link(&path).unwrap().display()),
                );
            } else if meta.is_dir() {
                out.insert(rel, format!("dir {mode:o}"));
                walk(root, &path, out);
            } else {
                out.insert(
                    rel,
                    format!(
                        "file {mode:o} {}",
                        String::from_utf8_lossy(&fs::read(&path).unwrap())
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A base layer and a child that modifies, deletes, and makes a directory opaque.
fn two_layers(s: &Strata) {
    let base = s.path("base.tar.gz");
    write_tar(
        &base,
        &[
            Entry::dir("etc/"),
            Entry::file("etc/hosts", "127.0.0.1 old\n"),
            Entry::file("etc/passwd", "root:x:0:0\n"),
            Entry::dir("data/"),
            Entry::file("data/keep", "keep"),
            Entry::dir("opq/"),
            Entry::file("opq/x", "x"),
            Entry::file("opq/y", "y"),
            Entry::symlink("etc/link", "hosts"),
        ],
        true,
    );
    let child = s.path("child.tar");
    write_tar(
        &child,
        &[
            Entry::dir("etc/"),
            Entry::file("etc/hosts", "127.0.0.1 new\n"),
            Entry::file("etc/.wh.passwd", ""),
            Entry::dir("opq/"),
            Entry::file("opq/.wh..wh..opq", ""),
            Entry::file("opq/z", "z"),
            Entry::file("new", "fresh"),
        ],
        false,
    );
    assert_eq!(s.import(&base, None, "base"), "base");
    assert_eq!(s.import(&child, Some("base"), "child"), "child");
}

fn expected_child_view() -> BTreeMap<String, String> {
    [
        ("data", "dir 755"),
        ("data/keep", "file 644 keep"),
        ("etc", "dir 755"),
        ("etc/hosts", "file 644 127.0.0.1 new\n"),
        ("etc/link", "link -> hosts"),
        ("new", "file 644 fresh"),
        ("opq", "dir 755"),
        ("opq/z", "file 644 z"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn check_merged_view(mode: &str) {
    let Some(s) = Strata::new(mode) else { return };
    two_layers(&s);
    let path = PathBuf::from(s.ok_text(&["mount", "child"]));
    assert!(path.is_absolute());
    assert_eq!(tree(&path), expected_child_view());
    s.ok(&["umount", "child"]);
    assert_eq!(
        s.ls()
            .iter()
            .map(|l| l["mounts"].as_u64().unwrap())
            .sum::<u64>(),
        0
    );
}

#[test]
fn merged_view_of_a_child_copy_mode() {
    check_merged_view("copy");
}

#[test]
fn merged_view_of_a_child_fuse_mode() {
    if !Path::new("/dev/fuse").exists() {
        strata_conformance::skip!("no /dev/fuse");
        return;
    }
    check_merged_view("fuse");
}

#[test]
fn export_and_reimport_elsewhere_gives_the_same_tree() {
    let Some(a) = Strata::new("copy") else { return };
    two_layers(&a);
    let base_tar = a.path("base-export.tar");
    a.ok(&["export", "base", "-o", base_tar.to_str().unwrap()]);
    // To a pipe, without -o.
    let child_tar = a.ok(&["export", "child"]);
    let names: Vec<String> = tar::Archive::new(child_tar.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("etc/.wh.passwd")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with("opq/.wh..wh..opq")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.ends_with("data/keep")), "{names:?}");

    let Some(b) = Strata::new("copy") else { return };
    b.import(&base_tar, None, "base2");
    let out = b.run(
        &["import", "--parent", "base2", "--id", "child2", "-"],
        Some(&child_tar),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "child2");

    let pa = PathBuf::from(a.ok_text(&["mount", "child"]));
    let pb = PathBuf::from(b.ok_text(&["mount", "child2"]));
    assert_eq!(tree(&pa), tree(&pb));
    a.ok(&["umount", "child"]);
    b.ok(&["umount", "child2"]);

    // The diff digest of the re-exported child is the digest of what was imported.
    let digest_b = b.ls().into_iter().find(|l| l["id"] == "child2").unwrap()["diff_digest"].clone();
    assert!(digest_b.as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn changes_lines_like_docker_diff() {
    let Some(s) = Strata::new("copy") else { return };
    two_layers(&s);
    let text = s.ok_text(&["changes", "child"]);
    let lines: Vec<&str> = text.lines().collect();
    for want in [
        "C /etc/hosts",
        "D /etc/passwd",
        "A /new",
        "A /opq/z",
        "D /opq/x",
        "D /opq/y",
    ] {
        assert!(lines.contains(&want), "{want} in {lines:?}");
    }
    assert!(!lines.iter().any(|l| l.contains("/data")), "{lines:?}");
}

#[test]
fn ls_info_and_drivers_json_shapes() {
    let Some(s) = Strata::new("copy") else { return };
    two_layers(&s);
    let layers = s.ls();
    assert_eq!(layers.len(), 2);
    for l in &layers {
        for key in [
            "id",
            "parent",
            "kind",
            "size",
            "created",
            "mounts",
            "incomplete",
        ] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
        assert_eq!(l["kind"], "image");
        assert_eq!(l["incomplete"], false);
        assert!(l["size"].is_u64() && l["mounts"].is_u64());
        assert!(l["created"].as_str().unwrap().ends_with('Z'));
    }
    let base = layers.iter().find(|l| l["id"] == "base").unwrap();
    assert!(base["parent"].is_null());
    let child = layers.iter().find(|l| l["id"] == "child").unwrap();
    assert_eq!(child["parent"], "base");

    let _path = s.ok_text(&["mount", "child"]);
    let child = s.ls().into_iter().find(|l| l["id"] == "child").unwrap();
    assert_eq!(child["mounts"], 1);
    s.ok(&["umount", "child"]);

    let info: serde_json::Value = serde_json::from_slice(&s.ok(&["--json", "info"])).unwrap();
    assert_eq!(info["driver"], "dir");
    assert_eq!(info["layers"], 2);
    assert_eq!(info["root"], s.path("root").display().to_string());
    assert_eq!(info["runroot"], s.path("run").display().to_string());
    assert!(info["status"].is_array());

    let drivers: serde_json::Value = serde_json::from_slice(&s.ok(&["--json", "drivers"])).unwrap();
    for d in drivers.as_array().unwrap() {
        for key in ["name", "source", "supported", "reason", "capabilities"] {
            assert!(d.get(key).is_some(), "{key} missing in {d}");
        }
        assert!(d["source"] == "builtin" || d["source"] == "plugin");
    }

    let table = s.ok_text(&["ls"]);
    let header = table.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["ID", "PARENT", "SIZE", "CREATED", "MOUNTS"]
    );
    assert_eq!(table.lines().count(), 3);
}

#[test]
fn rm_refuses_a_parent_with_children() {
    let Some(s) = Strata::new("copy") else { return };
    two_layers(&s);
    s.fail(&["rm", "base"]);
    s.fail(&["rm", "--force", "base"]);
    s.ok(&["rm", "child"]);
    s.ok(&["rm", "base"]);
    assert!(s.ls().is_empty());
    s.fail(&["rm", "base"]);
}

#[test]
fn rm_of_a_mounted_layer_is_busy_unless_forced() {
    let Some(s) = Strata::new("copy") else { return };
    let id = s.ok_text(&["create", "--rw"]);
    assert_eq!(id.len(), 64);
    let path = PathBuf::from(s.ok_text(&["mount", &id]));
    fs::write(path.join("written"), b"w").unwrap();
    // Mounted twice: refcounted.
    s.ok(&["mount", &id]);
    assert_eq!(s.ls()[0]["mounts"], 2);
    s.fail(&["rm", &id]);
    s.ok(&["rm", "--force", &id]);
    assert!(s.ls().is_empty());
}

#[test]
fn create_then_apply_once() {
    let Some(s) = Strata::new("copy") else { return };
    assert_eq!(s.ok_text(&["create", "--id", "empty"]), "empty");
    let tar = s.path("t.tar");
    write_tar(&tar, &[Entry::file("hello", "world")], false);
    s.ok(&["apply", "empty", tar.to_str().unwrap()]);
    let rec = s.ls().remove(0);
    assert!(rec["diff_digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(rec["size"], 5);
    s.fail(&["apply", "empty", tar.to_str().unwrap()]);
    let path = PathBuf::from(s.ok_text(&["mount", "empty"]));
    assert_eq!(fs::read(path.join("hello")).unwrap(), b"world");
    s.ok(&["umount", "empty"]);
}

#[test]
fn a_bad_tar_leaves_no_layer() {
    let Some(s) = Strata::new("copy") else { return };
    let junk = s.path("junk.tar.gz");
    fs::write(&junk, [0x1f, 0x8b, 0x08, 0x00, 0xff, 0xff, 0xff, 0xff]).unwrap();
    s.fail(&["import", "--id", "junk", junk.to_str().unwrap()]);
    assert!(s.ls().is_empty());
    assert!(!s.path("root/dir/diff/junk").exists());
}

#[test]
fn user_errors_are_one_line() {
    let Some(s) = Strata::new("copy") else { return };
    s.fail(&["mount", "nope"]);
    s.fail(&["rm", "../etc"]);
    s.fail(&["create", "--parent", "nope"]);
    s.fail(&["import", "/no/such/file.tar"]);
    s.fail(&["--driver", "zfs", "ls"]);
    s.fail(&["--driver", "nosuch", "ls"]);
}

#[test]
fn config_and_usage_errors() {
    // No driver needed: these fail before one is chosen.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    fs::write(&bad, "[drivers.dir]\nmout = \"fuse\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&bad)
        .arg("ls")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("drivers.dir.mout") && err.contains("bad.toml"),
        "{err}"
    );

    let out = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["--config", "/no/such/strata.toml", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn concurrent_writers_from_two_processes() {
    let Some(s) = Strata::new("copy") else { return };
    let mut children = Vec::new();
    for i in 0..4 {
        let tar = s.path(&format!("t{i}.tar"));
        let name = format!("f{i}");
        write_tar(&tar, &[Entry::file(&name, "x")], false);
        let id = format!("layer{i}");
        children.push(
            s.cmd(&["import", "--id", &id, tar.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let layers = s.ls();
    assert_eq!(layers.len(), 4);
    assert!(layers.iter().all(|l| l["incomplete"] == false));
}

#[test]
fn strata_driver_env_and_flag_override_the_config() {
    let Some(s) = Strata::new("copy") else { return };
    let out = s
        .cmd(&["ls"])
        .env("STRATA_DRIVER", "nosuch")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = s
        .cmd(&["--driver", "dir", "ls"])
        .env("STRATA_DRIVER", "nosuch")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn conformance_command_runs_cases_and_closes_with_a_summary() {
    let Some(s) = Strata::new("copy") else { return };
    let tmpdir = s.path("cases");
    fs::create_dir_all(&tmpdir).unwrap();
    let listed = s.ok_text(&["conformance", "--list"]);
    let names: Vec<&str> = listed.lines().collect();
    assert!(names.contains(&"create_empty") && names.contains(&"deep_layer_read_128"));
    assert!(names.len() > 50, "{} cases", names.len());

    let out = s.ok_text(&[
        "conformance",
        "--filter",
        "create_",
        "--tmpdir",
        tmpdir.to_str().unwrap(),
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "conformance of driver dir");
    let cases: Vec<&&str> = lines[1..lines.len() - 1].iter().collect();
    assert!(!cases.is_empty());
    assert!(
        cases
            .iter()
            .all(|l| l.contains("create_") && l.ends_with("... ok")),
        "{out}"
    );
    assert_eq!(
        *lines.last().unwrap(),
        format!("{} passed, 0 failed, 0 skipped", cases.len())
    );
    // Every case cleaned up after itself.
    assert_eq!(fs::read_dir(&tmpdir).unwrap().count(), 0);
}

/// Names a layer may hold that must not reach a terminal or a parser raw, each with the line
/// `strata changes` prints for it.
const HOSTILE_NAMES: &[(&[u8], &str)] = &[
    // Not a '/' in it: that would make parent directories, changes of their own.
    (b"a\nD forged", "A /a\\nD forged"),
    (b"esc\x1b[31mred", "A /esc\\x1b[31mred"),
    (b"cr\rx", "A /cr\\rx"),
    (b"back\\slash", "A /back\\\\slash"),
    (b"bad\xff", "A /bad\\xff"),
    (
        "h\u{e9}llo w\u{f6}rld".as_bytes(),
        "A /h\u{e9}llo w\u{f6}rld",
    ),
];

/// No byte a terminal acts on, but the line ends.
fn assert_no_control_bytes(what: &str, bytes: &[u8]) {
    assert!(
        !bytes.iter().any(|&b| (b < 0x20 && b != b'\n') || b == 0x7f),
        "{what} holds a raw control byte: {:?}",
        String::from_utf8_lossy(bytes)
    );
}

#[test]
fn changes_escape_names_and_json_stays_valid() {
    let Some(s) = Strata::new("copy") else { return };
    let tar = s.path("hostile.tar");
    let entries: Vec<Entry> = HOSTILE_NAMES
        .iter()
        .map(|(name, _)| Entry::file(name, "x"))
        .collect();
    write_tar(&tar, &entries, false);
    s.import(&tar, None, "names");

    let text = s.ok(&["changes", "names"]);
    assert_no_control_bytes("strata changes", &text);
    let text = String::from_utf8(text).expect("changes output is UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        HOSTILE_NAMES.len(),
        "one line a change: {lines:?}"
    );
    for (_, want) in HOSTILE_NAMES {
        assert!(lines.contains(want), "{want:?} in {lines:?}");
    }

    let json = s.ok(&["--json", "changes", "names"]);
    let changes: Vec<serde_json::Value> = serde_json::from_slice(&json).expect("valid JSON");
    assert_eq!(changes.len(), HOSTILE_NAMES.len());
    for (name, want) in HOSTILE_NAMES {
        let mut full = b"/".to_vec();
        full.extend_from_slice(name);
        let found = changes.iter().find(|c| {
            let bytes: Vec<u8> = match c.get("path_bytes") {
                Some(b) => b
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| u8::try_from(n.as_u64().unwrap()).unwrap())
                    .collect(),
                None => c["path"].as_str().unwrap().as_bytes().to_vec(),
            };
            bytes == full
        });
        let found = found.unwrap_or_else(|| panic!("{want:?} not round-tripped in {changes:?}"));
        assert_eq!(found["kind"], "add");
        match std::str::from_utf8(&full) {
            // UTF-8 paths are plain JSON strings, with no second field.
            Ok(utf8) => {
                assert_eq!(found["path"], utf8);
                assert!(found.get("path_bytes").is_none(), "{found}");
            }
            // Others: the escaped text form, and the bytes.
            Err(_) => assert_eq!(found["path"], &want[2..]),
        }
    }
}

#[test]
fn error_lines_escape_control_characters() {
    let Some(s) = Strata::new("copy") else { return };
    let out = s.run(&["import", "/no/such/\x1b[2J\rspoof.tar"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_no_control_bytes("the error line", &out.stderr);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("/no/such/\\x1b[2J\\rspoof.tar"), "{err:?}");
}

/// Runs `args` with standard output a pipe whose reader is already gone (`strata ls | head`
/// after head exited); returns the status and stderr.
fn run_into_closed_pipe(s: &Strata, args: &[&str]) -> (std::process::ExitStatus, String) {
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    drop(reader);
    let out = s
        .cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let Some(s) = Strata::new("copy") else { return };
    two_layers(&s);
    for args in [
        &["--json", "ls"][..],
        &["ls"],
        &["--json", "info"],
        &["info"],
        &["--json", "drivers"],
        &["drivers"],
        &["--json", "changes", "child"],
        &["changes", "child"],
        &["--json", "metadata", "child"],
        &["export", "child"],
    ] {
        let (status, stderr) = run_into_closed_pipe(&s, args);
        assert_eq!(
            (status.code(), stderr.as_str()),
            (Some(0), ""),
            "strata {args:?}"
        );
    }
}

#[test]
fn ids_take_unique_prefixes_and_rm_takes_several() {
    let Some(s) = Strata::new("copy") else { return };
    let tar = s.path("one.tar");
    write_tar(&tar, &[Entry::file("one", "1")], false);
    s.import(&tar, None, "abc111");
    // --parent takes a prefix too.
    s.ok(&["create", "--rw", "--id", "abc222", "--parent", "abc1"]);
    s.ok(&["create", "--id", "ab"]);
    s.ok(&["create", "--id", "abd"]);
    let child = s.ls().into_iter().find(|l| l["id"] == "abc222").unwrap();
    assert_eq!(child["parent"], "abc111");

    assert_eq!(s.ok_text(&["changes", "abc1"]), "A /one");
    assert_eq!(s.ok_text(&["changes", "abc2", "--parent", "abc1"]), "");
    // A full id wins over being a prefix of others.
    s.ok(&["mount", "ab"]);
    s.ok(&["umount", "ab"]);
    let path = PathBuf::from(s.ok_text(&["mount", "abc2"]));
    assert_eq!(fs::read(path.join("one")).unwrap(), b"1");
    s.ok(&["umount", "abc2"]);
    s.ok(&["metadata", "abd"]);
    let exported = s.ok(&["export", "abc1"]);
    assert!(!exported.is_empty());

    let err = s.fail(&["mount", "abc"]);
    assert!(
        err.contains("ambiguous") && err.contains("2 layers"),
        "{err}"
    );
    let err = s.fail(&["metadata", "abx"]);
    assert!(err.contains("not found"), "{err}");

    // Several ids, removed in order; each failure reported, the others still removed.
    let out = s.run(&["rm", "abc", "abc2", "nope", "abc1"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines.iter().all(|l| l.starts_with("strata: error: ")),
        "{err}"
    );
    assert!(lines[0].contains("ambiguous"), "{err}");
    assert!(lines[1].contains("nope"), "{err}");
    let mut left: Vec<String> = s
        .ls()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["ab", "abd"]);
    s.ok(&["rm", "ab", "abd"]);
    assert!(s.ls().is_empty());
}

#[test]
fn import_refuses_an_image_archive() {
    let Some(s) = Strata::new("copy") else { return };
    let hex = "a1".repeat(32);
    let manifest =
        format!(r#"[{{"Config":"{hex}.json","RepoTags":["x:1"],"Layers":["{hex}/layer.tar"]}}]"#);
    let blob = format!("blobs/sha256/{hex}");
    let legacy = [
        format!("{hex}/"),
        format!("{hex}/VERSION"),
        format!("{hex}/json"),
    ];
    let images: Vec<(&str, Vec<Entry>)> = vec![
        // docker save, with manifest.json first.
        (
            "docker-archive",
            vec![
                Entry::file("manifest.json", &manifest),
                Entry::file(format!("{hex}.json"), "{}"),
                Entry::dir(format!("{hex}/")),
                Entry::file(format!("{hex}/layer.tar"), vec![0u8; 1024]),
            ],
        ),
        // Older docker save: the layer directories first, manifest.json last.
        (
            "docker-archive",
            vec![
                Entry::dir(&legacy[0]),
                Entry::file(&legacy[1], "1.0"),
                Entry::file(&legacy[2], "{}"),
                Entry::file(format!("{hex}/layer.tar"), vec![0u8; 1024]),
                Entry::file("manifest.json", &manifest),
            ],
        ),
        // An OCI image layout, oci-layout first.
        (
            "OCI image layout",
            vec![
                Entry::file("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#),
                Entry::file("index.json", r#"{"schemaVersion":2,"manifests":[]}"#),
                Entry::dir("blobs/"),
                Entry::dir("blobs/sha256/"),
                Entry::file(&blob, "{}"),
            ],
        ),
        // Docker 25's save (an OCI layout): blobs first, in name order.
        (
            "OCI image layout",
            vec![
                Entry::dir("blobs/"),
                Entry::dir("blobs/sha256/"),
                Entry::file(&blob, "{}"),
                Entry::file("index.json", r#"{"schemaVersion":2,"manifests":[]}"#),
                Entry::file("manifest.json", &manifest),
                Entry::file("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#),
            ],
        ),
    ];
    for (i, (what, entries)) in images.iter().enumerate() {
        let tar = s.path(&format!("image{i}.tar.gz"));
        write_tar(&tar, entries, true);
        let err = s.fail(&["import", "--id", "img", tar.to_str().unwrap()]);
        assert!(
            err.contains(what)
                && err.contains("not a layer")
                && err.contains("strata image import"),
            "image {i}: {err}"
        );
        assert!(s.ls().is_empty(), "image {i} left a layer");
        assert!(!s.path("root/dir/diff/img").exists(), "image {i}");
    }
    // A layer that merely holds a file named manifest.json is a layer.
    let tar = s.path("layer.tar");
    write_tar(
        &tar,
        &[
            Entry::file("manifest.json", r#"{"name":"app"}"#),
            Entry::file("oci-layout.txt", "not a marker"),
        ],
        false,
    );
    s.import(&tar, None, "app");
}
