//! A plugin's tracing events reach the host's subscriber: the vfs plugin, loaded from its
//! `.so`, logs through its own copy of `tracing`, and the host sees the events under the
//! target `strata::plugin`. A test binary of its own, since it sets the global subscriber.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use strata_driver_api::{CreateOpts, Driver, LayerId};
use strata_engine::plugin::{self, PluginDriver};
use strata_plugin_abi::tracing::{self, Event, Metadata, Subscriber, field, span};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, String)>>>);

struct Text(String);

impl field::Visit for Text {
    fn record_debug(&mut self, f: &field::Field, v: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={v:?} ", f.name()));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::DEBUG)
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut t = Text(String::new());
        e.record(&mut t);
        let target = e.metadata().target().to_string();
        self.0.lock().unwrap().push((target, t.0));
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

fn library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let beside = deps.join("libstrata_vfs_plugin.so");
    if beside.exists() {
        return beside;
    }
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "-p", "strata-vfs-plugin"])
        .status()
        .unwrap();
    assert!(status.success());
    deps.parent().unwrap().join("libstrata_vfs_plugin.so")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_events_reach_the_host_subscriber() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(capture.clone()).unwrap();
    let spec = plugin::load(&library()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = PluginDriver::new(&spec, tmp.path().join("vfs"), &BTreeMap::new()).unwrap();
    let id = LayerId::new("logged").unwrap();
    d.create(&id, None, &CreateOpts::default()).await.unwrap();
    let seen = capture.0.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(target, text)| target == "strata::plugin"
            && text.contains("vfs: created")
            && text.contains("logged")),
        "{seen:#?}"
    );
}
