//! The host interface: logging and granted configuration.

use crate::__bindings::redactor::memhost::plugin0_1_0::host;

/// Severity of a log line.
pub use host::LogLevel;

/// Write one line to the host's log, tagged with this plugin's id.
///
/// Never log memory content: operators read these logs.
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}

/// [`log`] at debug level.
pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}

/// [`log`] at info level.
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

/// [`log`] at warn level.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}

/// [`log`] at error level.
pub fn error(message: &str) {
    log(LogLevel::Error, message);
}

/// The value of configuration key `key`, if the operator set it and granted
/// it to this plugin (the plugin's `plugin.toml` must also list the key under
/// `[capabilities] config`).
pub fn config(key: &str) -> Option<String> {
    host::config(key)
}

/// Like [`config`], but a missing key is an [`crate::Error::Config`] that
/// names the key, ready to return from `new`.
pub fn require_config(key: &str) -> crate::Result<String> {
    config(key).ok_or_else(|| {
        crate::Error::Config(format!(
            "configuration key \"{key}\" is not set or not granted to this plugin"
        ))
    })
}

/// A whole number from configuration key `key`: `default` when it is not
/// set, an [`crate::Error::Config`] naming the key, the range and the value
/// when it is not a number in `range`.
pub fn config_number(
    key: &str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> crate::Result<usize> {
    match config(key) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(crate::Error::Config(format!(
                "{key} must be a number from {} to {}, not \"{v}\"",
                range.start(),
                range.end()
            ))),
        },
    }
}
