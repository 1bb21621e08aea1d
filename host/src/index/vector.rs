//! The vector channel: sealed vectors at rest, searched exactly in memory.
//!
//! | table | row key | value |
//! |---|---|---|
//! | `vectors` | namespace id + memory id | sealed (namespace key): memory version (u32) + f32 values |
//! | `jobs` | `idx/` + namespace id + memory id | memory version (u32): still to embed |
//!
//! Vectors are unsealed once per namespace into memory (on first query)
//! and kept current by the indexing worker and by forgets, so a query is a
//! scan of plain floats: exact, and fast below the sizes where an
//! approximate index starts to win.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::crypto::DataKey;
use crate::store::{Store, StoreError};

/// `jobs` prefix of indexing jobs.
pub const JOB_PREFIX: &[u8] = b"idx/";

/// The `jobs` row of memory `id`'s indexing job.
pub fn job_key(ns: &Uuid, id: &Uuid) -> Vec<u8> {
    [JOB_PREFIX, ns.as_bytes(), id.as_bytes()].concat()
}

/// An indexing job: the memory version to embed, attempts that failed on
/// this memory's own text, and — once given up — why.
///
/// Row value: version (u32 BE), attempts (u8), failed flag (u8), reason
/// (UTF-8). A bare 4-byte version is a fresh job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The memory version queued.
    pub version: u32,
    /// Failed attempts on this text alone.
    pub attempts: u8,
    /// Set when the worker gave up: the last error.
    pub failed: Option<String>,
}

impl Job {
    /// A fresh job for `version`.
    pub fn queued(version: u32) -> Job {
        Job {
            version,
            attempts: 0,
            failed: None,
        }
    }

    /// Decode a row value.
    pub fn decode(bytes: &[u8]) -> Option<Job> {
        let version = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
        let attempts = bytes.get(4).copied().unwrap_or(0);
        let failed = (bytes.get(5) == Some(&1))
            .then(|| String::from_utf8_lossy(bytes.get(6..).unwrap_or_default()).into_owned());
        Some(Job {
            version,
            attempts,
            failed,
        })
    }

    /// The row value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.version.to_be_bytes().to_vec();
        out.push(self.attempts);
        match &self.failed {
            Some(reason) => {
                out.push(1);
                out.extend_from_slice(reason.as_bytes());
            }
            None => out.push(0),
        }
        out
    }
}

/// The `vectors` row of memory `id`.
pub fn row_key(ns: &Uuid, id: &Uuid) -> Vec<u8> {
    [ns.as_bytes().as_slice(), id.as_bytes()].concat()
}

/// Seal a vector of memory version `version`.
pub fn seal(key: &DataKey, row: &[u8], version: u32, v: &[f32]) -> Vec<u8> {
    let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(4 + v.len() * 4));
    plain.extend_from_slice(&version.to_be_bytes());
    for x in v {
        plain.extend_from_slice(&x.to_le_bytes());
    }
    key.seal("vectors", row, &plain)
}

fn open(key: &DataKey, row: &[u8], sealed: &[u8]) -> Option<(u32, Vec<f32>)> {
    let plain = key.open("vectors", row, sealed).ok()?;
    let version = u32::from_be_bytes(plain.get(..4)?.try_into().ok()?);
    let v = plain[4..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some((version, v))
}

/// One namespace's vectors, unit length, in memory.
#[derive(Default)]
struct Vectors {
    ids: Vec<Uuid>,
    data: Vec<f32>,
    at: HashMap<Uuid, usize>,
    dims: usize,
}

impl Vectors {
    fn upsert(&mut self, id: Uuid, v: &[f32]) {
        if self.dims == 0 {
            self.dims = v.len();
        }
        if v.len() != self.dims {
            return;
        }
        let unit = normalised(v);
        match self.at.get(&id) {
            Some(&i) => self.data[i * self.dims..(i + 1) * self.dims].copy_from_slice(&unit),
            None => {
                self.at.insert(id, self.ids.len());
                self.ids.push(id);
                self.data.extend_from_slice(&unit);
            }
        }
    }

    fn remove(&mut self, id: &Uuid) {
        let Some(i) = self.at.remove(id) else { return };
        let last = self.ids.len() - 1;
        if i != last {
            let moved = self.ids[last];
            self.ids.swap(i, last);
            let (d, dims) = (&mut self.data, self.dims);
            for j in 0..dims {
                d.swap(i * dims + j, last * dims + j);
            }
            self.at.insert(moved, i);
        }
        self.ids.pop();
        self.data.truncate(last * self.dims);
    }
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}

/// Which vectors a cache entry holds: a namespace's, as of one index
/// generation (a reindex starts a new one, possibly in another process, so
/// an entry of an older generation is never used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Space {
    /// The namespace id.
    pub ns: Uuid,
    /// Its index generation.
    pub generation: u32,
    /// The dimensions its vectors must have; others are skipped.
    pub dims: usize,
}

/// One namespace's loaded vectors, shared by searches and writers.
type Loaded = Arc<RwLock<Vectors>>;

/// Every namespace's vectors, loaded on first use. Cheap to clone.
#[derive(Clone, Default)]
pub struct VectorCache {
    spaces: Arc<RwLock<HashMap<Uuid, (Space, Loaded)>>>,
}

impl VectorCache {
    fn space(
        &self,
        store: &Store,
        key: &DataKey,
        space: Space,
    ) -> Result<Arc<RwLock<Vectors>>, StoreError> {
        if let Some((held, s)) = self.spaces.read().map_err(|_| poisoned())?.get(&space.ns)
            && *held == space
        {
            return Ok(s.clone());
        }
        // Load outside the map's lock; the first to finish wins.
        let prefix = space.ns.as_bytes().to_vec();
        let mut vectors = Vectors {
            dims: space.dims,
            ..Vectors::default()
        };
        let mut from = prefix.clone();
        loop {
            let rows = store.rows_max(|t| t.vectors, &from, |k| k.starts_with(&prefix), 4096)?;
            let done = rows.len() < 4096;
            for (k, v) in &rows {
                if let (Some(id), Some((_, vector))) = (
                    k.get(16..).and_then(|b| Uuid::from_slice(b).ok()),
                    open(key, k, v),
                ) {
                    vectors.upsert(id, &vector);
                }
            }
            match rows.last() {
                Some((k, _)) if !done => from = [k.as_slice(), &[0]].concat(),
                _ => break,
            }
        }
        let mut spaces = self.spaces.write().map_err(|_| poisoned())?;
        match spaces.get(&space.ns) {
            Some((held, s)) if *held == space => Ok(s.clone()),
            _ => {
                let s = Arc::new(RwLock::new(vectors));
                spaces.insert(space.ns, (space, s.clone()));
                Ok(s)
            }
        }
    }

    fn loaded(&self, space: Space) -> Option<Arc<RwLock<Vectors>>> {
        let spaces = self.spaces.read().ok()?;
        let (held, s) = spaces.get(&space.ns)?;
        (*held == space).then(|| s.clone())
    }

    /// A vector was written (only if the namespace is loaded at this
    /// generation; otherwise it is read with the rest on first use).
    pub fn put(&self, space: Space, id: Uuid, v: &[f32]) {
        if let Some(s) = self.loaded(space)
            && let Ok(mut s) = s.write()
        {
            s.upsert(id, v);
        }
    }

    /// A memory was forgotten or changed (its old vector no longer counts).
    pub fn remove(&self, space: Space, id: &Uuid) {
        if let Some(s) = self.loaded(space)
            && let Ok(mut s) = s.write()
        {
            s.remove(id);
        }
    }

    /// A namespace was deleted or reindexed.
    pub fn drop_namespace(&self, ns: &Uuid) {
        if let Ok(mut spaces) = self.spaces.write() {
            spaces.remove(ns);
        }
    }

    /// Memories of `ns` by cosine similarity to `query`, best first, at
    /// most `limit`. Exact.
    pub fn search(
        &self,
        store: &Store,
        key: &DataKey,
        space: Space,
        query: &[f32],
        limit: usize,
    ) -> Result<Vec<(Uuid, f32)>, StoreError> {
        let space = self.space(store, key, space)?;
        let s = space.read().map_err(|_| poisoned())?;
        if s.dims != query.len() || s.ids.is_empty() {
            return Ok(Vec::new());
        }
        let q = normalised(query);
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Keep the best `limit` in a min-heap: no allocation per vector.
        let mut best: std::collections::BinaryHeap<Scored> =
            std::collections::BinaryHeap::with_capacity(limit + 1);
        for (i, v) in s.data.chunks_exact(s.dims).enumerate() {
            let score = dot(v, &q);
            if best.len() < limit {
                best.push(Scored(score, i));
            } else if best.peek().is_some_and(|worst| score > worst.0) {
                best.pop();
                best.push(Scored(score, i));
            }
        }
        let mut out: Vec<(Uuid, f32)> = best
            .into_iter()
            .map(|Scored(score, i)| (s.ids[i], score))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(out)
    }
}

/// A score in the min-heap of the best results (the worst on top).
struct Scored(f32, usize);

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.total_cmp(&self.0)
    }
}

/// Dot product with eight independent sums, so the compiler can use SIMD
/// (a single running sum of floats cannot be reordered).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn poisoned() -> StoreError {
    StoreError::Lmdb("vector cache lock poisoned".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_and_read_the_bare_version_rows() {
        assert_eq!(Job::decode(&7u32.to_be_bytes()), Some(Job::queued(7)));
        let failed = Job {
            version: 3,
            attempts: 5,
            failed: Some("trapped: unreachable — é".into()),
        };
        assert_eq!(Job::decode(&failed.encode()), Some(failed));
        assert_eq!(Job::decode(&Job::queued(9).encode()), Some(Job::queued(9)));
        assert_eq!(Job::decode(&[1, 2]), None);
    }

    #[test]
    fn upsert_remove_and_search_are_exact() {
        let mut v = Vectors::default();
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        v.upsert(ids[0], &[1.0, 0.0]);
        v.upsert(ids[1], &[0.0, 2.0]);
        v.upsert(ids[2], &[1.0, 1.0]);
        v.upsert(ids[3], &[1.0, 0.0, 0.0]); // wrong dimensions: ignored
        assert_eq!(v.ids.len(), 3);
        v.remove(&ids[0]);
        assert_eq!(v.ids.len(), 3 - 1);
        assert_eq!(v.at[&ids[2]], 0);
        v.upsert(ids[1], &[3.0, 0.0]);
        let cache = VectorCache::default();
        let space = Space {
            ns: Uuid::now_v7(),
            generation: 0,
            dims: 2,
        };
        cache
            .spaces
            .write()
            .unwrap()
            .insert(space.ns, (space, Arc::new(RwLock::new(v))));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::store::StoreOptions::default()).unwrap();
        let key = DataKey::generate();
        let hits = cache.search(&store, &key, space, &[1.0, 0.1], 5).unwrap();
        assert_eq!(
            hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            [ids[1], ids[2]]
        );
        assert!((hits[0].1 - 0.995).abs() < 0.01);
        // A newer generation (a reindex) does not see the old vectors.
        let newer = Space {
            generation: 1,
            ..space
        };
        assert!(
            cache
                .search(&store, &key, newer, &[1.0, 0.1], 5)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_sealed_vector_opens_only_in_its_row() {
        let key = DataKey::generate();
        let sealed = seal(&key, b"row-1", 3, &[0.5, -1.0]);
        assert_eq!(open(&key, b"row-1", &sealed), Some((3, vec![0.5, -1.0])));
        assert_eq!(open(&key, b"row-2", &sealed), None);
    }
}
