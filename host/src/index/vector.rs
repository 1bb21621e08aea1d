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

/// Every namespace's vectors, loaded on first use. Cheap to clone.
#[derive(Clone, Default)]
pub struct VectorCache {
    spaces: Arc<RwLock<HashMap<Uuid, Arc<RwLock<Vectors>>>>>,
}

impl VectorCache {
    fn space(
        &self,
        store: &Store,
        key: &DataKey,
        ns: &Uuid,
    ) -> Result<Arc<RwLock<Vectors>>, StoreError> {
        if let Some(s) = self.spaces.read().map_err(|_| poisoned())?.get(ns) {
            return Ok(s.clone());
        }
        // Load outside the map's lock; the first to finish wins.
        let prefix = ns.as_bytes().to_vec();
        let mut vectors = Vectors::default();
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
        Ok(spaces
            .entry(*ns)
            .or_insert_with(|| Arc::new(RwLock::new(vectors)))
            .clone())
    }

    /// A vector was written (only if the namespace is loaded; otherwise it
    /// is read with the rest on first use).
    pub fn put(&self, ns: &Uuid, id: Uuid, v: &[f32]) {
        if let Ok(spaces) = self.spaces.read()
            && let Some(s) = spaces.get(ns)
            && let Ok(mut s) = s.write()
        {
            s.upsert(id, v);
        }
    }

    /// A memory was forgotten or changed (its old vector no longer counts).
    pub fn remove(&self, ns: &Uuid, id: &Uuid) {
        if let Ok(spaces) = self.spaces.read()
            && let Some(s) = spaces.get(ns)
            && let Ok(mut s) = s.write()
        {
            s.remove(id);
        }
    }

    /// A namespace was deleted.
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
        ns: &Uuid,
        query: &[f32],
        limit: usize,
    ) -> Result<Vec<(Uuid, f32)>, StoreError> {
        let space = self.space(store, key, ns)?;
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
        let ns = Uuid::now_v7();
        cache
            .spaces
            .write()
            .unwrap()
            .insert(ns, Arc::new(RwLock::new(v)));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::store::StoreOptions::default()).unwrap();
        let key = DataKey::generate();
        let hits = cache.search(&store, &key, &ns, &[1.0, 0.1], 5).unwrap();
        assert_eq!(
            hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            [ids[1], ids[2]]
        );
        assert!((hits[0].1 - 0.995).abs() < 0.01);
    }

    #[test]
    fn a_sealed_vector_opens_only_in_its_row() {
        let key = DataKey::generate();
        let sealed = seal(&key, b"row-1", 3, &[0.5, -1.0]);
        assert_eq!(open(&key, b"row-1", &sealed), Some((3, vec![0.5, -1.0])));
        assert_eq!(open(&key, b"row-2", &sealed), None);
    }
}
