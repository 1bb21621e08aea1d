//! `plugin.toml`: what a plugin is and what it asks for.
//!
//! ```toml
//! id = "redact-keywords"          # [a-z][a-z0-9-]{0,63}
//! name = "Keyword redactor"
//! version = "0.1.0"               # semver
//! kind = "redactor"               # redactor | extractor | policy | embedder
//! api = "0.1.0"                   # memhost:plugin contract version
//! wasm = "redact_keywords.wasm"   # relative to the plugin directory
//! sha256 = "…"                    # optional pin of the wasm file
//!
//! [limits]                        # what the plugin needs; the operator clamps
//! timeout_ms = 200
//! memory_mb = 32
//! instances = 1                   # embedders: most warm instances wanted
//!
//! [capabilities]                  # what the plugin asks for; nothing by default
//! allowed_outbound_hosts = []     # embedders only: "https://api.openai.com", or "*"
//!                                 # for an endpoint the operator chooses (the
//!                                 # operator's grant is then the whole list)
//! config = ["terms"]              # configuration keys it reads
//! read_only_dirs = []             # guest paths it expects mounted, e.g. "/model"
//! ```
//!
//! Unknown fields are errors: a typo must not silently drop a limit.

use std::path::{Component as PathComponent, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::egress::OutboundRule;

/// The file name of a manifest inside a plugin directory.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// The four plugin kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Finds sensitive spans in text.
    Redactor,
    /// Extracts entities, facts and tags.
    Extractor,
    /// Governance: allow, deny, require approval.
    Policy,
    /// Turns text into vectors.
    Embedder,
}

impl PluginKind {
    /// Every kind.
    pub const ALL: [PluginKind; 4] = [
        PluginKind::Redactor,
        PluginKind::Extractor,
        PluginKind::Policy,
        PluginKind::Embedder,
    ];

    /// The kind's name as written in `plugin.toml` and in WIT.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Redactor => "redactor",
            PluginKind::Extractor => "extractor",
            PluginKind::Policy => "policy",
            PluginKind::Embedder => "embedder",
        }
    }

    /// The kind whose WIT interface is called `name`.
    pub fn from_interface(name: &str) -> Option<PluginKind> {
        PluginKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed, validated `plugin.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Stable identifier, unique per host.
    pub id: String,
    /// Human name.
    pub name: String,
    /// The plugin's own version (semver).
    pub version: String,
    /// What the plugin does.
    pub kind: PluginKind,
    /// The contract version the plugin was built against.
    pub api: String,
    /// The component file, relative to the plugin directory.
    pub wasm: PathBuf,
    /// Optional sha256 (hex) the wasm file must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// One-line description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Per-call limits the plugin needs.
    #[serde(default)]
    pub limits: ManifestLimits,
    /// Capabilities the plugin asks for.
    #[serde(default)]
    pub capabilities: ManifestCapabilities,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    /// Deadline per call, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Memory cap, in MiB.
    pub memory_mb: Option<u64>,
    /// Embedders: the most warm instances it should have (a plugin holding
    /// a large model asks for 1; calls are then serialised).
    pub instances: Option<u32>,
}

/// `[capabilities]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestCapabilities {
    /// Outbound HTTP destinations (embedders only).
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Configuration keys the plugin reads.
    #[serde(default)]
    pub config: Vec<String>,
    /// Guest paths the plugin expects to be mounted read-only.
    #[serde(default)]
    pub read_only_dirs: Vec<String>,
}

/// A manifest that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", .path.display())]
pub struct ManifestError {
    /// The manifest file.
    pub path: PathBuf,
    /// What is wrong, naming the field.
    pub reason: String,
}

/// A manifest together with where it was found.
#[derive(Debug, Clone)]
pub struct LocatedManifest {
    /// The manifest.
    pub manifest: Manifest,
    /// The plugin directory.
    pub dir: PathBuf,
    /// The absolute path of the wasm file.
    pub wasm_path: PathBuf,
}

impl Manifest {
    /// Read and validate `<dir>/plugin.toml`.
    pub fn load(dir: &Path) -> Result<LocatedManifest, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let err = |reason: String| ManifestError {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| err(format!("cannot read: {e}")))?;
        let manifest = Manifest::parse(&text).map_err(err)?;
        let wasm_path = dir.join(&manifest.wasm);
        Ok(LocatedManifest {
            manifest,
            dir: dir.to_path_buf(),
            wasm_path,
        })
    }

    /// Parse and validate manifest text.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        if !valid_id(&self.id) {
            return Err(format!(
                "id \"{}\" must be 1-64 characters: a lowercase letter, then lowercase letters, digits or -",
                self.id
            ));
        }
        if self.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        semver::Version::parse(&self.version)
            .map_err(|e| format!("version \"{}\" is not semver: {e}", self.version))?;
        semver::Version::parse(&self.api)
            .map_err(|e| format!("api \"{}\" is not semver: {e}", self.api))?;
        let wasm_ok = self.wasm.extension().is_some_and(|e| e == "wasm")
            && self
                .wasm
                .components()
                .all(|c| matches!(c, PathComponent::Normal(_)));
        if !wasm_ok {
            return Err(format!(
                "wasm \"{}\" must be a .wasm file inside the plugin directory (no absolute path, no ..)",
                self.wasm.display()
            ));
        }
        if let Some(pin) = &self.sha256
            && (pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(format!("sha256 \"{pin}\" must be 64 hex digits"));
        }
        if self.limits.timeout_ms == Some(0) {
            return Err("limits.timeout_ms must be at least 1".into());
        }
        if self.limits.memory_mb == Some(0) {
            return Err("limits.memory_mb must be at least 1".into());
        }
        let caps = &self.capabilities;
        if !caps.allowed_outbound_hosts.is_empty() && self.kind != PluginKind::Embedder {
            return Err(format!(
                "capabilities.allowed_outbound_hosts: only embedders may make outbound requests, and this plugin is a {}",
                self.kind
            ));
        }
        for host in caps.allowed_outbound_hosts.iter().filter(|h| *h != "*") {
            OutboundRule::parse(host)
                .map_err(|e| format!("capabilities.allowed_outbound_hosts: {e}"))?;
        }
        for key in &caps.config {
            if !valid_config_key(key) {
                return Err(format!(
                    "capabilities.config: key \"{key}\" must be letters, digits, _, - or ."
                ));
            }
        }
        for dir in &caps.read_only_dirs {
            if !valid_guest_path(dir) {
                return Err(format!(
                    "capabilities.read_only_dirs: \"{dir}\" must be an absolute guest path like /model"
                ));
            }
        }
        Ok(())
    }

    /// Does the plugin ask for whatever hosts the operator grants (`"*"`),
    /// e.g. a client of an endpoint the operator configures?
    pub fn outbound_any(&self) -> bool {
        self.capabilities
            .allowed_outbound_hosts
            .iter()
            .any(|h| h == "*")
    }

    /// Parse the outbound rules (already validated).
    pub fn outbound_rules(&self) -> Vec<OutboundRule> {
        self.capabilities
            .allowed_outbound_hosts
            .iter()
            .filter_map(|h| OutboundRule::parse(h).ok())
            .collect()
    }
}

/// Plugin ids: `[a-z][a-z0-9-]{0,63}`.
pub fn valid_id(id: &str) -> bool {
    id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub(crate) fn valid_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

pub(crate) fn valid_guest_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && Path::new(path)
            .components()
            .all(|c| matches!(c, PathComponent::RootDir | PathComponent::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        id = "redact-keywords"
        name = "Keywords"
        version = "0.1.0"
        kind = "redactor"
        api = "0.1.0"
        wasm = "redact_keywords.wasm"
        [limits]
        timeout_ms = 200
        [capabilities]
        config = ["terms"]
    "#;

    #[test]
    fn a_good_manifest_parses() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.kind, PluginKind::Redactor);
        assert_eq!(m.limits.timeout_ms, Some(200));
        assert_eq!(m.capabilities.config, ["terms"]);
    }

    #[test]
    fn unknown_fields_are_errors_naming_the_field() {
        let text = GOOD.replace("timeout_ms = 200", "timeout_ms = 200\ntimeout = 5");
        assert!(Manifest::parse(&text).unwrap_err().contains("timeout"));
        let text = GOOD.replace("id =", "colour = \"red\"\nid =");
        assert!(Manifest::parse(&text).unwrap_err().contains("colour"));
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        let cases = [
            ("id = \"redact-keywords\"", "id = \"Bad Id\"", "id"),
            ("kind = \"redactor\"", "kind = \"scanner\"", "scanner"),
            (
                "wasm = \"redact_keywords.wasm\"",
                "wasm = \"../x.wasm\"",
                "wasm",
            ),
            ("version = \"0.1.0\"", "version = \"one\"", "version"),
            ("timeout_ms = 200", "timeout_ms = 0", "timeout_ms"),
            ("config = [\"terms\"]", "config = [\"bad key\"]", "config"),
            (
                "config = [\"terms\"]",
                "allowed_outbound_hosts = [\"https://x.example\"]",
                "only embedders",
            ),
        ];
        for (from, to, expect) in cases {
            let err = Manifest::parse(&GOOD.replace(from, to)).unwrap_err();
            assert!(err.contains(expect), "{to}: {err}");
        }
    }
}
