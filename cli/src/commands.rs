//! One function a command; each is one call into the engine plus printing.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::time::SystemTime;

use strata_engine::{
    Config, CreateRequest, Engine, Error, ErrorKind, ImportRequest, LayerId, Overrides, Result,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::args::{Cli, Command};
use crate::{output, progress};

type Input = Pin<Box<dyn AsyncRead + Send + Sync>>;

/// Runs the command. `Ok` with a failing code means failures were already reported (`rm` of
/// several layers).
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let g = cli.global;
    let overrides = Overrides {
        config: g.config,
        root: g.root.map(absolute).transpose()?,
        runroot: g.runroot.map(absolute).transpose()?,
        driver: g.driver,
    };
    let config = Config::load(&overrides)?;
    let json = g.json;
    if let Command::Drivers = cli.command {
        let drivers = Engine::drivers(&config);
        return print(|out| {
            if json {
                output::json(out, &drivers)
            } else {
                output::drivers(out, &drivers)
            }
        })
        .map(|()| ExitCode::SUCCESS);
    }
    if let Command::Conformance {
        plugin,
        filter,
        list,
        bench,
        tmpdir,
    } = cli.command
    {
        let plugin = plugin.map(absolute).transpose()?;
        return crate::conformance::run(&config, plugin, filter, list, bench, tmpdir)
            .await
            .map(|()| ExitCode::SUCCESS);
    }
    let engine = Engine::open(config).await?;
    let done = match cli.command {
        Command::Drivers | Command::Conformance { .. } => unreachable!("handled above"),
        Command::Info => {
            let info = engine.info().await?;
            print(|out| {
                if json {
                    output::json(out, &info)
                } else {
                    output::info(out, &info)
                }
            })
        }
        Command::Create { parent, rw, id } => {
            let record = engine
                .create(CreateRequest {
                    id: id.map(LayerId::new).transpose()?,
                    parent: resolve(&engine, parent).await?,
                    rw,
                    names: Vec::new(),
                })
                .await?;
            print(|out| writeln!(out, "{}", record.id))
        }
        Command::Import { parent, id, file } => {
            let req = ImportRequest {
                id: id.map(LayerId::new).transpose()?,
                parent: resolve(&engine, parent).await?,
                names: Vec::new(),
            };
            let (input, len) = open_input(&file).await?;
            let bar = progress::bar("importing", len);
            let result = engine.import(bar.wrap_async_read(input), req).await;
            bar.finish_and_clear();
            let record = result?;
            print(|out| writeln!(out, "{}", record.id))
        }
        Command::Apply { id, file } => {
            let id = engine.resolve(&id).await?;
            let (input, len) = open_input(&file).await?;
            let bar = progress::bar("applying", len);
            let result = engine.apply(&id, bar.wrap_async_read(input)).await;
            bar.finish_and_clear();
            result.map(|_| ())
        }
        Command::Export { id, parent, output } => {
            let id = engine.resolve(&id).await?;
            let parent = resolve(&engine, parent).await?;
            export(&engine, &id, parent.as_ref(), output.as_deref()).await
        }
        Command::Changes { id, parent } => {
            let id = engine.resolve(&id).await?;
            let parent = resolve(&engine, parent).await?;
            let changes = engine.changes(&id, parent.as_ref()).await?;
            print(|out| output::changes(out, &changes, json))
        }
        Command::Metadata { id } => {
            let pairs = engine.metadata(&engine.resolve(&id).await?).await?;
            print(|out| {
                if json {
                    let map: serde_json::Map<String, serde_json::Value> = pairs
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                        .collect();
                    return output::json(out, &map);
                }
                for (k, v) in &pairs {
                    writeln!(out, "{k}: {v}")?;
                }
                Ok(())
            })
        }
        Command::Mount { id } => {
            let path = engine.mount(&engine.resolve(&id).await?).await?.keep();
            print(|out| writeln!(out, "{}", path.display()))
        }
        Command::Umount { id } => engine.unmount(&engine.resolve(&id).await?).await,
        Command::Ls => {
            let layers = engine.list().await?;
            print(|out| {
                if json {
                    output::json(out, &layers)
                } else {
                    output::layers(out, &layers, SystemTime::now())
                }
            })
        }
        Command::Rm { force, ids } => return Ok(remove(&engine, &ids, force).await),
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// A layer argument given or not, resolved (see [`Engine::resolve`]).
async fn resolve(engine: &Engine, text: Option<String>) -> Result<Option<LayerId>> {
    match text {
        Some(text) => engine.resolve(&text).await.map(Some),
        None => Ok(None),
    }
}

/// `strata rm ID...`: each layer in order; a failure is reported and the next one tried.
async fn remove(engine: &Engine, ids: &[String], force: bool) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    for text in ids {
        let removed = match engine.resolve(text).await {
            Ok(id) => engine.remove(&id, force).await,
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            crate::report(&e);
            code = ExitCode::FAILURE;
        }
    }
    code
}

/// Writes to stdout through `f` (every command's output but export's tar goes through here).
/// A closed pipe (`strata ls --json | head`) ends the output quietly: the reader went away,
/// which is not our error; other write errors are returned.
fn print(f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match f(&mut out).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("write standard output", e)),
    }
}

fn absolute(path: PathBuf) -> Result<PathBuf> {
    std::path::absolute(&path).map_err(|e| Error::os("resolve", &path, e))
}

/// The tar to read: a file, or standard input for `-` (never a terminal).
async fn open_input(path: &Path) -> Result<(Input, Option<u64>)> {
    if path == Path::new("-") {
        if std::io::stdin().is_terminal() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "refusing to read a layer tar from a terminal; pipe it in or name a file",
            ));
        }
        return Ok((Box::pin(tokio::io::stdin()), None));
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::os("open", path, e))?;
    let len = file
        .metadata()
        .await
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    Ok((Box::pin(file), len))
}

async fn export(
    engine: &Engine,
    id: &LayerId,
    parent: Option<&LayerId>,
    output: Option<&Path>,
) -> Result<()> {
    if output.is_none() && std::io::stdout().is_terminal() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "refusing to write a tar to a terminal; use -o FILE or a pipe",
        ));
    }
    let mut stream = engine.export(id, parent).await?;
    let bar = progress::bar("exporting", None);
    match output {
        None => {
            let mut out = bar.wrap_async_write(tokio::io::stdout());
            let copied = copy(&mut stream, &mut out, Path::new("standard output")).await;
            bar.finish_and_clear();
            copied
        }
        Some(path) => {
            let file = tokio::fs::File::create(path)
                .await
                .map_err(|e| Error::os("create", path, e))?;
            let sync = file
                .try_clone()
                .await
                .map_err(|e| Error::os("dup", path, e))?;
            let mut out = bar.wrap_async_write(file);
            let mut copied = copy(&mut stream, &mut out, path).await;
            if copied.is_ok() {
                copied = sync
                    .sync_all()
                    .await
                    .map_err(|e| Error::os("fsync", path, e));
            }
            bar.finish_and_clear();
            if copied.is_err() {
                // Never leave a short tar that looks whole.
                let _ = tokio::fs::remove_file(path).await;
            }
            copied
        }
    }
}

async fn copy(
    from: &mut (dyn AsyncRead + Send + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    target: &Path,
) -> Result<()> {
    tokio::io::copy(from, to)
        .await
        .map_err(|e| Error::io(format!("export to {}", target.display()), e))?;
    to.flush().await.map_err(|e| Error::os("write", target, e))
}
