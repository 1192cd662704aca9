//! strata's main job, end to end, on the built-in defaults.
//!
//! Builds three OCI layers in memory: a base, a layer that modifies and deletes files, and a
//! layer with an opaque directory. Imports them into a fresh store (a temporary root unless
//! `--root DIR` is given, so the demo never touches `/var/lib/strata`), stacks them, mounts the
//! top layer, prints the merged tree, the changes each layer makes and the entries of an exported
//! diff, then unmounts.
//!
//! ```sh
//! cargo run --release -p strata-demo [-- --root DIR]
//! ```

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use strata_engine::{Config, Engine, ImportRequest, LayerRecord, Overrides};
use tokio::io::AsyncReadExt;

/// One entry of a demo layer.
enum Item<'a> {
    Dir(&'a str),
    File(&'a str, &'a str, u32),
    Link(&'a str, &'a str),
}

/// An uncompressed OCI layer tar holding `items`.
fn layer_tar(items: &[Item<'_>]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match *item {
            Item::Dir(path) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty())?;
            }
            Item::File(path, body, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(mode);
                h.set_size(body.len() as u64);
                b.append_data(&mut h, path, body.as_bytes())?;
            }
            Item::Link(path, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target)?;
            }
        }
    }
    Ok(b.into_inner()?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut root: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--root" => root = Some(args.next().context("--root needs a directory")?.into()),
            "-h" | "--help" => {
                println!("usage: strata-demo [--root DIR]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (usage: strata-demo [--root DIR])"),
        }
    }
    let scratch = tempfile::Builder::new().prefix("strata-demo-").tempdir()?;
    let root = root.unwrap_or_else(|| scratch.path().join("root"));
    let overrides = Overrides {
        root: Some(root.clone()),
        runroot: Some(scratch.path().join("run")),
        ..Overrides::default()
    };
    let engine = Engine::open(Config::load(&overrides)?).await?;
    let info = engine.info().await?;
    println!("strata: driver {} at {}", info.driver, root.display());
    for (k, v) in &info.status {
        println!("  {k}: {v}");
    }

    let base = import(
        &engine,
        "base",
        None,
        &[
            Item::Dir("etc/"),
            Item::File("etc/hosts", "127.0.0.1 localhost\n", 0o644),
            Item::File("etc/os-release", "NAME=demo\n", 0o644),
            Item::Dir("usr/"),
            Item::Dir("usr/bin/"),
            Item::File("usr/bin/hello", "#!/bin/sh\necho hello\n", 0o755),
            Item::Link("bin", "usr/bin"),
            Item::Dir("var/"),
            Item::Dir("var/cache/"),
            Item::File("var/cache/old-1", "stale\n", 0o644),
            Item::File("var/cache/old-2", "stale\n", 0o644),
        ],
    )
    .await?;
    let edit = import(
        &engine,
        "edit",
        Some(&base),
        &[
            Item::Dir("etc/"),
            Item::File("etc/hosts", "127.0.0.1 localhost demo\n", 0o644),
            Item::File("etc/.wh.os-release", "", 0o644),
            Item::File("etc/motd", "welcome to strata\n", 0o644),
        ],
    )
    .await?;
    let opaque = import(
        &engine,
        "opaque",
        Some(&edit),
        &[
            Item::Dir("var/"),
            Item::Dir("var/cache/"),
            Item::File("var/cache/.wh..wh..opq", "", 0o644),
            Item::File("var/cache/fresh", "new cache\n", 0o644),
        ],
    )
    .await?;

    println!("\nthe stack, base first:");
    for r in [&base, &edit, &opaque] {
        let parent = r
            .parent
            .as_ref()
            .map_or("-".to_string(), |p| short(p.as_str()));
        println!(
            "  {:<7} {}  parent {:<12}  {:>3} bytes of files  {}",
            r.names.join(","),
            short(r.id.as_str()),
            parent,
            r.size,
            r.diff_digest.as_deref().unwrap_or("")
        );
    }

    let view = engine.mount(&opaque.id).await?;
    println!(
        "\nmerged view of the top layer at {}:",
        view.path().display()
    );
    let mut lines = Vec::new();
    tree(view.path(), Path::new(""), &mut lines)?;
    for line in lines {
        println!("  {line}");
    }
    view.unmount().await?;

    for (name, layer) in [("edit", &edit), ("opaque", &opaque)] {
        println!("\nchanges made by {name} (as `docker diff`):");
        for change in engine.changes(&layer.id, layer.parent.as_ref()).await? {
            println!("  {change}");
        }
    }

    let mut stream = engine.export(&edit.id, edit.parent.as_ref()).await?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await?;
    println!("\nexported diff of edit: {} bytes, entries:", bytes.len());
    let mut archive = tar::Archive::new(bytes.as_slice());
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.display().to_string();
        let mut body = String::new();
        entry.read_to_string(&mut body)?;
        println!("  {path:<22} {:?}", body);
    }
    Ok(())
}

async fn import(
    engine: &Engine,
    name: &str,
    parent: Option<&LayerRecord>,
    items: &[Item<'_>],
) -> Result<LayerRecord> {
    let tar = layer_tar(items)?;
    let req = ImportRequest {
        parent: parent.map(|p| p.id.clone()),
        names: vec![name.to_string()],
        ..ImportRequest::default()
    };
    let layer = engine
        .import(std::io::Cursor::new(tar), req)
        .await
        .with_context(|| format!("import layer {name}"))?;
    println!("imported {name:<7} {}", layer.id);
    Ok(layer)
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// One line a path: type and mode, owner, size or link target.
fn tree(root: &Path, rel: &Path, out: &mut Vec<String>) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    for name in names {
        let path = rel.join(&name);
        let md = std::fs::symlink_metadata(root.join(&path))?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_fifo() {
            'p'
        } else {
            '-'
        };
        let detail = if ft.is_symlink() {
            format!("-> {}", std::fs::read_link(root.join(&path))?.display())
        } else if ft.is_file() {
            format!("{} bytes", md.len())
        } else {
            String::new()
        };
        out.push(format!(
            "{kind}{:04o} {}:{} /{} {detail}",
            md.mode() & 0o7777,
            md.uid(),
            md.gid(),
            path.display()
        ));
        if ft.is_dir() {
            tree(root, &path, out)?;
        }
    }
    Ok(())
}
