//! Recall: memories that match a question, best first.
//!
//! Today one channel answers: the lexical index (BM25 over blind tokens).
//! The vector channel and its fusion arrive with the embedders; until then
//! `hybrid` (the default) is the lexical channel alone and `vector` is
//! refused, saying so.

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
        if q.mode == RecallMode::Vector {
            return Err(invalid(
                "mode",
                "vector recall needs an embedder bound to the namespace, and none is yet: use hybrid or lexical",
            ));
        }
        let ns = self.find_namespace(namespace)?;
        let key = self.data_key(&ns)?;
        let ranked = lexical::search(&self.store, &key, &ns.id, &q.query)?;
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
        for (id, score) in ranked.into_iter().take(k * 10 + 100) {
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
                    memory: self.egress(&ns, m)?,
                    score,
                    channels: vec!["lexical"],
                });
            }
        }
        Ok(hits)
    }
}
