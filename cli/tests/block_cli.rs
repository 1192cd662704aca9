//! `strata` with the block driver, end to end: import, a writable child, `metadata` showing
//! the mount spec, mount/umount, changes, export and removal, and no loop device or mount left
//! behind. Skips (saying why) where the block driver is not supported (not root, no loop
//! devices, no mkfs.ext4).

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

fn strata(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("STRATA_DRIVER")
        .env_remove("STRATA_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn ok(config: &Path, args: &[&str]) -> String {
    let out = strata(config, args);
    assert!(
        out.status.success(),
        "strata {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

fn loops_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let file = e.path().join("loop/backing_file");
        if let Ok(text) = std::fs::read_to_string(file) {
            if Path::new(text.trim_end()).starts_with(dir) {
                out.push(text.trim_end().to_string());
            }
        }
    }
    out
}

#[test]
fn block_layers_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let config = dir.join("strata.toml");
    std::fs::write(
        &config,
        format!(
            "root = \"{0}/root\"\nrunroot = \"{0}/run\"\ndriver = \"block\"\n\n[drivers.block]\nsize = \"64M\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let drivers: serde_json::Value =
        serde_json::from_str(&ok(&config, &["--json", "drivers"])).unwrap();
    let block = drivers
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "block")
        .expect("a block driver in this build");
    if block["supported"] != true {
        strata_conformance::skip!("block driver not supported here: {}", block["reason"]);
        return;
    }
    assert_eq!(block["capabilities"]["mount_spec"], true);

    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hello"), b"hi\n").unwrap();
    let tar = dir.join("base.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let base = ok(&config, &["import", "--id", "base", tar.to_str().unwrap()]);
    assert_eq!(base, "base");
    ok(
        &config,
        &["create", "--rw", "--parent", "base", "--id", "rw"],
    );

    let md: serde_json::Value =
        serde_json::from_str(&ok(&config, &["--json", "metadata", "base"])).unwrap();
    assert_eq!(md["FsType"], "ext4");
    assert_eq!(md["ReadOnly"], "true");
    assert!(md["Image"].as_str().unwrap().ends_with("/block/base/image"));
    assert!(Path::new(md["Image"].as_str().unwrap()).is_file());
    let text = ok(&config, &["metadata", "rw"]);
    assert!(text.lines().any(|l| l == "ReadOnly: false"), "{text}");
    assert!(text.lines().any(|l| l == "Parent: base"), "{text}");

    let path = ok(&config, &["mount", "rw"]);
    assert_eq!(
        std::fs::read(Path::new(&path).join("etc/hello")).unwrap(),
        b"hi\n"
    );
    std::fs::write(Path::new(&path).join("new"), b"x").unwrap();
    ok(&config, &["umount", "rw"]);
    assert_eq!(ok(&config, &["changes", "rw"]), "A /new");
    let exported = dir.join("rw.tar");
    ok(&config, &["export", "rw", "-o", exported.to_str().unwrap()]);
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&exported)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(listing.stdout).unwrap().trim(), "new");

    ok(&config, &["rm", "rw"]);
    ok(&config, &["rm", "base"]);
    assert_eq!(loops_under(&dir), Vec::<String>::new());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(dir.to_str().unwrap()), "a mount is left");
}
