//! The plugin ABI when things go wrong, and under load, in-process (the guest shims driven
//! through `PluginDriver`, no shared library): hand-made bad descriptors, a panicking create,
//! a diff that fails or panics midway, an apply whose input fails midway, a diff dropped
//! before its end, a 100 MiB round trip, 64 concurrent calls. The tar-stream cases run twice:
//! through ABI 1.1's in-place streams, and through 1.0's pipes (a vtable that stops before
//! the 1.1 functions, as a plugin built for 1.0 has).

// Hand-made descriptors go through the loader's unsafe check, as a library's would.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use strata_driver_api::{
    Capabilities, CreateOpts, Driver, Error, ErrorKind, LayerId, MountOpts, Result, TarStream,
    async_trait, stream,
};
use strata_driver_dir::{Config, DirDriver, MountMode};
use strata_plugin_abi::guest::{self, Plugin};
use strata_plugin_abi::host::{PluginDriver, PluginSpec};
use strata_plugin_abi::{Descriptor, MAGIC, VTable};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// The dir driver with planted faults: creating a layer named `panic` panics, the diff of a
/// layer named `fail` breaks off with an error after 16 MiB, that of `panic-diff` panics
/// after 4 MiB, and applying to `stash` keeps the stream in [`STASHED`] and returns.
#[derive(Debug)]
struct Faulty(DirDriver);

/// Where an apply to the layer `stash` leaves its stream.
static STASHED: std::sync::Mutex<Option<TarStream>> = std::sync::Mutex::new(None);

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
        if id.as_str() == "panic-diff" {
            return Ok(Box::pin(PanicAfter(4 << 20)));
        }
        self.0.diff(id, parent).await
    }
    async fn apply_diff(&self, id: &LayerId, p: Option<&LayerId>, tar: TarStream) -> Result<u64> {
        if id.as_str() == "stash" {
            // A driver that keeps the stream past the call.
            *STASHED.lock().unwrap() = Some(tar);
            return Ok(0);
        }
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

/// A stream of zeros that panics after `.0` bytes.
struct PanicAfter(usize);

impl AsyncRead for PanicAfter {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        assert!(self.0 > 0, "a planted panic in a diff stream");
        let n = buf.remaining().min(self.0);
        buf.put_slice(&vec![0u8; n]);
        self.0 -= n;
        Poll::Ready(Ok(()))
    }
}

/// A stream that fails.
struct Failing;

impl AsyncRead for Failing {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(std::io::Error::other("a planted input failure")))
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

/// The same plugin as one built for ABI 1.0: its vtable stops before the 1.1 functions, so
/// tar streams go through pipes.
fn spec_1_0() -> &'static PluginSpec {
    static SPEC: OnceLock<PluginSpec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let vt = Box::leak(Box::new(VTable {
            size: std::mem::offset_of!(VTable, apply_diff_from),
            ..guest::vtable::<FaultyPlugin>()
        }));
        validate(Descriptor {
            abi_minor: 0,
            vtable: vt,
            ..good()
        })
        .unwrap()
    })
}

fn driver(home: &std::path::Path) -> Arc<dyn Driver> {
    Arc::new(PluginDriver::new(spec(), home.join("faulty"), &BTreeMap::new()).unwrap())
}

/// One instance per way tar streams cross: ABI 1.1 in place, ABI 1.0 through pipes.
fn both(home: &std::path::Path) -> [(&'static str, Arc<dyn Driver>); 2] {
    let old = PluginDriver::new(spec_1_0(), home.join("faulty-1.0"), &BTreeMap::new()).unwrap();
    [("1.1", driver(home)), ("1.0", Arc::new(old))]
}

/// The strata error kind behind a read error.
fn kind_of(err: &std::io::Error) -> Option<ErrorKind> {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<Error>())
        .map(Error::kind)
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
                name: strata_plugin_abi::Bytes::new(b"../x"),
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
    for (abi, d) in both(tmp.path()) {
        d.create(&id("fail"), None, &CreateOpts::default())
            .await
            .unwrap();
        let mut s = d.diff(&id("fail"), None).await.unwrap();
        let mut got = Vec::new();
        let err = s
            .read_to_end(&mut got)
            .await
            .expect_err("a short stream must not look whole");
        assert_eq!(kind_of(&err), Some(ErrorKind::Io), "ABI {abi}: {err}");
        assert!(got.len() <= 16 << 20, "ABI {abi}: {}", got.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_that_panics_midway_is_a_read_error_and_poisons_the_instance() {
    let tmp = tempfile::tempdir().unwrap();
    for (abi, d) in both(tmp.path()) {
        d.create(&id("panic-diff"), None, &CreateOpts::default())
            .await
            .unwrap();
        let mut s = d.diff(&id("panic-diff"), None).await.unwrap();
        let mut got = Vec::new();
        let err = s
            .read_to_end(&mut got)
            .await
            .expect_err("a panicked stream must not look whole");
        assert_eq!(kind_of(&err), Some(ErrorKind::Plugin), "ABI {abi}: {err}");
        drop(s);
        // The host goes on; the instance refuses every later call.
        let err = d.exists(&id("panic-diff")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Plugin, "ABI {abi}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_whose_input_fails_midway_fails_with_the_inputs_error() {
    let tmp = tempfile::tempdir().unwrap();
    for (abi, d) in both(tmp.path()) {
        let none = CreateOpts::default();
        d.create_rw(&id("src"), None, &none).await.unwrap();
        let p = d.get(&id("src"), &MountOpts::default()).await.unwrap();
        std::fs::write(p.join("f"), vec![7u8; 8 << 20]).unwrap();
        d.put(&id("src")).await.unwrap();
        let mut tar = Vec::new();
        d.diff(&id("src"), None)
            .await
            .unwrap()
            .read_to_end(&mut tar)
            .await
            .unwrap();
        // Half the tar, then the input fails.
        tar.truncate(tar.len() / 2);
        let input: TarStream = Box::pin(std::io::Cursor::new(tar).chain(Failing));
        d.create(&id("dst"), None, &none).await.unwrap();
        let err = d.apply_diff(&id("dst"), None, input).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "ABI {abi}: {err}");
        // The instance goes on.
        d.remove(&id("dst"), false).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_kept_past_apply_fails_instead_of_reaching_the_hosts_freed_source() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    let input: TarStream = Box::pin(std::io::Cursor::new(vec![0u8; 4096]));
    d.create(&id("stash"), None, &CreateOpts::default())
        .await
        .unwrap();
    assert_eq!(d.apply_diff(&id("stash"), None, input).await.unwrap(), 0);
    let mut kept = STASHED.lock().unwrap().take().expect("the driver kept it");
    let err = kept.read(&mut [0u8; 512]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::Other, "{err}");
    // The instance goes on.
    assert!(d.exists(&id("stash")).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_dropped_before_its_end_frees_the_layer() {
    let tmp = tempfile::tempdir().unwrap();
    for (abi, d) in both(tmp.path()) {
        let none = CreateOpts::default();
        d.create_rw(&id("big"), None, &none).await.unwrap();
        let p = d.get(&id("big"), &MountOpts::default()).await.unwrap();
        std::fs::write(p.join("f"), vec![1u8; 16 << 20]).unwrap();
        d.put(&id("big")).await.unwrap();
        let mut s = d.diff(&id("big"), None).await.unwrap();
        let mut head = vec![0u8; 64 * 1024];
        s.read_exact(&mut head).await.unwrap();
        drop(s);
        // The plugin saw the reader go and let the layer go: it can be removed (the diff's
        // mount, if any, is released), and diffed again from the start.
        let mut whole = Vec::new();
        let mut s = d.diff(&id("big"), None).await.unwrap();
        s.read_to_end(&mut whole).await.unwrap();
        assert!(whole.len() > 16 << 20, "ABI {abi}: {}", whole.len());
        drop(s);
        d.remove(&id("big"), false).await.unwrap();
        assert!(!d.exists(&id("big")).await.unwrap(), "ABI {abi}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_of_a_missing_layer_fails_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    for (abi, d) in both(tmp.path()) {
        let err = d.diff(&id("ghost"), None).await.map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "ABI {abi}: {err}");
    }
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
async fn a_100_mib_diff_and_apply_round_trip() {
    const SIZE: usize = 100 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    for (abi, d) in both(tmp.path()) {
        let none = CreateOpts::default();
        d.create_rw(&id("big"), None, &none).await.unwrap();
        let p = d.get(&id("big"), &MountOpts::default()).await.unwrap();
        std::fs::write(p.join("big"), &content).unwrap();
        d.put(&id("big")).await.unwrap();

        // The diff feeds the apply directly: both streams cross the ABI at once.
        let tar = d.diff(&id("big"), None).await.unwrap();
        d.create(&id("copy"), None, &none).await.unwrap();
        let size = d.apply_diff(&id("copy"), None, tar).await.unwrap();
        assert_eq!(size, SIZE as u64, "ABI {abi}");
        let p = d.get(&id("copy"), &MountOpts::default()).await.unwrap();
        let back = std::fs::read(p.join("big")).unwrap();
        assert!(back == content, "ABI {abi}: the copy differs");
        d.put(&id("copy")).await.unwrap();
    }
}
