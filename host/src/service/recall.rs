//! Recall: memories that match a question, best first.
//!
//! Two channels: words (BM25 over blind tokens, every namespace) and
//! meaning (the namespace's embedder, cosine over its vectors). `hybrid`
//! fuses them — by default adding to each memory's cosine the share of the
//! question's best possible BM25 score it reaches (`relative`), or by
//! reciprocal rank (`rrf`, k = 60); a namespace without an embedder answers
//! `hybrid` with words alone and refuses `vector`.
//!
//! Why `relative` is the default: on the gensim news corpus (`semantic`
//! integration test) RRF let memories that both channels rank mid-list —
//! a few common words and a loosely related topic — overtake the one the
//! meaning channel ranks first, and fell below meaning alone.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Filters, Memory, Service, ServiceError, invalid, model};
use crate::auth::{Principal, Role};
use crate::index::lexical;

/// Which channels answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecallMode {
    /// Every channel the namespace has, fused.
    #[default]
    Hybrid,
    /// Meaning (embeddings).
    Vector,
    /// Words (BM25).
    Lexical,
}

/// How an `entities` filter combines its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntitiesMatch {
    /// Every name.
    #[default]
    All,
    /// At least one.
    Any,
}

/// Most names in one `entities` filter.
pub const MAX_ENTITY_FILTER: usize = 20;

/// How `hybrid` combines the channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// Cosine plus the share of the question's best possible BM25 score.
    #[default]
    Relative,
    /// Reciprocal-rank fusion, k = 60.
    Rrf,
}

/// A question.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallQuery {
    /// The question, in words.
    pub query: String,
    /// How many results (1–100, default 10).
    #[serde(default)]
    pub k: Option<usize>,
    /// `hybrid` (default), `vector` or `lexical`.
    #[serde(default)]
    pub mode: RecallMode,
    /// How `hybrid` fuses: `relative` (default) or `rrf`.
    #[serde(default)]
    pub fusion: Fusion,
    /// Only memories carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only memories by this agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Only memories naming these entities, as the namespace's extractor
    /// found them (case and spacing do not matter).
    #[serde(default)]
    pub entities: Vec<String>,
    /// `all` (default): every one of `entities`; `any`: at least one.
    #[serde(default)]
    pub entities_match: EntitiesMatch,
    /// Created at or after (Unix ms).
    #[serde(default)]
    pub since: Option<i64>,
    /// Created before (Unix ms).
    #[serde(default)]
    pub until: Option<i64>,
    /// Only memories that refer to a time ending after this (Unix ms):
    /// the times the extractor found in their text or, when it found
    /// none, when they were observed (`observed_at`).
    #[serde(default)]
    pub event_since: Option<i64>,
    /// Only memories that refer to a time starting before this (Unix ms),
    /// as for `event_since`.
    #[serde(default)]
    pub event_until: Option<i64>,
    /// How much newer beats better, 0–1 (default 0: relevance alone). The
    /// score becomes `(1 − w) · relevance + w · recency`, relevance scaled
    /// to the best hit, recency halving every `half_life_days`.
    #[serde(default)]
    pub recency_weight: Option<f32>,
    /// Recency's half-life in days (default 30), from each memory's last
    /// change.
    #[serde(default)]
    pub half_life_days: Option<f32>,
    /// `POST /v1/recall` only: the namespaces to search (default: every
    /// namespace the caller may read).
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
}

impl RecallQuery {
    fn check(&self) -> Result<usize, ServiceError> {
        if self.query.trim().is_empty() {
            return Err(invalid(
                "query",
                "must hold a character other than whitespace",
            ));
        }
        if self.query.chars().count() > MAX_QUERY {
            return Err(ServiceError::TooLarge {
                field: "query".into(),
                limit: MAX_QUERY,
                unit: "characters",
            });
        }
        super::check_time("since", self.since)?;
        super::check_time("until", self.until)?;
        super::check_time("event_since", self.event_since)?;
        super::check_time("event_until", self.event_until)?;
        if let (Some(since), Some(until)) = (self.event_since, self.event_until)
            && since >= until
        {
            return Err(invalid(
                "event_until",
                "must come after event_since: the window holds no time",
            ));
        }
        if self.entities.len() > MAX_ENTITY_FILTER {
            return Err(ServiceError::TooLarge {
                field: "entities".into(),
                limit: MAX_ENTITY_FILTER,
                unit: "names",
            });
        }
        if self
            .entities
            .iter()
            .any(|e| e.trim().is_empty() || e.chars().count() > super::extraction::MAX_NAME)
        {
            return Err(invalid(
                "entities",
                format!(
                    "each name must hold 1-{} characters other than whitespace",
                    super::extraction::MAX_NAME
                ),
            ));
        }
        let k = self.k.unwrap_or(10);
        if !(1..=100).contains(&k) {
            return Err(invalid("k", "must be between 1 and 100"));
        }
        if let Some(w) = self.recency_weight
            && !(0.0..=1.0).contains(&w)
        {
            return Err(invalid("recency_weight", "must be between 0 and 1"));
        }
        if let Some(h) = self.half_life_days
            && !(h.is_finite() && h > 0.0)
        {
            return Err(invalid(
                "half_life_days",
                "must be a positive number of days",
            ));
        }
        Ok(k)
    }
}

/// One result.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Hit {
    /// The memory, as a read would show it.
    #[serde(flatten)]
    pub memory: Memory,
    /// Higher is better; comparable within one answer.
    pub score: f32,
    /// The channels that found it (`lexical`, `vector`).
    pub channels: Vec<&'static str>,
}

/// Longest query, in bytes.
pub const MAX_QUERY: usize = 4096;
/// Most namespaces one cross-namespace question may name.
pub const MAX_NAMESPACES: usize = 100;

/// A recall's outcome and, answered, its latency by mode.
fn counted_recall(
    q: &RecallQuery,
    r: &Result<Vec<Hit>, ServiceError>,
    started: std::time::Instant,
) {
    crate::metrics::operation("recall", super::outcome(r));
    if r.is_ok() {
        crate::metrics::recall(
            match q.mode {
                RecallMode::Hybrid => "hybrid",
                RecallMode::Vector => "vector",
                RecallMode::Lexical => "lexical",
            },
            started.elapsed(),
        );
    }
}

impl Service {
    /// The memories of `namespace` that best match `q`. Forgotten, expired
    /// and superseded versions never appear; an unknown namespace is an
    /// error. Needs reader.
    pub fn recall(
        &self,
        who: &Principal,
        namespace: &str,
        q: &RecallQuery,
    ) -> Result<Vec<Hit>, ServiceError> {
        let started = std::time::Instant::now();
        let r = self.recall_uncounted(who, namespace, q);
        counted_recall(q, &r, started);
        r
    }

    fn recall_uncounted(
        &self,
        who: &Principal,
        namespace: &str,
        q: &RecallQuery,
    ) -> Result<Vec<Hit>, ServiceError> {
        self.authorize(who, namespace, Role::Reader, "memory.recall", None)?;
        let k = q.check()?;
        if q.namespaces.is_some() {
            return Err(invalid(
                "namespaces",
                "belongs to POST /v1/recall (across namespaces); this route searches one",
            ));
        }
        let ns = self.find_namespace(namespace)?;
        self.recall_in(&ns, q, k, true, &mut HashMap::new())
    }

    /// Recall across namespaces: the ones `q.namespaces` names (each must
    /// be readable), or every namespace `who` may read. Results from all
    /// of them, merged by score (each hit says its namespace). In `vector`
    /// mode, namespaces without an embedder are skipped unless named.
    pub fn recall_across(
        &self,
        who: &Principal,
        q: &RecallQuery,
    ) -> Result<Vec<Hit>, ServiceError> {
        let started = std::time::Instant::now();
        let r = self.recall_across_uncounted(who, q);
        counted_recall(q, &r, started);
        r
    }

    fn recall_across_uncounted(
        &self,
        who: &Principal,
        q: &RecallQuery,
    ) -> Result<Vec<Hit>, ServiceError> {
        let k = q.check()?;
        let (names, named) = match &q.namespaces {
            Some(names) if names.is_empty() => {
                return Err(invalid(
                    "namespaces",
                    "name at least one, or leave it out for all",
                ));
            }
            Some(names) if names.len() > MAX_NAMESPACES => {
                return Err(invalid(
                    "namespaces",
                    format!("at most {MAX_NAMESPACES} namespaces per question"),
                ));
            }
            // Each namespace once, however often it is named: a question
            // costs what it asks, not what it repeats.
            Some(names) => {
                let mut seen = std::collections::HashSet::new();
                (
                    names
                        .iter()
                        .filter(|n| seen.insert(n.as_str()))
                        .cloned()
                        .collect::<Vec<String>>(),
                    true,
                )
            }
            None => (
                self.namespaces(who)?.into_iter().map(|n| n.name).collect(),
                false,
            ),
        };
        let mut query_vectors = HashMap::new();
        let mut hits = Vec::new();
        for name in &names {
            self.authorize(who, name, Role::Reader, "memory.recall", None)?;
            let found = self
                .find_namespace(name)
                .and_then(|ns| self.recall_in(&ns, q, k, named, &mut query_vectors));
            match found {
                Ok(found) => hits.extend(found),
                // Not asked for by name: one namespace deleted meanwhile or
                // whose embedder is down does not fail the question.
                Err(e @ (ServiceError::NoNamespace(_) | ServiceError::Unavailable(_)))
                    if !named =>
                {
                    tracing::warn!(namespace = %name, error = %e, "recall across namespaces skipped one");
                }
                Err(e) => return Err(e),
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        Ok(hits)
    }

    /// Recall in one namespace. `strict`: a `vector` question to a
    /// namespace without an embedder is an error (else: no hits).
    /// `query_vectors` keeps the question's vector per embedder, so
    /// namespaces sharing one embed it once.
    fn recall_in(
        &self,
        ns: &super::Namespace,
        q: &RecallQuery,
        k: usize,
        strict: bool,
        query_vectors: &mut HashMap<String, Vec<f32>>,
    ) -> Result<Vec<Hit>, ServiceError> {
        let namespace = ns.name.as_str();
        if q.mode == RecallMode::Vector && ns.settings.embedder.is_none() {
            if !strict {
                return Ok(Vec::new());
            }
            return Err(invalid(
                "mode",
                format!(
                    "namespace \"{namespace}\" has no embedder (bind one at creation): use hybrid or lexical"
                ),
            ));
        }
        let naming = match (&ns.settings.extractor, q.entities.is_empty()) {
            (_, true) => None,
            (Some(_), false) => {
                Some(self.naming(ns, &q.entities, q.entities_match == EntitiesMatch::All)?)
            }
            (None, false) if strict => {
                return Err(invalid(
                    "entities",
                    format!(
                        "namespace \"{namespace}\" has no extractor (bind one at creation): nothing in it is known to name an entity"
                    ),
                ));
            }
            (None, false) => return Ok(Vec::new()),
        };
        if naming.as_ref().is_some_and(|n| n.is_empty()) {
            return Ok(Vec::new());
        }
        let key = self.data_key(ns)?;
        let filtered = !q.tags.is_empty()
            || naming.is_some()
            || q.agent_id.is_some()
            || q.since.is_some()
            || q.until.is_some()
            || q.event_since.is_some()
            || q.event_until.is_some()
            || q.recency_weight.is_some_and(|w| w > 0.0);
        // Candidates to rank: with filters (or recency) many, so enough
        // survive; else what one graph search gives (an exact search over
        // the built segments is needed beyond that).
        let depth = if filtered {
            k * 10 + 100
        } else {
            k.max(crate::index::segment::EF_SEARCH)
        };
        let meaning = match (&ns.settings.embedder, q.mode) {
            (Some(id), RecallMode::Vector | RecallMode::Hybrid) => {
                match self.meaning(id, ns, &key, &q.query, depth, query_vectors) {
                    Ok(found) => found,
                    // Hybrid degrades to words when the embedder is down.
                    Err(e) if q.mode == RecallMode::Hybrid => {
                        tracing::warn!(namespace, error = %e, "recall without meaning: the embedder is unavailable");
                        Vec::new()
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => Vec::new(),
        };
        let words = if q.mode == RecallMode::Vector {
            lexical::Ranked::default()
        } else {
            // What lies beyond the first `depth` by words cannot reach the
            // first `depth` fused (those are ahead of it in this channel and
            // at least as close in the other) — unless the entity filter
            // removes them first.
            let limit = if naming.is_some() { usize::MAX } else { depth };
            // Words beyond that count only for memories meaning found.
            let near: std::collections::HashSet<uuid::Uuid> = meaning.iter().map(|m| m.0).collect();
            lexical::search(&self.store, &key, &ns.id, &q.query, limit, &near)?
        };
        let mut ranked = fuse(q.mode, q.fusion, words, meaning);
        if let Some(naming) = &naming {
            ranked.retain(|(id, ..)| naming.contains(id));
        }
        let now = model::now_ms();
        let filters = Filters {
            tags: q.tags.clone(),
            agent_id: q.agent_id.clone(),
            since: q.since,
            until: q.until,
        };
        let recency = q.recency_weight.filter(|w| *w > 0.0);
        // With a recency weight every candidate competes (a newer one may
        // overtake); without, the first k that pass the filters are it.
        let wanted = if recency.is_some() { depth } else { k };
        let best = ranked.first().map_or(1.0, |r| r.1).max(f32::MIN_POSITIVE);
        let mut hits = Vec::with_capacity(k);
        // Filters are applied to the ranked list; a bounded number of rows
        // is opened however selective they are.
        for (id, score, channels) in ranked.into_iter().take(depth) {
            if hits.len() == wanted {
                break;
            }
            let m = match self.load(ns, &id) {
                Ok(m) => m,
                Err(ServiceError::NoMemory { .. }) => continue,
                Err(e) => return Err(e),
            };
            if !filters.keeps(&m, now) {
                continue;
            }
            let m = self.with_status(ns, m)?;
            if !refers_within(&m, q.event_since, q.event_until) {
                continue;
            }
            let score = match recency {
                Some(w) => {
                    let half_life = f64::from(q.half_life_days.unwrap_or(30.0)) * 86_400_000.0;
                    let age = (now - m.updated_at).max(0) as f64;
                    let fresh = 0.5f64.powf(age / half_life) as f32;
                    (1.0 - w) * (score / best) + w * fresh
                }
                None => score,
            };
            hits.push(Hit {
                memory: self.egress(ns, m)?,
                score,
                channels,
            });
        }
        if recency.is_some() {
            hits.sort_by(|a, b| b.score.total_cmp(&a.score));
            hits.truncate(k);
        }
        Ok(hits)
    }
}

impl Service {
    /// The vector channel: embed the query on the request path, search.
    fn meaning(
        &self,
        embedder_id: &str,
        ns: &super::Namespace,
        key: &std::sync::Arc<crate::crypto::DataKey>,
        query: &str,
        depth: usize,
        query_vectors: &mut HashMap<String, Vec<f32>>,
    ) -> Result<Vec<(uuid::Uuid, f32)>, ServiceError> {
        if self.requeue_under_way(&ns.id)? {
            return Ok(Vec::new());
        }
        let embedder = self.embedder_of(ns, embedder_id)?;
        if !query_vectors.contains_key(embedder_id) {
            let v = embedder
                .embed(&[query.to_string()])
                .map_err(|e| ServiceError::Unavailable(e.to_string()))?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    ServiceError::Unavailable(format!(
                        "embedder \"{embedder_id}\" returned no vector"
                    ))
                })?;
            query_vectors.insert(embedder_id.to_string(), v);
        }
        let v = &query_vectors[embedder_id];
        Ok(self
            .vectors
            .search(&self.store, key, ns.vector_space(), v, depth)?)
    }
}

/// Rank fusion constant (Cormack et al.): damps the weight of top ranks.
const RRF_K: f32 = 60.0;

type Found = Vec<(uuid::Uuid, f32, Vec<&'static str>)>;

/// Does `m` refer to a time in `[since, until)`: one of its event times,
/// or — naming none — when it was observed?
fn refers_within(m: &Memory, since: Option<i64>, until: Option<i64>) -> bool {
    if since.is_none() && until.is_none() {
        return true;
    }
    let overlaps =
        |start: i64, end: i64| since.is_none_or(|s| end > s) && until.is_none_or(|u| start < u);
    if m.event_times.is_empty() {
        let at = m.observed();
        overlaps(at, at.saturating_add(1))
    } else {
        m.event_times.iter().any(|t| overlaps(t.start, t.end))
    }
}

/// One ranking from the channels: a single channel keeps its own scores;
/// two are fused as `fusion` says.
fn fuse(
    mode: RecallMode,
    fusion: Fusion,
    words: lexical::Ranked,
    meaning: Vec<(uuid::Uuid, f32)>,
) -> Found {
    let tag = |list: Vec<(uuid::Uuid, f32)>, channel| {
        list.into_iter()
            .map(|(id, s)| (id, s, vec![channel]))
            .collect::<Found>()
    };
    // Word scores as the share of the question's best possible BM25: the
    // same order, and comparable between namespaces (a cross-namespace
    // answer merges them).
    let best = words.best_possible.max(f32::MIN_POSITIVE);
    let shares: Vec<(uuid::Uuid, f32)> = words
        .hits
        .iter()
        .map(|&(id, bm25)| (id, (bm25 / best).min(1.0)))
        .collect();
    match (mode, shares.is_empty(), meaning.is_empty()) {
        (RecallMode::Lexical, ..) | (_, false, true) => return tag(shares, "lexical"),
        (RecallMode::Vector, ..) | (_, true, false) => return tag(meaning, "vector"),
        _ => {}
    }
    let mut fused: std::collections::HashMap<uuid::Uuid, (f32, Vec<&'static str>)> =
        std::collections::HashMap::new();
    // Words found beyond the first `hits` count only for memories meaning
    // found too (the others rank below all of `hits`, see the caller).
    let beyond: Vec<(uuid::Uuid, f32, usize)> = if words.beyond.is_empty() {
        Vec::new()
    } else {
        let near: std::collections::HashSet<uuid::Uuid> = meaning.iter().map(|m| m.0).collect();
        let both: Vec<(uuid::Uuid, f32)> = words
            .beyond
            .iter()
            .filter(|hit| near.contains(&hit.0))
            .copied()
            .collect();
        let ranks = words.ranks_beyond(&both);
        both.into_iter()
            .zip(ranks)
            .map(|((id, bm25), rank)| (id, bm25, rank))
            .collect()
    };
    match fusion {
        Fusion::Rrf => {
            for (list, channel) in [(words.hits, "lexical"), (meaning, "vector")] {
                for (rank, (id, _)) in list.into_iter().enumerate() {
                    let e = fused.entry(id).or_insert((0.0, Vec::new()));
                    e.0 += 1.0 / (RRF_K + rank as f32 + 1.0);
                    e.1.push(channel);
                }
            }
            for (id, _, rank) in beyond {
                let e = fused.entry(id).or_insert((0.0, Vec::new()));
                e.0 += 1.0 / (RRF_K + rank as f32 + 1.0);
                e.1.insert(0, "lexical");
            }
        }
        Fusion::Relative => {
            // A memory the meaning channel did not return is at most as
            // close as the last one it did.
            let floor = meaning.last().map_or(0.0, |m| m.1);
            for (id, cosine) in meaning {
                fused.insert(id, (cosine, vec!["vector"]));
            }
            let more = beyond
                .into_iter()
                .map(|(id, bm25, _)| (id, (bm25 / best).min(1.0)));
            for (id, share) in shares.into_iter().chain(more) {
                let e = fused.entry(id).or_insert((floor, Vec::new()));
                e.0 += share;
                e.1.insert(0, "lexical");
            }
        }
    }
    let mut out: Found = fused.into_iter().map(|(id, (s, c))| (id, s, c)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_rewards_agreement_and_keeps_single_channels_as_they_are() {
        let ids: Vec<uuid::Uuid> = (0..4).map(|_| uuid::Uuid::now_v7()).collect();
        let words = lexical::Ranked {
            hits: vec![(ids[1], 5.0), (ids[0], 3.0)],
            best_possible: 10.0,
            ..Default::default()
        };
        let meaning = vec![(ids[1], 0.9), (ids[2], 0.8)];
        for fusion in [Fusion::Relative, Fusion::Rrf] {
            let fused = fuse(RecallMode::Hybrid, fusion, words.clone(), meaning.clone());
            assert_eq!(fused[0].0, ids[1], "found by both channels ({fusion:?})");
            assert_eq!(fused[0].2, ["lexical", "vector"]);
            assert_eq!(fused.len(), 3);
        }
        let no_meaning = lexical::Ranked::default();
        let only = fuse(
            RecallMode::Hybrid,
            Fusion::Relative,
            words.clone(),
            Vec::new(),
        );
        assert_eq!((only[0].0, only[0].1), (ids[1], 0.5));
        let lexical = fuse(
            RecallMode::Lexical,
            Fusion::Relative,
            words,
            meaning.clone(),
        );
        assert_eq!(lexical.len(), 2);
        let vector = fuse(RecallMode::Hybrid, Fusion::Relative, no_meaning, meaning);
        assert_eq!(vector[0], (ids[1], 0.9, vec!["vector"]));
    }

    #[test]
    fn words_beyond_the_limit_change_nothing_in_the_fused_head() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let ids: Vec<uuid::Uuid> = (0..300).map(|_| uuid::Uuid::now_v7()).collect();
        let mut all: Vec<(uuid::Uuid, f32)> = ids[..200]
            .iter()
            .map(|id| (*id, rng.random_range(0.5f32..20.0)))
            .collect();
        all.sort_by(lexical::better);
        // Meaning finds some of the words' tail and memories of no word.
        let mut meaning: Vec<(uuid::Uuid, f32)> = ids[150..250]
            .iter()
            .step_by(3)
            .map(|id| (*id, rng.random_range(0.2f32..0.9)))
            .collect();
        meaning.sort_by(lexical::better);
        let limit = 20;
        for fusion in [Fusion::Relative, Fusion::Rrf] {
            let whole = lexical::Ranked {
                hits: all.clone(),
                best_possible: 25.0,
                ..Default::default()
            };
            let cut = lexical::Ranked {
                hits: all[..limit].to_vec(),
                beyond: all[limit..].iter().rev().copied().collect(),
                best_possible: 25.0,
            };
            let a = fuse(RecallMode::Hybrid, fusion, whole, meaning.clone());
            let b = fuse(RecallMode::Hybrid, fusion, cut, meaning.clone());
            assert_eq!(a[..limit], b[..limit], "{fusion:?}");
        }
    }

    #[test]
    fn relative_fusion_keeps_a_clear_meaning_match_above_weak_word_matches() {
        // The meaning channel's first hit matches no word; a weaker one
        // matches a common word (a small share of what the question's
        // words could score): the first stays first. A memory matching the
        // question's rare words strongly rises over both.
        let ids: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::now_v7()).collect();
        let meaning = vec![(ids[0], 0.62), (ids[1], 0.41), (ids[2], 0.30)];
        let weak = lexical::Ranked {
            hits: vec![(ids[1], 1.5)],
            best_possible: 20.0,
            ..Default::default()
        };
        let fused = fuse(RecallMode::Hybrid, Fusion::Relative, weak, meaning.clone());
        assert_eq!(fused[0].0, ids[0]);
        let rrf = fuse(
            RecallMode::Hybrid,
            Fusion::Rrf,
            lexical::Ranked {
                hits: vec![(ids[1], 1.5)],
                best_possible: 20.0,
                ..Default::default()
            },
            meaning.clone(),
        );
        assert_eq!(rrf[0].0, ids[1], "RRF lets agreement win");
        let strong = lexical::Ranked {
            hits: vec![(ids[2], 14.0)],
            best_possible: 20.0,
            ..Default::default()
        };
        let fused = fuse(RecallMode::Hybrid, Fusion::Relative, strong, meaning);
        assert_eq!(fused[0].0, ids[2]);
    }
}
