//! The example third-party driver (examples/vfs-plugin) loaded from its shared library by the
//! engine's loader: the whole suite, the loader's refusals, and the engine over it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use strata_conformance::tarfile::{Entry, make_tar};
use strata_driver_api::{Driver, ErrorKind};
use strata_engine::config::{Environment, PluginConfig};
use strata_engine::plugin::{self, PluginDriver, PluginSpec};
use strata_engine::{Config, DriverSource, Engine};

/// A workspace cdylib's `.so`. `cargo test` builds the dev-dependencies' cdylibs next to this
/// test binary; when one is not there (a test binary run on its own), cargo builds it.
fn cdylib(package: &str) -> PathBuf {
    let file = format!("lib{}.so", package.replace('-', "_"));
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("the deps directory");
    let beside = deps.join(&file);
    if beside.exists() {
        return beside;
    }
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "-p", package])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    let up = deps.parent().expect("the profile directory").join(&file);
    assert!(up.exists(), "{} was not built", up.display());
    up
}

/// The vfs plugin's `.so`.
fn library() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| cdylib("strata-vfs-plugin"))
}

fn spec() -> PluginSpec {
    plugin::load(library()).expect("the vfs plugin loads")
}

strata_conformance::suite!(vfs_so, |home: &Path| {
    let d = PluginDriver::new(&spec(), home.to_path_buf(), &BTreeMap::new())?;
    Ok(Arc::new(d) as Arc<dyn Driver>)
});

#[test]
fn the_descriptor_says_what_the_plugin_is() {
    let s = spec();
    assert_eq!(s.name(), "vfs");
    assert_eq!(s.version(), "0.1.0");
    assert!(s.contains_panics());
    // Loading twice gives the same plugin (one dlopen).
    assert_eq!(plugin::load(library()).unwrap().name(), "vfs");
}

#[test]
fn a_missing_file_is_not_found() {
    let err = plugin::load(Path::new("/nonexistent/libnothing.so")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn a_library_without_the_entry_symbol_is_refused() {
    // libc is a shared library every test binary has, and no strata driver.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let Some(libc) = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so"))
    else {
        strata_conformance::skip!("no shared libc mapped into this process");
        return;
    };
    let err = plugin::load(Path::new(libc)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin, "{err}");
    assert!(err.to_string().contains("strata_driver_v1"), "{err}");
}

#[test]
fn a_library_for_another_abi_major_is_refused_naming_it() {
    let err = plugin::load(&cdylib("strata-fixture-abi-v2")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin, "{err}");
    assert!(err.to_string().contains("ABI 2"), "{err}");
    eprintln!("{err}");
}

#[test]
fn a_descriptor_of_abi_major_999_is_refused_naming_it() {
    let err = plugin::load(&cdylib("strata-fixture-abi-999")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin, "{err}");
    assert!(err.to_string().contains("ABI 999"), "{err}");
    eprintln!("{err}");
}

#[test]
fn a_descriptor_with_the_wrong_magic_is_refused() {
    let err = plugin::load(&cdylib("strata-fixture-bad-magic")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin, "{err}");
    assert!(err.to_string().contains("magic"), "{err}");
    eprintln!("{err}");
}

#[test]
fn a_world_writable_library_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("libstrata_vfs_copy.so");
    std::fs::copy(library(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = plugin::load(&copy).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin, "{err}");
    assert!(err.to_string().contains("world-writable"), "{err}");
}

/// Issue 12, item 10: a library owned by another user, in a sticky world-writable directory
/// (where that user could replace it at will), is refused, and so is one writable by a group
/// other than root's.
#[test]
fn a_library_others_could_rewrite_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    if !rustix::process::geteuid().is_root() {
        strata_conformance::skip!("needs root (chown)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sticky = tmp.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let copy = sticky.join("libstrata_vfs_theirs.so");
    std::fs::copy(library(), &copy).unwrap();
    let owner = |uid: u32, gid: u32| {
        rustix::fs::chown(
            &copy,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .unwrap()
    };
    owner(65534, 65534);
    let err = plugin::load(&copy).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin, "{err}");
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    owner(0, 65534);
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o775)).unwrap();
    let err = plugin::load(&copy).unwrap_err();
    assert!(err.to_string().contains("writable by group"), "{err}");
}

#[test]
fn a_file_that_is_no_library_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("libfake.so");
    std::fs::write(&fake, b"not an ELF file").unwrap();
    let err = plugin::load(&fake).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin, "{err}");
}

fn entry(options: &[(&str, &str)]) -> PluginConfig {
    PluginConfig {
        path: library().to_path_buf(),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[test]
fn a_taken_name_is_refused() {
    let err = plugin::load_entry(&entry(&[]), &["dir", "vfs"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

fn config(root: &Path, driver: &str, plugins: Vec<PluginConfig>) -> Config {
    let mut c = Config::defaults(&Environment {
        uid: 0,
        ..Environment::default()
    })
    .unwrap();
    c.root = root.join("root");
    c.runroot = root.join("run");
    c.driver = driver.to_string();
    c.plugins = plugins;
    c
}

#[test]
fn strata_drivers_lists_the_plugin_once() {
    let tmp = tempfile::tempdir().unwrap();
    let c = config(tmp.path(), "auto", vec![entry(&[]), entry(&[])]);
    let infos = Engine::drivers(&c);
    let vfs: Vec<_> = infos.iter().filter(|i| i.name == "vfs").collect();
    assert_eq!(vfs.len(), 1, "{infos:?}");
    assert_eq!(vfs[0].source, DriverSource::Plugin);
    assert!(vfs[0].supported, "{:?}", vfs[0].reason);
    assert!(vfs[0].capabilities.as_ref().unwrap().rootless);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_runs_on_the_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let c = config(tmp.path(), "vfs", vec![entry(&[("reflink", "auto")])]);
    let engine = Engine::open(c).await.unwrap();
    assert_eq!(engine.driver().name(), "vfs");
    let tar = make_tar(&[Entry::file("greeting", "hello from a plugin\n")]);
    let layer = engine
        .import(std::io::Cursor::new(tar), Default::default())
        .await
        .unwrap();
    let view = engine.mount(&layer.id).await.unwrap();
    assert_eq!(
        std::fs::read(view.path().join("greeting")).unwrap(),
        b"hello from a plugin\n"
    );
    assert!(view.path().starts_with(tmp.path().join("root/vfs")));
    view.unmount().await.unwrap();
    engine.remove(&layer.id, false).await.unwrap();
    assert!(!engine.driver().exists(&layer.id).await.unwrap());

    // An unknown option is the plugin's config error, named at open.
    let c = config(
        &tmp.path().join("2"),
        "vfs",
        vec![entry(&[("colour", "blue")])],
    );
    let err = Engine::open(c).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}
