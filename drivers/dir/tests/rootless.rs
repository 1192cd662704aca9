//! The driver as an unprivileged user. Run as root (as CI does), the test drops one thread to
//! `nobody` (credentials are per thread on Linux) and runs the scenario there, with a runtime
//! whose blocking threads inherit those credentials.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use strata_driver_api::{CreateOpts, Driver, MountOpts};
use strata_driver_dir::{Config, DirDriver, MountMode};

const NOBODY: u32 = 65534;

fn as_unprivileged(home: &Path, scenario: fn(&Path, Config), config: Config) {
    let home = home.to_path_buf();
    std::thread::spawn(move || {
        if is_root() {
            use rustix::thread::{set_thread_res_gid, set_thread_res_uid};
            let g = rustix::fs::Gid::from_raw(NOBODY);
            let u = rustix::fs::Uid::from_raw(NOBODY);
            rustix::thread::set_thread_groups(&[]).unwrap();
            set_thread_res_gid(g, g, g).unwrap();
            set_thread_res_uid(u, u, u).unwrap();
        }
        assert!(!is_root());
        scenario(&home, config);
    })
    .join()
    .unwrap();
}

fn scenario(home: &Path, config: Config) {
    if config.mount == MountMode::Fuse {
        if let Err(why) = strata_driver_dir::fuse::usable() {
            strata_conformance::skip::print(
                "unprivileged_user_round_trip_fuse",
                format_args!("FUSE is not usable by uid {NOBODY}: {why}"),
            );
            return;
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let d = DirDriver::new(home.join("dir"), config).unwrap();
        let none = CreateOpts::default();
        d.create_rw(&id("base"), None, &none).await.unwrap();
        let v = d.get(&id("base"), &MountOpts::default()).await.unwrap();
        // graphtest's "a file": write-only for its owner, setuid.
        fs::write(v.join("a file"), b"Some data").unwrap();
        chmod(&v.join("a file"), 0o4222);
        put_file(&v, "ro/inner", "i");
        chmod(&v.join("ro"), 0o555);
        put_file(&v, "secret", "s");
        chmod(&v.join("secret"), 0o000);
        d.put(&id("base")).await.unwrap();

        d.create_rw(&id("child"), Some(&id("base")), &none)
            .await
            .unwrap();
        let v = d.get(&id("child"), &MountOpts::default()).await.unwrap();
        let m = fs::metadata(v.join("a file")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o4222);
        assert_eq!(m.uid(), NOBODY);
        chmod(&v.join("ro"), 0o755);
        fs::remove_file(v.join("ro/inner")).unwrap();
        chmod(&v.join("ro"), 0o555);
        d.put(&id("child")).await.unwrap();

        let ro = MountOpts {
            read_only: true,
            ..MountOpts::default()
        };
        let v = d.get(&id("child"), &ro).await.unwrap();
        let view = describe_paths(&v);
        assert_eq!(view, ["a file", "ro", "secret"]);
        d.put(&id("child")).await.unwrap();
        d.remove(&id("child"), false).await.unwrap();
        d.remove(&id("base"), false).await.unwrap();
    });
}

fn describe_paths(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

fn unprivileged_home() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    if is_root() {
        let t = tmp.path();
        rustix::fs::chown(
            t,
            Some(rustix::fs::Uid::from_raw(NOBODY)),
            Some(rustix::fs::Gid::from_raw(NOBODY)),
        )
        .unwrap();
    }
    tmp
}

#[test]
fn unprivileged_user_round_trip() {
    let tmp = unprivileged_home();
    as_unprivileged(tmp.path(), scenario, common::copy_mode());
}

/// The same as an unprivileged user's FUSE views: mounted and unmounted through fusermount3.
#[test]
fn unprivileged_user_round_trip_fuse() {
    let tmp = unprivileged_home();
    let fuse = Config {
        mount: MountMode::Fuse,
        fuse_helper: Some(env!("CARGO_BIN_EXE_strata-dir-fuse").into()),
    };
    as_unprivileged(tmp.path(), scenario, fuse);
}
