//! The integration tests, one binary: real components, the real server.
//!
//! One binary instead of one per file: each links wasmtime, and fifteen
//! copies of it cost gigabytes of disk and minutes of linking.

mod common;

mod access;
mod backup;
mod console;
mod contract;

mod egress;
mod embed_local;
mod embed_openai;
mod embed_static;
mod embedder_pool;
mod entities;
mod governance;
mod hot_reload;
mod load_checks;
mod master_key;
mod mcp;
mod metrics;
mod oauth;
mod plugin_kinds;
mod plugin_new;
mod plugin_output;
mod precompile_cache;
mod recall;
mod redaction;
mod refusals;
mod rest_api;
mod sandbox_deadline;
mod sandbox_fuel;
mod sandbox_memory;
mod sandbox_panic;
mod sandbox_wasi;
mod semantic;
mod serve_cli;
mod service_memories;
mod shared_store;
mod slow_clients;
mod tenants;
mod transfer;
mod upgrade;
