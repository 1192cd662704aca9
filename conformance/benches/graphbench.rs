//! Graphtest's benchmarks against the built-in drivers, printed as one table per driver so
//! they compare on one machine in one run: `cargo bench -p strata-conformance [-- FILTER]`.
//! `STRATA_BENCH_ITERATIONS` overrides each benchmark's number of timed operations.

use std::path::Path;
use std::sync::Arc;

use strata_conformance::{Options, bench, factory};
use strata_driver_api::Driver;
use strata_driver_dir::{Config, DirDriver, MountMode};

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let iterations = std::env::var("STRATA_BENCH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok());
    let opts = Options {
        filter,
        ..Options::default()
    };
    let drivers = [
        (
            "dir (copy)",
            factory(|home: &Path| {
                let config = Config {
                    mount: MountMode::Copy,
                    ..Config::default()
                };
                Ok(Arc::new(DirDriver::new(home.to_path_buf(), config)?) as Arc<dyn Driver>)
            }),
        ),
        (
            "overlay",
            factory(|home: &Path| {
                let d = strata_driver_overlay::OverlayDriver::new(
                    home.to_path_buf(),
                    Default::default(),
                )?;
                Ok(Arc::new(d) as Arc<dyn Driver>)
            }),
        ),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    for (name, f) in drivers {
        let results = rt.block_on(bench::bench(&f, &opts, iterations, &mut |_| {}));
        println!("== {name}");
        print!("{}", bench::table(&results));
    }
}
