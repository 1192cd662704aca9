//! `strata`: the command-line face of the strata engine.
//!
//! Every command is one call into `strata_engine`. Errors are one line on stderr
//! (`strata: error: ...`) and exit code 1; usage errors are clap's, exit code 2. `RUST_LOG`
//! sets tracing on stderr (default `warn`).

mod args;
mod commands;
mod conformance;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;
use strata_engine::Error;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&Error::io("start the async runtime", e)),
    };
    let result = runtime.block_on(commands::run(cli));
    // A producer may still be blocked reading stdin after an error: do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        // The reader of our output went away (`strata ls | head`): not our error.
        Err(e) if e.raw_os_error() == Some(32) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Prints the error and its causes, walked once, on one line, with the control characters a
/// name in it may bring escaped (`\x1b`, `\r`; see [`output::escape_line`]).
fn fail(e: &Error) -> ExitCode {
    report(e);
    ExitCode::from(1)
}

/// Prints the error line of [`fail`] without ending: for commands that go on after a failure.
pub(crate) fn report(e: &Error) {
    let text = output::escape_line(&format!("{e:#}"));
    eprintln!("strata: error: {text}");
}
