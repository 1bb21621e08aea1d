//! memhost: a memory server for AI agents.
//!
//! The host owns what must be trusted — storage, indexes, identity, audit,
//! governance — and runs everything an operator customises as sandboxed
//! WebAssembly component plugins (`runtime`, `plugins`).

pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod data_dir;
pub mod governance;
pub mod index;
pub mod logging;
pub mod metrics;
pub mod plugins;
pub mod runtime;
pub mod server;
pub mod service;
pub mod store;
pub mod transfer;
