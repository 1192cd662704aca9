//! The suite against a throwaway test double: a "vfs" driver where every layer is a full copy
//! of its parent (`cp -a`) and `get` hands out that directory. It exists to check the suite
//! itself (that cases can pass, and that their assertions bite) before and beside the real
//! drivers; it is not a driver of strata and lives only here. It is meant to run as root (as
//! CI does): unprivileged, `cp -a` cannot copy the write-only file of create_snap.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use strata_driver_api::{
    Capabilities, CreateOpts, Driver, Error, ErrorKind, LayerId, MountOpts, Result,
};

#[derive(Debug)]
struct Vfs {
    home: PathBuf,
    counts: Mutex<HashMap<LayerId, u32>>,
    /// Deliberate defects, to show that the cases catch them.
    bug: Option<&'static str>,
}

impl Vfs {
    fn new(home: &Path) -> Result<Vfs> {
        Vfs::with_bug(home, None)
    }

    fn with_bug(home: &Path, bug: Option<&'static str>) -> Result<Vfs> {
        for d in ["layers", "mounted"] {
            std::fs::create_dir_all(home.join(d)).map_err(|e| Error::os("mkdir", home, e))?;
        }
        Ok(Vfs {
            home: home.to_path_buf(),
            counts: Mutex::new(HashMap::new()),
            bug,
        })
    }

    fn dir(&self, id: &LayerId) -> PathBuf {
        self.home.join("layers").join(id.as_str())
    }

    fn marker(&self, id: &LayerId) -> PathBuf {
        self.home.join("mounted").join(id.as_str())
    }

    fn check_exists(&self, id: &LayerId) -> Result<()> {
        if self.dir(id).is_dir() {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::NotFound, format!("layer {id}")))
        }
    }

    fn make(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        if !opts.storage_opts.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "no storage options"));
        }
        if self.dir(id).exists() {
            return Err(Error::new(ErrorKind::AlreadyExists, format!("layer {id}")));
        }
        let dir = self.dir(id);
        match parent {
            Some(p) if !self.dir(p).is_dir() => {
                if self.bug == Some("leave-behind") {
                    let _ = std::fs::create_dir(&dir);
                }
                return Err(Error::new(ErrorKind::ParentNotFound, format!("parent {p}")));
            }
            Some(p) => {
                let flags = if self.bug == Some("cp-r") { "-r" } else { "-a" };
                let st = std::process::Command::new("cp")
                    .arg(flags)
                    .arg(self.dir(p))
                    .arg(&dir)
                    .status()
                    .map_err(|e| Error::io("cp", e))?;
                if !st.success() {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(Error::new(ErrorKind::Io, "cp -a failed"));
                }
            }
            None => {
                std::fs::create_dir(&dir).map_err(|e| Error::os("mkdir", &dir, e))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| Error::os("chmod", &dir, e))?;
            }
        }
        Ok(())
    }

    /// The in-process count, adopting a mount left by another instance with a count of one.
    fn count(&self, id: &LayerId) -> u32 {
        let mut counts = self.counts.lock().unwrap();
        let c = counts.entry(id.clone()).or_insert(0);
        if *c == 0 && self.marker(id).exists() {
            *c = 1;
        }
        *c
    }
}

#[async_trait]
impl Driver for Vfs {
    fn name(&self) -> &str {
        "vfs-test-double"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            rootless: true,
            rename_dir: true,
            ..Capabilities::default()
        }
    }

    fn status(&self) -> Vec<(String, String)> {
        vec![("kind".into(), "test double".into())]
    }

    async fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        if opts.size.is_some() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "size on an image layer",
            ));
        }
        self.make(id, parent, opts)
    }

    async fn create_rw(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        if opts.size.is_some() {
            return Err(Error::new(ErrorKind::NotSupported, "no quota"));
        }
        self.make(id, parent, opts)
    }

    async fn remove(&self, id: &LayerId, force: bool) -> Result<()> {
        self.check_exists(id)?;
        if self.count(id) > 0 {
            if !force && self.bug != Some("no-busy") {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("layer {id} is mounted"),
                ));
            }
            self.counts.lock().unwrap().remove(id);
            let _ = std::fs::remove_file(self.marker(id));
        }
        let dir = self.dir(id);
        std::fs::remove_dir_all(&dir).map_err(|e| Error::os("remove", &dir, e))
    }

    async fn get(&self, id: &LayerId, _opts: &MountOpts) -> Result<PathBuf> {
        if self.bug == Some("panic-in-get") {
            panic!("a driver bug");
        }
        if self.bug == Some("hang-in-get") {
            std::future::pending::<()>().await;
        }
        self.check_exists(id)?;
        self.count(id);
        let mut counts = self.counts.lock().unwrap();
        *counts.get_mut(id).unwrap() += 1;
        std::fs::write(self.marker(id), b"")
            .map_err(|e| Error::os("write", &self.marker(id), e))?;
        Ok(self.dir(id))
    }

    async fn put(&self, id: &LayerId) -> Result<()> {
        if self.count(id) == 0 {
            return Ok(());
        }
        let mut counts = self.counts.lock().unwrap();
        let c = counts.get_mut(id).unwrap();
        *c -= 1;
        if self.bug == Some("first-put-unmounts") {
            *c = 0;
        }
        if *c == 0 {
            let _ = std::fs::remove_file(self.marker(id));
        }
        Ok(())
    }

    async fn is_mounted(&self, id: &LayerId) -> Result<bool> {
        self.check_exists(id)?;
        Ok(self.marker(id).exists())
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        if self.bug == Some("exists-lies") {
            return Ok(true);
        }
        Ok(self.dir(id).is_dir())
    }

    async fn metadata(&self, id: &LayerId) -> Result<Vec<(String, String)>> {
        self.check_exists(id)?;
        Ok(vec![("dir".into(), self.dir(id).display().to_string())])
    }

    async fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: strata_driver_api::TarStream,
    ) -> Result<u64> {
        if self.bug != Some("unsafe-apply") {
            return strata_driver_api::naive::apply_diff(self, id, parent, diff).await;
        }
        // The classic mistakes: join untrusted names, follow symlinks, link absolute targets.
        let root = self.dir(id);
        strata_driver_api::stream::read_blocking(diff, move |r| {
            let mut a = tar::Archive::new(r);
            let io = |e| Error::io("unsafe apply", e);
            for e in a.entries().map_err(io)? {
                let mut e = e.map_err(io)?;
                let path = root.join(String::from_utf8_lossy(&e.path_bytes()).as_ref());
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned());
                match e.header().entry_type() {
                    tar::EntryType::Directory => std::fs::create_dir_all(&path).map_err(io)?,
                    tar::EntryType::Symlink => {
                        let _ = std::os::unix::fs::symlink(link.unwrap_or_default(), &path);
                    }
                    tar::EntryType::Link => {
                        let _ = std::fs::hard_link(root.join(link.unwrap_or_default()), &path);
                    }
                    _ => {
                        let mut body = Vec::new();
                        std::io::Read::read_to_end(&mut e, &mut body).map_err(io)?;
                        if let Some(dir) = path.parent() {
                            let _ = std::fs::create_dir_all(dir);
                        }
                        let _ = std::fs::write(&path, body);
                    }
                }
            }
            Ok(0)
        })
        .await
    }

    async fn cleanup(&self) -> Result<()> {
        self.counts.lock().unwrap().clear();
        let dir = self.home.join("mounted");
        for e in std::fs::read_dir(&dir).map_err(|e| Error::os("readdir", &dir, e))? {
            let e = e.map_err(|e| Error::os("readdir", &dir, e))?;
            std::fs::remove_file(e.path()).map_err(|err| Error::os("unlink", &e.path(), err))?;
        }
        Ok(())
    }
}

strata_conformance::suite!(vfs, |home: &Path| {
    Ok(Arc::new(Vfs::new(home)?) as Arc<dyn Driver>)
});

/// Each deliberate defect must make the cases that check that contract fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_broken_drivers() {
    use strata_conformance::{Options, Outcome, cases, factory, run_case};
    let expectations: [(&str, &[&str]); 6] = [
        (
            "unsafe-apply",
            &["hostile_dotdot", "hostile_symlinks", "hostile_hardlinks"],
        ),
        ("leave-behind", &["create_missing_parent"]),
        ("cp-r", &["create_snap", "dir_ownership_3_layers"]),
        ("no-busy", &["remove_mounted_busy"]),
        ("first-put-unmounts", &["refcounted_get_put"]),
        (
            "exists-lies",
            &[
                "create_empty",
                "missing_layer_not_found",
                "remove_then_reuse_id",
            ],
        ),
    ];
    let mut escaped = Vec::new();
    for (bug, names) in expectations {
        let f = factory(move |home: &Path| {
            Ok(Arc::new(Vfs::with_bug(home, Some(bug))?) as Arc<dyn Driver>)
        });
        for name in names {
            let case = cases().iter().find(|c| c.name == *name).expect("a case");
            let r = run_case(&f, case, &Options::default()).await;
            match r.outcome {
                Outcome::Failed(why) => eprintln!(
                    "caught {bug} in {name}: {}",
                    why.lines().next().unwrap_or("")
                ),
                Outcome::Skipped(why) if why.contains("root") => {
                    strata_conformance::skip!("{name} with bug {bug}: {why}")
                }
                other => escaped.push(format!("{bug}: {name} ended {other:?}")),
            }
        }
    }
    assert!(
        escaped.is_empty(),
        "defects the suite did not catch: {escaped:#?}"
    );
}

/// Graphtest's benchmarks run end to end (one iteration each) and report a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmarks_run() {
    use strata_conformance::{Options, Outcome, bench, factory};
    let f = factory(|home: &Path| Ok(Arc::new(Vfs::new(home)?) as Arc<dyn Driver>));
    let results = bench::bench(&f, &Options::default(), Some(1), &mut |_| {}).await;
    assert_eq!(results.len(), bench::benches().len());
    for r in &results {
        assert_eq!(r.outcome, Outcome::Passed, "{}", r.line());
        assert!(r.total > std::time::Duration::ZERO, "{}", r.line());
    }
    eprintln!("{}", bench::table(&results));
}

/// The harness turns a panicking case into a failure, stops a hung one at the timeout, and
/// cleans up after both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_hangs_are_failures() {
    use strata_conformance::{Options, Outcome, cases, factory, run_case};
    let case = cases()
        .iter()
        .find(|c| c.name == "refcounted_get_put")
        .unwrap();
    let opts = Options {
        timeout: std::time::Duration::from_secs(2),
        ..Options::default()
    };
    for (bug, want) in [
        ("panic-in-get", "panicked: a driver bug"),
        ("hang-in-get", "timed out"),
    ] {
        let f = factory(move |home: &Path| {
            Ok(Arc::new(Vfs::with_bug(home, Some(bug))?) as Arc<dyn Driver>)
        });
        let r = run_case(&f, case, &opts).await;
        match &r.outcome {
            Outcome::Failed(why) => assert!(why.starts_with(want), "{bug}: {why}"),
            other => panic!("{bug}: {other:?}"),
        }
        assert!(
            r.line().starts_with("refcounted_get_put ... FAILED: "),
            "{}",
            r.line()
        );
    }
}

/// `run` reports every case once and counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reports_and_counts() {
    use strata_conformance::{Options, factory, run};
    let f = factory(|home: &Path| Ok(Arc::new(Vfs::new(home)?) as Arc<dyn Driver>));
    let opts = Options {
        filter: Some("remove_".into()),
        ..Options::default()
    };
    let mut lines = Vec::new();
    let summary = run(&f, &opts, &mut |r| lines.push(r.line())).await;
    assert_eq!(
        summary.passed + summary.failed + summary.skipped,
        lines.len()
    );
    assert!(lines.len() >= 5, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.split(" ... ").next().unwrap().contains("remove_")),
        "{lines:?}"
    );
    assert_eq!(summary.failed, 0, "{lines:?}");
    assert_eq!(
        summary.to_string(),
        format!(
            "{} passed, 0 failed, {} skipped",
            summary.passed, summary.skipped
        )
    );
}
