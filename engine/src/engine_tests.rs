//! The engine over the fake driver: records, recovery, locks, refcounts.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};
use strata_driver_api::{ErrorKind, LayerId};
use tokio::io::AsyncReadExt;

use crate::lock::LockFile;
use crate::mounts::MountStore;
use crate::store::{LayerRecord, LayerStore};
use crate::testing::{self, Knobs};
use crate::{CreateRequest, Engine, ImportRequest};
use strata_driver_api::LayerKind;

struct Fixture {
    tmp: tempfile::TempDir,
    knobs: Arc<Knobs>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            tmp: tempfile::tempdir().unwrap(),
            knobs: Arc::default(),
        }
    }

    async fn open(&self) -> Engine {
        Engine::open_with(
            testing::config(self.tmp.path(), "fake"),
            testing::registry("fake", &self.knobs),
        )
        .await
        .unwrap()
    }

    fn home(&self) -> std::path::PathBuf {
        self.tmp.path().join("root/fake")
    }

    fn store(&self) -> LayerStore {
        LayerStore::new(self.tmp.path().join("root/fake-layers"))
    }
}

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn create(id_: &str, parent: Option<&str>, rw: bool) -> CreateRequest {
    CreateRequest {
        id: Some(id(id_)),
        parent: parent.map(id),
        rw,
        names: Vec::new(),
    }
}

fn import_req(id_: &str, parent: Option<&str>) -> ImportRequest {
    ImportRequest {
        id: Some(id(id_)),
        parent: parent.map(id),
        names: Vec::new(),
    }
}

#[tokio::test]
async fn create_records_layers() {
    let f = Fixture::new();
    let e = f.open().await;
    let base = e.create(create("base", None, false)).await.unwrap();
    assert_eq!(base.kind, LayerKind::Image);
    assert!(!base.incomplete && base.parent.is_none() && base.diff_digest.is_none());
    let child = e.create(create("child", Some("base"), true)).await.unwrap();
    assert_eq!(child.kind, LayerKind::Container);
    assert_eq!(child.parent, Some(id("base")));
    let random = e.create(CreateRequest::default()).await.unwrap();
    assert_eq!(random.id.as_str().len(), 64);

    let list = e.list().await.unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|l| l.mounts == 0 && !l.record.incomplete));
    assert_eq!(e.layer(&id("child")).await.unwrap(), child);
    assert_eq!(e.info().await.unwrap().layers, 3);
    // Records are on disk, beside the driver's home.
    assert!(f.tmp.path().join("root/fake-layers/child.json").is_file());
}

#[tokio::test]
async fn create_refuses_duplicates_and_missing_parents() {
    let f = Fixture::new();
    let e = f.open().await;
    e.create(create("a", None, false)).await.unwrap();
    let dup = e.create(create("a", None, false)).await.unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists);
    let orphan = e
        .create(create("b", Some("nope"), false))
        .await
        .unwrap_err();
    assert_eq!(orphan.kind(), ErrorKind::ParentNotFound);
    assert!(e.layer(&id("b")).await.is_err());

    let named = CreateRequest {
        names: vec!["web".into()],
        ..CreateRequest::default()
    };
    e.create(named.clone()).await.unwrap();
    assert_eq!(
        e.create(named).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(e.list().await.unwrap().len(), 2);
}

#[tokio::test]
async fn import_hashes_the_uncompressed_stream() {
    let f = Fixture::new();
    let e = f.open().await;
    let plain: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();

    let rec = e
        .import(
            std::io::Cursor::new(plain.clone()),
            import_req("plain", None),
        )
        .await
        .unwrap();
    assert_eq!(rec.diff_digest.as_deref(), Some(sha(&plain).as_str()));
    assert_eq!(rec.size, plain.len() as u64);
    assert!(!rec.incomplete);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let rec = e
        .import(std::io::Cursor::new(gz), import_req("gz", Some("plain")))
        .await
        .unwrap();
    assert_eq!(rec.diff_digest.as_deref(), Some(sha(&plain).as_str()));
    assert_eq!(rec.parent, Some(id("plain")));
    // The driver got the uncompressed bytes.
    assert_eq!(testing::read(&f.home().join("layers/gz/content")), plain);
}

#[tokio::test]
async fn digest_covers_bytes_the_driver_never_read() {
    let f = Fixture::new();
    let e = f.open().await;
    f.knobs.read_only_first.store(1000, Ordering::SeqCst);
    // Within limits.max_trailing (1 MiB by default) of what follows the driver's last read.
    let data = vec![7u8; 900_000];
    let rec = e
        .import(std::io::Cursor::new(data.clone()), import_req("a", None))
        .await
        .unwrap();
    assert_eq!(rec.size, 1000);
    assert_eq!(rec.diff_digest.as_deref(), Some(sha(&data).as_str()));
}

#[tokio::test]
async fn failed_import_leaves_nothing() {
    let f = Fixture::new();
    let e = f.open().await;
    f.knobs.fail_apply.store(true, Ordering::SeqCst);
    let err = e
        .import(
            std::io::Cursor::new(vec![1u8; 100_000]),
            import_req("bad", None),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArchive);
    f.knobs.fail_apply.store(false, Ordering::SeqCst);

    // A stream that claims gzip and is not.
    let mut junk = vec![0x1f, 0x8b, 0x08, 0x00];
    junk.extend(vec![0xffu8; 5000]);
    let err = e
        .import(std::io::Cursor::new(junk), import_req("junk", None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArchive);

    assert!(e.list().await.unwrap().is_empty());
    assert!(!f.home().join("layers/bad").exists());
    assert!(!f.home().join("layers/junk").exists());
}

#[tokio::test]
async fn apply_fills_an_empty_layer_once() {
    let f = Fixture::new();
    let e = f.open().await;
    e.create(create("a", None, false)).await.unwrap();
    let rec = e
        .apply(&id("a"), std::io::Cursor::new(b"hello".to_vec()))
        .await
        .unwrap();
    assert_eq!(rec.diff_digest.as_deref(), Some(sha(b"hello").as_str()));
    let again = e
        .apply(&id("a"), std::io::Cursor::new(b"x".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::InvalidInput);

    // A failed apply leaves the layer empty and usable.
    e.create(create("b", None, false)).await.unwrap();
    f.knobs.fail_apply.store(true, Ordering::SeqCst);
    let err = e
        .apply(&id("b"), std::io::Cursor::new(b"zzz".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArchive);
    f.knobs.fail_apply.store(false, Ordering::SeqCst);
    let b = e.layer(&id("b")).await.unwrap();
    assert!(!b.incomplete && b.diff_digest.is_none());
    assert!(!f.home().join("layers/b/content").exists());
    e.apply(&id("b"), std::io::Cursor::new(b"ok".to_vec()))
        .await
        .unwrap();

    e.create(create("c", None, false)).await.unwrap();
    e.create(create("d", Some("c"), false)).await.unwrap();
    let err = e
        .apply(&id("c"), std::io::Cursor::new(b"x".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HasChildren);
    let err = e
        .apply(&id("zz"), std::io::Cursor::new(b"x".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn export_and_changes() {
    let f = Fixture::new();
    let e = f.open().await;
    e.import(
        std::io::Cursor::new(b"tarbytes".to_vec()),
        import_req("a", None),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    e.export(&id("a"), None)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    assert_eq!(out, b"tarbytes");
    let changes = e.changes(&id("a"), None).await.unwrap();
    assert_eq!(changes.len(), 1);
    let err = e.export(&id("a"), Some(&id("nope"))).await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::ParentNotFound);
    let err = e.changes(&id("nope"), None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn remove_checks_children_and_mounts() {
    let f = Fixture::new();
    let e = f.open().await;
    e.create(create("p", None, false)).await.unwrap();
    e.create(create("c", Some("p"), true)).await.unwrap();
    let err = e.remove(&id("p"), false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HasChildren);
    let err = e.remove(&id("p"), true).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HasChildren);

    let path = e.mount(&id("c")).await.unwrap().keep();
    assert!(path.ends_with("mnt/c"));
    let err = e.remove(&id("c"), false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert!(e.layer(&id("c")).await.is_ok());

    e.remove(&id("c"), true).await.unwrap();
    assert_eq!(
        e.layer(&id("c")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(e.load_mounts().await.unwrap().count(&id("c")), 0);
    e.remove(&id("p"), false).await.unwrap();
    assert!(e.list().await.unwrap().is_empty());
    assert!(!f.home().join("layers/p").exists());
    let err = e.remove(&id("p"), false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn mounts_are_refcounted_across_engines() {
    let f = Fixture::new();
    let a = f.open().await;
    let b = f.open().await;
    a.create(create("l", None, true)).await.unwrap();
    let first = a.mount(&id("l")).await.unwrap();
    let second = b.mount(&id("l")).await.unwrap();
    assert_eq!(first.path(), second.path());
    assert_eq!(
        f.knobs.gets.load(Ordering::SeqCst),
        1,
        "second mount reuses"
    );
    let listed = b.list().await.unwrap();
    assert_eq!(listed[0].mounts, 2);

    first.unmount().await.unwrap();
    assert_eq!(f.knobs.puts.load(Ordering::SeqCst), 0);
    assert_eq!(a.list().await.unwrap()[0].mounts, 1);
    second.unmount().await.unwrap();
    assert_eq!(f.knobs.puts.load(Ordering::SeqCst), 1);
    assert_eq!(a.list().await.unwrap()[0].mounts, 0);
    assert!(!a.driver().is_mounted(&id("l")).await.unwrap());

    // Unmounting what is not mounted is harmless; a missing layer is not.
    a.unmount(&id("l")).await.unwrap();
    assert_eq!(
        a.unmount(&id("zz")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        a.mount(&id("zz")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_guard_releases() {
    let f = Fixture::new();
    let e = f.open().await;
    e.create(create("l", None, true)).await.unwrap();
    {
        let _guard = e.mount(&id("l")).await.unwrap();
        assert_eq!(e.list().await.unwrap()[0].mounts, 1);
    }
    // The release runs as a task of its own: wait for the refcount table to say it ran (it is
    // written, atomically, after the driver's put).
    let table = MountStore::new(testing::config(f.tmp.path(), "fake").run_dir("fake"));
    testing::wait_until("the dropped guard to release its mount", || {
        table.load().unwrap().count(&id("l")) == 0
    })
    .await;
    assert_eq!(e.list().await.unwrap()[0].mounts, 0);
    assert!(!e.driver().is_mounted(&id("l")).await.unwrap());
}

#[test]
fn dropping_the_guard_outside_a_runtime_releases() {
    let f = Fixture::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (e, guard) = rt.block_on(async {
        let e = f.open().await;
        e.create(create("l", None, true)).await.unwrap();
        let g = e.mount(&id("l")).await.unwrap();
        (e, g)
    });
    drop(guard);
    let mounts = rt.block_on(async { e.list().await.unwrap()[0].mounts });
    assert_eq!(mounts, 0);
}

#[tokio::test]
async fn a_view_unmounted_behind_our_back_is_remounted() {
    let f = Fixture::new();
    let e = f.open().await;
    e.create(create("l", None, true)).await.unwrap();
    let _kept = e.mount(&id("l")).await.unwrap().keep();
    testing::fake(&f.home()).vanish_mount(&id("l"));
    let again = e.mount(&id("l")).await.unwrap();
    assert_eq!(f.knobs.gets.load(Ordering::SeqCst), 2);
    assert_eq!(e.list().await.unwrap()[0].mounts, 1);
    again.unmount().await.unwrap();
}

#[tokio::test]
async fn open_recovers_crashed_operations() {
    let f = Fixture::new();
    {
        let e = f.open().await;
        e.create(create("ok", None, false)).await.unwrap();
        e.create(create("mounted", None, true)).await.unwrap();
        let _ = e.mount(&id("mounted")).await.unwrap().keep();
    }
    // A crash mid-import: driver data and an incomplete record, plus a half-written temp file.
    let store = f.store();
    std::fs::create_dir_all(f.home().join("layers/crashed")).unwrap();
    store
        .save(&LayerRecord {
            id: id("crashed"),
            parent: None,
            kind: LayerKind::Image,
            created: "2024-01-01T00:00:00Z".into(),
            diff_digest: None,
            size: 0,
            names: vec![],
            incomplete: true,
        })
        .unwrap();
    std::fs::write(store.dir().join(".tmp-xyz"), b"{").unwrap();
    // And the mounted layer was unmounted by a reboot-like event.
    testing::fake(&f.home()).vanish_mount(&id("mounted"));

    let e = f.open().await;
    let ids: Vec<_> = e
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.record.id.to_string(), l.mounts))
        .collect();
    assert_eq!(ids, [("mounted".to_string(), 0), ("ok".to_string(), 0)]);
    assert!(!f.home().join("layers/crashed").exists());
    assert!(!store.dir().join(".tmp-xyz").exists());
}

#[tokio::test]
async fn recovery_leaves_a_live_writers_layer_alone() {
    let f = Fixture::new();
    drop(f.open().await);
    let store = f.store();
    std::fs::create_dir_all(f.home().join("layers/inflight")).unwrap();
    store
        .save(&LayerRecord {
            id: id("inflight"),
            parent: None,
            kind: LayerKind::Image,
            created: "2024-01-01T00:00:00Z".into(),
            diff_digest: None,
            size: 0,
            names: vec![],
            incomplete: true,
        })
        .unwrap();
    let writer = LockFile::new(store.dir().join("layers.lock"))
        .exclusive()
        .unwrap();
    let e = f.open().await;
    drop(writer);
    assert!(f.home().join("layers/inflight").exists());
    // Incomplete layers are not usable meanwhile.
    assert_eq!(
        e.mount(&id("inflight")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    drop(e);
    let e = f.open().await;
    assert!(e.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_exclude_each_other_across_engines() {
    let f = Fixture::new();
    let a = f.open().await;
    let b = f.open().await;
    let (mut tx, rx) = tokio::io::duplex(64 * 1024);
    let importing = tokio::spawn({
        let a = a.clone();
        async move { a.import(rx, import_req("slow", None)).await }
    });
    // The import writes its record holding the layers lock, and holds it until the stream,
    // which only this test can end, ends.
    let record = f.store().dir().join("slow.json");
    testing::wait_until("the import to write its record", || record.exists()).await;
    let creating = tokio::spawn(async move { b.create(create("other", None, false)).await });
    // Either the second writer is seen blocked on the lock, or it got through (a failure).
    let lock = f.store().dir().join("layers.lock");
    testing::wait_until("the second writer to block or finish", || {
        testing::lock_waiters(&lock) > 0 || creating.is_finished()
    })
    .await;
    assert!(
        !creating.is_finished(),
        "a second writer ran during an import"
    );
    use tokio::io::AsyncWriteExt;
    tx.write_all(b"some layer").await.unwrap();
    drop(tx);
    importing.await.unwrap().unwrap();
    creating.await.unwrap().unwrap();
    assert_eq!(a.list().await.unwrap().len(), 2);
}

#[tokio::test]
async fn auto_selection_at_open() {
    let f = Fixture::new();
    let knobs = Arc::default();
    let config = testing::config(f.tmp.path(), "auto");
    let e = Engine::open_with(config.clone(), testing::registry("dir", &knobs))
        .await
        .unwrap();
    assert_eq!(e.selection().name, "dir");
    assert_eq!(e.info().await.unwrap().driver, "dir");
    e.create(create("a", None, false)).await.unwrap();
    // Prior layers of a driver this engine lacks (block, not in this registry): refuse rather
    // than switch.
    std::fs::create_dir_all(f.tmp.path().join("root/block-layers")).unwrap();
    std::fs::write(f.tmp.path().join("root/block-layers/x.json"), b"{}").unwrap();
    let err = Engine::open_with(config.clone(), testing::registry("dir", &knobs))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let mut named = config;
    named.driver = "block".into();
    let err = Engine::open_with(named, testing::registry("dir", &knobs))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotSupported);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_export_stream_keeps_its_layer() {
    let f = Fixture::new();
    let a = f.open().await;
    let b = f.open().await;
    a.import(
        std::io::Cursor::new(b"bytes".to_vec()),
        import_req("l", None),
    )
    .await
    .unwrap();
    let stream = a.export(&id("l"), None).await.unwrap();
    let removing = tokio::spawn(async move { b.remove(&id("l"), false).await });
    // Either the removal is seen blocked on the lock the stream holds, or it got through (a
    // failure).
    let lock = f.store().dir().join("layers.lock");
    testing::wait_until("the removal to block or finish", || {
        testing::lock_waiters(&lock) > 0 || removing.is_finished()
    })
    .await;
    assert!(
        !removing.is_finished(),
        "a layer was removed while exported"
    );
    drop(stream);
    removing.await.unwrap().unwrap();
    assert!(a.list().await.unwrap().is_empty());
}

/// Issue 12, item 11: two stores with different roots and one runroot: each keeps its own
/// refcounts (they once shared `<runroot>/<driver>-layers/mounts.json`: the second store's
/// start-up recovery dropped the first one's counts as views it did not know, and the same
/// layer id in both counted once for two mounts).
#[tokio::test]
async fn two_roots_share_a_runroot_without_clobbering_counts() {
    let (a, b) = (Fixture::new(), Fixture::new());
    let shared = a.tmp.path().join("shared-run");
    let open = |f: &Fixture| {
        let mut config = testing::config(f.tmp.path(), "fake");
        config.runroot = shared.clone();
        Engine::open_with(config, testing::registry("fake", &f.knobs))
    };
    let ea = open(&a).await.unwrap();
    ea.create(create("x", None, true)).await.unwrap();
    let ga = ea.mount(&id("x")).await.unwrap();
    let eb = open(&b).await.unwrap();
    eb.create(create("x", None, true)).await.unwrap();
    assert_eq!(eb.list().await.unwrap()[0].mounts, 0, "b counts a's mount");
    assert_eq!(
        ea.list().await.unwrap()[0].mounts,
        1,
        "b's start-up dropped a's count"
    );
    ga.unmount().await.unwrap();
}

/// Issue 12, item 13: a process killed after `Driver::get` and before it recorded the
/// reference left a view mounted that no refcount holds (`ls`: MOUNTS 0; `rm`: "is mounted").
/// The intent recorded before the get tells the next start, which releases the view.
#[tokio::test]
async fn a_view_mounted_by_a_killed_process_is_released_at_start() {
    let f = Fixture::new();
    let e = f.open().await;
    e.create(create("l", None, true)).await.unwrap();
    // What the killed process left: its intent in the table, and the driver's mount.
    let store = MountStore::new(testing::config(f.tmp.path(), "fake").run_dir("fake"));
    let mut table = store.load().unwrap();
    table.getting(&id("l"));
    store.save(&table).unwrap();
    let opts = strata_driver_api::MountOpts::default();
    e.driver().get(&id("l"), &opts).await.unwrap();
    drop(e);
    let e = f.open().await;
    assert!(!e.driver().is_mounted(&id("l")).await.unwrap());
    assert_eq!(e.list().await.unwrap()[0].mounts, 0);
    e.remove(&id("l"), false).await.unwrap();
}

/// A failed get leaves no intent behind.
#[tokio::test]
async fn a_failed_mount_leaves_no_intent() {
    let f = Fixture::new();
    let e = f.open().await;
    e.create(create("l", None, true)).await.unwrap();
    let store = MountStore::new(testing::config(f.tmp.path(), "fake").run_dir("fake"));
    f.knobs.fail_get.store(true, Ordering::SeqCst);
    let err = e.mount(&id("l")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(store.load().unwrap().ids().is_empty());
    f.knobs.fail_get.store(false, Ordering::SeqCst);
    let guard = e.mount(&id("l")).await.unwrap();
    assert_eq!(store.load().unwrap().count(&id("l")), 1);
    guard.unmount().await.unwrap();
    assert!(store.load().unwrap().ids().is_empty());
}

#[tokio::test]
async fn resolve_takes_full_ids_and_unique_prefixes() {
    let f = Fixture::new();
    let e = f.open().await;
    for layer in ["abc111", "abc222", "ab", "abd"] {
        e.create(create(layer, None, false)).await.unwrap();
    }
    // A full id wins, even when it is also a prefix of other ids.
    assert_eq!(e.resolve("ab").await.unwrap(), id("ab"));
    assert_eq!(e.resolve("abd").await.unwrap(), id("abd"));
    assert_eq!(e.resolve("abc1").await.unwrap(), id("abc111"));
    assert_eq!(e.resolve("abc222").await.unwrap(), id("abc222"));

    let err = e.resolve("abc").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let text = err.to_string();
    assert!(
        text.contains("ambiguous") && text.contains("2 layers"),
        "{text}"
    );
    let err = e.resolve("abx").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("abx"), "{err}");
    // Not an id at all: never a prefix of everything.
    assert_eq!(
        e.resolve("").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        e.resolve("../a").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

/// Issue 12, item 12: one damaged file does not brick the store. A record that does not parse
/// (here: empty, and garbage) or names its own layer as its parent is left out with a warning
/// and moved to `quarantine/` by the next start; every other layer still works.
#[tokio::test]
async fn damaged_records_are_quarantined_and_the_rest_works() {
    let f = Fixture::new();
    let e = f.open().await;
    for l in ["good", "empty", "garbage", "selfish"] {
        e.create(create(l, None, false)).await.unwrap();
    }
    let dir = f.store().dir().to_path_buf();
    std::fs::write(dir.join("empty.json"), b"").unwrap();
    std::fs::write(dir.join("garbage.json"), b"{not json").unwrap();
    let mut selfish = f.store().load(&id("selfish")).unwrap().unwrap();
    selfish.parent = Some(id("selfish"));
    std::fs::write(
        dir.join("selfish.json"),
        serde_json::to_vec(&selfish).unwrap(),
    )
    .unwrap();
    // Even before a restart: listing works and shows the good layer.
    let ids: Vec<LayerId> = e
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.record.id)
        .collect();
    assert_eq!(ids, [id("good")]);
    drop(e);
    let e = f.open().await;
    let mut aside: Vec<String> = std::fs::read_dir(dir.join("quarantine"))
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    aside.sort();
    assert_eq!(aside, ["empty.json", "garbage.json", "selfish.json"]);
    e.remove(&id("good"), false).await.unwrap();
    assert!(e.list().await.unwrap().is_empty());
}

/// Issue 12, item 12: a damaged mount table is moved aside (counts start over), and a path in
/// it outside the driver's home is never handed out (`mount` once printed /etc).
#[tokio::test]
async fn the_mount_table_is_checked_not_trusted() {
    let f = Fixture::new();
    let e = f.open().await;
    e.create(create("l", None, true)).await.unwrap();
    let run = testing::config(f.tmp.path(), "fake").run_dir("fake");
    std::fs::write(run.join("mounts.json"), b"\x00garbage").unwrap();
    assert_eq!(e.list().await.unwrap()[0].mounts, 0);
    assert!(run.join("mounts.json.damaged").exists());
    let guard = e.mount(&id("l")).await.unwrap();
    let home = f.home();
    assert!(guard.path().starts_with(&home));
    guard.unmount().await.unwrap();
    // A table that names /etc as the view: ignored, the view mounted afresh in the home.
    let store = MountStore::new(run.clone());
    let forged = serde_json::json!({"l": {"path": "/etc", "count": 3}});
    std::fs::write(run.join("mounts.json"), forged.to_string()).unwrap();
    e.driver()
        .get(&id("l"), &strata_driver_api::MountOpts::default())
        .await
        .unwrap();
    let guard = e.mount(&id("l")).await.unwrap();
    assert!(
        guard.path().starts_with(&home),
        "{}",
        guard.path().display()
    );
    assert_eq!(store.load().unwrap().count(&id("l")), 1);
    guard.unmount().await.unwrap();
}

/// Issue 12, item 12: a parent marked incomplete (damage: layers are made on complete parents
/// only) is not removed by recovery while a child needs its data.
#[tokio::test]
async fn recovery_keeps_an_incomplete_parent_with_children() {
    let f = Fixture::new();
    let e = f.open().await;
    e.create(create("p", None, false)).await.unwrap();
    e.create(create("c", Some("p"), false)).await.unwrap();
    drop(e);
    let store = f.store();
    let mut p = store.load(&id("p")).unwrap().unwrap();
    p.incomplete = true;
    store.save(&p).unwrap();
    let e = f.open().await;
    let ids: Vec<LayerId> = e
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.record.id)
        .collect();
    assert_eq!(ids, [id("c"), id("p")]);
    assert!(e.driver().exists(&id("p")).await.unwrap());
}

/// Issue 12, item 7: input is bounded. Megabytes after the point where the driver stopped
/// reading (the tar's end), or a layer past `max_layer_size`, fail the import with
/// `InvalidArchive` naming the limit, and leave nothing behind (`import /dev/zero` ended
/// never; 20 GiB of zeros behind a 657 KB zstd file were read and hashed).
#[tokio::test]
async fn imports_are_bounded_by_the_limits() {
    let f = Fixture::new();
    let mut config = testing::config(f.tmp.path(), "fake");
    config.limits.max_layer_size = 4 << 20;
    let e = Engine::open_with(config, testing::registry("fake", &f.knobs))
        .await
        .unwrap();
    f.knobs.read_only_first.store(1000, Ordering::SeqCst);
    let err = e
        .import(
            tokio::io::repeat(0).take(64 << 20),
            import_req("trailing", None),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArchive, "{err:#}");
    assert!(err.to_string().contains("max_trailing"), "{err:#}");
    f.knobs.read_only_first.store(0, Ordering::SeqCst);
    let err = e
        .import(tokio::io::repeat(1).take(8 << 20), import_req("big", None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArchive, "{err:#}");
    assert!(err.to_string().contains("max_layer_size"), "{err:#}");
    assert!(e.list().await.unwrap().is_empty());
    assert!(!f.home().join("layers/trailing").exists());
    assert!(!f.home().join("layers/big").exists());
}
