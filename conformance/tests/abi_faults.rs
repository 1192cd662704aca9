//! The plugin ABI when things go wrong, and under load, in-process (the guest shims driven
//! through `PluginDriver`, no shared library): hand-made bad descriptors, a panicking create,
//! a diff that fails midway, a 100 MiB round trip through the pipes, 64 concurrent calls.

// Hand-made descriptors go through the loader's unsafe check, as a library's would.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use strata_driver_api::abi::guest::{self, Plugin};
use strata_driver_api::abi::host::{PluginDriver, PluginSpec};
use strata_driver_api::abi::{Descriptor, MAGIC, VTable};
use strata_driver_api::{
    Capabilities, CreateOpts, Driver, Error, ErrorKind, LayerId, MountOpts, Result, TarStream,
    async_trait, stream,
};
use strata_driver_dir::{Config, DirDriver, MountMode};
use tokio::io::AsyncReadExt;

/// The dir driver with two planted faults: creating a layer named `panic` panics, and the
/// diff of a layer named `fail` breaks off after 16 MiB.
#[derive(Debug)]
struct Faulty(DirDriver);

#[async_trait]
impl Driver for Faulty {
    fn name(&self) -> &str {
        "faulty"
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    fn status(&self) -> Vec<(String, String)> {
        self.0.status()
    }
    async fn create(&self, id: &LayerId, p: Option<&LayerId>, o: &CreateOpts) -> Result<()> {
        if id.as_str() == "panic" {
            panic!("a planted panic in create");
        }
        self.0.create(id, p, o).await
    }
    async fn create_rw(&self, id: &LayerId, p: Option<&LayerId>, o: &CreateOpts) -> Result<()> {
        self.0.create_rw(id, p, o).await
    }
    async fn remove(&self, id: &LayerId, force: bool) -> Result<()> {
        self.0.remove(id, force).await
    }
    async fn get(&self, id: &LayerId, o: &MountOpts) -> Result<PathBuf> {
        self.0.get(id, o).await
    }
    async fn put(&self, id: &LayerId) -> Result<()> {
        self.0.put(id).await
    }
    async fn is_mounted(&self, id: &LayerId) -> Result<bool> {
        self.0.is_mounted(id).await
    }
    async fn exists(&self, id: &LayerId) -> Result<bool> {
        self.0.exists(id).await
    }
    async fn metadata(&self, id: &LayerId) -> Result<Vec<(String, String)>> {
        self.0.metadata(id).await
    }
    async fn cleanup(&self) -> Result<()> {
        self.0.cleanup().await
    }
    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        if id.as_str() == "fail" {
            return Ok(stream::from_blocking(|w| {
                // More than a pipe holds, so the failure comes while the host is reading.
                w.write_all(&vec![0u8; 16 << 20])
                    .map_err(|e| Error::io("write", e))?;
                Err(Error::new(ErrorKind::Io, "a planted failure midway"))
            }));
        }
        self.0.diff(id, parent).await
    }
    async fn apply_diff(&self, id: &LayerId, p: Option<&LayerId>, tar: TarStream) -> Result<u64> {
        self.0.apply_diff(id, p, tar).await
    }
    async fn changes(
        &self,
        id: &LayerId,
        p: Option<&LayerId>,
    ) -> Result<Vec<strata_driver_api::Change>> {
        self.0.changes(id, p).await
    }
    async fn diff_size(&self, id: &LayerId, p: Option<&LayerId>) -> Result<u64> {
        self.0.diff_size(id, p).await
    }
}

struct FaultyPlugin;

impl Plugin for FaultyPlugin {
    type Driver = Faulty;
    const NAME: &'static str = "faulty";
    const VERSION: &'static str = "0.0.0";
    const FORWARD_LOGS: bool = false;
    fn construct(home: PathBuf, _: BTreeMap<String, String>) -> Result<Faulty> {
        let config = Config {
            mount: MountMode::Copy,
            ..Config::default()
        };
        Ok(Faulty(DirDriver::new(home, config)?))
    }
}

fn spec() -> &'static PluginSpec {
    static SPEC: OnceLock<PluginSpec> = OnceLock::new();
    SPEC.get_or_init(|| PluginSpec::in_process::<FaultyPlugin>().unwrap())
}

fn driver(home: &std::path::Path) -> Arc<dyn Driver> {
    Arc::new(PluginDriver::new(spec(), home.join("faulty"), &BTreeMap::new()).unwrap())
}

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

/// Checks a descriptor the way the loader does.
fn validate(desc: Descriptor) -> Result<PluginSpec> {
    let desc: &'static Descriptor = Box::leak(Box::new(desc));
    // SAFETY: leaked, so 'static; every pointer in it is null or points to 'static data.
    unsafe { PluginSpec::validate(desc) }
}

fn good() -> Descriptor {
    let vt: &'static VTable = Box::leak(Box::new(guest::vtable::<FaultyPlugin>()));
    guest::descriptor::<FaultyPlugin>(vt)
}

#[test]
fn bad_descriptors_are_refused() {
    assert!(validate(good()).is_ok());
    let cases: Vec<(&str, Descriptor)> = vec![
        (
            "wrong magic",
            Descriptor {
                magic: MAGIC ^ 1,
                ..good()
            },
        ),
        (
            "ABI major 999",
            Descriptor {
                abi_major: 999,
                ..good()
            },
        ),
        ("too small", Descriptor { size: 24, ..good() }),
        (
            "no vtable",
            Descriptor {
                vtable: std::ptr::null(),
                ..good()
            },
        ),
        (
            "no create",
            Descriptor {
                vtable: Box::leak(Box::new(VTable {
                    create: None,
                    ..guest::vtable::<FaultyPlugin>()
                })),
                ..good()
            },
        ),
        (
            "a name with a slash",
            Descriptor {
                name: strata_driver_api::abi::Bytes::new(b"../x"),
                ..good()
            },
        ),
    ];
    for (what, desc) in cases {
        let err = validate(desc).expect_err(what);
        assert_eq!(err.kind(), ErrorKind::Plugin, "{what}: {err}");
        eprintln!("{what}: {err}");
    }
}

#[test]
fn an_older_smaller_vtable_lacks_the_newer_functions() {
    // A vtable that stops before the diff family: those fall back to the naive diff, the
    // rest still work.
    let size = std::mem::offset_of!(VTable, diff);
    let vt = Box::leak(Box::new(VTable {
        size,
        ..guest::vtable::<FaultyPlugin>()
    }));
    let spec = validate(Descriptor {
        vtable: vt,
        ..good()
    })
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let d = PluginDriver::new(&spec, tmp.path().join("old"), &BTreeMap::new()).unwrap();
        d.create_rw(&id("a"), None, &CreateOpts::default())
            .await
            .unwrap();
        let p = d.get(&id("a"), &MountOpts::default()).await.unwrap();
        std::fs::write(p.join("f"), b"hello").unwrap();
        d.put(&id("a")).await.unwrap();
        let changes = d.changes(&id("a"), None).await.unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");
        d.cleanup().await.unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_create_poisons_the_instance_not_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    let none = CreateOpts::default();
    let err = d.create(&id("panic"), None, &none).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin, "{err}");
    // Poisoned: every later call is refused, also the ones that would work.
    let err = d.create(&id("fine"), None, &none).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin, "{err}");
    assert_eq!(
        d.exists(&id("fine")).await.unwrap_err().kind(),
        ErrorKind::Plugin
    );
    // The host goes on, and a new instance works.
    let d2 = driver(&tmp.path().join("again"));
    d2.create(&id("fine"), None, &none).await.unwrap();
    assert!(d2.exists(&id("fine")).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_that_fails_midway_is_a_read_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    d.create(&id("fail"), None, &CreateOpts::default())
        .await
        .unwrap();
    let mut s = d.diff(&id("fail"), None).await.unwrap();
    let mut got = Vec::new();
    let err = s
        .read_to_end(&mut got)
        .await
        .expect_err("a short stream must not look whole");
    let kind = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<Error>())
        .map(Error::kind);
    assert_eq!(kind, Some(ErrorKind::Io), "{err}");
    assert!(got.len() <= 16 << 20, "{}", got.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_of_a_missing_layer_fails_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    let err = d.diff(&id("ghost"), None).await.map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_creates_and_removes_on_one_instance() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    let mut tasks = Vec::new();
    for i in 0..64 {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            let l = id(&format!("layer-{i}"));
            d.create(&l, None, &CreateOpts::default()).await?;
            assert!(d.exists(&l).await?);
            d.remove(&l, false).await?;
            assert!(!d.exists(&l).await?);
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_diff_and_apply_round_trip_through_the_pipes() {
    const SIZE: usize = 100 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    let none = CreateOpts::default();
    d.create_rw(&id("big"), None, &none).await.unwrap();
    let p = d.get(&id("big"), &MountOpts::default()).await.unwrap();
    let content: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    std::fs::write(p.join("big"), &content).unwrap();
    d.put(&id("big")).await.unwrap();

    let tar = d.diff(&id("big"), None).await.unwrap();
    d.create(&id("copy"), None, &none).await.unwrap();
    let size = d.apply_diff(&id("copy"), None, tar).await.unwrap();
    assert_eq!(size, SIZE as u64);
    let p = d.get(&id("copy"), &MountOpts::default()).await.unwrap();
    let back = std::fs::read(p.join("big")).unwrap();
    assert!(back == content, "the copy differs");
    d.put(&id("copy")).await.unwrap();
}
