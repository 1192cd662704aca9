//! What the commands print: tables for people, JSON for scripts.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::time::SystemTime;

use serde::Serialize;
use strata_driver_api::{Change, ChangeKind};
use strata_engine::size::format_size;
use strata_engine::{DriverInfo, Info, LayerInfo, ago, parse_rfc3339};

/// Writes `value` as pretty JSON and a newline. The document is made whole first: a value
/// that cannot be serialised writes nothing, and a failed write is the writer's own
/// `io::Error` (a closed pipe stays recognisable, not wrapped in serde_json's error).
pub fn json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    let mut doc = serde_json::to_vec_pretty(value)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    doc.push(b'\n');
    out.write_all(&doc)
}

/// `bytes` (a name from a layer) as text that a terminal shows as it is and that stays on one
/// line, as `ls -b` and Go's `%q` do. Printable UTF-8 is left as it is (and borrowed); a
/// backslash becomes `\\`; newline, carriage return and tab `\n`, `\r`, `\t`; other ASCII
/// control characters `\xNN`; other control and bidi-format characters `\uNNNN`; a byte that
/// is not UTF-8 `\xNN`. Distinct names always give distinct texts.
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !text.chars().any(|c| c == '\\' || is_unsafe(c)) {
            return Cow::Borrowed(text);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                push_char(&mut out, c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// `text` with every character a terminal would act on escaped as in [`escape_bytes`], except
/// that a newline becomes a space (it only separates the causes of an error) and a backslash
/// stays as it is: for the one line an error is printed on.
pub fn escape_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\n' {
            out.push(' ');
        } else {
            push_char(&mut out, c);
        }
    }
    out
}

/// A character a terminal does not simply show: a control character, a line or paragraph
/// separator, or a bidi control (which reorders what follows it).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_char(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_ascii() && is_unsafe(c) => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c if is_unsafe(c) => {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// A change as `--json` writes it (the README's JSON contract): `path` is the path itself when
/// it is UTF-8; when it is not, `path` is its escaped text (as `strata changes` prints it) and
/// `path_bytes` holds its bytes, so the document stays valid JSON and the name is recoverable.
#[derive(Debug, Serialize)]
pub struct JsonChange<'a> {
    path: Cow<'a, str>,
    kind: ChangeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_bytes: Option<&'a [u8]>,
}

impl<'a> From<&'a Change> for JsonChange<'a> {
    fn from(change: &'a Change) -> JsonChange<'a> {
        let bytes = change.path.as_os_str().as_bytes();
        match std::str::from_utf8(bytes) {
            Ok(path) => JsonChange {
                path: Cow::Borrowed(path),
                kind: change.kind,
                path_bytes: None,
            },
            Err(_) => JsonChange {
                path: escape_bytes(bytes),
                kind: change.kind,
                path_bytes: Some(bytes),
            },
        }
    }
}

/// `strata changes`: one line a change, `A /path` as `docker diff`, the path escaped
/// (see [`escape_bytes`]).
pub fn changes(out: &mut dyn Write, changes: &[Change], json: bool) -> io::Result<()> {
    if json {
        let changes: Vec<JsonChange<'_>> = changes.iter().map(JsonChange::from).collect();
        return self::json(out, &changes);
    }
    for change in changes {
        let path = escape_bytes(change.path.as_os_str().as_bytes());
        writeln!(out, "{} {path}", change.kind.letter())?;
    }
    Ok(())
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
    fn escapes_only_what_needs_it() {
        assert!(matches!(
            escape_bytes(b"/etc/h\xc3\xa9llo w"),
            Cow::Borrowed(_)
        ));
        assert_eq!(escape_bytes("/h\u{e9}llo w".as_bytes()), "/h\u{e9}llo w");
        assert_eq!(escape_bytes(b"a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(escape_bytes(b"\x1b[31m\x7f\x00"), "\\x1b[31m\\x7f\\x00");
        assert_eq!(escape_bytes(b"back\\slash"), "back\\\\slash");
        assert_eq!(escape_bytes(b"bad\xff\xfe"), "bad\\xff\\xfe");
        assert_eq!(escape_bytes("\u{85}\u{202e}".as_bytes()), "\\u0085\\u202e");
        // A name that looks escaped stays apart from the name it looks like.
        assert_ne!(escape_bytes(b"\\xff"), escape_bytes(b"\xff"));
    }

    #[test]
    fn error_lines_fold_newlines_and_escape_the_rest() {
        assert_eq!(
            escape_line("open /a\x1b[2J\rb: x\ncaused by \\"),
            "open /a\\x1b[2J\\rb: x caused by \\"
        );
    }

    #[test]
    fn json_changes_keep_non_utf8_paths_recoverable() {
        use std::os::unix::ffi::OsStrExt;
        let change = Change {
            path: std::ffi::OsStr::from_bytes(b"/bad\xff").into(),
            kind: ChangeKind::Add,
        };
        let mut out = Vec::new();
        changes(&mut out, &[change], true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["path"], "/bad\\xff");
        assert_eq!(v[0]["kind"], "add");
        assert_eq!(
            v[0]["path_bytes"],
            serde_json::json!([47, 98, 97, 100, 255])
        );
    }

    #[test]
    fn short_ids() {
        assert_eq!(short(&"f".repeat(64)), "f".repeat(12));
        assert_eq!(short("abc"), "abc");
    }
}
