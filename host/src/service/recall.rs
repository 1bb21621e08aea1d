//! Recall: memories that match a question, best first.
//!
//! Two channels: words (BM25 over blind tokens, every namespace) and
//! meaning (the namespace's embedder, exact cosine over its vectors).
//! `hybrid` fuses their rankings with reciprocal-rank fusion (k = 60); a
//! namespace without an embedder answers `hybrid` with words alone and
//! refuses `vector`.

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
    /// Only memories carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only memories by this agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Created at or after (Unix ms).
    #[serde(default)]
    pub since: Option<i64>,
    /// Created before (Unix ms).
    #[serde(default)]
    pub until: Option<i64>,
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
        self.authorize(who, namespace, Role::Reader, "memory.recall", None)?;
        if q.query.trim().is_empty() {
            return Err(invalid("query", "must not be empty"));
        }
        if q.query.len() > MAX_QUERY {
            return Err(ServiceError::TooLarge {
                field: "query".into(),
                limit: MAX_QUERY,
            });
        }
        let k = q.k.unwrap_or(10);
        if !(1..=100).contains(&k) {
            return Err(invalid("k", "must be between 1 and 100"));
        }
        let ns = self.find_namespace(namespace)?;
        if q.mode == RecallMode::Vector && ns.settings.embedder.is_none() {
            return Err(invalid(
                "mode",
                format!(
                    "namespace \"{namespace}\" has no embedder (bind one at creation): use hybrid or lexical"
                ),
            ));
        }
        let key = self.data_key(&ns)?;
        let depth = k * 10 + 100;
        let words = if q.mode == RecallMode::Vector {
            Vec::new()
        } else {
            lexical::search(&self.store, &key, &ns.id, &q.query)?
        };
        let meaning = match (&ns.settings.embedder, q.mode) {
            (Some(id), RecallMode::Vector | RecallMode::Hybrid) => {
                match self.meaning(id, &ns, &key, &q.query, depth) {
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
        let ranked = fuse(q.mode, words, meaning);
        let now = model::now_ms();
        let filters = Filters {
            tags: q.tags.clone(),
            agent_id: q.agent_id.clone(),
            since: q.since,
            until: q.until,
        };
        let mut hits = Vec::with_capacity(k);
        // Filters are applied to the ranked list; a bounded number of rows
        // is opened however selective they are.
        for (id, score, channels) in ranked.into_iter().take(depth) {
            if hits.len() == k {
                break;
            }
            let m = match self.load(&ns, &id) {
                Ok(m) => m,
                Err(ServiceError::NoMemory { .. }) => continue,
                Err(e) => return Err(e),
            };
            if filters.keeps(&m, now) {
                hits.push(Hit {
                    memory: self.egress(&ns, self.with_status(&ns, m)?)?,
                    score,
                    channels,
                });
            }
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
        key: &crate::crypto::DataKey,
        query: &str,
        depth: usize,
    ) -> Result<Vec<(uuid::Uuid, f32)>, ServiceError> {
        let embedder = self.embedder_of(ns, embedder_id)?;
        let v = embedder
            .embed(&[query.to_string()])
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let v = v.first().ok_or_else(|| {
            ServiceError::Unavailable(format!("embedder \"{embedder_id}\" returned no vector"))
        })?;
        Ok(self.vectors.search(&self.store, key, &ns.id, v, depth)?)
    }
}

/// Rank fusion constant (Cormack et al.): damps the weight of top ranks.
const RRF_K: f32 = 60.0;

/// One ranking from the channels: a single channel keeps its own scores;
/// two are fused by reciprocal rank.
fn fuse(
    mode: RecallMode,
    words: Vec<(uuid::Uuid, f32)>,
    meaning: Vec<(uuid::Uuid, f32)>,
) -> Vec<(uuid::Uuid, f32, Vec<&'static str>)> {
    let tag = |list: Vec<(uuid::Uuid, f32)>, channel| {
        list.into_iter()
            .map(|(id, s)| (id, s, vec![channel]))
            .collect::<Vec<_>>()
    };
    match (mode, words.is_empty(), meaning.is_empty()) {
        (RecallMode::Lexical, ..) | (_, false, true) => return tag(words, "lexical"),
        (RecallMode::Vector, ..) | (_, true, false) => return tag(meaning, "vector"),
        _ => {}
    }
    let mut fused: std::collections::HashMap<uuid::Uuid, (f32, Vec<&'static str>)> =
        std::collections::HashMap::new();
    for (list, channel) in [(words, "lexical"), (meaning, "vector")] {
        for (rank, (id, _)) in list.into_iter().enumerate() {
            let e = fused.entry(id).or_insert((0.0, Vec::new()));
            e.0 += 1.0 / (RRF_K + rank as f32 + 1.0);
            e.1.push(channel);
        }
    }
    let mut out: Vec<_> = fused.into_iter().map(|(id, (s, c))| (id, s, c)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_rewards_agreement_and_keeps_single_channels_as_they_are() {
        let ids: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::now_v7()).collect();
        let words = vec![(ids[0], 9.0), (ids[1], 5.0)];
        let meaning = vec![(ids[1], 0.9), (ids[2], 0.8)];
        let fused = fuse(RecallMode::Hybrid, words.clone(), meaning.clone());
        assert_eq!(fused[0].0, ids[1], "found by both channels");
        assert_eq!(fused[0].2, ["lexical", "vector"]);
        assert_eq!(fused.len(), 3);
        let only = fuse(RecallMode::Hybrid, words.clone(), Vec::new());
        assert_eq!((only[0].0, only[0].1), (ids[0], 9.0));
        let lexical = fuse(RecallMode::Lexical, words, meaning);
        assert_eq!(lexical.len(), 2);
    }
}
