//! Logs: human-readable by default, JSON with `MEMHOST_LOG_FORMAT=json`,
//! filtered by `MEMHOST_LOG` (or `RUST_LOG`), always on stderr. Security
//! events use the target `audit`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Install the global subscriber (once; later calls do nothing).
pub fn init() {
    let filter = std::env::var("MEMHOST_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("MEMHOST_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
