//! What the commands print: tables for people, JSON for scripts.

use std::io::{self, Write};
use std::time::SystemTime;

use serde::Serialize;
use strata_engine::size::format_size;
use strata_engine::{DriverInfo, Info, LayerInfo, ago, parse_rfc3339};

/// Writes `value` as pretty JSON and a newline.
pub fn json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
    writeln!(out)
}

/// A table with left-aligned columns, two spaces apart.
pub fn table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[String]| -> io::Result<()> {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(
        out,
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    )?;
    for row in rows {
        line(out, row)?;
    }
    Ok(())
}

/// The first 12 characters of an id, as `docker images` shows them.
pub fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// `strata ls`.
pub fn layers(out: &mut dyn Write, layers: &[LayerInfo], now: SystemTime) -> io::Result<()> {
    let rows: Vec<Vec<String>> = layers
        .iter()
        .map(|l| {
            let r = &l.record;
            let created = match parse_rfc3339(&r.created) {
                Some(t) => ago(t, now),
                None => r.created.clone(),
            };
            let created = if r.incomplete {
                format!("{created} (incomplete)")
            } else {
                created
            };
            vec![
                short(r.id.as_str()),
                r.parent
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |p| short(p.as_str())),
                format_size(r.size),
                created,
                l.mounts.to_string(),
            ]
        })
        .collect();
    table(out, &["ID", "PARENT", "SIZE", "CREATED", "MOUNTS"], &rows)
}

/// `strata info`.
pub fn info(out: &mut dyn Write, info: &Info) -> io::Result<()> {
    writeln!(out, "Driver:   {} ({})", info.driver, info.selected_by)?;
    writeln!(out, "Root:     {}", info.root.display())?;
    writeln!(out, "Runroot:  {}", info.runroot.display())?;
    match &info.config_file {
        Some(f) => writeln!(out, "Config:   {}", f.display())?,
        None => writeln!(out, "Config:   built-in defaults")?,
    }
    writeln!(out, "Layers:   {}", info.layers)?;
    if !info.status.is_empty() {
        writeln!(out, "Status:")?;
        for (k, v) in &info.status {
            writeln!(out, "  {k}: {v}")?;
        }
    }
    Ok(())
}

/// `strata drivers`.
pub fn drivers(out: &mut dyn Write, drivers: &[DriverInfo]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = drivers
        .iter()
        .map(|d| {
            let source = serde_json::to_value(d.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let notes = match (&d.capabilities, &d.reason) {
                (_, Some(reason)) => reason.clone(),
                (Some(caps), None) => capabilities(caps),
                (None, None) => String::new(),
            };
            vec![
                d.name.clone(),
                source,
                if d.supported { "yes" } else { "no" }.to_string(),
                notes,
            ]
        })
        .collect();
    table(out, &["NAME", "SOURCE", "SUPPORTED", "NOTES"], &rows)
}

fn capabilities(c: &strata_driver_api::Capabilities) -> String {
    let mut words = Vec::new();
    for (on, word) in [
        (c.native_diff, "native-diff"),
        (c.needs_root, "needs-root"),
        (c.rootless, "rootless"),
        (c.quota, "quota"),
        (c.mount_spec, "mount-spec"),
        (c.rename_dir, "rename-dir"),
        (c.read_only_images, "read-only-images"),
    ] {
        if on {
            words.push(word.to_string());
        }
    }
    if let Some(depth) = c.max_depth {
        words.push(format!("max-depth={depth}"));
    }
    words.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["ID", "SIZE"],
            &[
                vec!["abc".into(), "1 B".into()],
                vec!["a".into(), "10 KiB".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID   SIZE\nabc  1 B\na    10 KiB\n"
        );
    }

    #[test]
    fn short_ids() {
        assert_eq!(short(&"f".repeat(64)), "f".repeat(12));
        assert_eq!(short("abc"), "abc");
    }
}
