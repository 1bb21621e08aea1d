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
