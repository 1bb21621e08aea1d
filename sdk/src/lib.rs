//! Write [memhost](https://github.com/memhost/memhost) plugins in Rust.
//!
//! A memhost plugin is a WebAssembly component of one kind — a [`Redactor`],
//! an [`Extractor`], a [`Policy`] or an [`Embedder`] — that the memhost host
//! runs in a sandbox. Implement the kind's trait for a type and register it
//! with the kind's macro; build with `cargo build --target wasm32-wasip2
//! --release`; the `.wasm` that comes out is the plugin.
//!
//! ```ignore
//! use memhost_sdk::{Finding, Redactor, Result};
//!
//! struct NoTickets;
//!
//! impl Redactor for NoTickets {
//!     fn new() -> Result<Self> {
//!         Ok(NoTickets)
//!     }
//!
//!     fn redact(&self, text: &str) -> Result<Vec<Finding>> {
//!         Ok(text
//!             .match_indices("TICKET-")
//!             .map(|(start, m)| Finding::new(start, start + m.len(), "ticket", "[TICKET]"))
//!             .collect())
//!     }
//! }
//!
//! memhost_sdk::register_redactor!(NoTickets);
//! ```
//!
//! The crate carries the WIT contract (`memhost:plugin@0.2.0`) and generates
//! its bindings once; plugin authors never depend on `wit-bindgen` themselves.
//! The register macros also write the contract version into the component
//! (custom section `memhost:plugin-api`) so the host can say which version a
//! plugin was built for.
#![deny(missing_docs)]

#[cfg(test)]
mod tests;

/// Generated bindings. Not part of the public API: use the re-exports.
#[doc(hidden)]
#[allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::all,
    unsafe_op_in_unsafe_fn
)]
pub mod __bindings {
    /// The `redactor` world; it also owns the shared `types` and `host` bindings.
    pub mod redactor {
        wit_bindgen::generate!({
            path: "../wit",
            world: "memhost:plugin/redactor-plugin@0.2.0",
            pub_export_macro: true,
            generate_all,
            additional_derives: [PartialEq],
        });
    }
    /// The `extractor` world.
    pub mod extractor {
        wit_bindgen::generate!({
            path: "../wit",
            world: "memhost:plugin/extractor-plugin@0.2.0",
            pub_export_macro: true,
            additional_derives: [PartialEq],
            with: {
                "memhost:plugin/types@0.1.0": crate::__bindings::redactor::memhost::plugin0_1_0::types,
                "memhost:plugin/host@0.1.0": crate::__bindings::redactor::memhost::plugin0_1_0::host,
            },
        });
    }
    /// The `policy` world.
    pub mod policy {
        wit_bindgen::generate!({
            path: "../wit",
            world: "memhost:plugin/policy-plugin@0.2.0",
            pub_export_macro: true,
            additional_derives: [PartialEq],
            with: {
                "memhost:plugin/types@0.1.0": crate::__bindings::redactor::memhost::plugin0_1_0::types,
                "memhost:plugin/host@0.1.0": crate::__bindings::redactor::memhost::plugin0_1_0::host,
            },
        });
    }
    /// The `embedder` world, with `wasi:http` for outbound calls.
    pub mod embedder {
        wit_bindgen::generate!({
            path: "../wit",
            world: "memhost:plugin/embedder-plugin@0.2.0",
            pub_export_macro: true,
            generate_all,
            with: {
                "memhost:plugin/types@0.1.0": crate::__bindings::redactor::memhost::plugin0_1_0::types,
                "memhost:plugin/host@0.1.0": crate::__bindings::redactor::memhost::plugin0_1_0::host,
            },
        });
    }
}

pub mod http;
mod kinds;
mod log;

pub use kinds::*;
pub use log::{LogLevel, config, config_number, debug, error, info, log, require_config, warn};

/// Why a plugin could not do what it was asked (the WIT `plugin-error`).
///
/// Construct it with the variant that says what the host should do:
/// [`Error::InvalidInput`] (the input is unusable), [`Error::Config`] (a
/// configuration key is missing or wrong — name the key),
/// [`Error::Unavailable`] (a dependency is down; the host may retry) or
/// [`Error::Other`].
pub use __bindings::redactor::memhost::plugin0_1_0::types::PluginError as Error;

/// The result of every plugin entry point.
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// An [`Error::Other`] with the given message.
    pub fn other(message: impl Into<String>) -> Self {
        Error::Other(message.into())
    }
}

/// The version of the WIT contract this SDK implements.
pub const API_VERSION: &str = "0.2.0";

/// Support code for the register macros. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    use std::cell::OnceCell;
    use std::thread::LocalKey;

    /// What the register macros write into the `memhost:plugin-api` custom
    /// section: the contract version and the SDK version.
    pub const API_MARKER_STR: &str = concat!(
        "memhost:plugin@0.2.0 memhost-sdk@",
        env!("CARGO_PKG_VERSION")
    );
    /// Length of [`API_MARKER_STR`].
    pub const API_MARKER_LEN: usize = API_MARKER_STR.len();
    /// [`API_MARKER_STR`] as a byte array, the form a custom section needs.
    pub const API_MARKER: [u8; API_MARKER_LEN] = {
        let bytes = API_MARKER_STR.as_bytes();
        let mut out = [0u8; API_MARKER_LEN];
        let mut i = 0;
        while i < API_MARKER_LEN {
            out[i] = bytes[i];
            i += 1;
        }
        out
    };

    /// Run `f` on the plugin's instance, creating it with `new` on first use.
    ///
    /// The host gives stateless kinds a fresh instance per call, so `new`
    /// runs every call for them; embedders keep a warm instance, so their
    /// state (model weights) is built once.
    pub fn with_instance<P: 'static, R>(
        cell: &'static LocalKey<OnceCell<P>>,
        new: fn() -> crate::Result<P>,
        f: impl FnOnce(&P) -> crate::Result<R>,
    ) -> crate::Result<R> {
        cell.with(|slot| {
            if slot.get().is_none() {
                let plugin = new()?;
                let _ = slot.set(plugin);
            }
            match slot.get() {
                Some(plugin) => f(plugin),
                None => Err(crate::Error::other("plugin instance could not be created")),
            }
        })
    }
}

/// Writes the contract version into the component. Used by the register macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __api_version_section {
    () => {
        #[cfg(target_arch = "wasm32")]
        #[unsafe(link_section = "memhost:plugin-api")]
        #[used]
        static __MEMHOST_PLUGIN_API: [u8; $crate::__private::API_MARKER_LEN] =
            $crate::__private::API_MARKER;
    };
}
