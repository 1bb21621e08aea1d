//! `run/plugins.json`: what the running server has loaded, for the CLI
//! (`memhost plugin list`, `memhost plugin reload`) to read.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::registry::{PluginRegistry, ReloadSummary};

/// The status file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginStatus {
    /// The server's process id.
    pub pid: u32,
    /// Reload attempts so far (the first load counts).
    pub attempt: u64,
    /// Generation of the plugin set in use.
    pub generation: u64,
    /// Whether the last attempt succeeded.
    pub last_ok: bool,
    /// What the last attempt did.
    pub last_summary: ReloadSummary,
    /// Unix time of the last attempt.
    pub last_at: u64,
    /// The plugins in use.
    pub plugins: Vec<PluginRow>,
}

/// One loaded plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginRow {
    /// Id.
    pub id: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Contract version it exports.
    pub api: String,
    /// sha256 of the wasm.
    pub sha256: String,
    /// Deadline per call.
    pub timeout_ms: u64,
    /// Memory cap.
    pub memory_mb: u64,
    /// Effective outbound rules.
    pub outbound: Vec<String>,
    /// Granted config keys (never values).
    pub config_keys: Vec<String>,
}

impl PluginStatus {
    /// The status of `registry` after an attempt.
    pub fn of(registry: &PluginRegistry, attempt: u64, summary: &ReloadSummary, ok: bool) -> Self {
        let set = registry.snapshot();
        PluginStatus {
            pid: std::process::id(),
            attempt,
            generation: set.generation,
            last_ok: ok,
            last_summary: summary.clone(),
            last_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            plugins: set
                .entries()
                .map(|e| PluginRow {
                    id: e.info.manifest.id.clone(),
                    version: e.info.manifest.version.clone(),
                    kind: e.info.manifest.kind.to_string(),
                    api: e.info.api.clone(),
                    sha256: e.info.wasm_sha256.clone(),
                    timeout_ms: e.info.effective.timeout_ms,
                    memory_mb: e.info.effective.memory_mb,
                    outbound: e.info.effective.outbound.clone(),
                    config_keys: e.info.effective.config.keys().cloned().collect(),
                })
                .collect(),
        }
    }

    /// Write to `path` atomically.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        crate::data_dir::DataDir::write_atomic(path, &serde_json::to_vec_pretty(self)?)
    }

    /// Read from `path`.
    pub fn read(path: &Path) -> anyhow::Result<PluginStatus> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }
}
