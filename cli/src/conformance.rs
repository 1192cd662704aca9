//! `strata conformance`: the suite (or graphtest's benchmarks) against one driver.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use strata_conformance::{Options, bench, factory};
use strata_engine::plugin::{self, PluginDriver};
use strata_engine::{Config, Driver, Engine, Error, ErrorKind, Registry, Result};

/// Runs the cases (or the benchmarks) whose name contains `filter` against the driver `config`
/// selects, each against a fresh instance in its own temporary directory. Prints one line per
/// case as it finishes and the closing summary; any failed case makes the command fail.
pub async fn run(
    config: &Config,
    plugin: Option<PathBuf>,
    filter: Option<String>,
    list: bool,
    bench: bool,
    tmpdir: Option<PathBuf>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("write to standard output", e);
    if list {
        for case in strata_conformance::cases() {
            if filter.as_deref().is_none_or(|f| case.name.contains(f)) {
                writeln!(out, "{}", case.name).map_err(io)?;
            }
        }
        return Ok(());
    }
    let (name, factory) = match plugin {
        Some(path) => {
            let spec = Arc::new(plugin::load(&path)?);
            let name = spec.name().to_string();
            let factory = factory(move |home| {
                let driver = PluginDriver::new(&spec, home.to_path_buf(), &BTreeMap::new())?;
                Ok(Arc::new(driver) as Arc<dyn Driver>)
            });
            (name, factory)
        }
        None => {
            let mut registry = Registry::builtin();
            registry.add_plugins(config, true)?;
            let driver = Engine::standalone_driver(config, registry)?;
            let name = driver.name().to_string();
            (name, factory(move |home| driver.start(home)))
        }
    };
    let opts = Options {
        filter,
        tmpdir,
        ..Options::default()
    };
    writeln!(out, "conformance of driver {name}").map_err(io)?;
    if bench {
        let results = bench::bench(&factory, &opts, None, &mut |_| {}).await;
        write!(out, "{}", bench::table(&results)).map_err(io)?;
        return Ok(());
    }
    let mut write_err = None;
    let summary = strata_conformance::run(&factory, &opts, &mut |result| {
        if let Err(e) = writeln!(out, "{}", result.line()).and_then(|()| out.flush()) {
            write_err.get_or_insert(e);
        }
    })
    .await;
    if let Some(e) = write_err {
        return Err(io(e));
    }
    writeln!(out, "{summary}").map_err(io)?;
    if summary.failed > 0 {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{} conformance case(s) failed for driver {name}",
                summary.failed
            ),
        ));
    }
    Ok(())
}
