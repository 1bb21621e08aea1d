//! What a compiled component says about itself: which kind it implements
//! and which contract version it was built against.
//!
//! The authoritative facts are the component's exports — a redactor exports
//! the instance `memhost:plugin/redactor@<version>`. The SDK also writes a
//! `memhost:plugin-api` custom section (`memhost:plugin@0.2.0
//! memhost-sdk@0.1.0`), which is quoted in messages when present.
//!
//! | contract | what it is                                                   |
//! |----------|--------------------------------------------------------------|
//! | `0.1.0`  | every kind; the extractor takes text only                    |
//! | `0.2.0`  | adds `extractor@0.2.0` (text and when it was said in, times out); the other kinds export their 0.1 interfaces |
//!
//! A plugin.toml's `api` names the contract it was built for; its kind's
//! export must belong to it (an interface version no newer than `api`).

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::manifest::{Manifest, PluginKind};

/// The contract package.
pub const PACKAGE: &str = "memhost:plugin";

/// The newest contract version this host implements.
pub const HOST_API: semver::Version = semver::Version::new(0, 2, 0);

/// Every contract version this host implements, oldest first (0.x
/// contracts change only in minor versions).
pub const HOST_APIS: [semver::Version; 2] = [semver::Version::new(0, 1, 0), HOST_API];

/// One `memhost:plugin/<kind>@<version>` export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindExport {
    /// The kind the interface belongs to.
    pub kind: PluginKind,
    /// The contract version in the export name.
    pub version: semver::Version,
    /// The full export name.
    pub name: String,
}

/// What a component declares.
#[derive(Debug, Clone, Default)]
pub struct ComponentFacts {
    /// Plugin-kind interfaces it exports.
    pub kinds: Vec<KindExport>,
    /// Every export name, for messages.
    pub exports: Vec<String>,
    /// The SDK's `memhost:plugin-api` marker, if any.
    pub api_marker: Option<String>,
}

impl ComponentFacts {
    /// Read the facts from a compiled component and its wasm bytes.
    pub fn read(engine: &Engine, component: &Component, wasm: &[u8]) -> ComponentFacts {
        let mut facts = ComponentFacts {
            api_marker: api_marker(wasm),
            ..ComponentFacts::default()
        };
        for (name, item) in component.component_type().exports(engine) {
            facts.exports.push(name.to_string());
            if let ComponentItem::ComponentInstance(_) = item.ty
                && let Some(export) = parse_kind_export(name)
            {
                facts.kinds.push(export);
            }
        }
        facts
    }
}

/// `memhost:plugin/redactor@0.1.0` → (redactor, 0.1.0).
fn parse_kind_export(name: &str) -> Option<KindExport> {
    let rest = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    let (interface, version) = rest.split_once('@')?;
    Some(KindExport {
        kind: PluginKind::from_interface(interface)?,
        version: semver::Version::parse(version).ok()?,
        name: name.to_string(),
    })
}

/// The text of the first `memhost:plugin-api` custom section, at any nesting.
fn api_marker(wasm: &[u8]) -> Option<String> {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        if let Ok(wasmparser::Payload::CustomSection(section)) = payload
            && section.name() == "memhost:plugin-api"
        {
            return Some(String::from_utf8_lossy(section.data()).trim().to_string());
        }
    }
    None
}

/// Whether this host can run a plugin built against `version`: the
/// major.minor of a contract it implements, and no newer patch than it
/// knows.
pub fn api_supported(version: &semver::Version) -> bool {
    HOST_APIS
        .iter()
        .any(|v| version.major == v.major && version.minor == v.minor && version <= v)
}

fn supported_range() -> String {
    HOST_APIS
        .iter()
        .map(|v| format!("{PACKAGE}@{v}"))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Check the component against its manifest. The message names both sides.
pub fn check(manifest: &Manifest, facts: &ComponentFacts) -> Result<semver::Version, String> {
    let who = format!("plugin \"{}\" {}", manifest.id, manifest.version);
    let built_with = facts
        .api_marker
        .as_deref()
        .map(|m| format!(" (component marker: {m})"))
        .unwrap_or_default();

    // The manifest's own claim first: a future api is refused before we
    // look further.
    let declared = semver::Version::parse(&manifest.api)
        .map_err(|e| format!("{who}: api \"{}\" is not semver: {e}", manifest.api))?;
    if !api_supported(&declared) {
        return Err(format!(
            "{who}: plugin.toml says api {declared}, but this host supports {}{built_with}; rebuild the plugin with a memhost-sdk for this host, or upgrade memhost",
            supported_range()
        ));
    }

    let own: Vec<&KindExport> = facts
        .kinds
        .iter()
        .filter(|k| k.kind == manifest.kind)
        .collect();
    if own.is_empty() {
        let found = if facts.kinds.is_empty() {
            format!(
                "exports no memhost plugin interface (exports: {})",
                if facts.exports.is_empty() {
                    "none".to_string()
                } else {
                    facts.exports.join(", ")
                }
            )
        } else {
            facts
                .kinds
                .iter()
                .map(|k| format!("exports {} (a {})", k.name, k.kind))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "{who}: plugin.toml declares kind \"{}\", but the component {found}{built_with}; expected an export of {PACKAGE}/{}@{}",
            manifest.kind, manifest.kind, manifest.api
        ));
    }
    if facts.kinds.len() > 1 {
        return Err(format!(
            "{who}: the component exports more than one plugin interface ({}); a plugin has exactly one kind",
            facts
                .kinds
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let export = own[0];
    if !api_supported(&export.version) {
        return Err(format!(
            "{who}: the component was built against {PACKAGE}@{}{built_with}, but this host supports {}; rebuild the plugin with a memhost-sdk for this host, or upgrade memhost",
            export.version,
            supported_range()
        ));
    }
    if export.version > declared {
        return Err(format!(
            "{who}: the component exports {}, which is newer than the api {declared} plugin.toml says{built_with}; set api = \"{}\" in plugin.toml",
            export.name, export.version
        ));
    }
    Ok(export.version.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_names_parse() {
        let e = parse_kind_export("memhost:plugin/policy@0.1.0").unwrap();
        assert_eq!(
            (e.kind, e.version.to_string()),
            (PluginKind::Policy, "0.1.0".into())
        );
        assert!(parse_kind_export("wasi:http/types@0.2.0").is_none());
        assert!(parse_kind_export("memhost:plugin/other@0.1.0").is_none());
    }

    #[test]
    fn only_this_minor_and_no_newer_patch() {
        assert!(api_supported(&"0.1.0".parse().unwrap()));
        assert!(api_supported(&"0.2.0".parse().unwrap()));
        assert!(!api_supported(&"0.3.0".parse().unwrap()));
        assert!(!api_supported(&"0.2.1".parse().unwrap()));
        assert!(!api_supported(&"0.1.1".parse().unwrap()));
        assert!(!api_supported(&"1.1.0".parse().unwrap()));
    }
}
