//! Built segments: immutable HNSW graphs (`instant-distance`) over a set of
//! a namespace's vectors, made in the background once its exact delta is
//! large enough, persisted sealed so a restart loads them instead of
//! rebuilding, and merged (small ones together, dead points dropped) in
//! the background.
//!
//! | table | row key | value |
//! |---|---|---|
//! | `segments` | namespace id + generation (u32) + segment id (u64) + chunk (u32) | sealed (namespace key) part of the serialized graph |
//!
//! A segment stores each point with its memory id and version. Whether a
//! point still counts is decided outside it (see `vector.rs`): a memory
//! changed or forgotten after the build has no live entry pointing at the
//! segment, so the stale point is skipped — the tombstone.

use instant_distance::{Builder, HnswMap, Point, Search};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::DataKey;
use crate::store::{Store, StoreError, WriteFlags};

/// Plaintext bytes per sealed chunk.
const CHUNK: usize = 1 << 20;
/// The chunk number of a segment's header row.
const HEADER: u32 = u32::MAX;
/// Candidates each graph search keeps (the `ef` of the HNSW paper).
pub const EF_SEARCH: usize = 64;
/// Candidates kept while building.
const EF_CONSTRUCTION: usize = 100;

/// A unit vector as the graph sees it: distance is 1 − cosine.
#[derive(Clone, Serialize, Deserialize)]
pub struct Unit(pub Vec<f32>);

impl Point for Unit {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - super::vector::dot(&self.0, &other.0)
    }
}

/// Which memory version a point is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The memory id.
    pub id: [u8; 16],
    /// Its version when embedded.
    pub version: u32,
}

impl Member {
    /// The memory id as a UUID.
    pub fn uuid(&self) -> Uuid {
        Uuid::from_bytes(self.id)
    }
}

/// One immutable segment.
pub struct Segment {
    /// Unique within its namespace and generation.
    pub id: u64,
    map: HnswMap<Unit, Member>,
}

impl Segment {
    /// Build a segment over `points` (unit vectors). Slow: run it off the
    /// request path.
    pub fn build(id: u64, points: Vec<(Member, Vec<f32>)>) -> Segment {
        let (members, units): (Vec<Member>, Vec<Unit>) =
            points.into_iter().map(|(m, v)| (m, Unit(v))).unzip();
        let map = Builder::default()
            .ef_search(EF_SEARCH)
            .ef_construction(EF_CONSTRUCTION)
            .seed(id)
            .build(units, members);
        Segment { id, map }
    }

    /// How many points it holds (live or not).
    pub fn len(&self) -> usize {
        self.map.values.len()
    }

    /// Whether it holds no point.
    pub fn is_empty(&self) -> bool {
        self.map.values.is_empty()
    }

    /// Every point with its member.
    pub fn points(&self) -> impl Iterator<Item = (&Member, &[f32])> {
        self.map
            .values
            .iter()
            .zip(self.map.iter())
            .map(|(m, (_, p))| (m, p.0.as_slice()))
    }

    /// The nearest points to `query` (unit length): member and cosine,
    /// best first, at most [`EF_SEARCH`].
    pub fn search(&self, query: &[f32]) -> Vec<(Member, f32)> {
        let mut search = Search::default();
        let q = Unit(query.to_vec());
        self.map
            .search(&q, &mut search)
            .map(|item| (*item.value, 1.0 - item.distance))
            .collect()
    }

    /// A segment from its opened bytes (as [`seal`] wrote them), or the
    /// reason they do not decode.
    pub fn decode(id: u64, bytes: &[u8]) -> Result<Segment, String> {
        postcard::from_bytes::<HnswMap<Unit, Member>>(bytes)
            .map(|map| Segment { id, map })
            .map_err(|e| e.to_string())
    }

    fn serialize(&self) -> Result<Vec<u8>, StoreError> {
        postcard::to_allocvec(&self.map)
            .map_err(|e| StoreError::Storage(format!("cannot serialize segment {}: {e}", self.id)))
    }
}

/// Rows to write: (key, sealed value).
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// A segment's rows as found: its chunk count (from the header) and its
/// chunks (number, row key, sealed value), borrowed from the map.
#[derive(Default)]
struct Parts<'a> {
    count: Option<u32>,
    chunks: Vec<(u32, &'a [u8], &'a [u8])>,
}

impl Parts<'_> {
    /// Every chunk from 0 to the header's count is there, once.
    fn complete(&mut self) -> bool {
        self.chunks.sort_by_key(|c| c.0);
        self.count.is_some_and(|n| {
            self.chunks.len() == n as usize
                && self.chunks.iter().enumerate().all(|(i, c)| c.0 == i as u32)
        })
    }
}

/// The length of [`prefix`]: namespace id and generation.
pub const PREFIX_LEN: usize = 16 + 4;

/// The row key prefix of namespace `ns`'s segments in generation `generation`.
pub fn prefix(ns: &Uuid, generation: u32) -> Vec<u8> {
    [ns.as_bytes().as_slice(), &generation.to_be_bytes()].concat()
}

fn row(ns: &Uuid, generation: u32, segment: u64, chunk: u32) -> Vec<u8> {
    [
        prefix(ns, generation).as_slice(),
        &segment.to_be_bytes(),
        &chunk.to_be_bytes(),
    ]
    .concat()
}

/// Sealed rows for `segment`: its chunks and a header with their count.
pub fn seal(
    key: &DataKey,
    ns: &Uuid,
    generation: u32,
    segment: &Segment,
) -> Result<Rows, StoreError> {
    let bytes = zeroize::Zeroizing::new(segment.serialize()?);
    let mut rows: Rows = bytes
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, part)| {
            let k = row(ns, generation, segment.id, i as u32);
            let sealed = key.seal("segments", &k, part);
            (k, sealed)
        })
        .collect();
    let count = rows.len() as u32;
    let k = row(ns, generation, segment.id, HEADER);
    let header = key.seal("segments", &k, &count.to_be_bytes());
    rows.push((k, header));
    Ok(rows)
}

/// Write `rows` (from [`seal`]) and delete the rows of `replaced`
/// segments, in one transaction: a merge is all or nothing.
pub fn persist(
    store: &Store,
    ns: &Uuid,
    generation: u32,
    rows: Rows,
    replaced: &[u64],
) -> Result<(), StoreError> {
    let old: Vec<Vec<u8>> = replaced
        .iter()
        .map(|s| [prefix(ns, generation).as_slice(), &s.to_be_bytes()].concat())
        .collect();
    store.write_blocking(move |txn, t| {
        for (k, v) in &rows {
            txn.put(t.segments, k, v, WriteFlags::empty())?;
        }
        for p in &old {
            let mut keys: Vec<Vec<u8>> = Vec::new();
            crate::store::visit_in(txn, t.segments, p, usize::MAX, |k, _| {
                keys.extend(k.starts_with(p).then(|| k.to_vec()));
                k.starts_with(p)
            })?;
            for k in keys {
                txn.del(t.segments, &k)?;
            }
        }
        Ok(())
    })
}

/// One chunk to unseal: its segment's place in the buffers, where its
/// plaintext goes, its row key and its sealed value.
type Unseal<'b, 'm> = (usize, &'b mut [u8], &'m [u8], &'m [u8]);

/// What [`load`] found.
pub struct Found {
    /// The segments that load.
    pub segments: Vec<Segment>,
    /// Past every segment id seen, also of rows that did not load: a new
    /// segment never lands among a broken one's leftover chunks.
    pub next_id: u64,
}

/// Every complete segment of `ns` in `generation`, read and unsealed. A
/// segment with a missing or unreadable part is skipped (its points are
/// then searched exactly, from their vector rows), reported, and its rows
/// removed: the next build covers its points again.
///
/// Most of a restart: the chunks are unsealed on every core straight from
/// the map into one buffer per segment, then the segments decode side by
/// side.
pub fn load(store: &Store, key: &DataKey, ns: &Uuid, generation: u32) -> Result<Found, StoreError> {
    let p = prefix(ns, generation);
    let (segments, seen) = store.read(|txn, t| {
        crate::store::with_prefix_in(txn, t.segments, &p, |rows| {
        let mut parts: std::collections::BTreeMap<u64, Parts<'_>> =
            std::collections::BTreeMap::new();
        for &(k, v) in rows {
            let (Some(seg), Some(chunk)) = (
                k.get(p.len()..p.len() + 8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes),
                k.get(p.len() + 8..)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes),
            ) else {
                continue;
            };
            let entry = parts.entry(seg).or_default();
            if chunk == HEADER {
                entry.count = key
                    .open("segments", k, v)
                    .ok()
                    .and_then(|plain| plain.get(..4).and_then(|b| b.try_into().ok()))
                    .map(u32::from_be_bytes);
            } else {
                entry.chunks.push((chunk, k, v));
            }
        }
        // One zeroed buffer per complete segment, cut into each chunk's
        // place.
        let seen: Vec<u64> = parts.keys().copied().collect();
        let mut buffers: Vec<(u64, zeroize::Zeroizing<Vec<u8>>)> = Vec::new();
        let mut placed: Vec<Vec<(&[u8], &[u8])>> = Vec::new();
        for (id, mut part) in parts {
            let sizes: Option<Vec<usize>> = part
                .chunks
                .iter()
                .map(|c| DataKey::sealed_len(c.2))
                .collect();
            match sizes {
                Some(sizes) if part.complete() => {
                    buffers.push((id, zeroize::Zeroizing::new(vec![0; sizes.iter().sum()])));
                    placed.push(part.chunks.iter().map(|c| (c.1, c.2)).collect());
                }
                _ => tracing::warn!(namespace = %ns, segment = id, "segment incomplete; skipped"),
            }
        }
        let mut work: Vec<Unseal<'_, '_>> = Vec::new();
        for (i, ((_, buffer), rows)) in buffers.iter_mut().zip(&placed).enumerate() {
            let mut rest: &mut [u8] = buffer.as_mut_slice();
            for (k, v) in rows {
                let (here, after) =
                    rest.split_at_mut(DataKey::sealed_len(v).unwrap_or_default());
                work.push((i, here, k, v));
                rest = after;
            }
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = work.len().div_ceil(threads).max(1);
        let failed: Vec<usize> = std::thread::scope(|scope| {
            let workers: Vec<_> = work
                .chunks_mut(per)
                .map(|share| {
                    scope.spawn(move || {
                        let mut failed = Vec::new();
                        for (i, out, k, v) in share.iter_mut() {
                            if key.open_into("segments", k, v, out).is_err() {
                                failed.push(*i);
                            }
                        }
                        failed
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_default())
                .collect()
        });
        drop(work);
        let decoded: Vec<Option<Segment>> = std::thread::scope(|scope| {
            let workers: Vec<_> = buffers
                .iter()
                .enumerate()
                .map(|(i, (id, bytes))| {
                    let id = *id;
                    let unreadable = failed.contains(&i);
                    scope.spawn(move || {
                        if unreadable {
                            tracing::warn!(namespace = %ns, segment = id, "a segment part does not open; the segment is skipped");
                            return None;
                        }
                        match Segment::decode(id, bytes) {
                            Ok(segment) => Some(segment),
                            Err(e) => {
                                tracing::warn!(namespace = %ns, segment = id, error = %e, "segment does not decode; skipped");
                                None
                            }
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().ok().flatten())
                .collect()
        });
        let segments: Vec<Segment> = decoded.into_iter().flatten().collect();
        (segments, seen)
        })
    })?;
    let broken: Vec<u64> = seen
        .iter()
        .copied()
        .filter(|id| !segments.iter().any(|s| s.id == *id))
        .collect();
    if !broken.is_empty() {
        persist(store, ns, generation, Vec::new(), &broken)?;
    }
    Ok(Found {
        next_id: seen.iter().max().map_or(0, |m| m + 1),
        segments,
    })
}
