//! The memory model: namespaces, memories, their limits and name rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::auth::{Actor, valid_namespace_name};
pub use crate::clock::now_ms;

/// Size and count limits on a memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Content, in characters.
    pub content_chars: usize,
    /// Title, in characters.
    pub title_chars: usize,
    /// Number of tags.
    pub tags: usize,
    /// One tag, in characters.
    pub tag_chars: usize,
    /// Metadata, serialised, in bytes.
    pub metadata_bytes: usize,
    /// Namespaces on the server.
    pub namespaces: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            content_chars: 64 * 1024,
            title_chars: 512,
            tags: 32,
            tag_chars: 64,
            metadata_bytes: 16 * 1024,
            namespaces: 10_000,
        }
    }
}

/// How a namespace treats what its redactor finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RedactionMode {
    /// Content is stored already redacted (default).
    #[default]
    StoreRedacted,
    /// Content is stored sealed as written and redacted on every read.
    Egress,
    /// No redaction.
    Off,
}

/// Whose votes count as a `human`'s in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HumanVotes {
    /// Console users and API keys whose agent type an operator set to
    /// `human` (default).
    #[default]
    Any,
    /// Only people signed in to the console: a key typed `human` does not
    /// count where a requirement names `human`.
    Console,
}

impl HumanVotes {
    fn is_any(&self) -> bool {
        *self == HumanVotes::Any
    }
}

/// A namespace's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSettings {
    /// Redaction mode.
    #[serde(default)]
    pub redaction: RedactionMode,
    /// The redactor plugin's id.
    #[serde(default = "default_redactor")]
    pub redactor: String,
    /// The governance rule the policy plugin reads (`allow`,
    /// `single:<agent-type>`, `consensus:<n>`, or per action kind:
    /// `store=allow; forget=single:human; *=consensus:2`).
    #[serde(default = "default_policy")]
    pub policy: String,
    /// The policy plugin that decides every change here (default
    /// `policy-standard`).
    #[serde(default = "default_policy_plugin")]
    pub policy_plugin: String,
    /// How long an action held for approval waits before it expires, in
    /// seconds (default 24 h, at most 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_ttl_seconds: Option<u64>,
    /// Whose votes count as a `human`'s (`any` or `console`).
    #[serde(default, skip_serializing_if = "HumanVotes::is_any")]
    pub human_votes: HumanVotes,
    /// Free text for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The embedder plugin's id, bound at creation; none = words only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<String>,
    /// Its vectors' dimensions, recorded at creation (never mixed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// The extractor plugin's id, bound at creation (default
    /// `extract-entities` when it is loaded); none = no entities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extractor: Option<String>,
}

fn default_redactor() -> String {
    "redact-pii".into()
}

fn default_policy() -> String {
    "allow".into()
}

/// The policy plugin a namespace uses unless its settings name another.
pub const DEFAULT_POLICY_PLUGIN: &str = "policy-standard";

fn default_policy_plugin() -> String {
    DEFAULT_POLICY_PLUGIN.into()
}

/// How long a held action waits by default, in seconds.
pub const DEFAULT_APPROVAL_TTL: u64 = 24 * 3600;
/// The longest a namespace may let a held action wait, in seconds.
pub const MAX_APPROVAL_TTL: u64 = 30 * 24 * 3600;

impl NamespaceSettings {
    /// How long an action held here waits, in milliseconds.
    pub fn approval_ttl_ms(&self) -> i64 {
        let secs = self
            .approval_ttl_seconds
            .unwrap_or(DEFAULT_APPROVAL_TTL)
            .min(MAX_APPROVAL_TTL);
        i64::try_from(secs).unwrap_or(0) * 1000
    }
}

impl Default for NamespaceSettings {
    fn default() -> Self {
        NamespaceSettings {
            redaction: RedactionMode::default(),
            redactor: default_redactor(),
            policy: default_policy(),
            policy_plugin: default_policy_plugin(),
            approval_ttl_seconds: None,
            human_votes: HumanVotes::Any,
            description: None,
            embedder: None,
            dimensions: None,
            extractor: None,
        }
    }
}

/// A namespace as stored (sealed) and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Namespace {
    /// Stable id; row keys use it, never the name.
    pub id: Uuid,
    /// The name.
    pub name: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Settings.
    pub settings: NamespaceSettings,
    /// Bumped by each reindex: vectors of an older generation are never
    /// searched.
    #[serde(default)]
    pub index_generation: u32,
}

impl Namespace {
    /// Which cached vectors belong to it now.
    pub fn vector_space(&self) -> crate::index::vector::Space {
        crate::index::vector::Space {
            ns: self.id,
            generation: self.index_generation,
            dims: self.settings.dimensions.unwrap_or(0) as usize,
        }
    }
}

/// One version of a memory, as stored (sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Memory {
    /// Time-ordered id (UUIDv7).
    pub id: Uuid,
    /// Namespace name (for display; rows are keyed by namespace id).
    pub namespace: String,
    /// The content (redacted unless the namespace stores as written).
    pub content: String,
    /// Optional title.
    #[serde(default)]
    pub title: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Free-form JSON object.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The author's agent id (from its API key); stays with the memory
    /// across versions: a writer may change only memories it authored.
    pub agent_id: String,
    /// The author's agent type.
    pub agent_type: String,
    /// Agent id of whoever wrote this version (the author for version 1).
    #[serde(default)]
    pub updated_by: Option<String>,
    /// Creation time of the memory (first version), Unix ms.
    pub created_at: i64,
    /// Time of this version, Unix ms.
    pub updated_at: i64,
    /// When what it records happened or was said, Unix ms: as given, else
    /// its creation time.
    #[serde(default)]
    pub observed_at: Option<i64>,
    /// When it expires, Unix ms.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// 0.0–1.0.
    pub importance: f32,
    /// 1 for the first version, +1 per update.
    pub version: u32,
    /// Counts of what the redactor found, by label.
    #[serde(default)]
    pub redactions: BTreeMap<String, u32>,
    /// In a namespace with an embedder: `indexing` until its current
    /// version is searchable by meaning, then `ready`; `failed` when the
    /// embedder could not embed this text (see `status_reason`). Shown,
    /// never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why indexing failed, with `status: failed`. Shown, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// What the namespace's extractor found in this version (empty until
    /// it ran). Shown; stored sealed apart from the memory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<FoundEntity>,
    /// The times its text refers to, as the extractor placed them (empty
    /// until it ran). Shown; stored sealed apart from the memory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_times: Vec<EventTime>,
    /// Where it came from when it was imported (`memhost import`): the
    /// importer is its author; who wrote it before is kept here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<Imported>,
}

/// The provenance of an imported memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Imported {
    /// The format it came in: `memhost`, `ai-memory`, `mem0`.
    pub from: String,
    /// When it was imported, Unix ms.
    pub at: i64,
    /// Its id there, when that was not a UUID memhost could keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_id: Option<String>,
    /// Who wrote it there (agent, user or app), as that export said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Its agent type there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_type: Option<String>,
}

/// A time a memory's text refers to, as a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventTime {
    /// The words that name it: `yesterday`, `3 March 2025`.
    pub text: String,
    /// Start, Unix ms (inclusive).
    pub start: i64,
    /// End, Unix ms (exclusive).
    pub end: i64,
}

/// Something a memory names, as its namespace's extractor found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FoundEntity {
    /// As written, e.g. `Ada Lovelace`.
    pub name: String,
    /// What the extractor calls it: `person`, `organization`, `email`…
    pub kind: String,
}

impl Memory {
    /// When what it records happened or was said (Unix ms).
    pub fn observed(&self) -> i64 {
        self.observed_at.unwrap_or(self.created_at)
    }

    /// Expired at `now` (Unix ms)?
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix ms as `2026-11-22T07:06:33.548Z` (UTC).
pub fn iso8601(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// The smallest UUIDv7 of Unix ms `at`: where ids made at `at` start.
pub fn first_id_at(at: i64) -> Uuid {
    let ms = u64::try_from(at.max(0)).unwrap_or(0) & 0xffff_ffff_ffff;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    Uuid::from_bytes(bytes)
}

/// A new random UUIDv7 for time `at` (Unix ms): an imported memory's id,
/// in its place among ids made when it was created.
pub fn id_at(at: i64) -> Uuid {
    let ms = u64::try_from(at.max(0)).unwrap_or(0);
    Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        ms / 1000,
        u32::try_from(ms % 1000).unwrap_or(0) * 1_000_000,
    ))
}

/// The Unix ms a UUIDv7 was made at.
pub fn id_time(id: &Uuid) -> Option<i64> {
    let b = id.as_bytes();
    (id.get_version_num() == 7).then(|| {
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&b[..6]);
        i64::try_from(u64::from_be_bytes(ms)).unwrap_or(i64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_at_a_time_sort_after_its_first_id() {
        let now = crate::clock::now_ms();
        let id = Uuid::now_v7();
        let t = id_time(&id).unwrap();
        assert!((t - now).abs() < 1000, "{t} vs {now}");
        assert!(first_id_at(t) <= id);
        assert!(first_id_at(t + 1) > id);
        assert_eq!(id_time(&first_id_at(t)), Some(t));
        assert_eq!(id_time(&Uuid::nil()), None);
    }

    #[test]
    fn times_print_as_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_795_331_193_540), "2026-11-22T07:06:33.540Z");
        assert_eq!(iso8601(951_782_400_001), "2000-02-29T00:00:00.001Z");
    }

    #[test]
    fn namespace_names() {
        for ok in ["team-a", "a", "proj.notes_2", "0day"] {
            assert!(valid_namespace_name(ok), "{ok}");
        }
        for bad in ["", "Team", "-a", "a b", "a/b", "ä", &"x".repeat(64)] {
            assert!(!valid_namespace_name(bad), "{bad}");
        }
    }
}
