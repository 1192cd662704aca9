//! The configuration: `strata.toml`, where to find it, defaults, and overrides.
//!
//! One file is read, the first found of `--config FILE`, `$STRATA_CONFIG`,
//! `$XDG_CONFIG_HOME/strata/strata.toml` (`~/.config/...` when unset) and
//! `/etc/strata/strata.toml`; files never merge (as containers/storage's `storage.conf`). No file
//! means the built-in defaults. `$STRATA_DRIVER` overrides the file's `driver`; the command
//! line's `--root`, `--runroot` and `--driver` override everything.
//!
//! Every table rejects unknown keys, and the error names the key and the file on one line, so a
//! typo never silently does nothing. The environment is read in one place
//! ([`Environment::current`]); everything else here is a pure function of it, which is what the
//! tests drive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use strata_driver_api::{Error, ErrorKind, Result};

/// The driver name that asks the engine to choose (see [`crate::select`]).
pub const AUTO: &str = "auto";

/// The size of a block driver's image when the config does not say: 10 GiB (sparse).
pub const DEFAULT_BLOCK_SIZE: u64 = strata_driver_block::DEFAULT_SIZE;

/// A complete, validated configuration: what [`Engine::open`](crate::Engine::open) takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where layers live: each driver owns `<root>/<name>/`, the engine keeps `<root>/<name>-layers/`.
    pub root: PathBuf,
    /// Per-boot state (mount refcounts), normally on tmpfs.
    pub runroot: PathBuf,
    /// A driver name, or [`AUTO`].
    pub driver: String,
    /// Per-driver settings.
    pub drivers: DriversConfig,
    /// Third-party drivers to load.
    pub plugins: Vec<PluginConfig>,
    /// `[limits]`: bounds on what an import reads.
    pub limits: Limits,
    /// The file this was read from; `None` for the built-in defaults.
    pub file: Option<PathBuf>,
}

/// `[limits]`: bounds on a layer stream, so that hostile or broken input cannot make an import
/// read (and hash) forever: `strata import /dev/zero`, or gigabytes of zeros after the tar's
/// end in a small compressed file. Past a bound the import fails with `InvalidArchive` naming
/// it, and leaves nothing behind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The largest uncompressed layer tar (`"128G"` by default).
    #[serde(deserialize_with = "strata_driver_util::size::deserialize")]
    pub max_layer_size: u64,
    /// How much may follow the tar's end-of-archive blocks, counted from when the driver stops
    /// reading (`"1M"` by default: tools pad to 10 KiB records, rarely more).
    #[serde(deserialize_with = "strata_driver_util::size::deserialize")]
    pub max_trailing: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_layer_size: 128 << 30,
            max_trailing: 1 << 20,
        }
    }
}

/// The `[drivers.*]` tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriversConfig {
    /// `[drivers.dir]`
    #[serde(default)]
    pub dir: DirConfig,
    /// `[drivers.overlay]`
    #[serde(default)]
    pub overlay: OverlayConfig,
    /// `[drivers.block]`
    #[serde(default)]
    pub block: BlockConfig,
}

/// `[drivers.dir]`: the directory driver's own config type, so its keys are checked by the
/// driver's definition and nowhere else.
pub use strata_driver_dir::{Config as DirConfig, MountMode as DirMountMode};

/// `[drivers.overlay]`: kernel overlayfs; the driver's own config type.
pub use strata_driver_overlay::{Config as OverlayConfig, MountApi as OverlayMountApi};

/// `[drivers.block]`: filesystem images on loop devices; the driver's own config type, so its
/// keys are checked by the driver's definition and nowhere else.
pub use strata_driver_block::{Config as BlockConfig, Fs as BlockFs};

/// One `[[plugins]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Absolute path of the shared library.
    pub path: PathBuf,
    /// `[plugins.options]`: handed to the plugin's init as key/value strings (TOML numbers
    /// and booleans are written out as text).
    #[serde(default, deserialize_with = "de_options")]
    pub options: BTreeMap<String, String>,
}

/// The file as written: everything optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    root: Option<PathBuf>,
    runroot: Option<PathBuf>,
    driver: Option<String>,
    #[serde(default)]
    drivers: DriversConfig,
    #[serde(default)]
    plugins: Vec<PluginConfig>,
    #[serde(default)]
    limits: Limits,
}

/// What the command line overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--config FILE`: read only this file (it must exist).
    pub config: Option<PathBuf>,
    /// `--root DIR`.
    pub root: Option<PathBuf>,
    /// `--runroot DIR`.
    pub runroot: Option<PathBuf>,
    /// `--driver NAME`.
    pub driver: Option<String>,
}

/// The parts of the process environment the config depends on. Empty variables count as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// `$STRATA_CONFIG`
    pub strata_config: Option<PathBuf>,
    /// `$STRATA_DRIVER`
    pub strata_driver: Option<String>,
    /// `$XDG_CONFIG_HOME`
    pub xdg_config_home: Option<PathBuf>,
    /// `$XDG_DATA_HOME`
    pub xdg_data_home: Option<PathBuf>,
    /// `$XDG_RUNTIME_DIR`
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `$HOME`
    pub home: Option<PathBuf>,
    /// The effective user id.
    pub uid: u32,
}

impl Environment {
    /// Reads the process environment.
    pub fn current() -> Environment {
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Environment {
            strata_config: path("STRATA_CONFIG"),
            strata_driver: std::env::var("STRATA_DRIVER")
                .ok()
                .filter(|v| !v.is_empty()),
            xdg_config_home: path("XDG_CONFIG_HOME"),
            xdg_data_home: path("XDG_DATA_HOME"),
            xdg_runtime_dir: path("XDG_RUNTIME_DIR"),
            home: path("HOME"),
            uid: rustix::process::geteuid().as_raw(),
        }
    }
}

/// A place a config file may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The path.
    pub path: PathBuf,
    /// Named by the user (`--config`, `$STRATA_CONFIG`): missing is an error, not a skip.
    pub required: bool,
}

/// Where to look for the config file, in order; the first that exists is read.
pub fn search_path(overrides: &Overrides, env: &Environment) -> Vec<Candidate> {
    if let Some(path) = overrides.config.as_ref().or(env.strata_config.as_ref()) {
        return vec![Candidate {
            path: path.clone(),
            required: true,
        }];
    }
    let mut out = Vec::new();
    let user = env
        .xdg_config_home
        .clone()
        .or_else(|| env.home.as_ref().map(|h| h.join(".config")));
    if let Some(dir) = user {
        out.push(Candidate {
            path: dir.join("strata/strata.toml"),
            required: false,
        });
    }
    out.push(Candidate {
        path: PathBuf::from("/etc/strata/strata.toml"),
        required: false,
    });
    out
}

impl Config {
    /// Loads the configuration for this process: finds and reads the file, applies the
    /// environment and `overrides`.
    pub fn load(overrides: &Overrides) -> Result<Config> {
        Config::load_with(overrides, &Environment::current())
    }

    /// [`Config::load`] with the environment given.
    pub fn load_with(overrides: &Overrides, env: &Environment) -> Result<Config> {
        let mut found = None;
        for candidate in search_path(overrides, env) {
            match std::fs::read_to_string(&candidate.path) {
                Ok(text) => {
                    found = Some((candidate.path, text));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !candidate.required => {}
                Err(e) => {
                    return Err(Error::with_source(
                        ErrorKind::Config,
                        format!("read config {}", candidate.path.display()),
                        e,
                    ));
                }
            }
        }
        let mut config = match found {
            Some((path, text)) => Config::parse(&text, &path, env)?,
            None => Config::defaults(env)?,
        };
        config.apply(overrides, env)?;
        tracing::debug!(
            file = ?config.file,
            root = %config.root.display(),
            runroot = %config.runroot.display(),
            driver = %config.driver,
            plugins = config.plugins.len(),
            "config loaded"
        );
        Ok(config)
    }

    /// The built-in defaults for `env`: root `/var/lib/strata` and runroot `/run/strata` for
    /// root, `$XDG_DATA_HOME/strata` and `$XDG_RUNTIME_DIR/strata` (or `/tmp/strata-<uid>`)
    /// otherwise; driver `auto`.
    pub fn defaults(env: &Environment) -> Result<Config> {
        Ok(Config {
            root: default_root(env)?,
            runroot: default_runroot(env),
            driver: AUTO.to_string(),
            drivers: DriversConfig::default(),
            plugins: Vec::new(),
            limits: Limits::default(),
            file: None,
        })
    }

    /// Parses and validates the text of a config file read from `file` (named in errors).
    /// `$STRATA_DRIVER` is applied by [`Config::apply`], not here.
    pub fn parse(text: &str, file: &Path, env: &Environment) -> Result<Config> {
        let parsed: FileConfig = from_toml(text, file)?;
        let root = match parsed.root {
            Some(root) => root,
            None => default_root(env).map_err(|e| e.context(file.display()))?,
        };
        let config = Config {
            root,
            runroot: parsed.runroot.unwrap_or_else(|| default_runroot(env)),
            driver: parsed.driver.unwrap_or_else(|| AUTO.to_string()),
            drivers: parsed.drivers,
            plugins: parsed.plugins,
            limits: parsed.limits,
            file: Some(file.to_path_buf()),
        };
        config.validate().map_err(|e| e.context(file.display()))?;
        Ok(config)
    }

    /// Applies `$STRATA_DRIVER`, then the command line, and validates the result.
    pub fn apply(&mut self, overrides: &Overrides, env: &Environment) -> Result<()> {
        if let Some(driver) = overrides.driver.as_ref().or(env.strata_driver.as_ref()) {
            self.driver = driver.clone();
        }
        if let Some(root) = &overrides.root {
            self.root = root.clone();
        }
        if let Some(runroot) = &overrides.runroot {
            self.runroot = runroot.clone();
        }
        self.validate()
    }

    /// Checks what types cannot: absolute paths, a sane driver name, options without commas.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorKind::Config, msg));
        for (key, path) in [("root", &self.root), ("runroot", &self.runroot)] {
            if !path.is_absolute() {
                return bad(format!(
                    "{key} must be an absolute path, not {}",
                    path.display()
                ));
            }
        }
        let (root, runroot) = (normal(&self.root), normal(&self.runroot));
        if root.starts_with(&runroot) || runroot.starts_with(&root) {
            return bad(format!(
                "root {} and runroot {} must be apart: neither may be the other or lie inside it \
                 (start-up cleanup of one would delete the other's files)",
                self.root.display(),
                self.runroot.display()
            ));
        }
        if !valid_driver_name(&self.driver) {
            return bad(format!("invalid driver name {:?}", self.driver));
        }
        for opt in &self.drivers.overlay.mount_options {
            if opt.is_empty() || opt.contains(',') || opt.contains('\0') {
                return bad(format!(
                    "drivers.overlay.mount_options: {opt:?} must be one non-empty option without commas"
                ));
            }
        }
        if self.drivers.block.size == 0 {
            return bad("drivers.block.size must not be zero".to_string());
        }
        for plugin in &self.plugins {
            if !plugin.path.is_absolute() {
                return bad(format!(
                    "plugins.path must be an absolute path, not {}",
                    plugin.path.display()
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Where the engine keeps driver `name`'s state that a reboot resets (mount refcounts):
    /// `<runroot>/<key>/<name>-layers`, `<key>` the first 16 hex digits of the SHA-256 of the
    /// root's path, so that stores with different roots never share state in one runroot.
    pub fn run_dir(&self, name: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        use std::os::unix::ffi::OsStrExt;
        let digest = Sha256::digest(normal(&self.root).as_os_str().as_bytes());
        let key: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.runroot.join(key).join(format!("{name}-layers"))
    }
}

/// `path` with `.` components and repeated or trailing slashes gone (lexically; `..` is kept
/// as it is).
fn normal(path: &Path) -> PathBuf {
    path.components().collect()
}

fn valid_driver_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn default_root(env: &Environment) -> Result<PathBuf> {
    if env.uid == 0 {
        return Ok(PathBuf::from("/var/lib/strata"));
    }
    if let Some(data) = &env.xdg_data_home {
        return Ok(data.join("strata"));
    }
    match &env.home {
        Some(home) => Ok(home.join(".local/share/strata")),
        None => Err(Error::new(
            ErrorKind::Config,
            "no root: neither $XDG_DATA_HOME nor $HOME is set; set root in strata.toml or pass --root",
        )),
    }
}

fn default_runroot(env: &Environment) -> PathBuf {
    if env.uid == 0 {
        return PathBuf::from("/run/strata");
    }
    match &env.xdg_runtime_dir {
        Some(dir) => dir.join("strata"),
        None => PathBuf::from(format!("/tmp/strata-{}", env.uid)),
    }
}

/// Deserializes TOML, turning any error into one line that names the file, the line and the
/// full key ("strata.toml:3: unknown key `drivers.dir.mout` (expected `mount`)").
fn from_toml<T: serde::de::DeserializeOwned>(text: &str, file: &Path) -> Result<T> {
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
    };
    let located = |line: Option<usize>, msg: String| {
        let at = match line {
            Some(n) => format!("{}:{n}", file.display()),
            None => file.display().to_string(),
        };
        Error::new(ErrorKind::Config, format!("{at}: {msg}"))
    };
    let de = toml::Deserializer::parse(text)
        .map_err(|e| located(line_of(e.span()), first_line(e.message())))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let msg = describe(&key, inner.message());
        located(line_of(inner.span()), msg)
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// Rewrites serde's words in the config's terms: keys, not fields, with their full path.
fn describe(key: &str, message: &str) -> String {
    let message = first_line(message);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let full = if key == "." || key.is_empty() {
            name.to_string()
        } else if key.ends_with(name) {
            key.to_string()
        } else {
            format!("{key}.{name}")
        };
        let expected = tail.trim_start_matches(',').trim();
        return if expected.is_empty() {
            format!("unknown key `{full}`")
        } else {
            format!("unknown key `{full}` ({expected})")
        };
    }
    if key == "." || key.is_empty() {
        message
    } else {
        format!("`{key}`: {message}")
    }
}

fn de_options<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Str(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::Str(s) => s,
                Scalar::Int(i) => i.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Bool(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
