//! The set of loaded plugins, swapped atomically on reload.
//!
//! A reload reads every `<dir>/<plugin>/plugin.toml`, and for each plugin
//! whose manifest, wasm or grants changed: verifies the pin, compiles (or
//! loads from the precompile cache), checks kind and api version,
//! pre-instantiates and smoke-calls it. Only when every plugin succeeds is
//! the new set swapped in; otherwise the previous set stays and the error
//! names each failure. Unchanged plugins are carried over as they are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker};

use super::bindings::host;
use super::bindings::{embedder, extractor, extractor_v01, policy, redactor};
use super::component::{ComponentFacts, check};
use super::facade::{
    Action, ActionKind, Actor, Embedder, ExtractContext, Extractor, ExtractorPre, Policy, Redactor,
};
use super::grants::{Effective, PluginSettings};
use super::manifest::{MANIFEST_FILE, Manifest, PluginKind};
use crate::runtime::{CacheOutcome, CallErrorKind, Imports, Runtime, StoreState};

/// A loaded plugin of any kind.
#[derive(Clone)]
pub enum LoadedPlugin {
    /// A redactor.
    Redactor(Arc<Redactor>),
    /// An extractor.
    Extractor(Arc<Extractor>),
    /// A policy.
    Policy(Arc<Policy>),
    /// An embedder.
    Embedder(Arc<Embedder>),
}

/// What is known about a loaded plugin.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// The manifest.
    pub manifest: Manifest,
    /// The plugin directory.
    pub dir: PathBuf,
    /// sha256 of the wasm file.
    pub wasm_sha256: String,
    /// The contract version the component exports.
    pub api: String,
    /// The SDK marker in the component, if any.
    pub api_marker: Option<String>,
    /// What it was granted.
    pub effective: Effective,
    /// Whether the compiled code came from the cache.
    #[serde(serialize_with = "ser_cache")]
    pub cache: CacheOutcome,
}

fn ser_cache<S: serde::Serializer>(c: &CacheOutcome, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match c {
        CacheOutcome::Hit => "hit",
        CacheOutcome::Miss => "miss",
        CacheOutcome::Disabled => "disabled",
    })
}

/// A plugin and what is known about it.
#[derive(Clone)]
pub struct PluginEntry {
    /// Facts.
    pub info: Arc<PluginInfo>,
    /// The callable plugin.
    pub plugin: LoadedPlugin,
    /// What must be unchanged for a reload to carry the plugin over.
    fingerprint: String,
}

/// An immutable set of loaded plugins.
#[derive(Clone, Default)]
pub struct PluginSet {
    /// Increments with every successful reload.
    pub generation: u64,
    entries: BTreeMap<String, PluginEntry>,
}

impl PluginSet {
    /// Every plugin, by id.
    pub fn entries(&self) -> impl Iterator<Item = &PluginEntry> {
        self.entries.values()
    }

    /// The plugin with this id.
    pub fn get(&self, id: &str) -> Option<&PluginEntry> {
        self.entries.get(id)
    }

    /// The redactor with this id.
    pub fn redactor(&self, id: &str) -> Option<Arc<Redactor>> {
        match self.get(id).map(|e| &e.plugin) {
            Some(LoadedPlugin::Redactor(p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// The extractor with this id.
    pub fn extractor(&self, id: &str) -> Option<Arc<Extractor>> {
        match self.get(id).map(|e| &e.plugin) {
            Some(LoadedPlugin::Extractor(p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// The policy with this id.
    pub fn policy(&self, id: &str) -> Option<Arc<Policy>> {
        match self.get(id).map(|e| &e.plugin) {
            Some(LoadedPlugin::Policy(p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// The embedder with this id.
    pub fn embedder(&self, id: &str) -> Option<Arc<Embedder>> {
        match self.get(id).map(|e| &e.plugin) {
            Some(LoadedPlugin::Embedder(p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// Every embedder.
    pub fn embedders(&self) -> impl Iterator<Item = &Arc<Embedder>> {
        self.entries.values().filter_map(|e| match &e.plugin {
            LoadedPlugin::Embedder(p) => Some(p),
            _ => None,
        })
    }

    /// Number of plugins.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no plugins.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What a reload did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadSummary {
    /// New plugin ids.
    pub loaded: Vec<String>,
    /// Plugins whose manifest, wasm or grants changed.
    pub reloaded: Vec<String>,
    /// Plugins that are gone.
    pub unloaded: Vec<String>,
    /// Plugins carried over unchanged.
    pub unchanged: Vec<String>,
    /// Plugins that failed, with the reason. Non-empty means nothing changed.
    pub failed: Vec<(String, String)>,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        write!(
            f,
            "loaded={} reloaded={} unloaded={} unchanged={} failed={}",
            list(&self.loaded),
            list(&self.reloaded),
            list(&self.unloaded),
            self.unchanged.len(),
            if self.failed.is_empty() {
                "-".to_string()
            } else {
                self.failed
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            }
        )
    }
}

/// A reload that changed nothing because something failed.
#[derive(Debug, thiserror::Error)]
#[error("plugin reload failed, previous plugins kept: {}", .summary.failed.iter().map(|(id, why)| format!("{id}: {why}")).collect::<Vec<_>>().join("; "))]
pub struct ReloadError {
    /// What was attempted, with the failures.
    pub summary: ReloadSummary,
}

/// One linker per kind, built once.
struct Linkers {
    redactor: Linker<StoreState>,
    extractor: Linker<StoreState>,
    policy: Linker<StoreState>,
    embedder: Linker<StoreState>,
}

/// The runtime's sandboxed imports plus the contract's `host` interface.
/// Only embedders get outbound HTTP.
fn linker(runtime: &Runtime, kind: PluginKind) -> wasmtime::Result<Linker<StoreState>> {
    let imports = match kind {
        PluginKind::Embedder => Imports::WasiHttp,
        _ => Imports::Wasi,
    };
    let mut linker = runtime.linker(imports)?;
    host::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// The plugin registry: the current set, and how to replace it.
pub struct PluginRegistry {
    runtime: Runtime,
    linkers: Linkers,
    settings: RwLock<PluginSettings>,
    current: RwLock<Arc<PluginSet>>,
    reloading: Mutex<()>,
}

/// Text passed to redactors and extractors on load.
const SMOKE_TEXT: &str = "memhost plugin smoke test: nothing sensitive here";

impl PluginRegistry {
    /// An empty registry.
    pub fn new(runtime: Runtime, settings: PluginSettings) -> anyhow::Result<PluginRegistry> {
        let build = |kind| {
            linker(&runtime, kind).map_err(|e| anyhow::anyhow!("linking {kind} imports: {e:#}"))
        };
        let linkers = Linkers {
            redactor: build(PluginKind::Redactor)?,
            extractor: build(PluginKind::Extractor)?,
            policy: build(PluginKind::Policy)?,
            embedder: build(PluginKind::Embedder)?,
        };
        Ok(PluginRegistry {
            runtime,
            linkers,
            settings: RwLock::new(settings),
            current: RwLock::new(Arc::new(PluginSet::default())),
            reloading: Mutex::new(()),
        })
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The current set. Cheap; callers hold it for the length of a request.
    pub fn snapshot(&self) -> Arc<PluginSet> {
        match self.current.read() {
            Ok(set) => set.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replace the settings (grants, limits) used by the next reload.
    pub fn set_settings(&self, settings: PluginSettings) {
        if let Ok(mut s) = self.settings.write() {
            *s = settings;
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> PluginSettings {
        self.settings.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Reload from the configured plugin directory.
    pub fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let dir = self.settings().dir;
        match dir {
            Some(dir) => self.reload_from(&dir),
            None => self.apply(Vec::new()),
        }
    }

    /// Reload from `dir`: one sub-directory per plugin.
    pub fn reload_from(&self, dir: &Path) -> Result<ReloadSummary, ReloadError> {
        let mut dirs = Vec::new();
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.join(MANIFEST_FILE).is_file() {
                        dirs.push(path);
                    }
                }
            }
            Err(e) => {
                return Err(ReloadError {
                    summary: ReloadSummary {
                        failed: vec![(
                            dir.display().to_string(),
                            format!("cannot read plugin directory: {e}"),
                        )],
                        ..ReloadSummary::default()
                    },
                });
            }
        }
        dirs.sort();
        self.apply(dirs)
    }

    /// Load exactly the plugins in `dirs` (each holding a plugin.toml).
    pub fn apply(&self, dirs: Vec<PathBuf>) -> Result<ReloadSummary, ReloadError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let settings = self.settings();
        let old = self.snapshot();
        let mut summary = ReloadSummary::default();
        let mut next = BTreeMap::new();

        for dir in dirs {
            let label = dir.display().to_string();
            match self.prepare(&dir, &settings, &old) {
                Ok(None) => {}
                Ok(Some((entry, reused))) => {
                    let id = entry.info.manifest.id.clone();
                    if next.contains_key(&id) {
                        summary.failed.push((
                            id.clone(),
                            format!("duplicate plugin id (again in {label})"),
                        ));
                        continue;
                    }
                    match (reused, old.get(&id).is_some()) {
                        (true, _) => summary.unchanged.push(id.clone()),
                        (false, true) => summary.reloaded.push(id.clone()),
                        (false, false) => summary.loaded.push(id.clone()),
                    }
                    next.insert(id, entry);
                }
                Err((id, why)) => summary.failed.push((id.unwrap_or(label), why)),
            }
        }
        summary.unloaded = old
            .entries
            .keys()
            .filter(|id| !next.contains_key(*id))
            .cloned()
            .collect();

        if !summary.failed.is_empty() {
            tracing::error!(
                target: "audit",
                event = "plugins.reload_failed",
                "plugins: {summary} (reload failed, previous set kept)"
            );
            for (id, why) in &summary.failed {
                tracing::error!(plugin = %id, "{why}");
            }
            return Err(ReloadError { summary });
        }
        let set = Arc::new(PluginSet {
            generation: old.generation + 1,
            entries: next,
        });
        let set_generation = set.generation;
        match self.current.write() {
            Ok(mut cur) => *cur = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
        tracing::info!(target: "audit", event = "plugins.reloaded", generation = set_generation, "plugins: {summary}");
        Ok(summary)
    }

    /// Load one plugin directory, or carry over the current entry if
    /// nothing changed. `Ok(None)`: disabled by the operator.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        dir: &Path,
        settings: &PluginSettings,
        old: &PluginSet,
    ) -> Result<Option<(PluginEntry, bool)>, (Option<String>, String)> {
        let located = Manifest::load(dir).map_err(|e| (None, e.to_string()))?;
        let manifest = located.manifest;
        let id = manifest.id.clone();
        let fail = |why: String| (Some(id.clone()), why);
        if settings.grants.get(&id).and_then(|g| g.enabled) == Some(false) {
            tracing::info!(plugin = %id, "disabled by the operator; not loaded");
            return Ok(None);
        }
        let wasm = std::fs::read(&located.wasm_path)
            .map_err(|e| fail(format!("cannot read {}: {e}", located.wasm_path.display())))?;
        let sha = hex::encode(Sha256::digest(&wasm));
        if let Some(pin) = &manifest.sha256
            && !pin.eq_ignore_ascii_case(&sha)
        {
            return Err(fail(format!(
                "{} has sha256 {sha}, but plugin.toml pins {pin}",
                located.wasm_path.display()
            )));
        }
        let effective = Effective::compute(&manifest, settings).map_err(&fail)?;
        // The config values too: the serialised form shows only their keys.
        let fingerprint = format!(
            "{sha}|{}|{}|{}",
            serde_json::to_string(&manifest).unwrap_or_default(),
            serde_json::to_string(&effective).unwrap_or_default(),
            serde_json::to_string(&effective.config).unwrap_or_default()
        );
        if let Some(existing) = old.get(&id)
            && existing.fingerprint == fingerprint
        {
            return Ok(Some((existing.clone(), true)));
        }
        let entry = self
            .load(manifest, located.dir, wasm, sha, effective, fingerprint)
            .map_err(&fail)?;
        Ok(Some((entry, false)))
    }

    /// Compile, check, pre-instantiate and smoke-call one plugin.
    fn load(
        &self,
        manifest: Manifest,
        dir: PathBuf,
        wasm: Vec<u8>,
        sha: String,
        effective: Effective,
        fingerprint: String,
    ) -> Result<PluginEntry, String> {
        let what = format!("plugin \"{}\" {}", manifest.id, manifest.version);
        let (component, cache) = self
            .runtime
            .compile(&what, &wasm)
            .map_err(|e| e.to_string())?;
        let facts = ComponentFacts::read(self.runtime.engine(), &component, &wasm);
        let api = check(&manifest, &facts)?;
        let spec = effective.store_spec(&manifest);
        let runtime = self.runtime.clone();
        let link_err = |e: wasmtime::Error| format!("{what}: cannot link its imports: {e:#}");
        let plugin = match manifest.kind {
            PluginKind::Redactor => {
                let pre = self
                    .linkers
                    .redactor
                    .instantiate_pre(&component)
                    .map_err(link_err)?;
                let pre = redactor::RedactorPluginPre::new(pre).map_err(link_err)?;
                let p = Redactor { runtime, spec, pre };
                smoke(p.redact(SMOKE_TEXT).map(|_| ()))?;
                LoadedPlugin::Redactor(Arc::new(p))
            }
            PluginKind::Extractor => {
                let pre = self
                    .linkers
                    .extractor
                    .instantiate_pre(&component)
                    .map_err(link_err)?;
                let pre = if api.minor < 2 {
                    ExtractorPre::V01(
                        extractor_v01::ExtractorPluginPre::new(pre).map_err(link_err)?,
                    )
                } else {
                    ExtractorPre::V02(extractor::ExtractorPluginPre::new(pre).map_err(link_err)?)
                };
                let p = Extractor { runtime, spec, pre };
                let context = ExtractContext {
                    observed_at: 0,
                    created_at: 0,
                };
                smoke(p.extract(SMOKE_TEXT, context).map(|_| ()))?;
                LoadedPlugin::Extractor(Arc::new(p))
            }
            PluginKind::Policy => {
                let pre = self
                    .linkers
                    .policy
                    .instantiate_pre(&component)
                    .map_err(link_err)?;
                let pre = policy::PolicyPluginPre::new(pre).map_err(link_err)?;
                let p = Policy { runtime, spec, pre };
                smoke(p.evaluate(&smoke_action()).map(|_| ()))?;
                LoadedPlugin::Policy(Arc::new(p))
            }
            PluginKind::Embedder => {
                let pre = self
                    .linkers
                    .embedder
                    .instantiate_pre(&component)
                    .map_err(link_err)?;
                let pre = embedder::EmbedderPluginPre::new(pre).map_err(link_err)?;
                let pool = effective.pool.unwrap_or(super::grants::PoolSettings {
                    instances: 1,
                    max_calls_per_instance: 1,
                });
                // Creating the embedder calls model(), which must succeed.
                let p = Embedder::new(
                    runtime,
                    spec,
                    pre,
                    pool.instances,
                    pool.max_calls_per_instance,
                )
                .map_err(|e| e.to_string())?;
                LoadedPlugin::Embedder(Arc::new(p))
            }
        };
        tracing::info!(
            plugin = %manifest.id,
            version = %manifest.version,
            kind = %manifest.kind,
            cache = %match cache {
                CacheOutcome::Hit => "hit",
                CacheOutcome::Miss => "miss",
                CacheOutcome::Disabled => "off",
            },
            "plugin loaded"
        );
        Ok(PluginEntry {
            info: Arc::new(PluginInfo {
                manifest,
                dir,
                wasm_sha256: sha,
                api: api.to_string(),
                api_marker: facts.api_marker,
                effective,
                cache,
            }),
            plugin,
            fingerprint,
        })
    }
}

/// A smoke call must not trap; an error value is only logged (a policy
/// may well refuse a made-up action).
fn smoke(result: Result<(), crate::runtime::CallError>) -> Result<(), String> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.kind, CallErrorKind::Returned(_)) => {
            tracing::warn!(error = %e, "smoke call returned an error; loading anyway");
            Ok(())
        }
        Err(e) => Err(format!("smoke call failed: {e}")),
    }
}

fn smoke_action() -> Action {
    Action {
        kind: ActionKind::Store,
        actor: Actor {
            agent_id: "memhost-smoke-test".into(),
            agent_type: "system".into(),
        },
        namespace: "smoke-test".into(),
        target_id: None,
        tags: Vec::new(),
        labels: Vec::new(),
        policy_config: "allow".into(),
    }
}
