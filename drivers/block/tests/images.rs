//! The block driver's own tests: sparse clones, reflinks on xfs, a full layer, mount specs,
//! and the sweep of a crash's leftovers. All run as root with real loop devices; elsewhere they
//! skip, saying why.

mod common;

use std::io::Write;
use std::path::Path;

use common::{TestDir, file_tar, rt};
use strata_driver_api::{CreateOpts, Driver, ErrorKind, LayerId, MountOpts};
use strata_driver_block::{BlockDriver, Config, Fs};

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

fn driver(home: &Path, size: u64) -> BlockDriver {
    BlockDriver::new(home.to_path_buf(), Config { size, fs: Fs::Ext4 }).expect("driver")
}

const MIB: u64 = 1 << 20;

/// A 10 GiB image holding 50 MiB clones with about 50 MiB allocated: only the allocated
/// extents move (or are shared, on a reflinking filesystem), never the apparent size.
#[test]
fn clone_moves_only_allocated_blocks() {
    need_block!();
    let t = TestDir::new();
    let home = t.path().join("block");
    rt(async {
        let d = driver(&home, 10 << 30);
        let (base, child) = (id("base"), id("child"));
        d.create(&base, None, &CreateOpts::default()).await.unwrap();
        let empty = d.allocated(&base).unwrap();
        d.apply_diff(&base, None, file_tar("fifty", 50 << 20))
            .await
            .unwrap();
        let parent_alloc = d.allocated(&base).unwrap();
        assert!(
            parent_alloc >= empty + 50 * MIB,
            "the parent holds {parent_alloc} bytes after 50 MiB were written"
        );
        d.create(&child, Some(&base), &CreateOpts::default())
            .await
            .unwrap();
        let md: std::collections::HashMap<_, _> =
            d.metadata(&child).await.unwrap().into_iter().collect();
        assert_eq!(md["Size"], (10u64 << 30).to_string());
        let alloc: u64 = md["Allocated"].parse().unwrap();
        assert_eq!(alloc, d.allocated(&child).unwrap());
        assert!(
            alloc >= 50 * MIB && alloc <= parent_alloc + MIB,
            "the clone allocates {alloc} bytes; its parent {parent_alloc}"
        );
        assert!(alloc < 80 * MIB, "the clone allocates {alloc} bytes");
        // The clone holds the parent's file.
        let p = d.get(&child, &MountOpts::default()).await.unwrap();
        let len = std::fs::metadata(p.join("fifty")).unwrap().len();
        d.put(&child).await.unwrap();
        assert_eq!(len, 50 << 20);
        d.cleanup().await.unwrap();
    });
    t.assert_clean();
}

/// On an xfs backing filesystem (made on a loop file here), a child's image is a reflink of
/// its parent's: the backing filesystem's free space barely moves.
#[test]
fn reflink_on_xfs() {
    need_block!();
    if std::process::Command::new("mkfs.xfs")
        .arg("-V")
        .output()
        .is_err()
    {
        strata_conformance::skip!("mkfs.xfs not found (install xfsprogs)");
        return;
    }
    let t = TestDir::new();
    let backing = t.path().join("xfs.img");
    let mnt = t.path().join("xfs");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let out = std::process::Command::new("mkfs.xfs")
        .args(["-q", "-f", "-m", "reflink=1"])
        .arg(&backing)
        .output()
        .unwrap();
    assert!(out.status.success(), "mkfs.xfs: {out:?}");
    std::fs::create_dir(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-o", "loop"])
        .arg(&backing)
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount the xfs backing filesystem");
    let home = mnt.join("block");
    rt(async {
        let d = driver(&home, 256 * MIB);
        assert!(d.reflink(), "FICLONE does not work on xfs with reflink=1");
        let status: std::collections::HashMap<_, _> = d.status().into_iter().collect();
        assert_eq!(status["Clone"], "reflink");
        let (base, child) = (id("base"), id("child"));
        d.create(&base, None, &CreateOpts::default()).await.unwrap();
        d.apply_diff(&base, None, file_tar("forty", 40 << 20))
            .await
            .unwrap();
        let free = |p: &Path| {
            let s = rustix::fs::statvfs(p).unwrap();
            s.f_bfree * s.f_frsize
        };
        let before = free(&home);
        d.create(&child, Some(&base), &CreateOpts::default())
            .await
            .unwrap();
        let after = free(&home);
        assert!(
            before.saturating_sub(after) < 4 * MIB,
            "a reflink clone of a 40 MiB image took {} bytes",
            before.saturating_sub(after)
        );
        let p = d.get(&child, &MountOpts::default()).await.unwrap();
        let data = std::fs::read(p.join("forty")).unwrap();
        d.put(&child).await.unwrap();
        assert_eq!(data.len(), 40 << 20);
        assert_eq!(data[1000], (1000 % 251) as u8);
        d.cleanup().await.unwrap();
    });
    let st = std::process::Command::new("umount")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    t.assert_clean();
}

/// Writing past the image's size is ENOSPC inside the layer; the layer is then removed
/// cleanly and nothing stays attached.
#[test]
fn full_layer_then_remove() {
    need_block!();
    let t = TestDir::new();
    let home = t.path().join("block");
    rt(async {
        let d = driver(&home, 64 * MIB);
        let a = id("full");
        d.create_rw(&a, None, &CreateOpts::default()).await.unwrap();
        let p = d.get(&a, &MountOpts::default()).await.unwrap();
        let err = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::create(p.join("big")).unwrap();
            let chunk = vec![0x5au8; 1 << 20];
            for _ in 0..128 {
                if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_data()) {
                    return Some(e);
                }
            }
            None
        })
        .await
        .unwrap();
        let err = err.expect("128 MiB fit into a 64 MiB layer");
        assert_eq!(err.raw_os_error(), Some(28), "expected ENOSPC, got {err}");
        d.put(&a).await.unwrap();
        assert!(!d.is_mounted(&a).await.unwrap());
        // The full layer still mounts and reads, then goes away whole.
        let p = d.get(&a, &MountOpts::default()).await.unwrap();
        assert!(std::fs::metadata(p.join("big")).unwrap().len() > 32 * MIB);
        d.put(&a).await.unwrap();
        d.remove(&a, false).await.unwrap();
        assert!(!d.exists(&a).await.unwrap());
        assert!(!home.join("full").exists());
    });
    t.assert_clean();
}

/// The mount spec says where the image is and how to mount it, without mounting; metadata
/// shows it; image layers are read-only, container layers not.
#[test]
fn mount_spec_and_metadata() {
    need_block!();
    let t = TestDir::new();
    let home = t.path().join("block");
    rt(async {
        let d = driver(&home, 64 * MIB);
        let (img, rw) = (id("img"), id("rw"));
        d.create(&img, None, &CreateOpts::default()).await.unwrap();
        d.create_rw(&rw, Some(&img), &CreateOpts::default())
            .await
            .unwrap();
        let spec = d.mount_spec(&img).unwrap();
        assert_eq!(spec.image, home.canonicalize().unwrap().join("img/image"));
        assert_eq!(spec.fs_type, "ext4");
        assert!(spec.read_only);
        assert!(!d.mount_spec(&rw).unwrap().read_only);
        assert!(!d.is_mounted(&img).await.unwrap(), "mount_spec mounted");
        let md: std::collections::HashMap<_, _> =
            d.metadata(&rw).await.unwrap().into_iter().collect();
        assert_eq!(md["FsType"], "ext4");
        assert_eq!(md["ReadOnly"], "false");
        assert_eq!(md["Parent"], "img");
        assert_eq!(md["Kind"], "container");
        assert_eq!(
            d.mount_spec(&id("ghost")).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(d.caps().mount_spec && d.caps().read_only_images);
    });
    t.assert_clean();
}

/// Image layers mount read-only even when asked for read-write; the parent and the child
/// mount at once, each on its own loop device.
#[test]
fn image_layers_are_read_only_and_stack() {
    need_block!();
    let t = TestDir::new();
    let home = t.path().join("block");
    rt(async {
        let d = driver(&home, 64 * MIB);
        let (a, b) = (id("a"), id("b"));
        d.create(&a, None, &CreateOpts::default()).await.unwrap();
        d.apply_diff(&a, None, file_tar("in-a", 10)).await.unwrap();
        d.create(&b, Some(&a), &CreateOpts::default())
            .await
            .unwrap();
        d.apply_diff(&b, Some(&a), file_tar("in-b", 10))
            .await
            .unwrap();
        let pa = d.get(&a, &MountOpts::default()).await.unwrap();
        let pb = d.get(&b, &MountOpts::default()).await.unwrap();
        assert!(pb.join("in-a").exists() && pb.join("in-b").exists());
        assert!(!pa.join("in-b").exists());
        let e = std::fs::write(pa.join("new"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(30));
        assert_eq!(common::loops_under(t.path()).len(), 2);
        // apply_diff onto a mounted layer is Busy.
        assert_eq!(
            d.apply_diff(&b, Some(&a), file_tar("late", 1))
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::Busy
        );
        d.put(&a).await.unwrap();
        d.put(&b).await.unwrap();
    });
    t.assert_clean();
}

/// What a crash leaves (a loop device attached to a layer's image that nothing mounts, a
/// mount of a half-made layer, half-made files) is cleared by the next driver on this home;
/// a layer mounted at its own mount point is adopted instead; another home's loop device is
/// never touched.
#[test]
fn new_sweeps_a_crash_but_adopts_mounts() {
    need_block!();
    let t = TestDir::new();
    let home = t.path().join("block");
    let other = t.path().join("other.img");
    std::fs::File::create(&other)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    let losetup = |args: &[&str], file: &Path| {
        let out = std::process::Command::new("losetup")
            .args(args)
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    rt(async {
        let d = driver(&home, 64 * MIB);
        let (kept, stray) = (id("kept"), id("stray"));
        d.create_rw(&kept, None, &CreateOpts::default())
            .await
            .unwrap();
        d.create_rw(&stray, None, &CreateOpts::default())
            .await
            .unwrap();
        d.get(&kept, &MountOpts::default()).await.unwrap();
        drop(d);
        // The crash's leftovers: a loop device on a layer's image nothing mounts, a half-made
        // layer directory, and someone else's loop device outside the home.
        let dev = losetup(&["--find", "--show"], &home.join("stray/image"));
        std::fs::create_dir(home.join(".tmp-x-1-1")).unwrap();
        let foreign = losetup(&["--find", "--show"], &other);
        let d = driver(&home, 64 * MIB);
        let left: Vec<_> = common::loops_under(&home);
        assert_eq!(
            left.len(),
            1,
            "only the adopted mount's device stays: {left:?}"
        );
        assert!(
            !Path::new(&format!(
                "/sys/block/{}/loop/backing_file",
                dev.trim_start_matches("/dev/")
            ))
            .exists(),
            "the stray loop device is still attached"
        );
        assert!(!home.join(".tmp-x-1-1").exists());
        assert!(d.is_mounted(&kept).await.unwrap());
        d.put(&kept).await.unwrap();
        assert!(!d.is_mounted(&kept).await.unwrap());
        assert_eq!(
            common::loops_under(&other),
            vec![(
                foreign
                    .trim_start_matches("/dev/loop")
                    .parse::<u32>()
                    .unwrap(),
                other.clone()
            )]
        );
        let st = std::process::Command::new("losetup")
            .args(["-d", &foreign])
            .status()
            .unwrap();
        assert!(st.success());
    });
    t.assert_clean();
}

/// xfs inside the images: a child is a clone with its parent's UUID, so both mount at once
/// only with `nouuid`; the naive diff between them works.
#[test]
fn xfs_images_stack_and_diff() {
    need_block!();
    if std::process::Command::new("mkfs.xfs")
        .arg("-V")
        .output()
        .is_err()
    {
        strata_conformance::skip!("mkfs.xfs not found (install xfsprogs)");
        return;
    }
    let t = TestDir::new();
    let home = t.path().join("block");
    rt(async {
        let d = BlockDriver::new(
            home.clone(),
            Config {
                size: 320 * MIB,
                fs: Fs::Xfs,
            },
        )
        .unwrap();
        let (a, b) = (id("a"), id("b"));
        d.create(&a, None, &CreateOpts::default()).await.unwrap();
        d.apply_diff(&a, None, file_tar("in-a", 10)).await.unwrap();
        d.create(&b, Some(&a), &CreateOpts::default())
            .await
            .unwrap();
        d.apply_diff(&b, Some(&a), file_tar("in-b", 20))
            .await
            .unwrap();
        let changes = d.changes(&b, Some(&a)).await.unwrap();
        let shown: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
        assert_eq!(shown, ["A /in-b"]);
        assert_eq!(d.diff_size(&b, Some(&a)).await.unwrap(), 20);
        let spec = d.mount_spec(&b).unwrap();
        assert_eq!(spec.fs_type, "xfs");
        assert!(spec.options.iter().any(|o| o == "nouuid"));
        let pb = d.get(&b, &MountOpts::default()).await.unwrap();
        assert!(pb.join("in-a").exists() && pb.join("in-b").exists());
        d.put(&b).await.unwrap();
    });
    t.assert_clean();
}

/// A child of a container layer that is mounted read-write is cloned from a frozen, clean
/// filesystem: it holds what was written so far and mounts read-only (no journal to replay).
#[test]
fn child_of_a_mounted_writable_layer() {
    need_block!();
    let t = TestDir::new();
    let home = t.path().join("block");
    rt(async {
        let d = driver(&home, 64 * MIB);
        let (rw, img) = (id("rw"), id("img"));
        d.create_rw(&rw, None, &CreateOpts::default())
            .await
            .unwrap();
        let p = d.get(&rw, &MountOpts::default()).await.unwrap();
        std::fs::write(p.join("written"), b"while mounted").unwrap();
        d.create(&img, Some(&rw), &CreateOpts::default())
            .await
            .unwrap();
        // The parent is usable again (thawed), and the freeze's marker is gone.
        std::fs::write(p.join("after"), b"later").unwrap();
        assert!(!home.join("rw/freezing").exists());
        let pi = d.get(&img, &MountOpts::default()).await.unwrap();
        assert_eq!(std::fs::read(pi.join("written")).unwrap(), b"while mounted");
        assert!(!pi.join("after").exists());
        d.put(&img).await.unwrap();
        d.put(&rw).await.unwrap();
    });
    t.assert_clean();
}

/// An image whose journal needs replaying (as after a power cut while it was mounted
/// read-write; made here by copying the image of a mounted layer) still mounts read-only: the
/// driver replays the journal through one read-write mount first.
#[test]
fn image_with_a_journal_to_replay_mounts_read_only() {
    need_block!();
    let t = TestDir::new();
    let home = t.path().join("block");
    rt(async {
        let d = driver(&home, 64 * MIB);
        let (rw, img) = (id("rw"), id("img"));
        d.create_rw(&rw, None, &CreateOpts::default())
            .await
            .unwrap();
        d.create(&img, None, &CreateOpts::default()).await.unwrap();
        let p = d.get(&rw, &MountOpts::default()).await.unwrap();
        std::fs::write(p.join("journaled"), b"data").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        rustix::fs::syncfs(&f).unwrap();
        drop(f);
        // The copy of a mounted ext4 image has needs_recovery set.
        let dst = home.join("img/image");
        std::fs::copy(home.join("rw/image"), &dst).unwrap();
        d.put(&rw).await.unwrap();
        let pi = d.get(&img, &MountOpts::default()).await.unwrap();
        assert_eq!(std::fs::read(pi.join("journaled")).unwrap(), b"data");
        d.put(&img).await.unwrap();
    });
    t.assert_clean();
}

/// Thaws `mnt` when dropped, however the test ends: a frozen filesystem left behind would hang
/// every later write to it.
struct ThawOnDrop(std::path::PathBuf);

impl Drop for ThawOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Whether the filesystem at `mnt` is frozen: `fsfreeze -u` succeeds only on a frozen one (and
/// thaws it, so call this last).
fn was_frozen(mnt: &Path) -> bool {
    std::process::Command::new("fsfreeze")
        .arg("-u")
        .arg(mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run fsfreeze")
        .success()
}

/// Issue 12, item 8: a process killed while a writable parent is frozen for a child's clone
/// leaves it frozen (writes hang); the next start thaws it, even while another instance lives.
/// A freeze the driver did not make (an administrator's `fsfreeze`) is left alone.
#[test]
fn a_killed_clones_freeze_is_thawed_at_start() {
    need_block!();
    if std::process::Command::new("fsfreeze")
        .arg("-V")
        .output()
        .is_err()
    {
        strata_conformance::skip!("no fsfreeze(8)");
        return;
    }
    let t = TestDir::new();
    let home = t.path().join("block");
    rt(async {
        let d = driver(&home, 64 * MIB);
        let (killed, admin) = (id("killed"), id("admin"));
        for layer in [&killed, &admin] {
            d.create_rw(layer, None, &CreateOpts::default())
                .await
                .unwrap();
        }
        let mk = d.get(&killed, &MountOpts::default()).await.unwrap();
        let ma = d.get(&admin, &MountOpts::default()).await.unwrap();
        let _thaw = (ThawOnDrop(mk.clone()), ThawOnDrop(ma.clone()));
        // What a clone killed mid-freeze leaves: the marker (its lock gone with the process)
        // and the filesystem frozen.
        std::fs::write(home.join("killed/freezing"), b"").unwrap();
        for m in [&mk, &ma] {
            let status = std::process::Command::new("fsfreeze")
                .arg("-f")
                .arg(m)
                .status()
                .unwrap();
            assert!(status.success());
        }
        // Another instance starts while `d` lives.
        let again = driver(&home, 64 * MIB);
        assert!(!was_frozen(&mk), "the killed clone's freeze is still there");
        assert!(!home.join("killed/freezing").exists());
        assert!(was_frozen(&ma), "an administrator's freeze was thawed");
        std::fs::write(mk.join("after"), b"writable again").unwrap();
        drop(again);
        d.put(&killed).await.unwrap();
        d.put(&admin).await.unwrap();
    });
    t.assert_clean();
}

/// Issue 12, item 15: when the backing filesystem fills up under a sparse image, the layer's
/// filesystem sees I/O errors, not ENOSPC; the driver checks the backing filesystem's free
/// space against what the image may still grow by and says so (`NoSpace`, naming it).
#[test]
fn a_full_backing_filesystem_is_no_space() {
    need_block!();
    let t = TestDir::new();
    let img = t.path().join("backing.img");
    let backing = t.path().join("backing");
    std::fs::create_dir(&backing).unwrap();
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(48 * MIB).unwrap();
    drop(f);
    let mkfs = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(mkfs.success());
    let mount = std::process::Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&backing)
        .status()
        .unwrap();
    assert!(mount.success());
    let home = backing.join("block");
    rt(async {
        let d = driver(&home, 128 * MIB);
        let big = id("big");
        d.create(&big, None, &CreateOpts::default()).await.unwrap();
        let err = d
            .apply_diff(&big, None, file_tar("f", 96 * MIB as usize))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoSpace, "{err:#}");
        let text = format!("{err:#}");
        assert!(text.contains("backing filesystem"), "{text}");
        d.remove(&big, true).await.unwrap();
    });
    // The test's own backing mount (its loop device goes with it: `mount -o loop` autoclears).
    let umount = std::process::Command::new("umount")
        .arg(&backing)
        .status()
        .unwrap();
    assert!(umount.success());
    t.assert_clean();
}
