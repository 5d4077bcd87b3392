//! Logging with `tracing`: readable text on a terminal, one JSON object per line otherwise.

use std::io::{IsTerminal, Write};

use tracing_subscriber::{fmt, EnvFilter};

use crate::configuration::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.filter`.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = fmt().with_env_filter(filter).with_writer(|| Stderr).with_ansi(std::io::stderr().is_terminal());
    // A second init (tests run many apps in one process) keeps the first subscriber.
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.compact().try_init() };
}

/// Standard error that never reports a failed write. Under `artifacts up` it is a pipe that closes when
/// `up` dies; tracing-subscriber reports a failed write with `eprintln!`, which then panics the task that
/// logged (the shutdown task among them, so an orphaned process never stopped).
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
