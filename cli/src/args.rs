//! The command line, as clap reads it. Its words are a contract (DESIGN.md, "The CLI").

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// strata: container layers over pluggable storage drivers.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Read this config file only (default: $STRATA_CONFIG, then
    /// $XDG_CONFIG_HOME/strata/strata.toml, then /etc/strata/strata.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where layers live (overrides the config).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Where per-boot state (mount refcounts) lives (overrides the config).
    #[arg(long, global = true, value_name = "DIR")]
    pub runroot: Option<PathBuf>,
    /// The storage driver (overrides the config and $STRATA_DRIVER).
    #[arg(long, global = true, value_name = "NAME")]
    pub driver: Option<String>,
    /// Print JSON for scripts (ls, info, drivers, changes).
    #[arg(long, global = true)]
    pub json: bool,
}

/// Every layer argument (`ID`, `--parent ID`) is a full id or a unique prefix of one (as
/// `strata ls` shows 12 characters); `--id`, the id of a new layer, is taken as it is.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the driver, root, driver status and layer count.
    Info,
    /// List every driver strata knows of, whether it works here, and its capabilities.
    Drivers,
    /// Create an empty layer; prints its id.
    Create {
        /// The parent layer.
        #[arg(long, value_name = "ID")]
        parent: Option<String>,
        /// A writable container layer instead of an image layer.
        #[arg(long)]
        rw: bool,
        /// The new layer's id (default: random).
        #[arg(long, value_name = "ID")]
        id: Option<String>,
    },
    /// Create a layer from a tar (plain, gzip or zstd); prints its id.
    Import {
        /// The parent layer.
        #[arg(long, value_name = "ID")]
        parent: Option<String>,
        /// The new layer's id (default: random).
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// The tar file, or - for standard input.
        #[arg(value_name = "FILE|-")]
        file: PathBuf,
    },
    /// Fill an existing, empty layer from a tar.
    Apply {
        /// The layer.
        id: String,
        /// The tar file, or - for standard input.
        #[arg(value_name = "FILE|-")]
        file: PathBuf,
    },
    /// Write the layer's diff as an uncompressed OCI layer tar.
    Export {
        /// The layer.
        id: String,
        /// Diff against this layer instead of the recorded parent.
        #[arg(long, value_name = "ID")]
        parent: Option<String>,
        /// Write to FILE instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// List the paths the layer changed: "A /path", "C /path", "D /path".
    Changes {
        /// The layer.
        id: String,
        /// Compare against this layer instead of the recorded parent.
        #[arg(long, value_name = "ID")]
        parent: Option<String>,
    },
    /// Show the driver's facts about a layer ("Key: value" lines): its paths, and for the
    /// block driver the mount spec (Image, FsType, ReadOnly, Options) a VM runtime needs.
    #[command(alias = "inspect")]
    Metadata {
        /// The layer.
        id: String,
    },
    /// Mount the layer's merged view and print its path (it stays mounted until umount).
    Mount {
        /// The layer.
        id: String,
    },
    /// Release one mount reference; the last one unmounts.
    #[command(alias = "unmount")]
    Umount {
        /// The layer.
        id: String,
    },
    /// List layers.
    #[command(alias = "list")]
    Ls,
    /// Run the conformance suite against the driver (--driver, or what the config selects):
    /// one line per case and a closing "N passed, N failed, N skipped".
    Conformance {
        /// Test the driver in this plugin library (built with strata-driver-api's
        /// export_driver!) instead of a built-in or configured one.
        #[arg(long, value_name = "PATH")]
        plugin: Option<PathBuf>,
        /// Run only the cases (or benchmarks) whose name contains TEXT.
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
        /// List the cases without running them.
        #[arg(long)]
        list: bool,
        /// Run graphtest's benchmarks instead of the cases, and print a table.
        #[arg(long)]
        bench: bool,
        /// Where each case's temporary directory goes (default: the system temp dir).
        #[arg(long, value_name = "DIR")]
        tmpdir: Option<PathBuf>,
    },
    /// Remove layers, in the order given; each failure is reported and the rest still
    /// removed (exit status 1 if any failed), as `docker rm` does.
    Rm {
        /// Remove them even if mounted (unmounting them).
        #[arg(short, long)]
        force: bool,
        /// The layers.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
}
