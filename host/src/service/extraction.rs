//! Background extraction: a store or update in a namespace with an
//! extractor queues an extraction job in its write; the indexing worker
//! runs the extractor on what the namespace stores (redacted text in a
//! `store-redacted` namespace) and writes what it found, sealed under the
//! namespace key, next to the memory. A failing extractor is skipped and
//! logged — the memory stays stored and searchable (DESIGN: extractor →
//! skip and log); a missing one leaves the jobs queued until it is back.
//!
//! | table      | row                                  | value                                     |
//! |------------|--------------------------------------|-------------------------------------------|
//! | `jobs`     | `ext/` + namespace id + memory id    | memory version to extract (a [`Job`])     |
//! | `entities` | namespace id + `m` + memory id       | sealed: the version extracted, entities   |
//! | `entities` | namespace id + `e` + blind name + memory id | empty: the entity index              |
//! | `entities` | namespace id + `r` + memory id       | the memory's blind names, concatenated    |
//! | `entities` | namespace id + `c` + blind name      | how many memories name it (u32), then sealed: the name as first found and its kind |
//!
//! A blind name is the HMAC of the name as found — trimmed, lowercase,
//! spaces collapsed — under a key derived from the namespace key, like the
//! word index: a copied file shows which memories name the same entity,
//! never the entity. A new version drops its memory from the index until it
//! is extracted again.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{EventTime, FoundEntity};
use super::{Namespace, Service, ServiceError};
use crate::crypto::DataKey;
use crate::index::vector::Job;
use crate::store::{StoreError, Tables, WriteFlags, del_in, get_in};

/// `jobs` prefix of extraction jobs.
pub const EXT_PREFIX: &[u8] = b"ext/";

/// Where extraction rounds keep their place among the indexing workers'
/// cursors.
const EXTRACTION_ROUND: usize = usize::MAX;

/// Most entities kept per memory; longest name and kind kept.
const MAX_ENTITIES: usize = 64;
pub(super) const MAX_NAME: usize = 200;
const MAX_KIND: usize = 32;

/// The `jobs` row of memory `id`'s extraction job.
pub fn job_key(ns: &Uuid, id: &Uuid) -> Vec<u8> {
    [EXT_PREFIX, ns.as_bytes(), id.as_bytes()].concat()
}

/// The `entities` row holding what was extracted from memory `id`.
pub fn row_key(ns: &Uuid, id: &Uuid) -> Vec<u8> {
    [ns.as_bytes().as_slice(), b"m", id.as_bytes()].concat()
}

/// The index row saying memory `id` names the entity blinded as `name`.
fn posting_key(ns: &Uuid, name: &[u8; 32], id: &Uuid) -> Vec<u8> {
    [ns.as_bytes().as_slice(), b"e", name, id.as_bytes()].concat()
}

/// Where the index rows of the entity blinded as `name` start.
fn posting_prefix(ns: &Uuid, name: &[u8; 32]) -> Vec<u8> {
    [ns.as_bytes().as_slice(), b"e", name].concat()
}

/// The namespace's catalogue row of the entity blinded as `name`.
fn catalogue_key(ns: &Uuid, name: &[u8; 32]) -> Vec<u8> {
    [ns.as_bytes().as_slice(), b"c", name].concat()
}

/// A catalogue row's count and sealed part.
fn catalogued(row: &[u8]) -> Option<(u32, &[u8])> {
    let (count, sealed) = row.split_first_chunk::<4>()?;
    (!sealed.is_empty()).then(|| (u32::from_be_bytes(*count), sealed))
}

/// An entity of a namespace, with how many memories name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EntityCount {
    /// As first found.
    pub name: String,
    /// What the extractor called it then.
    pub kind: String,
    /// Memories whose current version names it.
    pub memories: u32,
}

/// A page of a namespace's entities.
#[derive(Debug, Clone, Serialize)]
pub struct EntityPage {
    /// In an order that stays put between pages (not alphabetical: names
    /// are sealed).
    pub entities: Vec<EntityCount>,
    /// Pass as `page` for the next page; null on the last.
    pub next_page: Option<String>,
}

/// The row listing memory `id`'s blind names.
fn names_key(ns: &Uuid, id: &Uuid) -> Vec<u8> {
    [ns.as_bytes().as_slice(), b"r", id.as_bytes()].concat()
}

/// An entity name as the index knows it.
pub(super) fn blind_name(key: &DataKey, name: &str) -> [u8; 32] {
    key.blind("entity-name", super::gazetteer::normal(name).as_bytes())
}

/// Drop what was extracted from memory `id` — its sealed row and its index
/// rows — inside the caller's write (an update, a forget).
pub(super) fn forget_in(
    txn: &mut crate::store::RwTransaction<'_>,
    t: &Tables,
    ns: &Uuid,
    id: &Uuid,
) -> Result<(), StoreError> {
    if let Some(names) = get_in(txn, t.entities, &names_key(ns, id))? {
        for name in names.chunks_exact(32) {
            let name: [u8; 32] = name.try_into().unwrap_or([0; 32]);
            del_in(txn, t.entities, &posting_key(ns, &name, id))?;
            let entry = catalogue_key(ns, &name);
            if let Some(row) = get_in(txn, t.entities, &entry)? {
                match catalogued(&row) {
                    Some((n, sealed)) if n > 1 => {
                        let row = [&(n - 1).to_be_bytes(), sealed].concat();
                        txn.put(t.entities, &entry, &row, WriteFlags::empty())?;
                    }
                    _ => txn.del(t.entities, &entry)?,
                }
            }
        }
        txn.del(t.entities, &names_key(ns, id))?;
    }
    del_in(txn, t.entities, &row_key(ns, id))
}

/// Most index rows read for one entity in a recall filter.
const MAX_POSTINGS: usize = 10_000;

/// What one extraction writes: memory, version extracted, sealed row and
/// blind names each with its sealed catalogue entry (none when there is
/// nothing to write).
type Done = (Uuid, u32, Option<(Vec<u8>, Vec<([u8; 32], Vec<u8>)>)>);

/// One entry of an entity listing: a catalogue row, or a name with aliases
/// and the blind names of its spellings.
enum Listed<'a> {
    Row(&'a [u8], &'a [u8]),
    Group(&'a String, &'a [[u8; 32]]),
}

/// A catalogue entry's sealed part.
#[derive(Debug, Serialize, Deserialize)]
struct Named {
    name: String,
    kind: String,
}

/// What an `entities` row holds (sealed).
#[derive(Debug, Serialize, Deserialize)]
struct Extracted {
    /// The memory version it was extracted from.
    version: u32,
    entities: Vec<FoundEntity>,
    /// The times its text refers to (a 0.1 extractor finds none).
    #[serde(default)]
    event_times: Vec<EventTime>,
}

/// Most event times kept per memory; longest text kept.
const MAX_EVENT_TIMES: usize = 32;
const MAX_EVENT_TEXT: usize = 200;

/// The times an extractor reported that are periods a memory can refer to.
fn event_times(found: Vec<crate::plugins::EventTime>) -> Vec<EventTime> {
    found
        .into_iter()
        .filter(|t| {
            (0..=super::MAX_TIME_MS).contains(&t.start)
                && (0..=super::MAX_TIME_MS).contains(&t.end)
                && t.start < t.end
                && !t.text.trim().is_empty()
                && t.text.chars().count() <= MAX_EVENT_TEXT
        })
        .take(MAX_EVENT_TIMES)
        .map(|t| EventTime {
            text: t.text.trim().to_string(),
            start: t.start,
            end: t.end,
        })
        .collect()
}

impl Service {
    /// Run the extractors on up to `max` queued memories; returns how many
    /// jobs were settled and how many were seen.
    pub fn extract_pending(&self, max: usize) -> Result<(usize, usize), ServiceError> {
        let rows = self.claim(self.next_jobs(EXT_PREFIX, EXTRACTION_ROUND, max)?)?;
        if rows.is_empty() {
            return Ok((0, 0));
        }
        let mut by_ns: BTreeMap<Uuid, Vec<(Uuid, u32)>> = BTreeMap::new();
        let p = EXT_PREFIX.len();
        for (k, v) in &rows {
            if let (Some(ns), Some(id), Some(job)) = (
                k.get(p..p + 16).and_then(|b| Uuid::from_slice(b).ok()),
                k.get(p + 16..).and_then(|b| Uuid::from_slice(b).ok()),
                Job::decode(v),
            ) {
                by_ns.entry(ns).or_default().push((id, job.version));
            }
        }
        let namespaces = self.namespaces_by_id()?;
        let mut settled = 0;
        for (ns_id, jobs) in by_ns {
            let ns = namespaces.get(&ns_id);
            let extractor = ns.and_then(|ns| ns.settings.extractor.as_ref());
            let (Some(ns), Some(extractor_id)) = (ns, extractor) else {
                // Its namespace is gone, or extracts nothing now.
                settled += self.settle(&ns_id, jobs.iter().map(|j| (j.0, j.1, None)))?;
                continue;
            };
            let Some(extractor) = self.plugins.snapshot().extractor(extractor_id) else {
                // Not loaded now: the jobs wait for it.
                continue;
            };
            let key = self.data_key(ns)?;
            let mut done = Vec::with_capacity(jobs.len());
            for (id, queued) in jobs {
                let m = match self.load(ns, &id) {
                    Ok(m) => m,
                    Err(ServiceError::NoMemory { .. }) => {
                        done.push((id, queued, None));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let text = self.searchable_text(ns, &m)?;
                let context = crate::plugins::ExtractContext {
                    observed_at: m.observed(),
                    created_at: m.updated_at,
                };
                let (found, times) = match extractor.extract(&text, context) {
                    Ok(x) => (
                        x.entities
                            .into_iter()
                            .filter(|e| {
                                !e.name.trim().is_empty()
                                    && e.name.chars().count() <= MAX_NAME
                                    && e.kind.chars().count() <= MAX_KIND
                            })
                            .take(MAX_ENTITIES)
                            .map(|e| FoundEntity {
                                name: e.name.trim().to_string(),
                                kind: e.kind.to_lowercase(),
                            })
                            .collect::<Vec<_>>(),
                        event_times(x.event_times),
                    ),
                    Err(e) => {
                        // Skipped, not retried: an extractor that fails on a
                        // text fails on it again. What kind of failure, not
                        // the plugin's words (they could quote the text).
                        tracing::warn!(namespace = %ns.name, memory = %id, plugin = %e.plugin.id, error = %e.kind.without_words(), "cannot extract entities from this memory; skipped");
                        tracing::debug!(namespace = %ns.name, memory = %id, error = %crate::logging::untrusted(&e.to_string(), 1024), "extraction failed");
                        done.push((id, queued.max(m.version), None));
                        continue;
                    }
                };
                let mut names: Vec<([u8; 32], Vec<u8>)> = Vec::new();
                for e in &found {
                    let blind = blind_name(&key, &e.name);
                    if names.iter().any(|(b, _)| *b == blind) {
                        continue;
                    }
                    let entry = super::seal_json(
                        &key,
                        "entities",
                        &catalogue_key(&ns_id, &blind),
                        &Named {
                            name: e.name.clone(),
                            kind: e.kind.clone(),
                        },
                    )?;
                    names.push((blind, entry));
                }
                let row = row_key(&ns_id, &id);
                let sealed = super::seal_json(
                    &key,
                    "entities",
                    &row,
                    &Extracted {
                        version: m.version,
                        entities: found,
                        event_times: times,
                    },
                )?;
                done.push((id, queued.max(m.version), Some((sealed, names))));
            }
            settled += self.settle(&ns_id, done.into_iter())?;
        }
        Ok((settled, rows.len()))
    }

    /// Write what was extracted and drop the jobs — each only if no newer
    /// version was queued meanwhile (an update's job waits for its turn).
    fn settle(
        &self,
        ns_id: &Uuid,
        done: impl Iterator<Item = Done>,
    ) -> Result<usize, ServiceError> {
        let ns_id = *ns_id;
        let done: Vec<Done> = done.collect();
        if done.is_empty() {
            return Ok(0);
        }
        Ok(self.store.write_blocking(move |txn, t| {
            let mut settled = 0;
            for (id, version, sealed) in &done {
                let job = job_key(&ns_id, id);
                let current = get_in(txn, t.jobs, &job)?
                    .as_deref()
                    .and_then(Job::decode)
                    .map(|j| j.version);
                // Settled meanwhile (its memory forgotten, or another host
                // of a shared store was first), or a newer version queued.
                if current.is_none_or(|queued| queued > *version) {
                    continue;
                }
                if let Some((sealed, names)) = sealed {
                    forget_in(txn, t, &ns_id, id)?;
                    txn.put(
                        t.entities,
                        &row_key(&ns_id, id),
                        sealed,
                        WriteFlags::empty(),
                    )?;
                    let mut blind = Vec::with_capacity(names.len() * 32);
                    for (name, entry) in names {
                        txn.put(
                            t.entities,
                            &posting_key(&ns_id, name, id),
                            &[],
                            WriteFlags::empty(),
                        )?;
                        let row = catalogue_key(&ns_id, name);
                        let held = get_in(txn, t.entities, &row)?;
                        let value = match held.as_deref().and_then(catalogued) {
                            Some((n, sealed)) => {
                                [&n.saturating_add(1).to_be_bytes(), sealed].concat()
                            }
                            None => [&1u32.to_be_bytes(), entry.as_slice()].concat(),
                        };
                        txn.put(t.entities, &row, &value, WriteFlags::empty())?;
                        blind.extend_from_slice(name);
                    }
                    txn.put(
                        t.entities,
                        &names_key(&ns_id, id),
                        &blind,
                        WriteFlags::empty(),
                    )?;
                }
                del_in(txn, t.jobs, &job)?;
                del_in(txn, t.jobs, &super::indexing::lease_key(&job))?;
                settled += 1;
            }
            Ok::<_, StoreError>(settled)
        })?)
    }

    /// The memories of `ns` that name every one of `names` (`all`) or at
    /// least one (`any`), as their current versions were extracted, each
    /// name under any of its spellings in the gazetteer; at most
    /// [`MAX_POSTINGS`] read per spelling.
    pub(super) fn naming(
        &self,
        ns: &Namespace,
        names: &[String],
        all: bool,
    ) -> Result<HashSet<Uuid>, ServiceError> {
        let key = self.data_key(ns)?;
        let aliases = self.aliases(ns)?;
        let mut found: Option<HashSet<Uuid>> = None;
        for name in names {
            let blinds: Vec<[u8; 32]> = aliases
                .spellings(name)
                .iter()
                .map(|s| blind_name(&key, s))
                .collect();
            let ids = self.postings(&ns.id, &blinds)?;
            found = Some(match found {
                None => ids,
                Some(so_far) if all => so_far.intersection(&ids).copied().collect(),
                Some(so_far) => so_far.union(&ids).copied().collect(),
            });
        }
        Ok(found.unwrap_or_default())
    }

    /// The memories naming any of the entities blinded as `names`.
    fn postings(&self, ns: &Uuid, names: &[[u8; 32]]) -> Result<HashSet<Uuid>, ServiceError> {
        let mut ids = HashSet::new();
        for name in names {
            let prefix = posting_prefix(ns, name);
            let rows = self.store.rows_max(
                |t| t.entities,
                &prefix,
                |k| k.starts_with(&prefix),
                MAX_POSTINGS,
            )?;
            ids.extend(
                rows.into_iter().filter_map(|(k, _)| {
                    k.get(prefix.len()..).and_then(|b| Uuid::from_slice(b).ok())
                }),
            );
        }
        Ok(ids)
    }

    /// The entities `namespace`'s memories name, with how many name each:
    /// at most `limit` (1–500, default 100) from page `page` (a
    /// `next_page` this gave). Needs read access.
    pub fn entities(
        &self,
        who: &crate::auth::Principal,
        namespace: &str,
        page: Option<&str>,
        limit: Option<u64>,
    ) -> Result<EntityPage, ServiceError> {
        self.authorize(
            who,
            namespace,
            crate::auth::Role::Reader,
            "namespace.entities",
            None,
        )?;
        let ns = self.find_namespace(namespace)?;
        let limit = usize::try_from(limit.unwrap_or(100).clamp(1, 500)).unwrap_or(500);
        let prefix = [ns.id.as_bytes().as_slice(), b"c"].concat();
        let after: Option<[u8; 32]> = match page {
            None => None,
            Some(cursor) => Some(
                hex::decode(cursor)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        super::invalid(
                            "page",
                            "is not a next_page this listing gave (64 hex digits)",
                        )
                    })?,
            ),
        };
        let from = match &after {
            None => prefix.clone(),
            Some(blind) => [catalogue_key(&ns.id, blind).as_slice(), &[0]].concat(),
        };
        let key = self.data_key(&ns)?;
        // A name with aliases is listed once, at its own blind name,
        // counting the memories that name it under any spelling; the rows
        // of its spellings are not listed on their own.
        let groups: BTreeMap<[u8; 32], (String, Vec<[u8; 32]>)> = self
            .aliases(&ns)?
            .groups()
            .into_values()
            .map(|(name, spellings)| {
                let blinds = spellings.iter().map(|s| blind_name(&key, s)).collect();
                (blind_name(&key, &name), (name, blinds))
            })
            .collect();
        let hidden: HashSet<[u8; 32]> = groups.values().flat_map(|g| g.1.clone()).collect();
        let fetch = limit + hidden.len() + 1;
        let rows = self
            .store
            .rows_max(|t| t.entities, &from, |k| k.starts_with(&prefix), fetch)?;
        // Rows past the last one read are unknown: no group beyond it yet.
        let truncated = rows.len() == fetch;
        let blind_of = |k: &[u8]| -> Option<[u8; 32]> { k.get(prefix.len()..)?.try_into().ok() };
        let last_read = rows.last().and_then(|(k, _)| blind_of(k));
        let mut listed: BTreeMap<[u8; 32], Listed<'_>> = BTreeMap::new();
        for (k, v) in &rows {
            if let Some(blind) = blind_of(k).filter(|b| !hidden.contains(b)) {
                listed.insert(blind, Listed::Row(k, v));
            }
        }
        for (blind, group) in &groups {
            let past = |b: &[u8; 32]| after.is_none_or(|a| b > &a);
            if past(blind) && (!truncated || last_read.is_some_and(|l| *blind <= l)) {
                listed.insert(*blind, Listed::Group(&group.0, &group.1));
            }
        }
        let mut entities = Vec::with_capacity(limit);
        let mut more = truncated;
        let mut last = None;
        for (blind, item) in &listed {
            if entities.len() == limit {
                more = true;
                break;
            }
            let entity = match item {
                Listed::Row(k, v) => {
                    let Some((memories, sealed)) = catalogued(v) else {
                        continue;
                    };
                    let named: Named = super::open_json(&key, "entities", k, sealed)?;
                    EntityCount {
                        name: named.name,
                        kind: named.kind,
                        memories,
                    }
                }
                Listed::Group(name, spellings) => {
                    let memories = self.postings(&ns.id, spellings)?.len();
                    if memories == 0 {
                        continue;
                    }
                    EntityCount {
                        name: (*name).clone(),
                        kind: self.kind_of(&ns, &key, spellings)?,
                        memories: u32::try_from(memories).unwrap_or(u32::MAX),
                    }
                }
            };
            entities.push(entity);
            last = Some(*blind);
        }
        Ok(EntityPage {
            entities,
            next_page: last.filter(|_| more).map(hex::encode),
        })
    }

    /// The kind the extractor gave the first of `spellings` it found.
    fn kind_of(
        &self,
        ns: &Namespace,
        key: &DataKey,
        spellings: &[[u8; 32]],
    ) -> Result<String, ServiceError> {
        for blind in spellings {
            let row = catalogue_key(&ns.id, blind);
            if let Some(v) = self.store.get(|t| t.entities, &row)?
                && let Some((_, sealed)) = catalogued(&v)
            {
                let named: Named = super::open_json(key, "entities", &row, sealed)?;
                return Ok(named.kind);
            }
        }
        Ok(String::new())
    }

    /// What was extracted from `m` as it is now — its entities (read
    /// through the gazetteer) and event times; none until the extractor
    /// ran on this version.
    pub(super) fn extracted_of(
        &self,
        ns: &Namespace,
        m: &super::Memory,
    ) -> Result<(Vec<FoundEntity>, Vec<EventTime>), ServiceError> {
        let row = row_key(&ns.id, &m.id);
        let Some(sealed) = self.store.get(|t| t.entities, &row)? else {
            return Ok(Default::default());
        };
        let key = self.data_key(ns)?;
        let extracted: Extracted = super::open_json(&key, "entities", &row, &sealed)?;
        if extracted.version != m.version {
            return Ok(Default::default());
        }
        let aliases = self.aliases(ns)?;
        let mut seen = HashSet::new();
        let entities = extracted
            .entities
            .into_iter()
            .filter_map(|e| {
                let name = aliases.canonical(&e.name).to_string();
                seen.insert(super::gazetteer::normal(&name))
                    .then_some(FoundEntity { name, kind: e.kind })
            })
            .collect();
        Ok((entities, extracted.event_times))
    }
}
