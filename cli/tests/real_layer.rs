//! A real gzip layer made by GNU tar from a few thousand files of /usr: `strata import` then
//! `strata mount` must show exactly the tree `tar -x` gives.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// What is compared for each path: type and mode, owner, size, mtime, content or link target.
type Tree = BTreeMap<String, (u32, u32, u32, u64, i64, Vec<u8>)>;

fn walk(root: &Path, rel: &str, out: &mut Tree) {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for name in names {
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let full = root.join(&path);
        let md = fs::symlink_metadata(&full).unwrap();
        let body = if md.file_type().is_symlink() {
            fs::read_link(&full)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if md.is_file() {
            fs::read(&full).unwrap()
        } else {
            Vec::new()
        };
        // A directory's mtime changes as its children are written, in both trees alike.
        let mtime = if md.is_dir() { 0 } else { md.mtime() };
        let size = if md.is_dir() { 0 } else { md.size() };
        out.insert(
            path.clone(),
            (md.mode(), md.uid(), md.gid(), size, mtime, body),
        );
        if md.is_dir() {
            walk(root, &path, out);
        }
    }
}

#[test]
fn gzip_layer_of_usr_matches_tar_x() {
    let source = Path::new("/usr/share/doc");
    if !source.is_dir() {
        strata_conformance::skip!("{} is missing on this host", source.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("usr.tar.gz");
    let made = Command::new("tar")
        .args(["--numeric-owner", "-czf"])
        .arg(&layer)
        .args(["-C", "/", "usr/share/doc"])
        .status()
        .expect("GNU tar");
    assert!(made.success());

    let reference = tmp.path().join("reference");
    fs::create_dir(&reference).unwrap();
    let root = rustix::process::geteuid().is_root();
    let mut x = Command::new("tar");
    x.arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&reference)
        .arg("--numeric-owner");
    if root {
        x.args(["--same-owner", "--same-permissions"]);
    }
    assert!(x.status().unwrap().success());

    let config = tmp.path().join("strata.toml");
    fs::write(
        &config,
        format!(
            "root = {:?}\nrunroot = {:?}\ndriver = \"dir\"\n",
            tmp.path().join("root"),
            tmp.path().join("run")
        ),
    )
    .unwrap();
    let strata = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "strata {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let id = strata(&["import", layer.to_str().unwrap()]);
    let merged = strata(&["mount", &id]);

    let mut want = Tree::new();
    walk(&reference, "", &mut want);
    let mut got = Tree::new();
    walk(Path::new(&merged), "", &mut got);
    strata(&["umount", &id]);

    assert!(
        want.len() > 1000,
        "only {} paths in the reference",
        want.len()
    );
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (path, w) in &want {
        let g = &got[path];
        assert_eq!(
            (g.0, g.1, g.2, g.3, g.4),
            (w.0, w.1, w.2, w.3, w.4),
            "{path}: mode, uid, gid, size, mtime"
        );
        assert!(g.5 == w.5, "{path}: content differs");
    }
}
