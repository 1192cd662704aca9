//! Progress bars on stderr for long transfers, only when a person is watching.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for `verb`ing `len` bytes (a spinner when the length is unknown); hidden unless
/// stderr is a terminal, so piped and scripted runs stay quiet.
pub fn bar(verb: &'static str, len: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{msg} {bytes}/{total_bytes} ({bytes_per_sec}, {eta}) [{wide_bar}]",
            )
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec})")
                .expect("valid template"),
        ),
    };
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.with_message(verb)
}
