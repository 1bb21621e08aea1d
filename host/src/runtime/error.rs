//! What can go wrong when the host calls a plugin, as one typed error that
//! always names the plugin.

use std::time::Duration;

use wasmtime::Trap;

use super::PluginIdentity;
use super::limits::MemoryCapExceeded;

/// A failed plugin call: which plugin, and what happened.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{plugin}: {kind}")]
pub struct CallError {
    /// The plugin that failed.
    pub plugin: PluginIdentity,
    /// What happened.
    pub kind: CallErrorKind,
}

/// The ways a plugin call fails.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallErrorKind {
    /// The call ran past its deadline and was stopped.
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The plugin tried to use more memory than its cap.
    #[error("memory limit of {} MiB exceeded", .cap_bytes >> 20)]
    MemoryLimit {
        /// The cap, in bytes.
        cap_bytes: usize,
    },
    /// Fuel metering is on and the call used all of its fuel.
    #[error("ran out of fuel")]
    OutOfFuel,
    /// The guest panicked (a Rust panic aborts into a wasm trap).
    #[error("panicked: {0}")]
    Panic(String),
    /// Any other wasm trap (bad memory access, stack overflow, ...).
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin returned an error value.
    #[error("returned an error: {0}")]
    Returned(String),
    /// The plugin needed something it was not granted.
    #[error("capability denied: {0}")]
    CapabilityDenied(String),
    /// The plugin returned something that breaks the contract (a span
    /// outside the text, a vector of the wrong length, ...).
    #[error("returned invalid output: {0}")]
    InvalidOutput(String),
    /// Every instance slot is in use; try again.
    #[error("too busy: {0}")]
    Busy(String),
    /// The component could not be instantiated.
    #[error("cannot be instantiated: {0}")]
    Instantiate(String),
}

impl CallErrorKind {
    /// The kind of failure as a fixed word (a metrics label).
    pub fn label(&self) -> &'static str {
        match self {
            CallErrorKind::Timeout(_) => "timeout",
            CallErrorKind::MemoryLimit { .. } => "memory_limit",
            CallErrorKind::OutOfFuel => "out_of_fuel",
            CallErrorKind::Panic(_) => "panic",
            CallErrorKind::Trap(_) => "trap",
            CallErrorKind::Returned(_) => "returned_error",
            CallErrorKind::CapabilityDenied(_) => "capability_denied",
            CallErrorKind::InvalidOutput(_) => "invalid_output",
            CallErrorKind::Busy(_) => "busy",
            CallErrorKind::Instantiate(_) => "instantiate",
        }
    }

    /// What happened, without the plugin's or the guest's own words (a
    /// panic message, an error text), which may quote its input: for logs.
    pub fn without_words(&self) -> String {
        match self {
            CallErrorKind::Panic(_) => "panicked".into(),
            CallErrorKind::Trap(_) => "trapped".into(),
            CallErrorKind::Returned(m) => match m.split_once(':') {
                // The contract's fixed variants, named; `other` is words.
                Some((variant @ ("invalid input" | "configuration" | "unavailable"), _)) => {
                    format!("returned an error ({variant})")
                }
                _ => "returned an error".into(),
            },
            CallErrorKind::InvalidOutput(_) => "returned invalid output".into(),
            other => other.to_string(),
        }
    }

    /// The kind alone, without the plugin's own words (which may quote its
    /// input): for what is stored.
    pub fn summary(&self) -> &'static str {
        match self {
            CallErrorKind::Timeout(_) => "the embedder timed out on this text",
            CallErrorKind::MemoryLimit { .. } => "the embedder ran out of memory on this text",
            CallErrorKind::OutOfFuel => "the embedder ran out of fuel on this text",
            CallErrorKind::Panic(_) => "the embedder panicked on this text",
            CallErrorKind::Trap(_) => "the embedder trapped on this text",
            CallErrorKind::Returned(m) if m.starts_with("invalid input:") => {
                "the embedder refused this text as invalid input"
            }
            CallErrorKind::Returned(_) => "the embedder returned an error for this text",
            CallErrorKind::CapabilityDenied(_) => "the embedder was denied a capability",
            CallErrorKind::InvalidOutput(_) => "the embedder returned an unusable vector",
            CallErrorKind::Busy(_) => "the embedder was busy",
            CallErrorKind::Instantiate(_) => "the embedder could not start",
        }
    }
}

impl CallError {
    /// A call error of the given kind.
    pub fn new(plugin: &PluginIdentity, kind: CallErrorKind) -> Self {
        CallError {
            plugin: plugin.clone(),
            kind,
        }
    }

    /// Whether the failure lies with the plugin's surroundings (busy, down,
    /// not granted, cannot start) rather than with the input: worth the
    /// same call again later.
    pub fn is_transient(&self) -> bool {
        match &self.kind {
            CallErrorKind::Busy(_)
            | CallErrorKind::CapabilityDenied(_)
            | CallErrorKind::Instantiate(_) => true,
            CallErrorKind::Returned(m) => {
                m.starts_with("unavailable:") || m.starts_with("configuration:")
            }
            _ => false,
        }
    }

    /// Whether the plugin said the input itself is unusable: the same call
    /// will fail again.
    pub fn is_bad_input(&self) -> bool {
        matches!(&self.kind, CallErrorKind::Returned(m) if m.starts_with("invalid input:"))
    }

    /// A [`CallErrorKind::CapabilityDenied`] error.
    pub fn capability(plugin: &PluginIdentity, what: impl Into<String>) -> Self {
        Self::new(plugin, CallErrorKind::CapabilityDenied(what.into()))
    }

    /// Classify a wasmtime error from instantiating or calling a guest.
    ///
    /// `stderr` is what the guest printed during the call; a panic message
    /// is taken from it.
    pub fn from_wasm(
        plugin: &PluginIdentity,
        err: &wasmtime::Error,
        timeout: Duration,
        stderr: &str,
    ) -> Self {
        let kind = if let Some(cap) = err.downcast_ref::<MemoryCapExceeded>() {
            CallErrorKind::MemoryLimit { cap_bytes: cap.cap }
        } else if let Some(trap) = err.downcast_ref::<Trap>() {
            match trap {
                Trap::Interrupt => CallErrorKind::Timeout(timeout),
                Trap::OutOfFuel => CallErrorKind::OutOfFuel,
                Trap::UnreachableCodeReached => {
                    CallErrorKind::Panic(panic_message(stderr).unwrap_or_else(|| {
                        "unreachable code reached (no panic message)".to_string()
                    }))
                }
                other => CallErrorKind::Trap(other.to_string()),
            }
        } else {
            let text = format!("{err:#}");
            if text.contains("concurrent") && text.contains("limit") {
                CallErrorKind::Busy(text)
            } else {
                CallErrorKind::Trap(text)
            }
        };
        Self::new(plugin, kind)
    }
}

/// The message of a Rust panic as printed by the guest's std: the line after
/// `panicked at <location>:`.
fn panic_message(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines();
    while let Some(line) = lines.next() {
        if line.contains("panicked at") {
            let message = lines.next().unwrap_or(line).trim();
            let mut message = message.to_string();
            message.truncate(500);
            return Some(message);
        }
    }
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty())?;
    let mut last = last.trim().to_string();
    last.truncate(500);
    Some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_is_the_line_after_panicked_at() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:17:9:\nfixture panicked on purpose\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).unwrap(),
            "fixture panicked on purpose"
        );
        assert_eq!(panic_message("").as_deref(), None);
    }

    #[test]
    fn messages_name_the_plugin_and_the_cause() {
        let id = PluginIdentity {
            id: "pii".into(),
            version: "0.1.0".into(),
        };
        let e = CallError::new(&id, CallErrorKind::Timeout(Duration::from_millis(200)));
        assert_eq!(
            e.to_string(),
            "plugin \"pii\" 0.1.0: timed out after 200 ms"
        );
    }
}
