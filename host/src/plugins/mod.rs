//! Plugins: manifests, grants, loading, kind and version checks, the
//! registry with atomic hot swap, and the typed facades (`Redactor`,
//! `Extractor`, `Policy`, `Embedder`) the rest of the host calls.
//!
//! Handlers never call plugins directly; the service layer does.

pub mod bindings;
pub mod component;
pub mod facade;
pub mod grants;
pub mod manifest;
pub mod registry;
pub mod status;

pub use facade::{
    Action, ActionKind, Actor, Decision, Embedder, Entity, EventTime, ExtractContext, Extraction,
    Extractor, Fact, Finding, ModelInfo, Outcome, Policy, Redactor, RedactorSession, Requirement,
    Vote, apply_findings,
};
pub use grants::{Effective, Grant, PluginSettings};
pub use manifest::{Manifest, PluginKind};
pub use registry::{
    LoadedPlugin, PluginInfo, PluginRegistry, PluginSet, ReloadError, ReloadSummary,
};
