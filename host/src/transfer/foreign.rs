//! Other memory servers' exports, as import entries: ai-memory's JSON
//! export and mem0's — OpenMemory's export (its zip, `memories.json` or
//! `memories.jsonl.gz`) and the output of mem0's `get_all` (`{"results":
//! […]}`, or a bare list). `docs/export.md` lists every field and where it
//! goes; nothing is dropped silently: what has no memhost field is kept
//! under `metadata.<source>` and what is left out is said as
//! [`Entry::Unmapped`].
//!
//! | theirs                          | memhost                                       |
//! |---------------------------------|-----------------------------------------------|
//! | ai-memory `namespace`           | namespace (made a valid name; said when changed) |
//! | ai-memory `priority` 1–10       | `importance` 0.1–1.0                           |
//! | mem0 `user_id`, OpenMemory user | namespace (without `--namespace`)             |
//! | mem0 / OpenMemory `categories`  | tags                                          |
//! | `agent_id`, `source`, app       | `imported.agent_id` / `imported.agent_type`   |
//! | ids that are not UUIDv7         | `imported.original_id` (a new id for its time) |
//! | `expires_at`, `expiration_date` | `expires_at` (already expired: not imported)  |

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::{Map, Value};

use super::{Entry, Format, TransferError};
use crate::service::NewMemory;
use crate::service::model::Imported;
use crate::service::transfer::{ImportItem, Origin};

/// The entries of foreign export `doc` (one JSON document; JSON Lines
/// arrive as an array of their objects).
pub fn entries(doc: Value, format: Format) -> Result<Vec<Entry>, TransferError> {
    let format = match format {
        Format::Auto => detect(&doc).ok_or_else(|| {
            TransferError::Format(
                "not a format memhost reads: expected a memhost export, ai-memory's export ({\"memories\": […], \"links\": […]}), an OpenMemory export (its zip, memories.json or memories.jsonl.gz) or mem0's get_all output ({\"results\": […]})".into(),
            )
        })?,
        f => f,
    };
    match format {
        Format::AiMemory => ai_memory(doc),
        Format::Mem0 if is_openmemory_dump(&doc) => openmemory(doc),
        Format::Mem0 => mem0(doc),
        Format::Auto | Format::Memhost => Err(TransferError::Format(
            "not a memhost export: its first line is not a memhost-export header".into(),
        )),
    }
}

fn first_item(doc: &Value, key: &str) -> Option<Map<String, Value>> {
    let list = match doc {
        Value::Array(a) => a,
        Value::Object(o) => o.get(key)?.as_array()?,
        _ => return None,
    };
    list.first()?.as_object().cloned()
}

fn detect(doc: &Value) -> Option<Format> {
    if is_openmemory_dump(doc) {
        return Some(Format::Mem0);
    }
    if doc.get("memories").is_some() {
        let m = first_item(doc, "memories");
        let ai = m.as_ref().is_none_or(|m| {
            m.contains_key("tier") || (m.contains_key("title") && m.contains_key("namespace"))
        });
        return ai.then_some(Format::AiMemory);
    }
    let item = first_item(doc, "results")?;
    (item.contains_key("memory") || item.contains_key("content")).then_some(Format::Mem0)
}

/// OpenMemory's `memories.json` (with `user` and `export_meta`) or the
/// lines of its `memories.jsonl.gz`.
fn is_openmemory_dump(doc: &Value) -> bool {
    match doc {
        Value::Object(o) => o.contains_key("export_meta") || o.contains_key("user"),
        Value::Array(a) => a.first().and_then(Value::as_object).is_some_and(|m| {
            m.contains_key("content") && (m.contains_key("state") || m.contains_key("app"))
        }),
        _ => false,
    }
}

/// A time as these exports write it: RFC 3339 with any offset, an ISO
/// 8601 time without one (taken as UTC), or a date (its midnight, UTC).
pub fn parse_time(text: &str) -> Option<i64> {
    use time::format_description::well_known::{Iso8601, Rfc3339};
    let ms = |t: time::OffsetDateTime| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok();
    let text = text.trim();
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return ms(t);
    }
    if let Ok(t) = time::OffsetDateTime::parse(text, &Iso8601::DEFAULT) {
        return ms(t);
    }
    if let Ok(t) = time::PrimitiveDateTime::parse(text, &Iso8601::DEFAULT) {
        return ms(t.assume_utc());
    }
    let date = time::Date::parse(text, &Iso8601::DEFAULT).ok()?;
    ms(date.midnight().assume_utc())
}

/// Notes said once each, with how often they applied.
#[derive(Default)]
struct Notes(BTreeMap<String, u64>);

impl Notes {
    fn add(&mut self, note: impl Into<String>) {
        *self.0.entry(note.into()).or_insert(0) += 1;
    }

    fn into_entries(self) -> impl Iterator<Item = Entry> {
        self.0.into_iter().map(|(note, n)| {
            Entry::Unmapped(if n > 1 {
                format!("{note} ({n} times)")
            } else {
                note
            })
        })
    }
}

fn text(m: &Map<String, Value>, key: &str) -> Option<String> {
    m.get(key).and_then(Value::as_str).map(str::to_string)
}

fn time_of(m: &Map<String, Value>, key: &str, notes: &mut Notes) -> Option<i64> {
    let raw = text(m, key)?;
    let t = parse_time(&raw);
    if t.is_none() {
        notes.add(format!(
            "{key} \"{}\" is not a time memhost reads; left out",
            raw.chars().take(40).collect::<String>()
        ));
    }
    t
}

/// A namespace name memhost accepts, from one of theirs: lowercase, other
/// characters as `-`, at most 63.
fn namespace_name(theirs: &str, notes: &mut Notes) -> String {
    let mut name: String = theirs
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .trim_start_matches(['.', '_', '-'])
        .chars()
        .take(63)
        .collect();
    if name.is_empty() {
        name = "imported".into();
    }
    if name != theirs {
        notes.add(format!("namespace \"{theirs}\" is \"{name}\" here"));
    }
    name
}

/// The fields of `m` not in `mapped`, kept under `metadata[source]`.
fn keep_rest(
    m: &Map<String, Value>,
    mapped: &[&str],
    source: &str,
    metadata: &mut Map<String, Value>,
) {
    let rest: Map<String, Value> = m
        .iter()
        .filter(|(k, v)| !mapped.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !rest.is_empty() {
        metadata.insert(source.into(), Value::Object(rest));
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

struct Fields {
    namespace: Option<String>,
    content: String,
    title: Option<String>,
    tags: Vec<String>,
    metadata: Map<String, Value>,
    importance: Option<f32>,
    created_at: Option<i64>,
    updated_at: Option<i64>,
    expires_at: Option<i64>,
    id: Option<String>,
    from: &'static str,
    agent_id: Option<String>,
    agent_type: Option<String>,
}

fn memory(f: Fields) -> Entry {
    let id = f.id.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok());
    Entry::Memory {
        namespace: f.namespace,
        item: Box::new(ImportItem {
            memory: NewMemory {
                content: f.content,
                title: f.title,
                tags: f.tags,
                metadata: f.metadata,
                ttl_seconds: None,
                importance: f.importance,
                observed_at: None,
            },
            origin: Origin {
                id,
                created_at: f.created_at,
                updated_at: f.updated_at,
                expires_at: f.expires_at,
                imported: Imported {
                    from: f.from.into(),
                    at: 0,
                    original_id: match id {
                        Some(_) => None,
                        None => f.id,
                    },
                    agent_id: f.agent_id,
                    agent_type: f.agent_type,
                },
            },
        }),
    }
}

/// ai-memory's `{"memories": […], "links": […], "count", "exported_at"}`
/// (v0.5–v0.7): links become `metadata.ai_memory.links` of their source.
fn ai_memory(doc: Value) -> Result<Vec<Entry>, TransferError> {
    let Value::Object(mut doc) = doc else {
        return Err(TransferError::Format(
            "an ai-memory export is a JSON object".into(),
        ));
    };
    let Some(Value::Array(memories)) = doc.remove("memories") else {
        return Err(TransferError::Format(
            "an ai-memory export has a \"memories\" list".into(),
        ));
    };
    let mut links: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for link in doc
        .remove("links")
        .and_then(|l| match l {
            Value::Array(a) => Some(a),
            _ => None,
        })
        .unwrap_or_default()
    {
        if let Some(source) = link.get("source_id").and_then(Value::as_str) {
            let mut kept = link.clone();
            if let Some(o) = kept.as_object_mut() {
                o.remove("source_id");
                // A 64-number signature is no use without their keys.
                o.remove("signature");
            }
            links.entry(source.to_string()).or_default().push(kept);
        }
    }
    let mut out = Vec::new();
    let mut notes = Notes::default();
    for (i, m) in memories.into_iter().enumerate() {
        let Value::Object(m) = m else {
            notes.add(format!("memories[{i}] is not an object; left out"));
            continue;
        };
        let mut metadata = match m.get("metadata") {
            Some(Value::Object(o)) => o.clone(),
            _ => Map::new(),
        };
        keep_rest(
            &m,
            &[
                "id",
                "namespace",
                "title",
                "content",
                "tags",
                "priority",
                "created_at",
                "updated_at",
                "expires_at",
                "metadata",
            ],
            "ai_memory",
            &mut metadata,
        );
        let id = text(&m, "id");
        if let Some(l) = id.as_ref().and_then(|id| links.remove(id)) {
            let entry = metadata
                .entry("ai_memory")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(o) = entry.as_object_mut() {
                o.insert("links".into(), Value::Array(l));
            }
        }
        let namespace = text(&m, "namespace").map(|n| namespace_name(&n, &mut notes));
        let importance = m
            .get("priority")
            .and_then(Value::as_f64)
            .map(|p| (p / 10.0).clamp(0.0, 1.0) as f32);
        let agent_id = metadata
            .get("agent_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        out.push(memory(Fields {
            namespace,
            content: text(&m, "content").unwrap_or_default(),
            title: text(&m, "title").filter(|t| !t.is_empty()),
            tags: strings(m.get("tags")),
            importance,
            created_at: time_of(&m, "created_at", &mut notes),
            updated_at: time_of(&m, "updated_at", &mut notes),
            expires_at: time_of(&m, "expires_at", &mut notes),
            id,
            from: "ai-memory",
            agent_id,
            agent_type: text(&m, "source"),
            metadata,
        }));
    }
    if !links.is_empty() {
        notes.add(format!(
            "{} links from memories not in the export; left out",
            links.values().map(Vec::len).sum::<usize>()
        ));
    }
    out.extend(notes.into_entries());
    Ok(out)
}

/// mem0's `get_all` output: `{"results": […]}` (`relations` from a graph
/// store are said, not kept) or a bare list; Python (`created_at`) and
/// TypeScript (`createdAt`) spellings.
fn mem0(doc: Value) -> Result<Vec<Entry>, TransferError> {
    let mut notes = Notes::default();
    let items = match doc {
        Value::Array(a) => a,
        Value::Object(mut o) => {
            if let Some(Value::Array(r)) = o.get("relations")
                && !r.is_empty()
            {
                notes.add(format!(
                    "{} graph relations (mem0's graph store): memhost keeps no graph; left out",
                    r.len()
                ));
            }
            match o.remove("results") {
                Some(Value::Array(a)) => a,
                _ => {
                    return Err(TransferError::Format(
                        "a mem0 export is {\"results\": […]} or a list of memories".into(),
                    ));
                }
            }
        }
        _ => {
            return Err(TransferError::Format(
                "a mem0 export is {\"results\": […]} or a list of memories".into(),
            ));
        }
    };
    let mut out = Vec::new();
    for (i, m) in items.into_iter().enumerate() {
        let Value::Object(m) = m else {
            notes.add(format!("results[{i}] is not an object; left out"));
            continue;
        };
        let mut metadata = match m.get("metadata") {
            Some(Value::Object(o)) => o.clone(),
            _ => Map::new(),
        };
        let mapped = [
            "id",
            "memory",
            "content",
            "metadata",
            "categories",
            "created_at",
            "updated_at",
            "createdAt",
            "updatedAt",
            "expiration_date",
            "expirationDate",
            "agent_id",
            "agentId",
            "hash",
            "score",
        ];
        keep_rest(&m, &mapped, "mem0", &mut metadata);
        let namespace = text(&m, "user_id")
            .or_else(|| text(&m, "userId"))
            .map(|u| namespace_name(&u, &mut notes));
        let time = |a: &str, b: &str, notes: &mut Notes| {
            time_of(&m, a, notes).or_else(|| time_of(&m, b, notes))
        };
        out.push(memory(Fields {
            namespace,
            content: text(&m, "memory")
                .or_else(|| text(&m, "content"))
                .unwrap_or_default(),
            title: None,
            tags: strings(m.get("categories")),
            importance: None,
            created_at: time("created_at", "createdAt", &mut notes),
            updated_at: time("updated_at", "updatedAt", &mut notes),
            expires_at: time("expiration_date", "expirationDate", &mut notes),
            id: text(&m, "id"),
            from: "mem0",
            agent_id: text(&m, "agent_id").or_else(|| text(&m, "agentId")),
            agent_type: None,
            metadata,
        }));
    }
    out.extend(notes.into_entries());
    Ok(out)
}

/// OpenMemory's `memories.json` (one user's tables: memories, apps,
/// categories, …) or the records of its `memories.jsonl.gz`. Deleted
/// memories are left out (said); archived and paused ones come in with
/// their state in `metadata.openmemory.state`.
fn openmemory(doc: Value) -> Result<Vec<Entry>, TransferError> {
    let mut notes = Notes::default();
    let (user, items, apps, categories) = match doc {
        Value::Array(records) => (None, records, BTreeMap::new(), BTreeMap::new()),
        Value::Object(mut o) => {
            let user = o
                .get("user")
                .and_then(|u| u.get("user_id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            let names = |list: Option<Value>| -> BTreeMap<String, String> {
                list.and_then(|l| match l {
                    Value::Array(a) => Some(a),
                    _ => None,
                })
                .unwrap_or_default()
                .iter()
                .filter_map(|x| Some((text(x.as_object()?, "id")?, text(x.as_object()?, "name")?)))
                .collect()
            };
            let apps = names(o.remove("apps"));
            let categories = names(o.remove("categories"));
            for (key, what) in [
                ("status_history", "state changes"),
                ("access_controls", "access rules"),
            ] {
                if let Some(Value::Array(a)) = o.get(key)
                    && !a.is_empty()
                {
                    notes.add(format!(
                        "{} OpenMemory {what}: memhost has its own audit log and roles; left out",
                        a.len()
                    ));
                }
            }
            let items = match o.remove("memories") {
                Some(Value::Array(a)) => a,
                _ => {
                    return Err(TransferError::Format(
                        "an OpenMemory memories.json has a \"memories\" list".into(),
                    ));
                }
            };
            (user, items, apps, categories)
        }
        _ => {
            return Err(TransferError::Format(
                "an OpenMemory export is memories.json or memories.jsonl.gz".into(),
            ));
        }
    };
    let namespace = user.map(|u| namespace_name(&u, &mut notes));
    let mut out = Vec::new();
    for (i, m) in items.into_iter().enumerate() {
        let Value::Object(m) = m else {
            notes.add(format!("memories[{i}] is not an object; left out"));
            continue;
        };
        let state = text(&m, "state").unwrap_or_else(|| "active".into());
        if state == "deleted" {
            notes.add("a memory deleted in OpenMemory; left out");
            continue;
        }
        let app =
            text(&m, "app").or_else(|| text(&m, "app_id").and_then(|id| apps.get(&id).cloned()));
        let mut tags = strings(m.get("categories"));
        tags.extend(
            strings(m.get("category_ids"))
                .iter()
                .filter_map(|id| categories.get(id).cloned()),
        );
        let mut metadata = match m.get("metadata") {
            Some(Value::Object(o)) => o.clone(),
            _ => Map::new(),
        };
        let mut rest = m.clone();
        if let Some(app) = &app {
            rest.insert("app".into(), Value::String(app.clone()));
        }
        keep_rest(
            &rest,
            &[
                "id",
                "content",
                "metadata",
                "categories",
                "category_ids",
                "created_at",
                "updated_at",
                "user_id",
                "app_id",
                "archived_at",
                "deleted_at",
            ],
            "openmemory",
            &mut metadata,
        );
        out.push(memory(Fields {
            namespace: namespace.clone(),
            content: text(&m, "content").unwrap_or_default(),
            title: None,
            tags,
            importance: None,
            created_at: time_of(&m, "created_at", &mut notes),
            updated_at: time_of(&m, "updated_at", &mut notes),
            expires_at: None,
            id: text(&m, "id"),
            from: "openmemory",
            agent_id: app,
            agent_type: Some("app".into()),
            metadata,
        }));
    }
    out.extend(notes.into_entries());
    Ok(out)
}

/// The document inside an OpenMemory export zip: `memories.json` if it
/// is there (it has the user and names), else the records of
/// `memories.jsonl.gz`.
pub fn zip_document(bytes: Vec<u8>) -> Result<Value, TransferError> {
    let bad = |e: String| TransferError::Format(format!("a zip memhost cannot read: {e}"));
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| bad(e.to_string()))?;
    let find = |zip: &zip::ZipArchive<_>, want: &str| {
        zip.file_names()
            .find(|n| n.rsplit('/').next() == Some(want))
            .map(str::to_string)
    };
    if let Some(name) = find(&zip, "memories.json") {
        let file = zip.by_name(&name).map_err(|e| bad(e.to_string()))?;
        return serde_json::from_reader(file.take(super::MAX_DOCUMENT))
            .map_err(|e| TransferError::Format(format!("{name}: {e}")));
    }
    if let Some(name) = find(&zip, "memories.jsonl.gz") {
        let file = zip.by_name(&name).map_err(|e| bad(e.to_string()))?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .take(super::MAX_DOCUMENT)
            .read_to_string(&mut text)
            .map_err(|e| TransferError::Format(format!("{name}: {e}")))?;
        return json_lines(&text);
    }
    Err(TransferError::Format(
        "the zip holds neither memories.json nor memories.jsonl.gz (an OpenMemory export has them)"
            .into(),
    ))
}

/// JSON Lines as an array of their values.
pub fn json_lines(text: &str) -> Result<Value, TransferError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| TransferError::Format(format!("line {}: {e}", i + 1)))
        })
        .collect::<Result<Vec<Value>, _>>()
        .map(Value::Array)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_the_forms_these_exports_write() {
        let t = parse_time("2026-05-07T16:42:32.123456789+00:00").unwrap();
        assert_eq!(t, 1_778_172_152_123);
        assert_eq!(parse_time("2026-05-07T16:42:32.123Z"), Some(t));
        assert_eq!(
            parse_time("2025-01-12T19:47:53.001122-08:00"),
            parse_time("2025-01-13T03:47:53.001122Z")
        );
        assert_eq!(
            parse_time("2025-08-21T17:57:28"),
            parse_time("2025-08-21T17:57:28Z")
        );
        assert_eq!(parse_time("2027-01-31"), parse_time("2027-01-31T00:00:00Z"));
        assert_eq!(parse_time("next tuesday"), None);
    }

    #[test]
    fn a_namespace_name_is_made_valid_and_the_change_said() {
        let mut notes = Notes::default();
        assert_eq!(namespace_name("team-a", &mut notes), "team-a");
        assert_eq!(namespace_name("Org/Team A", &mut notes), "org-team-a");
        let said: Vec<_> = notes.into_entries().collect();
        assert_eq!(
            said,
            vec![Entry::Unmapped(
                "namespace \"Org/Team A\" is \"org-team-a\" here".into()
            )]
        );
    }
}
