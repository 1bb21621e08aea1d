//! The vector channel: sealed vectors at rest; in memory, per namespace,
//! built segments (HNSW graphs, see `segment.rs`) plus an exact delta.
//!
//! | table | row key | value |
//! |---|---|---|
//! | `vectors` | namespace id + memory id | sealed (namespace key): memory version (u32) + f32 values |
//! | `jobs` | `idx/` + namespace id + memory id | [`Job`]: version, attempts, failure: still to embed |
//!
//! A namespace is loaded on first query or first new vector: its sealed segments, then its
//! vector rows (those a segment already holds at the same version are not
//! kept twice). New and changed vectors go to the exact delta; once it
//! holds [`BUILD_AT`] vectors a background thread builds them into a
//! segment (at most [`MAX_SEGMENT`] points), persists it sealed and swaps
//! it in; with more than four segments the four smallest are merged, and a
//! segment more than half tombstones is rebuilt. Queries never wait for
//! a build: they scan the delta exactly and search each segment's graph.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use serde::Serialize;

use super::segment::{self, Member, Segment};
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

/// A vector row's value starts with this byte, then the memory version
/// it was embedded from (u32, big-endian, in the clear: history row keys
/// show versions already), then the sealed row — so a restart can tell a
/// row a segment already holds without opening it. Rows written before
/// hold the sealed row alone (it starts with the seal's own version byte).
const HINTED: u8 = b'V';

/// Seal a vector of memory version `version`: the row value.
pub fn seal(key: &DataKey, row: &[u8], version: u32, v: &[f32]) -> Vec<u8> {
    let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(4 + v.len() * 4));
    plain.extend_from_slice(&version.to_be_bytes());
    for x in v {
        plain.extend_from_slice(&x.to_le_bytes());
    }
    let sealed = key.seal("vectors", row, &plain);
    [[HINTED].as_slice(), &version.to_be_bytes(), &sealed].concat()
}

/// The version a row value says it holds, read without opening it.
fn hinted(value: &[u8]) -> Option<u32> {
    match value {
        [HINTED, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// Open a row value: the version (u32 big-endian) and floats. A hint that
/// disagrees with the sealed version is refused like a broken seal.
fn open_row(key: &DataKey, row: &[u8], value: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let sealed = if hinted(value).is_some() {
        &value[5..]
    } else {
        value
    };
    let plain = key.open("vectors", row, sealed).ok()?;
    let version = version_of(&plain)?;
    match hinted(value) {
        Some(hint) if hint != version => None,
        _ => Some(plain),
    }
}

/// The floats of an unsealed vector row (after its 4-byte version).
fn floats(plain: &[u8]) -> Vec<f32> {
    plain
        .get(4..)
        .unwrap_or_default()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The version of an unsealed vector row.
fn version_of(plain: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(plain.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
fn open(key: &DataKey, row: &[u8], value: &[u8]) -> Option<(u32, Vec<f32>)> {
    let plain = open_row(key, row, value)?;
    Some((version_of(&plain)?, floats(&plain)))
}

/// Exact vectors, unit length, in memory: a namespace's recent vectors
/// (the delta), or all of them below [`BUILD_AT`].
#[derive(Default)]
struct Vectors {
    ids: Vec<Uuid>,
    versions: Vec<u32>,
    data: Vec<f32>,
    at: HashMap<Uuid, usize>,
    dims: usize,
}

impl Vectors {
    fn upsert(&mut self, id: Uuid, version: u32, v: &[f32]) {
        if self.dims == 0 {
            self.dims = v.len();
        }
        if v.len() != self.dims {
            return;
        }
        let unit = normalised(v);
        match self.at.get(&id) {
            Some(&i) => {
                self.data[i * self.dims..(i + 1) * self.dims].copy_from_slice(&unit);
                self.versions[i] = version;
            }
            None => {
                self.at.insert(id, self.ids.len());
                self.ids.push(id);
                self.versions.push(version);
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
            self.versions.swap(i, last);
            let (d, dims) = (&mut self.data, self.dims);
            for j in 0..dims {
                d.swap(i * dims + j, last * dims + j);
            }
            self.at.insert(moved, i);
        }
        self.ids.pop();
        self.versions.pop();
        self.data.truncate(last * self.dims);
    }

    fn version(&self, id: &Uuid) -> Option<u32> {
        self.at.get(id).map(|&i| self.versions[i])
    }

    fn vector(&self, i: usize) -> &[f32] {
        &self.data[i * self.dims..(i + 1) * self.dims]
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

/// A namespace's exact delta holding this many vectors is built into a
/// segment in the background; below it, search is exact. Measured with
/// `cargo xtask bench recall`: exact search over 10k vectors takes
/// ≈ 0.7 ms (p50), a graph search ≈ 0.4–0.6 ms whatever its size; at 20k
/// exact takes 1.7 ms.
pub const BUILD_AT: usize = 10_000;
/// Most points in one segment (a build or merge never exceeds it).
pub const MAX_SEGMENT: usize = 250_000;
/// With more segments than this, the smallest are merged.
const MERGE_OVER: usize = 4;

/// One namespace's vector index: built segments, the exact delta, and for
/// each memory whose live vector is in a segment, which one (a memory
/// changed or forgotten since has no entry: its old point is a tombstone).
#[derive(Default)]
struct Index {
    delta: Vectors,
    segments: Vec<Arc<Segment>>,
    live: HashMap<Uuid, (u64, u32)>,
    /// Memory versions that no longer count: a vector of this version or
    /// older arriving late (the worker finishing after a change or forget)
    /// is ignored.
    floor: HashMap<Uuid, u32>,
    next_segment: u64,
    building: bool,
    /// The last build round failed (persisting, most likely): no new round
    /// before this instant, so a full disk is not met with a rebuild of
    /// the same segment on every write.
    retry_after: Option<std::time::Instant>,
    /// The delta size that starts a build ([`BUILD_AT`]).
    build_at: usize,
}

/// How long a failed build round waits before the next.
const RETRY_BUILD_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

impl Index {
    fn upsert(&mut self, id: Uuid, version: u32, v: &[f32]) {
        match self.floor.get(&id) {
            Some(&stale) if version <= stale => return,
            Some(_) => {
                self.floor.remove(&id);
            }
            None => {}
        }
        self.live.remove(&id);
        self.delta.upsert(id, version, v);
    }

    /// The version of `id` this index holds, if any (0 if none).
    fn held_version(&self, id: &Uuid) -> u32 {
        self.delta
            .version(id)
            .or_else(|| self.live.get(id).map(|h| h.1))
            .unwrap_or(0)
    }

    fn remove(&mut self, id: &Uuid, version: u32) {
        let floor = self.floor.entry(*id).or_insert(version);
        *floor = (*floor).max(version);
        self.live.remove(id);
        self.delta.remove(id);
    }

    /// Adopt a built segment of `points`: those unchanged since the
    /// snapshot leave the delta; a point changed meanwhile is dead from
    /// the start. `replaced` segments go.
    fn adopt(&mut self, segment: Arc<Segment>, replaced: &[u64]) {
        for (m, _) in segment.points() {
            let id = m.uuid();
            let here = |held: Option<&(u64, u32)>| {
                held.is_some_and(|h| replaced.contains(&h.0) && h.1 == m.version)
            };
            if self.delta.version(&id) == Some(m.version) {
                self.delta.remove(&id);
                self.live.insert(id, (segment.id, m.version));
            } else if here(self.live.get(&id)) {
                self.live.insert(id, (segment.id, m.version));
            }
        }
        self.segments.retain(|s| !replaced.contains(&s.id));
        self.segments.push(segment);
    }

    fn live_in(&self, segment: &Segment) -> usize {
        segment
            .points()
            .filter(|(m, _)| self.live.get(&m.uuid()) == Some(&(segment.id, m.version)))
            .count()
    }
}

/// What the background builder needs.
#[derive(Clone)]
struct Builds {
    store: Store,
    key: Arc<DataKey>,
    space: Space,
    /// Whether built segments are written to the store. Not in a shared
    /// store: every host builds its own from the same vectors, and their
    /// segment ids would meet.
    persist: bool,
}

impl Builds {
    fn new(store: &Store, key: &Arc<DataKey>, space: Space) -> Builds {
        Builds {
            store: store.clone(),
            key: key.clone(),
            space,
            persist: !store.is_shared(),
        }
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

/// One namespace's loaded index, shared by searches, writers and builders.
type Loaded = Arc<RwLock<Index>>;

/// Every namespace's vector index, loaded on first use. Cheap to clone.
#[derive(Clone)]
pub struct VectorCache {
    spaces: Arc<RwLock<HashMap<Uuid, (Space, Loaded)>>>,
    build_at: usize,
}

impl Default for VectorCache {
    fn default() -> Self {
        VectorCache::with_build_at(BUILD_AT)
    }
}

impl VectorCache {
    /// A cache that builds a segment once a delta holds `build_at` vectors
    /// (tests and benchmarks; the server uses [`BUILD_AT`]).
    pub fn with_build_at(build_at: usize) -> VectorCache {
        VectorCache {
            spaces: Arc::default(),
            build_at: build_at.max(1),
        }
    }

    fn space(&self, store: &Store, key: &Arc<DataKey>, space: Space) -> Result<Loaded, StoreError> {
        if let Some((held, s)) = self.spaces.read().map_err(|_| poisoned())?.get(&space.ns)
            && *held == space
        {
            return Ok(s.clone());
        }
        // Put the entry in place first and fill it holding its write lock:
        // a put or remove meanwhile waits for the load and then applies,
        // instead of missing a namespace that is not there yet.
        let loaded: Loaded = Arc::default();
        let mut guard = loaded.write().map_err(|_| poisoned())?;
        {
            let mut spaces = self.spaces.write().map_err(|_| poisoned())?;
            match spaces.get(&space.ns) {
                Some((held, s)) if *held == space => return Ok(s.clone()),
                // A newer generation is in place: this caller read the
                // namespace before a reindex. Serve it without caching.
                Some((held, _)) if held.generation > space.generation => {
                    drop(spaces);
                    *guard = load(store, key, space, usize::MAX)?;
                    drop(guard);
                    return Ok(loaded);
                }
                _ => {
                    spaces.insert(space.ns, (space, loaded.clone()));
                }
            }
        }
        match load(store, key, space, self.build_at) {
            Ok(index) => *guard = index,
            Err(e) => {
                drop(guard);
                if let Ok(mut spaces) = self.spaces.write()
                    && spaces
                        .get(&space.ns)
                        .is_some_and(|(_, s)| Arc::ptr_eq(s, &loaded))
                {
                    spaces.remove(&space.ns);
                }
                return Err(e);
            }
        }
        drop(guard);
        background(&loaded, Builds::new(store, key, space));
        Ok(loaded)
    }

    fn loaded(&self, space: Space) -> Option<Loaded> {
        let spaces = self.spaces.read().ok()?;
        let (held, s) = spaces.get(&space.ns)?;
        (*held == space).then(|| s.clone())
    }

    /// A vector was written. The namespace is loaded if it is not yet, so
    /// that segments are built as an import goes (a build of [`BUILD_AT`]
    /// at a time) rather than all at once behind the first question after
    /// it, which would search the whole import exactly until then.
    pub fn put(
        &self,
        store: &Store,
        key: &Arc<DataKey>,
        space: Space,
        id: Uuid,
        version: u32,
        v: &[f32],
    ) {
        let s = match self.loaded(space) {
            Some(s) => s,
            None => match self.space(store, key, space) {
                Ok(s) => s,
                Err(e) => {
                    // Read with the rest on first use.
                    tracing::warn!(namespace = %space.ns, error = %e, "cannot load the vector index");
                    return;
                }
            },
        };
        if let Ok(mut ix) = s.write() {
            ix.upsert(id, version, v);
        }
        background(&s, Builds::new(store, key, space));
    }

    /// A memory was forgotten or changed: its vectors of `version` and
    /// older no longer count (also one the worker delivers late).
    pub fn remove(&self, space: Space, id: &Uuid, version: u32) {
        if let Some(s) = self.loaded(space)
            && let Ok(mut s) = s.write()
        {
            s.remove(id, version);
        }
    }

    /// Another host changed memory `id`'s vector row in namespace `ns`
    /// (a shared store): if this host holds the namespace, read the row as
    /// it is now and hold that — its vector, or none. Reading instead of
    /// trusting the change makes this idempotent and order-free.
    pub fn follow(&self, store: &Store, key: &Arc<DataKey>, ns: &Uuid, id: &Uuid) {
        let held = self
            .spaces
            .read()
            .ok()
            .and_then(|spaces| spaces.get(ns).cloned());
        let Some((space, loaded)) = held else {
            return;
        };
        let row = row_key(ns, id);
        let opened = match store.get(|t| t.vectors, &row) {
            Ok(value) => value.and_then(|v| open_row(key, &row, &v)),
            Err(e) => {
                // The index may miss this change: load it again on next use.
                tracing::warn!(namespace = %ns, error = %e, "cannot read a changed vector; the namespace is read again");
                self.drop_namespace(ns);
                return;
            }
        };
        if let Ok(mut ix) = loaded.write() {
            match opened
                .as_deref()
                .and_then(|p| Some((version_of(p)?, floats(p))))
            {
                // A newer version put here meanwhile stays.
                Some((version, _)) if version < ix.held_version(id) => {}
                Some((version, v)) if v.len() == space.dims => ix.upsert(*id, version, &v),
                _ => {
                    let version = ix.held_version(id);
                    ix.remove(id, version);
                }
            }
        }
        background(&loaded, Builds::new(store, key, space));
    }

    /// Forget every namespace's index (each is read again on next use).
    pub fn clear(&self) {
        if let Ok(mut spaces) = self.spaces.write() {
            spaces.clear();
        }
    }

    /// A namespace was deleted or reindexed.
    pub fn drop_namespace(&self, ns: &Uuid) {
        if let Ok(mut spaces) = self.spaces.write() {
            spaces.remove(ns);
        }
    }

    /// How a loaded namespace's index is made up: vectors searched exactly,
    /// segments, vectors in them that count.
    pub fn shape(
        &self,
        store: &Store,
        key: &Arc<DataKey>,
        space: Space,
    ) -> Result<IndexShape, StoreError> {
        let s = self.space(store, key, space)?;
        let ix = s.read().map_err(|_| poisoned())?;
        Ok(IndexShape {
            exact: ix.delta.ids.len(),
            segments: ix.segments.len(),
            in_segments: ix.live.len(),
            building: ix.building,
        })
    }

    /// Build segments for everything the delta holds beyond what exact
    /// search serves well, now, on this thread; then merge. For benchmarks
    /// and tests; the server does this in the background.
    pub fn build_now(
        &self,
        store: &Store,
        key: &Arc<DataKey>,
        space: Space,
    ) -> Result<IndexShape, StoreError> {
        let s = self.space(store, key, space)?;
        // Wait for a background round that is under way, then claim it.
        loop {
            let mut ix = s.write().map_err(|_| poisoned())?;
            if !ix.building {
                ix.building = true;
                break;
            }
            drop(ix);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let claimed = Building(s.clone());
        let job = Builds::new(store, key, space);
        build_rounds(&s, &job)?;
        drop(claimed);
        self.shape(store, key, space)
    }

    /// Memories of the namespace by cosine similarity to `query`, best
    /// first, at most `limit`: exact over the delta; over each segment
    /// approximate (its graph's nearest) when `limit` is at most
    /// [`segment::EF_SEARCH`], else exact; stale points skipped.
    pub fn search(
        &self,
        store: &Store,
        key: &Arc<DataKey>,
        space: Space,
        query: &[f32],
        limit: usize,
    ) -> Result<Vec<(Uuid, f32)>, StoreError> {
        let space = self.space(store, key, space)?;
        let ix = space.read().map_err(|_| poisoned())?;
        let s = &ix.delta;
        if s.dims != query.len() || limit == 0 {
            return Ok(Vec::new());
        }
        let q = normalised(query);
        // Keep the best `limit` in a min-heap: no allocation per vector.
        let mut best: std::collections::BinaryHeap<Scored> =
            std::collections::BinaryHeap::with_capacity(limit + 1);
        let mut offer = |score: f32, id: Uuid| {
            if best.len() < limit {
                best.push(Scored(score, id));
            } else if best.peek().is_some_and(|worst| score > worst.0) {
                best.pop();
                best.push(Scored(score, id));
            }
        };
        for (i, v) in s.data.chunks_exact(s.dims).enumerate() {
            offer(dot(v, &q), s.ids[i]);
        }
        for seg in &ix.segments {
            if limit <= segment::EF_SEARCH {
                for (m, score) in seg.search(&q) {
                    let id = m.uuid();
                    if ix.live.get(&id) == Some(&(seg.id, m.version)) {
                        offer(score, id);
                    }
                }
            } else {
                // Deeper than a graph search reaches (filters need
                // headroom): exact over the segment's points.
                for (m, v) in seg.points() {
                    let id = m.uuid();
                    if ix.live.get(&id) == Some(&(seg.id, m.version)) {
                        offer(dot(v, &q), id);
                    }
                }
            }
        }
        let mut out: Vec<(Uuid, f32)> = best.into_iter().map(|Scored(s, id)| (id, s)).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(out)
    }
}

/// How a namespace's vector index is made up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IndexShape {
    /// Vectors searched exactly (the delta).
    pub exact: usize,
    /// Built segments.
    pub segments: usize,
    /// Vectors in segments that count.
    pub in_segments: usize,
    /// A build or merge is under way.
    pub building: bool,
}

/// Read a namespace's index: its segments, then its vector rows (a row
/// whose version a segment holds is not read twice; others go to the
/// delta).
fn load(store: &Store, key: &DataKey, space: Space, build_at: usize) -> Result<Index, StoreError> {
    let mut index = Index {
        build_at,
        delta: Vectors {
            dims: space.dims,
            ..Vectors::default()
        },
        ..Index::default()
    };
    // A shared store holds no segments: each host builds its own.
    let segment::Found { segments, next_id } = if store.is_shared() {
        segment::Found {
            segments: Vec::new(),
            next_id: 0,
        }
    } else {
        segment::load(store, key, &space.ns, space.generation)?
    };
    index.next_segment = next_id;
    let mut held: HashMap<Uuid, Vec<(u64, u32)>> = HashMap::new();
    for seg in &segments {
        for (m, _) in seg.points() {
            held.entry(m.uuid()).or_default().push((seg.id, m.version));
        }
    }
    let prefix = space.ns.as_bytes().to_vec();
    let covered = |id: &Uuid, version: u32| {
        held.get(id)
            .and_then(|h| h.iter().find(|(_, ver)| *ver == version))
            .copied()
    };
    // Unsealing is most of a restart: a row whose hint names a version a
    // segment holds is not opened at all; the others are opened on every
    // core, straight from the map, and parsed only when no segment holds
    // them.
    let opened: Vec<(Uuid, Opened)> = store.read(|txn, t| {
        crate::store::with_prefix_in(txn, t.vectors, &prefix, |rows| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let per = rows.len().div_ceil(threads).max(1);
            std::thread::scope(|scope| {
                let workers: Vec<_> = rows
                    .chunks(per)
                    .map(|share| {
                        scope.spawn(move || {
                            share
                                .iter()
                                .filter_map(|(k, v)| {
                                    let id = k.get(16..).and_then(|b| Uuid::from_slice(b).ok())?;
                                    if let Some(held) = hinted(v).and_then(|h| covered(&id, h)) {
                                        return Some((id, Opened::Held(held)));
                                    }
                                    let plain = open_row(key, k, v)?;
                                    let version = version_of(&plain)?;
                                    Some((
                                        id,
                                        match covered(&id, version) {
                                            Some(held) => Opened::Held(held),
                                            None => Opened::Delta(version, floats(&plain)),
                                        },
                                    ))
                                })
                                .collect::<Vec<(Uuid, Opened)>>()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| w.join().unwrap_or_default())
                    .collect()
            })
        })
    })?;
    index.live.reserve(opened.len());
    for (id, found) in opened {
        match found {
            Opened::Held(held) => {
                index.live.insert(id, held);
            }
            Opened::Delta(version, vector) => index.delta.upsert(id, version, &vector),
        }
    }
    index.segments = segments.into_iter().map(Arc::new).collect();
    if !index.segments.is_empty() {
        tracing::info!(namespace = %space.ns, segments = index.segments.len(), in_segments = index.live.len(), exact = index.delta.ids.len(), "vector index loaded");
    }
    Ok(index)
}

/// A vector row as the loader found it.
enum Opened {
    /// A segment holds this version: (segment id, version).
    Held((u64, u32)),
    /// No segment holds it: its version and vector, for the delta.
    Delta(u32, Vec<f32>),
}

/// Start a background build round for `index` if its delta is large
/// enough or its segments need merging, and none is under way.
fn background(index: &Loaded, job: Builds) {
    let start = match index.write() {
        Ok(mut ix)
            if !ix.building
                && ix.delta.ids.len() >= ix.build_at
                && ix
                    .retry_after
                    .is_none_or(|at| std::time::Instant::now() >= at) =>
        {
            ix.building = true;
            true
        }
        _ => false,
    };
    if !start {
        return;
    }
    let shared = index.clone();
    let spawned = std::thread::Builder::new()
        .name("memhost-segments".into())
        .spawn(move || {
            let _done = Building(shared.clone());
            let failed = build_rounds(&shared, &job).err();
            if let Ok(mut ix) = shared.write() {
                ix.retry_after = failed
                    .is_some()
                    .then(|| std::time::Instant::now() + RETRY_BUILD_AFTER);
            }
            if let Some(e) = failed {
                tracing::warn!(namespace = %job.space.ns, error = %e, retry_in_seconds = RETRY_BUILD_AFTER.as_secs(), "building a vector segment failed; searching exactly meanwhile");
            }
        });
    if spawned.is_err()
        && let Ok(mut ix) = index.write()
    {
        ix.building = false;
    }
}

/// Clears an index's `building` flag when dropped, also when a build
/// panics, so a later round can start.
struct Building(Loaded);

impl Drop for Building {
    fn drop(&mut self) {
        let mut ix = match self.0.write() {
            Ok(ix) => ix,
            Err(poisoned) => poisoned.into_inner(),
        };
        ix.building = false;
    }
}

/// Build segments from the delta while it is large enough, then merge
/// small or mostly dead segments. Queries go on meanwhile: the locks are
/// held only to copy a snapshot and to swap the result in.
fn build_rounds(index: &Loaded, job: &Builds) -> Result<(), StoreError> {
    loop {
        let (id, points) = {
            let mut ix = index.write().map_err(|_| poisoned())?;
            if ix.delta.ids.len() < ix.build_at {
                break;
            }
            let id = ix.next_segment;
            ix.next_segment += 1;
            let take = ix.delta.ids.len().min(MAX_SEGMENT);
            let points: Vec<(Member, Vec<f32>)> = (0..take)
                .map(|i| {
                    (
                        Member {
                            id: *ix.delta.ids[i].as_bytes(),
                            version: ix.delta.versions[i],
                        },
                        ix.delta.vector(i).to_vec(),
                    )
                })
                .collect();
            (id, points)
        };
        let n = points.len();
        let started = std::time::Instant::now();
        let seg = Arc::new(Segment::build(id, points));
        if job.persist {
            let rows = segment::seal(&job.key, &job.space.ns, job.space.generation, &seg)?;
            segment::persist(&job.store, &job.space.ns, job.space.generation, rows, &[])?;
        }
        index.write().map_err(|_| poisoned())?.adopt(seg, &[]);
        tracing::info!(namespace = %job.space.ns, segment = id, points = n, seconds = started.elapsed().as_secs_f32(), "vector segment built");
    }
    // Merge: the smallest segments together while there are too many, and
    // any segment that is mostly tombstones.
    loop {
        let (id, replaced, points) = {
            let mut ix = index.write().map_err(|_| poisoned())?;
            let mut by_size: Vec<(usize, usize, Arc<Segment>)> = ix
                .segments
                .iter()
                .map(|s| (ix.live_in(s), s.len(), s.clone()))
                .collect();
            by_size.sort_by_key(|s| s.0);
            // Too many segments: the MERGE_OVER smallest together, up to
            // MAX_SEGMENT — so a point is rebuilt a few times over an
            // import's life, not once per segment added. Else a segment
            // more than half tombstones, alone.
            let mut pick: Vec<Arc<Segment>> = Vec::new();
            let mut total = 0;
            if ix.segments.len() > MERGE_OVER {
                for (live, _, s) in &by_size {
                    if total + live > MAX_SEGMENT || pick.len() == MERGE_OVER {
                        break;
                    }
                    total += live;
                    pick.push(s.clone());
                }
            }
            if pick.len() < 2 {
                pick.clear();
                total = 0;
                if let Some((live, _, s)) = by_size.iter().find(|(live, len, _)| live * 2 < *len) {
                    total = *live;
                    pick.push(s.clone());
                }
            }
            if pick.is_empty() {
                break;
            }
            let id = ix.next_segment;
            ix.next_segment += 1;
            let mut points = Vec::with_capacity(total);
            for s in &pick {
                for (m, v) in s.points() {
                    if ix.live.get(&m.uuid()) == Some(&(s.id, m.version)) {
                        points.push((*m, v.to_vec()));
                    }
                }
            }
            (id, pick.iter().map(|s| s.id).collect::<Vec<u64>>(), points)
        };
        let n = points.len();
        let started = std::time::Instant::now();
        let seg = Arc::new(Segment::build(id, points));
        if job.persist {
            let rows = segment::seal(&job.key, &job.space.ns, job.space.generation, &seg)?;
            segment::persist(
                &job.store,
                &job.space.ns,
                job.space.generation,
                rows,
                &replaced,
            )?;
        }
        index.write().map_err(|_| poisoned())?.adopt(seg, &replaced);
        tracing::info!(namespace = %job.space.ns, segment = id, merged = ?replaced, points = n, seconds = started.elapsed().as_secs_f32(), "vector segments merged");
    }
    Ok(())
}

/// A score in the min-heap of the best results (the worst on top).
struct Scored(f32, Uuid);

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
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
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
    StoreError::Storage("vector cache lock poisoned".into())
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

    fn unit(rng: &mut impl rand::Rng, dims: usize) -> Vec<f32> {
        normalised(
            &(0..dims)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect::<Vec<f32>>(),
        )
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        key: Arc<DataKey>,
        space: Space,
    }

    fn fixture(dims: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::store::StoreOptions::default()).unwrap();
        Fixture {
            _dir: dir,
            store,
            key: Arc::new(DataKey::generate()),
            space: Space {
                ns: Uuid::now_v7(),
                generation: 0,
                dims,
            },
        }
    }

    impl Fixture {
        fn write(&self, id: Uuid, version: u32, v: &[f32]) {
            let row = row_key(&self.space.ns, &id);
            let sealed = seal(&self.key, &row, version, v);
            self.store
                .write_blocking(move |txn, t| {
                    txn.put(t.vectors, &row, &sealed, crate::store::WriteFlags::empty())?;
                    Ok(())
                })
                .unwrap();
        }
    }

    #[test]
    fn exact_search_ranks_by_cosine_and_skips_other_dimensions() {
        let f = fixture(2);
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        f.write(ids[0], 1, &[1.0, 0.0]);
        f.write(ids[1], 1, &[0.0, 2.0]);
        f.write(ids[2], 1, &[1.0, 1.0]);
        f.write(ids[3], 1, &[1.0, 0.0, 0.0]); // wrong dimensions: ignored
        let cache = VectorCache::default();
        cache.remove(f.space, &ids[0], 1); // not loaded yet: nothing to do
        let hits = cache
            .search(&f.store, &f.key, f.space, &[1.0, 0.1], 5)
            .unwrap();
        assert_eq!(
            hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            [ids[0], ids[2], ids[1]]
        );
        cache.remove(f.space, &ids[0], 1);
        cache.put(&f.store, &f.key, f.space, ids[1], 2, &[3.0, 0.0]);
        let hits = cache
            .search(&f.store, &f.key, f.space, &[1.0, 0.1], 5)
            .unwrap();
        assert_eq!(
            hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            [ids[1], ids[2]]
        );
        assert!((hits[0].1 - 0.995).abs() < 0.01);
        // A newer generation (a reindex) does not see the old vectors.
        let newer = Space {
            generation: 1,
            ..f.space
        };
        assert_eq!(
            cache
                .search(&f.store, &f.key, newer, &[1.0, 0.1], 5)
                .unwrap()
                .len(),
            3,
            "generation 1 reads the rows afresh"
        );
    }

    #[test]
    fn an_import_is_built_as_it_comes_and_merged_four_segments_at_a_time() {
        let mut rng = rand::rng();
        let f = fixture(8);
        let cache = VectorCache::with_build_at(50);
        let mut all = Vec::new();
        for batch in 1..=6 {
            for _ in 0..50 {
                let (id, v) = (Uuid::now_v7(), unit(&mut rng, 8));
                f.write(id, 1, &v);
                cache.put(&f.store, &f.key, f.space, id, 1, &v);
                all.push((id, v));
            }
            // The worker's first vector loaded the namespace: no question
            // was needed for its builds to start.
            assert!(cache.loaded(f.space).is_some());
            let shape = cache.build_now(&f.store, &f.key, f.space).unwrap();
            assert_eq!(
                (shape.exact, shape.in_segments),
                (0, batch * 50),
                "{shape:?}"
            );
            // Five segments of 50: the four smallest become one of 200.
            let segments = match batch {
                1..=4 => batch,
                5 => 2,
                _ => 3,
            };
            assert_eq!(shape.segments, segments, "after batch {batch}: {shape:?}");
        }
        for (id, v) in all.iter().step_by(17) {
            let hits = cache.search(&f.store, &f.key, f.space, v, 1).unwrap();
            assert_eq!(hits[0].0, *id);
        }
    }

    #[test]
    fn segments_are_built_persisted_loaded_and_honour_tombstones() {
        let mut rng = rand::rng();
        let f = fixture(16);
        let ids: Vec<Uuid> = (0..300).map(|_| Uuid::now_v7()).collect();
        let vectors: Vec<Vec<f32>> = ids.iter().map(|_| unit(&mut rng, 16)).collect();
        for (id, v) in ids.iter().zip(&vectors) {
            f.write(*id, 1, v);
        }
        let cache = VectorCache::with_build_at(100);
        let shape = cache.build_now(&f.store, &f.key, f.space).unwrap();
        assert_eq!((shape.exact, shape.in_segments), (0, 300), "{shape:?}");
        assert!(shape.segments >= 1);
        // The graph finds a stored vector as its own nearest.
        let hits = cache
            .search(&f.store, &f.key, f.space, &vectors[7], 1)
            .unwrap();
        assert_eq!(hits[0].0, ids[7]);
        assert!(hits[0].1 > 0.999);

        // Forget one, change another: their segment points stop counting.
        cache.remove(f.space, &ids[7], 1);
        // The worker delivering the forgotten version late changes nothing.
        cache.put(&f.store, &f.key, f.space, ids[7], 1, &vectors[7]);
        let moved = unit(&mut rng, 16);
        f.write(ids[8], 2, &moved);
        cache.put(&f.store, &f.key, f.space, ids[8], 2, &moved);
        let hits = cache
            .search(&f.store, &f.key, f.space, &vectors[7], 3)
            .unwrap();
        assert!(
            hits.iter().all(|h| h.0 != ids[7]),
            "a forgotten memory was found"
        );
        let hits = cache
            .search(&f.store, &f.key, f.space, &vectors[8], 300)
            .unwrap();
        let score = hits.iter().find(|h| h.0 == ids[8]).map(|h| h.1);
        assert!(
            score.is_none_or(|s| s < 0.999),
            "the old vector of a changed memory counts"
        );
        let hits = cache.search(&f.store, &f.key, f.space, &moved, 1).unwrap();
        assert_eq!(hits[0].0, ids[8], "the new vector is searched");

        // A restart loads the sealed segment (no rebuild) and the rows'
        // versions decide what counts.
        f.store
            .write_blocking({
                let row = row_key(&f.space.ns, &ids[7]);
                move |txn, t| {
                    txn.del(t.vectors, &row)?;
                    Ok(())
                }
            })
            .unwrap();
        let restarted = VectorCache::with_build_at(100_000);
        let shape = restarted.shape(&f.store, &f.key, f.space).unwrap();
        assert_eq!((shape.in_segments, shape.exact), (298, 1), "{shape:?}");
        let hits = restarted
            .search(&f.store, &f.key, f.space, &vectors[7], 3)
            .unwrap();
        assert!(hits.iter().all(|h| h.0 != ids[7]));
        let hits = restarted
            .search(&f.store, &f.key, f.space, &moved, 1)
            .unwrap();
        assert_eq!(hits[0].0, ids[8]);
        let hits = restarted
            .search(&f.store, &f.key, f.space, &vectors[100], 1)
            .unwrap();
        assert_eq!(hits[0].0, ids[100]);
    }

    /// The segment ids that have rows, in order.
    fn segment_ids(f: &Fixture) -> Vec<u64> {
        let p = segment::prefix(&f.space.ns, f.space.generation);
        let mut ids: Vec<u64> = f
            .store
            .rows(|t| t.segments, &p, |k| k.starts_with(&p))
            .unwrap()
            .iter()
            .map(|(k, _)| u64::from_be_bytes(k[p.len()..p.len() + 8].try_into().unwrap()))
            .collect();
        ids.dedup();
        ids
    }

    #[test]
    fn a_broken_segment_is_searched_exactly_removed_and_rebuilt_whole() {
        let mut rng = rand::rng();
        let f = fixture(16);
        let ids: Vec<Uuid> = (0..250).map(|_| Uuid::now_v7()).collect();
        let vectors: Vec<Vec<f32>> = ids.iter().map(|_| unit(&mut rng, 16)).collect();
        for (id, v) in ids.iter().zip(&vectors) {
            f.write(*id, 1, v);
        }
        let shape = VectorCache::with_build_at(100)
            .build_now(&f.store, &f.key, f.space)
            .unwrap();
        assert_eq!((shape.segments, shape.in_segments), (1, 250), "{shape:?}");
        assert_eq!(segment_ids(&f), [0]);
        // One bit of its first chunk flipped on disk.
        let p = segment::prefix(&f.space.ns, f.space.generation);
        let (k, mut v) = f
            .store
            .rows_max(|t| t.segments, &p, |k| k.starts_with(&p), 1)
            .unwrap()
            .remove(0);
        let last = v.len() - 1;
        v[last] ^= 1;
        f.store
            .write_blocking(move |txn, t| {
                txn.put(t.segments, &k, &v, crate::store::WriteFlags::empty())?;
                Ok(())
            })
            .unwrap();
        // The next load searches its points exactly, from their rows, and
        // drops its rows; the next build takes a new id.
        let cache = VectorCache::with_build_at(100_000);
        let shape = cache.shape(&f.store, &f.key, f.space).unwrap();
        assert_eq!((shape.segments, shape.exact), (0, 250), "{shape:?}");
        for i in [0, 99, 249] {
            let hits = cache
                .search(&f.store, &f.key, f.space, &vectors[i], 1)
                .unwrap();
            assert_eq!(hits[0].0, ids[i]);
        }
        assert!(segment_ids(&f).is_empty(), "the broken segment's rows stay");
        let shape = VectorCache::with_build_at(1)
            .build_now(&f.store, &f.key, f.space)
            .unwrap();
        assert_eq!((shape.segments, shape.in_segments), (1, 250), "{shape:?}");
        // The new segment is whole: the next restart loads it.
        let shape = VectorCache::with_build_at(100_000)
            .shape(&f.store, &f.key, f.space)
            .unwrap();
        assert_eq!((shape.segments, shape.in_segments), (1, 250), "{shape:?}");
    }

    #[test]
    fn a_sealed_vector_opens_only_in_its_row() {
        let key = DataKey::generate();
        let sealed = seal(&key, b"row-1", 3, &[0.5, -1.0]);
        assert_eq!(open(&key, b"row-1", &sealed), Some((3, vec![0.5, -1.0])));
        assert_eq!(open(&key, b"row-2", &sealed), None);
        // The version in the clear must agree with the sealed one.
        assert_eq!(hinted(&sealed), Some(3));
        let mut lying = sealed.clone();
        lying[4] = 4;
        assert_eq!(open(&key, b"row-1", &lying), None);
        // Rows written before the hint existed: the sealed row alone.
        let plain = [3u32.to_be_bytes(), 0.5f32.to_le_bytes()].concat();
        let bare = key.seal("vectors", b"row-1", &plain);
        assert_eq!(hinted(&bare), None);
        assert_eq!(open(&key, b"row-1", &bare), Some((3, vec![0.5])));
    }
}
