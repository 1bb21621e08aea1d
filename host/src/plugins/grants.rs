//! What the operator grants, and what a plugin finally gets.
//!
//! | capability              | plugin asks (plugin.toml)        | operator grants (`[plugins.grants.<id>]`) | plugin gets                     |
//! |-------------------------|----------------------------------|-------------------------------------------|---------------------------------|
//! | outbound hosts          | `allowed_outbound_hosts`         | `allowed_outbound_hosts`                  | rules both allow (embedders)    |
//! | configuration           | `config` (key names)             | `config` (key = value)                    | values of keys both name        |
//! | read-only directories   | `read_only_dirs` (guest paths)   | `read_only_dirs` (guest = host path)      | mounts both name                |
//! | time per call           | `limits.timeout_ms`              | `timeout_ms`, else `max_timeout_ms`       | the smaller                     |
//! | memory                  | `limits.memory_mb`               | `memory_mb`, else `max_memory_mb`         | the smaller                     |
//! | warm instances          | `limits.instances` (embedders)   | `instances`, else `embedder_instances`    | the smaller                     |
//!
//! No grant, or an empty one, means no capability at all.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::manifest::{Manifest, PluginKind, valid_config_key, valid_guest_path};
use crate::runtime::egress::{EgressPolicy, OutboundRule};
use crate::runtime::{CallBudget, PluginIdentity, StoreSpec};

/// The `[plugins]` table of the host configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginSettings {
    /// The directory holding one sub-directory per plugin.
    pub dir: Option<PathBuf>,
    /// Reload automatically when files in `dir` change.
    pub watch: bool,
    /// Use the pooling instance allocator when the machine allows it.
    pub pooling: bool,
    /// Fuel per call; off when unset.
    pub fuel_per_call: Option<u64>,
    /// Deadline for plugins whose manifest sets none, in ms.
    pub default_timeout_ms: u64,
    /// Memory for plugins whose manifest sets none, in MiB.
    pub default_memory_mb: u64,
    /// Ceiling on any plugin's deadline, in ms.
    pub max_timeout_ms: u64,
    /// Ceiling on any plugin's memory, in MiB.
    pub max_memory_mb: u64,
    /// Warm instances kept per embedder.
    pub embedder_instances: u32,
    /// Calls after which a warm embedder instance is retired.
    pub embedder_max_calls: u64,
    /// Per-plugin grants, by plugin id.
    pub grants: BTreeMap<String, Grant>,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            dir: None,
            watch: true,
            pooling: true,
            fuel_per_call: None,
            default_timeout_ms: 1_000,
            default_memory_mb: 64,
            max_timeout_ms: 30_000,
            max_memory_mb: 1_024,
            embedder_instances: 3,
            embedder_max_calls: 10_000,
            grants: BTreeMap::new(),
        }
    }
}

/// `[plugins.grants.<id>]`: what the operator allows one plugin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grant {
    /// Load the plugin at all (default true).
    pub enabled: Option<bool>,
    /// Outbound destinations allowed.
    pub allowed_outbound_hosts: Vec<String>,
    /// Allow private and loopback addresses for any allowed host.
    pub allow_private_network: bool,
    /// Configuration values.
    pub config: BTreeMap<String, String>,
    /// Read-only mounts: guest path = host path.
    pub read_only_dirs: BTreeMap<String, PathBuf>,
    /// Ceiling on this plugin's deadline, in ms.
    pub timeout_ms: Option<u64>,
    /// Ceiling on this plugin's memory, in MiB.
    pub memory_mb: Option<u64>,
    /// Warm instances (embedders).
    pub instances: Option<u32>,
    /// Calls per warm instance before it is retired (embedders).
    pub max_calls_per_instance: Option<u64>,
}

/// Warm-instance pool settings for an embedder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolSettings {
    /// Instances kept warm (and the most that run at once).
    pub instances: u32,
    /// Calls after which an instance is replaced by a fresh one.
    pub max_calls_per_instance: u64,
}

/// Everything a plugin finally gets: the intersection of asks and grants.
#[derive(Debug, Clone, Serialize)]
pub struct Effective {
    /// Deadline per call, in ms.
    pub timeout_ms: u64,
    /// Memory cap, in MiB.
    pub memory_mb: u64,
    /// Configuration values it can read. Shown (`plugin check --json`, the
    /// status file) by key only: values are often secrets (an `api_key`).
    #[serde(rename = "config_keys", serialize_with = "keys_only")]
    pub config: BTreeMap<String, String>,
    /// Read-only mounts (guest path, host path).
    pub read_only_dirs: Vec<(String, PathBuf)>,
    /// Outbound rules in effect.
    pub outbound: Vec<String>,
    /// Private addresses allowed for outbound rules.
    pub allow_private_network: bool,
    /// Warm pool (embedders only).
    pub pool: Option<PoolSettings>,
    /// Things asked for but not granted, or granted but not asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

fn keys_only<S: serde::Serializer>(
    config: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(config.keys())
}

impl Effective {
    /// Work out what `manifest` gets under `settings`.
    ///
    /// Errors (bad grant entries, a granted directory that does not exist)
    /// name the plugin's grant table and the entry.
    pub fn compute(manifest: &Manifest, settings: &PluginSettings) -> Result<Effective, String> {
        let empty = Grant::default();
        let grant = settings.grants.get(&manifest.id).unwrap_or(&empty);
        let table = format!("[plugins.grants.{}]", manifest.id);
        let mut notes = Vec::new();

        let timeout_ceiling = grant
            .timeout_ms
            .unwrap_or(settings.max_timeout_ms)
            .min(settings.max_timeout_ms);
        let memory_ceiling = grant
            .memory_mb
            .unwrap_or(settings.max_memory_mb)
            .min(settings.max_memory_mb);
        let timeout_ms = manifest
            .limits
            .timeout_ms
            .unwrap_or(settings.default_timeout_ms)
            .min(timeout_ceiling)
            .max(1);
        let memory_mb = manifest
            .limits
            .memory_mb
            .unwrap_or(settings.default_memory_mb)
            .min(memory_ceiling)
            .max(1);
        if manifest.limits.timeout_ms.is_some_and(|t| t > timeout_ms) {
            notes.push(format!(
                "timeout clamped to {timeout_ms} ms by the operator"
            ));
        }
        if manifest.limits.memory_mb.is_some_and(|m| m > memory_mb) {
            notes.push(format!("memory clamped to {memory_mb} MiB by the operator"));
        }

        let mut config = BTreeMap::new();
        for key in &manifest.capabilities.config {
            match grant.config.get(key) {
                Some(value) => {
                    config.insert(key.clone(), value.clone());
                }
                None => notes.push(format!("config key \"{key}\" asked for but not granted")),
            }
        }
        for key in grant.config.keys() {
            if !valid_config_key(key) {
                return Err(format!("{table} config: key \"{key}\" is not a valid key"));
            }
            if !manifest.capabilities.config.contains(key) {
                notes.push(format!(
                    "config key \"{key}\" granted but the plugin does not ask for it; ignored"
                ));
            }
        }

        let mut read_only_dirs = Vec::new();
        for guest in grant.read_only_dirs.keys() {
            if !valid_guest_path(guest) {
                return Err(format!(
                    "{table} read_only_dirs: \"{guest}\" must be an absolute guest path like /model"
                ));
            }
            if !manifest.capabilities.read_only_dirs.contains(guest) {
                notes.push(format!(
                    "directory {guest} granted but not asked for; ignored"
                ));
            }
        }
        for guest in &manifest.capabilities.read_only_dirs {
            match grant.read_only_dirs.get(guest) {
                Some(host) if host.is_dir() => read_only_dirs.push((guest.clone(), host.clone())),
                Some(host) => {
                    return Err(format!(
                        "{table} read_only_dirs: {guest} = \"{}\" is not an existing directory",
                        host.display()
                    ));
                }
                None => notes.push(format!("directory {guest} asked for but not granted")),
            }
        }

        let granted_rules = grant
            .allowed_outbound_hosts
            .iter()
            .map(|h| {
                OutboundRule::parse(h).map_err(|e| format!("{table} allowed_outbound_hosts: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let requested_rules = manifest.outbound_rules();
        let outbound = if manifest.kind == PluginKind::Embedder {
            if manifest.outbound_any() {
                // "*": the operator's list is the whole allow-list.
                granted_rules.clone()
            } else {
                EgressPolicy::intersect(&requested_rules, &granted_rules)
            }
        } else {
            if !granted_rules.is_empty() {
                notes.push(format!(
                    "outbound hosts granted, but a {} may not make outbound requests; ignored",
                    manifest.kind
                ));
            }
            Vec::new()
        };
        for r in &requested_rules {
            if !outbound.iter().any(|o| o == r) {
                notes.push(format!("outbound host {r} asked for but not granted"));
            }
        }

        let pool = (manifest.kind == PluginKind::Embedder).then(|| PoolSettings {
            instances: grant
                .instances
                .unwrap_or(settings.embedder_instances)
                .min(manifest.limits.instances.unwrap_or(u32::MAX))
                .max(1),
            max_calls_per_instance: grant
                .max_calls_per_instance
                .unwrap_or(settings.embedder_max_calls)
                .max(1),
        });

        Ok(Effective {
            timeout_ms,
            memory_mb,
            config,
            read_only_dirs,
            outbound: outbound.iter().map(ToString::to_string).collect(),
            allow_private_network: grant.allow_private_network && !outbound.is_empty(),
            pool,
            notes,
        })
    }

    /// The store settings for these grants.
    pub fn store_spec(&self, manifest: &Manifest) -> StoreSpec {
        let egress = (manifest.kind == PluginKind::Embedder).then(|| {
            Arc::new(EgressPolicy {
                rules: self
                    .outbound
                    .iter()
                    .filter_map(|r| OutboundRule::parse(r).ok())
                    .collect(),
                allow_private_network: self.allow_private_network,
            })
        });
        StoreSpec {
            identity: PluginIdentity {
                id: manifest.id.clone(),
                version: manifest.version.clone(),
            },
            kind: manifest.kind.as_str(),
            budget: CallBudget {
                timeout: Duration::from_millis(self.timeout_ms),
                memory_bytes: usize::try_from(self.memory_mb.saturating_mul(1 << 20))
                    .unwrap_or(usize::MAX),
            },
            config: Arc::new(self.config.clone()),
            read_only_dirs: self
                .read_only_dirs
                .iter()
                .map(|(guest, host)| (host.clone(), guest.clone()))
                .collect(),
            egress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(kind: &str, caps: &str, limits: &str) -> Manifest {
        Manifest::parse(&format!(
            "id = \"p\"\nname = \"P\"\nversion = \"0.1.0\"\nkind = \"{kind}\"\napi = \"0.1.0\"\nwasm = \"p.wasm\"\n[limits]\n{limits}\n[capabilities]\n{caps}\n"
        ))
        .unwrap()
    }

    #[test]
    fn no_grant_means_nothing() {
        let m = manifest(
            "embedder",
            "allowed_outbound_hosts = [\"https://api.openai.com\"]\nconfig = [\"api_key\"]\nread_only_dirs = [\"/model\"]",
            "",
        );
        let e = Effective::compute(&m, &PluginSettings::default()).unwrap();
        assert!(e.outbound.is_empty());
        assert!(e.config.is_empty());
        assert!(e.read_only_dirs.is_empty());
        assert_eq!(e.notes.len(), 3, "{:?}", e.notes);
    }

    #[test]
    fn intersection_of_asks_and_grants() {
        let m = manifest(
            "embedder",
            "allowed_outbound_hosts = [\"https://api.openai.com\", \"https://evil.example\"]\nconfig = [\"api_key\", \"model\"]",
            "",
        );
        let mut settings = PluginSettings::default();
        settings.grants.insert(
            "p".into(),
            Grant {
                allowed_outbound_hosts: vec![
                    "https://api.openai.com".into(),
                    "https://other.example".into(),
                ],
                config: [
                    ("api_key".to_string(), "k".to_string()),
                    ("extra".to_string(), "x".to_string()),
                ]
                .into(),
                ..Grant::default()
            },
        );
        let e = Effective::compute(&m, &settings).unwrap();
        assert_eq!(e.outbound, ["https://api.openai.com:443"]);
        assert_eq!(e.config.keys().collect::<Vec<_>>(), ["api_key"]);
    }

    #[test]
    fn a_star_asks_for_exactly_what_the_operator_grants() {
        let m = manifest("embedder", "allowed_outbound_hosts = [\"*\"]", "");
        let mut settings = PluginSettings::default();
        assert!(
            Effective::compute(&m, &settings)
                .unwrap()
                .outbound
                .is_empty()
        );
        settings.grants.insert(
            "p".into(),
            Grant {
                allowed_outbound_hosts: vec!["http://127.0.0.1:11434".into()],
                ..Grant::default()
            },
        );
        let e = Effective::compute(&m, &settings).unwrap();
        assert_eq!(e.outbound, ["http://127.0.0.1:11434"]);
        // Only embedders may ask at all.
        assert!(
            crate::plugins::Manifest::parse(
                "id = \"p\"\nname = \"p\"\nversion = \"0.1.0\"\nkind = \"redactor\"\napi = \"0.1.0\"\nwasm = \"p.wasm\"\n[capabilities]\nallowed_outbound_hosts = [\"*\"]\n"
            )
            .is_err()
        );
    }

    #[test]
    fn limits_are_clamped_by_the_operator() {
        let m = manifest("redactor", "", "timeout_ms = 60000\nmemory_mb = 4096");
        let mut settings = PluginSettings::default();
        let e = Effective::compute(&m, &settings).unwrap();
        assert_eq!((e.timeout_ms, e.memory_mb), (30_000, 1_024));
        settings.grants.insert(
            "p".into(),
            Grant {
                timeout_ms: Some(50),
                memory_mb: Some(8),
                ..Grant::default()
            },
        );
        let e = Effective::compute(&m, &settings).unwrap();
        assert_eq!((e.timeout_ms, e.memory_mb), (50, 8));
        // A manifest asking for less than the ceiling keeps its own value.
        let m = manifest("redactor", "", "timeout_ms = 20");
        assert_eq!(Effective::compute(&m, &settings).unwrap().timeout_ms, 20);
    }

    #[test]
    fn a_granted_directory_must_exist() {
        let m = manifest("embedder", "read_only_dirs = [\"/model\"]", "");
        let mut settings = PluginSettings::default();
        settings.grants.insert(
            "p".into(),
            Grant {
                read_only_dirs: [("/model".to_string(), PathBuf::from("/definitely/not/here"))]
                    .into(),
                ..Grant::default()
            },
        );
        let err = Effective::compute(&m, &settings).unwrap_err();
        assert!(
            err.contains("[plugins.grants.p]") && err.contains("/definitely/not/here"),
            "{err}"
        );
    }
}
