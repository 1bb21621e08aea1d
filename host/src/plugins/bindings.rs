//! Host-side bindings for the four plugin worlds, generated from `wit/`.
//!
//! The `redactor` world's bindings own the shared `types` and `host`
//! interfaces; the other worlds reuse them so there is one `PluginError` and
//! one `host` trait.
#![allow(
    missing_docs,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod redactor {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "memhost:plugin/redactor-plugin@0.1.0",
        additional_derives: [PartialEq],
    });
}

/// The 0.1 extractor: text in, no times.
pub mod extractor_v01 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "memhost:plugin/extractor-plugin@0.1.0",
        additional_derives: [PartialEq],
        with: {
            "memhost:plugin/types@0.1.0": crate::plugins::bindings::redactor::memhost::plugin0_1_0::types,
            "memhost:plugin/host@0.1.0": crate::plugins::bindings::redactor::memhost::plugin0_1_0::host,
        },
    });
}

/// The 0.2 extractor: text and when it was said in, times out.
pub mod extractor {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "memhost:plugin/extractor-plugin@0.2.0",
        additional_derives: [PartialEq],
        with: {
            "memhost:plugin/types@0.1.0": crate::plugins::bindings::redactor::memhost::plugin0_1_0::types,
            "memhost:plugin/host@0.1.0": crate::plugins::bindings::redactor::memhost::plugin0_1_0::host,
        },
    });
}

pub mod policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "memhost:plugin/policy-plugin@0.1.0",
        additional_derives: [PartialEq],
        with: {
            "memhost:plugin/types@0.1.0": crate::plugins::bindings::redactor::memhost::plugin0_1_0::types,
            "memhost:plugin/host@0.1.0": crate::plugins::bindings::redactor::memhost::plugin0_1_0::host,
        },
    });
}

pub mod embedder {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "memhost:plugin/embedder-plugin@0.1.0",
        with: {
            "memhost:plugin/types@0.1.0": crate::plugins::bindings::redactor::memhost::plugin0_1_0::types,
            "memhost:plugin/host@0.1.0": crate::plugins::bindings::redactor::memhost::plugin0_1_0::host,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::sync::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

pub use redactor::memhost::plugin0_1_0::host;
pub use redactor::memhost::plugin0_1_0::types::PluginError;

use crate::runtime::StoreState;

/// Longest log line a plugin may write; the rest is cut.
const MAX_LOG_LINE: usize = 2048;
/// Most `log` lines a plugin may write in one call; the rest are dropped,
/// like printed output past its cap.
const MAX_LOG_LINES: u32 = 64;

impl host::Host for StoreState {
    fn log(&mut self, level: host::LogLevel, message: String) {
        self.log_lines = self.log_lines.saturating_add(1);
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(target: "memhost::plugin", plugin = %self.identity.id, version = %self.identity.version, "more than {MAX_LOG_LINES} log lines in one call: the rest of this call's are dropped");
            }
            return;
        }
        // Escaped: a newline in a message cannot forge a line of the log.
        let message = crate::logging::untrusted(&message, MAX_LOG_LINE);
        let (id, version) = (&self.identity.id, &self.identity.version);
        match level {
            host::LogLevel::Trace => {
                tracing::trace!(target: "memhost::plugin", plugin = %id, %version, "{message}")
            }
            host::LogLevel::Debug => {
                tracing::debug!(target: "memhost::plugin", plugin = %id, %version, "{message}")
            }
            host::LogLevel::Info => {
                tracing::info!(target: "memhost::plugin", plugin = %id, %version, "{message}")
            }
            host::LogLevel::Warn => {
                tracing::warn!(target: "memhost::plugin", plugin = %id, %version, "{message}")
            }
            host::LogLevel::Error => {
                tracing::error!(target: "memhost::plugin", plugin = %id, %version, "{message}")
            }
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        // Only the intersection of requested and granted keys is in here.
        self.config.get(&key).cloned()
    }
}

impl PluginError {
    /// The error as one line for logs and callers.
    pub fn describe(&self) -> String {
        match self {
            PluginError::InvalidInput(m) => format!("invalid input: {m}"),
            PluginError::Config(m) => format!("configuration: {m}"),
            PluginError::Unavailable(m) => format!("unavailable: {m}"),
            PluginError::Other(m) => m.clone(),
        }
    }
}
