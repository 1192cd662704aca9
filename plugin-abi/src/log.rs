//! Tracing across the boundary: the plugin's events go to the host's log function.
//!
//! A plugin's copy of `tracing` has its own dispatcher, which the host's subscriber never
//! sees. The plugin side installs a small subscriber that formats each event and hands it to
//! the host's [`LogFn`]; the host side turns it back into a `tracing` event of its own, with
//! target `strata::plugin` and the plugin's target as a field.

use std::fmt::Write as _;

use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Metadata, Subscriber, field, span};

use super::{Bytes, LogFn, log_level};

/// The level code of a `tracing` level.
fn code(level: &Level) -> u32 {
    match *level {
        Level::ERROR => log_level::ERROR,
        Level::WARN => log_level::WARN,
        Level::INFO => log_level::INFO,
        Level::DEBUG => log_level::DEBUG,
        Level::TRACE => log_level::TRACE,
    }
}

fn filter(code: u32) -> LevelFilter {
    match code {
        log_level::OFF => LevelFilter::OFF,
        log_level::ERROR => LevelFilter::ERROR,
        log_level::WARN => LevelFilter::WARN,
        log_level::INFO => LevelFilter::INFO,
        log_level::DEBUG => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// The host's current maximum level, as a code for [`InitArgs`](super::InitArgs).
#[cfg(feature = "host")]
pub(crate) fn host_max_level() -> u32 {
    match LevelFilter::current().into_level() {
        None => log_level::OFF,
        Some(level) => code(&level),
    }
}

/// The plugin-side subscriber: formats events and calls the host.
struct Forward {
    log: LogFn,
    max: LevelFilter,
}

/// Installs the forwarding subscriber as this library's global default; a second call (a
/// second instance) keeps the first, which goes to the same host.
pub(crate) fn install(log: LogFn, max_level: u32) {
    let sub = Forward {
        log,
        max: filter(max_level),
    };
    // Already set by an earlier instance: that one forwards to the same host already.
    let _ = tracing::subscriber::set_global_default(sub);
}

struct Message(String);

impl field::Visit for Message {
    fn record_debug(&mut self, f: &field::Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if f.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", f.name());
        }
    }

    fn record_str(&mut self, f: &field::Field, value: &str) {
        if f.name() == "message" {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            self.0.push_str(value);
        } else {
            self.record_debug(f, &value);
        }
    }
}

impl Subscriber for Forward {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut msg = Message(String::new());
        event.record(&mut msg);
        let meta = event.metadata();
        (self.log)(
            code(meta.level()),
            Bytes::new(meta.target().as_bytes()),
            Bytes::new(msg.0.as_bytes()),
        );
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// The host's [`LogFn`]: re-emits a plugin's event on the host's subscriber.
#[cfg(feature = "host")]
pub(crate) extern "C" fn host_log(level: u32, target: Bytes, message: Bytes) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    // Nothing may unwind out of an extern "C" function; a failing subscriber loses the event.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the plugin passes bytes valid for the duration of this call.
        let (target, message) = unsafe { (target.as_slice(), message.as_slice()) };
        let target = String::from_utf8_lossy(target.unwrap_or_default());
        let message = String::from_utf8_lossy(message.unwrap_or_default());
        match level {
            log_level::ERROR => {
                tracing::error!(target: "strata::plugin", plugin = %target, "{message}")
            }
            log_level::WARN => {
                tracing::warn!(target: "strata::plugin", plugin = %target, "{message}")
            }
            log_level::INFO => {
                tracing::info!(target: "strata::plugin", plugin = %target, "{message}")
            }
            log_level::DEBUG => {
                tracing::debug!(target: "strata::plugin", plugin = %target, "{message}")
            }
            _ => tracing::trace!(target: "strata::plugin", plugin = %target, "{message}"),
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static SEEN: Mutex<Vec<(u32, String, String)>> = Mutex::new(Vec::new());

    extern "C" fn record(level: u32, target: Bytes, message: Bytes) {
        // SAFETY: valid for this call.
        let (t, m) = unsafe { (target.as_slice(), message.as_slice()) };
        SEEN.lock().unwrap().push((
            level,
            String::from_utf8_lossy(t.unwrap()).into_owned(),
            String::from_utf8_lossy(m.unwrap()).into_owned(),
        ));
    }

    #[test]
    fn events_are_formatted_and_filtered() {
        let sub = Forward {
            log: record,
            max: filter(log_level::INFO),
        };
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "vfs", layer = "abc", "copied {} files", 3);
            tracing::debug!(target: "vfs", "too verbose");
            tracing::warn!(target: "vfs", "careful");
        });
        let seen = SEEN.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                (
                    log_level::INFO,
                    "vfs".to_string(),
                    "copied 3 files layer=\"abc\"".to_string()
                ),
                (log_level::WARN, "vfs".to_string(), "careful".to_string()),
            ]
        );
    }
}
