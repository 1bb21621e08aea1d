//! The lexical index: BM25 over blind tokens.
//!
//! Text is cut into words (Unicode NFKC, lowercase, letters and digits),
//! common English stop words dropped, words lightly stemmed (`notes` →
//! `note`, `running` → `run`), and each word replaced by its blind token —
//! HMAC-SHA256 under a key derived from the namespace's data key, cut to 16
//! bytes — before it is written. The file reveals which rows share a word,
//! never the word.
//!
//! Each indexed memory version gets a document number, counted up per
//! namespace; a word's postings are blocks of (document number gap, term
//! frequency) as LEB128 varints, a new block when the last one is full.
//! So a posting costs two or three bytes, not a row.
//!
//! | table | row key | value |
//! |---|---|---|
//! | `terms` | namespace id + `T` + blind token + first document number (u32) | postings: (gap from the previous, starting at the key's number; term frequency), varints |
//! | `terms` | namespace id + `N` + document number | memory id, digest of its blind tokens (8 bytes), postings (varint) |
//! | `terms` | namespace id + `M` + memory id | its document number |
//! | `terms` | namespace id + `L` + document number / 512 | 512 document lengths (u16 each, saturating) |
//! | `terms` | namespace id + `S` | documents, total length, next document number, postings, postings left dead (u64 each) |
//!
//! Removing a memory takes its postings out when the caller gives the
//! terms it was indexed with (re-derived from its text; the digest checks
//! they are the same). When they are not — the namespace's redaction
//! changed what its text shows — the postings are left dead: searches
//! skip document numbers without an `N` row, and `dead` counts them.
//! Term frequencies, document lengths and numbers are visible at rest
//! (like sizes and times).

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

use crate::crypto::DataKey;
use crate::store::{
    RwTransaction, Store, StoreError, Tables, Transaction, WriteFlags, del_in, get_in,
    last_at_or_before,
};

/// BM25 parameters (the usual ones).
const K1: f32 = 1.2;
const B: f32 = 0.75;

/// Longest word indexed, in bytes (longer ones are cut).
const MAX_WORD: usize = 64;

const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "he", "in", "is", "it",
    "its", "of", "on", "or", "that", "the", "to", "was", "were", "will", "with", "i", "you", "we",
    "they", "this", "these", "those", "but", "not", "do", "does", "did", "so",
];

/// Strip the commonest English suffixes, keeping at least three letters:
/// plurals first, then `-ing`/`-ed`/`-ly` (as Porter's first step does), so
/// `mornings` and `morning` meet at `morn`.
fn stem(word: &str) -> String {
    if !word.chars().all(char::is_alphabetic) {
        return word.to_string();
    }
    let cut = |w: &str, suffix: &str, keep: &str| -> Option<String> {
        let stem = w.strip_suffix(suffix)?;
        (stem.chars().count() >= 3).then(|| format!("{stem}{keep}"))
    };
    let plural = cut(word, "sses", "ss")
        .or_else(|| cut(word, "ies", "y"))
        .or_else(|| {
            (!word.ends_with("ss") && !word.ends_with("us") && !word.ends_with("is"))
                .then(|| cut(word, "s", ""))
                .flatten()
        })
        .unwrap_or_else(|| word.to_string());
    let Some(cut_off) = cut(&plural, "ing", "")
        .or_else(|| cut(&plural, "edly", ""))
        .or_else(|| cut(&plural, "ed", ""))
        .or_else(|| cut(&plural, "ly", ""))
    else {
        return plural;
    };
    // running → runn → run: undouble a final consonant left by the cut.
    let chars: Vec<char> = cut_off.chars().collect();
    match chars.as_slice() {
        [.., a, b] if a == b && !"lsz".contains(*a) => chars[..chars.len() - 1].iter().collect(),
        _ => cut_off,
    }
}

/// The words of `text`, normalised and stemmed, stop words dropped.
pub fn words(text: &str) -> Vec<String> {
    let normal: String = text.nfkc().collect::<String>().to_lowercase();
    normal
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOP_WORDS.contains(w))
        .map(|w| {
            let mut end = w.len().min(MAX_WORD);
            while !w.is_char_boundary(end) {
                end -= 1;
            }
            stem(&w[..end])
        })
        .collect()
}

/// Bytes of a blind token as stored.
const TOKEN: usize = 16;

/// A blind token.
type Token = [u8; TOKEN];

fn blind(key: &DataKey, word: &str) -> Token {
    let full = key.blind("lexical", word.as_bytes());
    let mut token = [0u8; TOKEN];
    token.copy_from_slice(&full[..TOKEN]);
    token
}

/// A block is closed once its postings reach this many bytes: long enough
/// that a block's key is a small share, short enough that appending to the
/// last one rewrites little.
const BLOCK_BYTES: usize = 384;

/// Document lengths per `L` row.
const LENGTHS_PER_ROW: u32 = 512;

/// A document's blind terms with their frequencies, and its length.
#[derive(Debug, Clone)]
pub struct Terms {
    counts: HashMap<Token, u32>,
    len: u32,
}

impl Terms {
    /// The terms of `text` under the namespace key.
    pub fn of(key: &DataKey, text: &str) -> Terms {
        let mut counts = HashMap::new();
        let mut len = 0u32;
        for w in words(text) {
            *counts.entry(blind(key, &w)).or_insert(0) += 1;
            len = len.saturating_add(1);
        }
        Terms { counts, len }
    }

    /// Its tokens, sorted.
    fn sorted(&self) -> Vec<Token> {
        let mut tokens: Vec<Token> = self.counts.keys().copied().collect();
        tokens.sort_unstable();
        tokens
    }

    /// What identifies this set of tokens: whether a removal re-derived the
    /// terms the memory was indexed with.
    fn digest(&self) -> [u8; 8] {
        digest(self.sorted().iter())
    }
}

fn digest<'a>(tokens: impl Iterator<Item = &'a Token>) -> [u8; 8] {
    let mut h = Sha256::new();
    for t in tokens {
        h.update(t);
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize()[..8]);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(buf: &[u8], at: &mut usize) -> Option<u32> {
    let mut v = 0u32;
    for shift in [0, 7, 14, 21, 28] {
        let b = *buf.get(*at)?;
        *at += 1;
        v |= u32::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The (document, term frequency) pairs of a block whose key says `first`.
fn decode(first: u32, block: &[u8]) -> Vec<(u32, u32)> {
    let mut out = Vec::with_capacity(block.len() / 2);
    let (mut at, mut doc) = (0, first);
    while at < block.len() {
        let (Some(gap), Some(tf)) = (varint(block, &mut at), varint(block, &mut at)) else {
            break;
        };
        doc = doc.saturating_add(gap);
        out.push((doc, tf));
    }
    out
}

fn encode(first: u32, postings: &[(u32, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(postings.len() * 3);
    let mut prev = first;
    for &(doc, tf) in postings {
        put_varint(&mut out, doc.saturating_sub(prev));
        put_varint(&mut out, tf);
        prev = doc;
    }
    out
}

fn word_prefix(ns: &Uuid, token: &Token) -> Vec<u8> {
    [ns.as_bytes().as_slice(), b"T", token].concat()
}

fn block_key(ns: &Uuid, token: &Token, first: u32) -> Vec<u8> {
    [ns.as_bytes().as_slice(), b"T", token, &first.to_be_bytes()].concat()
}

fn first_of(key: &[u8]) -> u32 {
    key.len()
        .checked_sub(4)
        .and_then(|at| key.get(at..))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn doc_key(ns: &Uuid, doc: u32) -> Vec<u8> {
    [ns.as_bytes().as_slice(), b"N", &doc.to_be_bytes()].concat()
}

fn member_key(ns: &Uuid, id: &Uuid) -> Vec<u8> {
    [ns.as_bytes().as_slice(), b"M", id.as_bytes()].concat()
}

fn lengths_key(ns: &Uuid, doc: u32) -> Vec<u8> {
    [
        ns.as_bytes().as_slice(),
        b"L",
        &(doc / LENGTHS_PER_ROW).to_be_bytes(),
    ]
    .concat()
}

fn stats_key(ns: &Uuid) -> Vec<u8> {
    [ns.as_bytes().as_slice(), b"S"].concat()
}

/// A namespace's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stats {
    docs: u64,
    total: u64,
    next: u64,
    postings: u64,
    dead: u64,
}

fn stats(txn: &impl Transaction, t: &Tables, ns: &Uuid) -> Result<Stats, StoreError> {
    let Some(v) = get_in(txn, t.terms, &stats_key(ns))? else {
        return Ok(Stats::default());
    };
    let n = |i: usize| {
        v.get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes)
    };
    Ok(Stats {
        docs: n(0),
        total: n(1),
        next: n(2),
        postings: n(3),
        dead: n(4),
    })
}

/// How many memories of namespace `ns` the word index holds (current
/// versions of live memories; expired ones until the sweep purges them).
pub fn documents(store: &Store, ns: &Uuid) -> Result<u64, StoreError> {
    store.read(|txn, t| Ok(stats(txn, t, ns)?.docs))
}

fn put_stats(
    txn: &mut RwTransaction<'_>,
    t: &Tables,
    ns: &Uuid,
    s: &Stats,
) -> Result<(), StoreError> {
    let value: Vec<u8> = [s.docs, s.total, s.next, s.postings, s.dead]
        .iter()
        .flat_map(|n| n.to_be_bytes())
        .collect();
    txn.put(t.terms, &stats_key(ns), &value, WriteFlags::empty())?;
    Ok(())
}

/// The length recorded for document `doc`, from `row` (an `L` row).
fn length_in(row: &[u8], doc: u32) -> u32 {
    let at = (doc % LENGTHS_PER_ROW) as usize * 2;
    row.get(at..at + 2)
        .map_or(0, |b| u32::from(u16::from_be_bytes([b[0], b[1]])))
}

fn set_length(
    txn: &mut RwTransaction<'_>,
    t: &Tables,
    ns: &Uuid,
    doc: u32,
    len: u32,
) -> Result<(), StoreError> {
    let key = lengths_key(ns, doc);
    let mut row = get_in(txn, t.terms, &key)?.unwrap_or_default();
    let at = (doc % LENGTHS_PER_ROW) as usize * 2;
    if row.len() < at + 2 {
        row.resize(at + 2, 0);
    }
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    row[at..at + 2].copy_from_slice(&len.to_be_bytes());
    txn.put(t.terms, &key, &row, WriteFlags::empty())?;
    Ok(())
}

/// Add (`doc`, `tf`) at the end of `token`'s postings: into its last
/// block, or a new one when that is full. `doc` must be the highest yet.
fn append(
    txn: &mut RwTransaction<'_>,
    t: &Tables,
    ns: &Uuid,
    token: &Token,
    doc: u32,
    tf: u32,
) -> Result<(), StoreError> {
    let prefix = word_prefix(ns, token);
    if let Some((key, mut block)) =
        last_at_or_before(txn, t.terms, &prefix, &block_key(ns, token, u32::MAX))?
        && block.len() < BLOCK_BYTES
    {
        let last = decode(first_of(&key), &block)
            .last()
            .map_or(first_of(&key), |p| p.0);
        put_varint(&mut block, doc.saturating_sub(last));
        put_varint(&mut block, tf);
        txn.put(t.terms, &key, &block, WriteFlags::empty())?;
        return Ok(());
    }
    let mut block = Vec::with_capacity(4);
    put_varint(&mut block, 0);
    put_varint(&mut block, tf);
    txn.put(
        t.terms,
        &block_key(ns, token, doc),
        &block,
        WriteFlags::empty(),
    )?;
    Ok(())
}

/// A block's key and its (document, term frequency) postings.
type Block = (Vec<u8>, Vec<(u32, u32)>);

/// The block of `token` that holds `doc`, if any: its key and postings.
fn block_of<T: Transaction>(
    txn: &T,
    t: &Tables,
    ns: &Uuid,
    token: &Token,
    doc: u32,
) -> Result<Option<Block>, StoreError> {
    let prefix = word_prefix(ns, token);
    Ok(
        last_at_or_before(txn, t.terms, &prefix, &block_key(ns, token, doc))?.map(
            |(key, block)| {
                let postings = decode(first_of(&key), &block);
                (key, postings)
            },
        ),
    )
}

/// Index memory `id` with `terms`, inside the caller's write transaction.
/// A memory indexed already is removed first — with `previous`, the terms
/// it was indexed with, its postings go too (see the module doc).
pub fn put(
    txn: &mut RwTransaction<'_>,
    t: &Tables,
    ns: &Uuid,
    id: &Uuid,
    terms: &Terms,
    previous: Option<&Terms>,
) -> Result<(), StoreError> {
    remove(txn, t, ns, id, previous)?;
    let mut s = stats(txn, t, ns)?;
    let doc = u32::try_from(s.next).map_err(|_| {
        StoreError::Storage(format!(
            "namespace {ns}: the word index has numbered 2^32 documents; `memhost namespace reindex` renumbers it"
        ))
    })?;
    let tokens = terms.sorted();
    let mut doc_row = id.as_bytes().to_vec();
    doc_row.extend_from_slice(&digest(tokens.iter()));
    put_varint(&mut doc_row, tokens.len() as u32);
    txn.put(t.terms, &doc_key(ns, doc), &doc_row, WriteFlags::empty())?;
    txn.put(
        t.terms,
        &member_key(ns, id),
        &doc.to_be_bytes(),
        WriteFlags::empty(),
    )?;
    set_length(txn, t, ns, doc, terms.len)?;
    for token in &tokens {
        let tf = terms.counts.get(token).copied().unwrap_or(1);
        append(txn, t, ns, token, doc, tf)?;
    }
    s.next += 1;
    s.docs += 1;
    s.total += u64::from(terms.len);
    s.postings += tokens.len() as u64;
    put_stats(txn, t, ns, &s)
}

/// Remove memory `id` from the index, inside the caller's transaction;
/// `indexed_with` is the terms it was indexed with, when known.
pub fn remove(
    txn: &mut RwTransaction<'_>,
    t: &Tables,
    ns: &Uuid,
    id: &Uuid,
    indexed_with: Option<&Terms>,
) -> Result<(), StoreError> {
    let member = member_key(ns, id);
    let Some(doc) = get_in(txn, t.terms, &member)?
        .and_then(|v| v.try_into().ok())
        .map(u32::from_be_bytes)
    else {
        return Ok(());
    };
    let row = get_in(txn, t.terms, &doc_key(ns, doc))?.unwrap_or_default();
    let stored_digest = row.get(16..24).unwrap_or_default();
    let count = u64::from(varint(&row, &mut 24).unwrap_or(0));
    let len = get_in(txn, t.terms, &lengths_key(ns, doc))?.map_or(0, |r| length_in(&r, doc));
    let mut s = stats(txn, t, ns)?;
    match indexed_with {
        Some(terms) if terms.digest() == stored_digest => {
            for token in terms.sorted() {
                let Some((key, mut postings)) = block_of(txn, t, ns, &token, doc)? else {
                    continue;
                };
                postings.retain(|p| p.0 != doc);
                if postings.is_empty() {
                    txn.del(t.terms, &key)?;
                } else {
                    let block = encode(first_of(&key), &postings);
                    txn.put(t.terms, &key, &block, WriteFlags::empty())?;
                }
            }
            s.postings = s.postings.saturating_sub(count);
        }
        _ => s.dead += count,
    }
    txn.del(t.terms, &member)?;
    del_in(txn, t.terms, &doc_key(ns, doc))?;
    s.docs = s.docs.saturating_sub(1);
    s.total = s.total.saturating_sub(u64::from(len));
    put_stats(txn, t, ns, &s)
}

/// Memories of namespace `ns` matching `query`, best first, with BM25
/// scores, at most `limit` of them. Reads one posting list per distinct
/// query word, in one read transaction. `near`: memories another channel
/// found, whose place among the matches beyond `limit` the caller needs.
pub fn search(
    store: &Store,
    key: &DataKey,
    ns: &Uuid,
    query: &str,
    limit: usize,
    near: &HashSet<Uuid>,
) -> Result<Ranked, StoreError> {
    search_within(store, key, ns, query, MAX_POSTINGS, limit, near)
}

/// Most postings of one word read in full per question. A word in more
/// memories than this is common: its idf is small, so it only adds to the
/// scores of the memories the rarer words found (one lookup each), or, in
/// a question of common words only, is read this far and no further.
pub const MAX_POSTINGS: usize = 10_000;

/// Most memories a common word is looked up for.
const MAX_CANDIDATES: usize = 1_000;

/// The postings of `token`, at most `max`, in document order.
fn postings<T: Transaction>(
    txn: &T,
    t: &Tables,
    ns: &Uuid,
    token: &Token,
    max: usize,
) -> Result<Vec<(u32, u32)>, StoreError> {
    let prefix = word_prefix(ns, token);
    let mut out = Vec::new();
    crate::store::visit_in(txn, t.terms, &prefix, usize::MAX, |k, v| {
        if !k.starts_with(&prefix) || out.len() >= max {
            return false;
        }
        out.extend(decode(first_of(k), v));
        true
    })?;
    out.truncate(max);
    Ok(out)
}

/// Document lengths, read an `L` row at a time.
struct Lengths<'a, T: Transaction> {
    txn: &'a T,
    t: &'a Tables,
    ns: Uuid,
    rows: HashMap<u32, Vec<u8>>,
}

impl<T: Transaction> Lengths<'_, T> {
    fn of(&mut self, doc: u32) -> Result<u32, StoreError> {
        let n = doc / LENGTHS_PER_ROW;
        if !self.rows.contains_key(&n) {
            let row = get_in(self.txn, self.t.terms, &lengths_key(&self.ns, doc))?;
            self.rows.insert(n, row.unwrap_or_default());
        }
        Ok(self.rows.get(&n).map_or(0, |r| length_in(r, doc)))
    }
}

/// The memory document `doc` stands for, if it is still indexed.
fn member_of<T: Transaction>(
    txn: &T,
    t: &Tables,
    ns: &Uuid,
    doc: u32,
) -> Result<Option<Uuid>, StoreError> {
    Ok(get_in(txn, t.terms, &doc_key(ns, doc))?
        .and_then(|row| Uuid::from_slice(row.get(..16)?).ok()))
}

fn search_within(
    store: &Store,
    key: &DataKey,
    ns: &Uuid,
    query: &str,
    cap: usize,
    limit: usize,
    near: &HashSet<Uuid>,
) -> Result<Ranked, StoreError> {
    let mut distinct: Vec<Token> = words(query).iter().map(|w| blind(key, w)).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.is_empty() {
        return Ok(Ranked::default());
    }
    store.read(|txn, t| {
        let s = stats(txn, t, ns)?;
        if s.docs == 0 {
            return Ok(Ranked::default());
        }
        let docs = s.docs as f32;
        let avg = (s.total as f32 / docs).max(1.0);
        let idf = |df: f32| (1.0 + (docs - df + 0.5) / (df + 0.5)).ln();
        let weight = |idf: f32, tf: u32, len: u32| -> f32 {
            let (tf, len) = (tf as f32, len as f32);
            let norm = K1 * (1.0 - B + B * len / avg);
            idf * tf * (K1 + 1.0) / (tf + norm)
        };
        let mut lengths = Lengths {
            txn,
            t,
            ns: *ns,
            rows: HashMap::new(),
        };
        let mut scores: HashMap<u32, f32> = HashMap::new();
        let mut best_possible = 0.0;
        let mut common = Vec::new();
        for token in distinct {
            let found = postings(txn, t, ns, &token, cap + 1)?;
            if found.len() > cap {
                common.push((token, found));
                continue;
            }
            let idf = idf(found.len() as f32);
            // A memory holding this word many times, in a short text.
            best_possible += idf * (K1 + 1.0);
            for (doc, tf) in found {
                let len = lengths.of(doc)?;
                *scores.entry(doc).or_insert(0.0) += weight(idf, tf, len);
            }
        }
        for (token, found) in common {
            // At least `cap + 1` memories hold it: its idf is at most this.
            let idf = idf((cap + 1) as f32);
            best_possible += idf * (K1 + 1.0);
            if scores.is_empty() {
                for (doc, tf) in found.into_iter().take(cap) {
                    let len = lengths.of(doc)?;
                    *scores.entry(doc).or_insert(0.0) += weight(idf, tf, len);
                }
                continue;
            }
            let mut candidates: Vec<(u32, f32)> = scores.iter().map(|(d, s)| (*d, *s)).collect();
            if candidates.len() > MAX_CANDIDATES {
                candidates.select_nth_unstable_by(MAX_CANDIDATES, |a, b| b.1.total_cmp(&a.1));
                candidates.truncate(MAX_CANDIDATES);
            }
            for (doc, _) in candidates {
                let tf = block_of(txn, t, ns, &token, doc)?
                    .and_then(|(_, p)| p.into_iter().find(|p| p.0 == doc))
                    .map(|p| p.1);
                if let Some(tf) = tf {
                    let len = lengths.of(doc)?;
                    *scores.entry(doc).or_insert(0.0) += weight(idf, tf, len);
                }
            }
        }
        // Best first, ties by the later document. Documents without an `N`
        // row were removed (their postings left dead): skipped.
        let mut ranked: Vec<(u32, f32)> = scores.into_iter().collect();
        ranked.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
        let mut hits = Vec::new();
        let mut at = 0;
        while hits.len() < limit && at < ranked.len() {
            let (doc, score) = ranked[at];
            if let Some(id) = member_of(txn, t, ns, doc)? {
                hits.push((id, score));
            }
            at += 1;
        }
        let beyond = match ranked.get(at..) {
            Some(rest) if !rest.is_empty() => {
                let near_docs = near_documents(txn, t, ns, near)?;
                rest.iter()
                    .map(|(doc, score)| {
                        (near_docs.get(doc).copied().unwrap_or(Uuid::nil()), *score)
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        Ok(Ranked {
            hits,
            beyond,
            best_possible,
        })
    })
}

/// The document numbers of `near` (those indexed).
fn near_documents<T: Transaction>(
    txn: &T,
    t: &Tables,
    ns: &Uuid,
    near: &HashSet<Uuid>,
) -> Result<HashMap<u32, Uuid>, StoreError> {
    let mut out = HashMap::with_capacity(near.len());
    for id in near {
        if let Some(doc) = get_in(txn, t.terms, &member_key(ns, id))?
            .and_then(|v| v.try_into().ok())
            .map(u32::from_be_bytes)
        {
            out.insert(doc, *id);
        }
    }
    Ok(out)
}

/// The order of hits: higher score first, ties by id.
pub fn better(a: &(Uuid, f32), b: &(Uuid, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(b.0.cmp(&a.0))
}

/// Memories by BM25, best first, and the score no memory can exceed for
/// this query (every word, idf-weighted, at saturation): how much of the
/// question a hit matches, whatever the corpus.
#[derive(Debug, Clone, Default)]
pub struct Ranked {
    /// (memory, BM25 score), best first: the first `limit` asked for.
    pub hits: Vec<(Uuid, f32)>,
    /// The other matches, best first: all below the last of `hits`. Only
    /// those the search was asked about (`near`) carry their memory id;
    /// the others are counted for ranks, with the nil id.
    pub beyond: Vec<(Uuid, f32)>,
    /// The upper bound of any score for this query.
    pub best_possible: f32,
}

impl Ranked {
    /// Where each of `asked` (some of `beyond`) ranks among all matches,
    /// from 0, in `asked`'s order: one pass over `beyond`, a binary search
    /// of the sorted asked hits each.
    pub fn ranks_beyond(&self, asked: &[(Uuid, f32)]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..asked.len()).collect();
        order.sort_by(|&a, &b| better(&asked[a], &asked[b]));
        // ahead[i]: matches of `beyond` ranked ahead of the i-th best asked
        // hit and not ahead of the one before it.
        let mut ahead = vec![0usize; asked.len() + 1];
        for other in &self.beyond {
            // `other` is ahead of every asked hit it ranks better than.
            let first = order.partition_point(|&a| better(&asked[a], other).is_le());
            ahead[first] += 1;
        }
        let mut ranks = vec![0; asked.len()];
        let mut running = self.hits.len();
        for (i, &a) in order.iter().enumerate() {
            running += ahead[i];
            ranks[a] = running;
        }
        ranks
    }
}

/// Rewrite the word index a schema-1 store holds (a row per posting with
/// 32-byte tokens, and each memory's tokens again for its removal) in
/// this format, one namespace per write transaction, so each is either
/// wholly old or wholly new; a namespace done already is skipped, so
/// processes racing to do it agree. Returns the namespaces rewritten.
pub fn upgrade(store: &Store) -> Result<usize, StoreError> {
    let namespaces: Vec<Uuid> = store.read(|txn, t| {
        let mut out = Vec::new();
        crate::store::visit_in(txn, t.terms, b"", usize::MAX, |k, _| {
            if k.len() == 17
                && k[16] == b's'
                && let Ok(ns) = Uuid::from_slice(&k[..16])
            {
                out.push(ns);
            }
            true
        })?;
        Ok(out)
    })?;
    let mut done = 0;
    for ns in namespaces {
        if store.write_blocking(move |txn, t| upgrade_namespace(txn, t, &ns))? {
            done += 1;
        }
    }
    Ok(done)
}

/// The rows the first schema's word index held for `documents` (memory
/// id, searchable text) of namespace `ns`: a row per (32-byte token,
/// memory) with its term frequency and the document length, a row per
/// document with its length and tokens, and the totals. What
/// [`upgrade`] reads; for tests of it (memhost no longer writes them).
#[doc(hidden)]
pub fn schema_1_rows(
    key: &DataKey,
    ns: &Uuid,
    documents: &[(Uuid, String)],
) -> Vec<crate::store::Row> {
    let mut rows = Vec::new();
    let (mut docs, mut total) = (0u64, 0u64);
    for (id, text) in documents {
        let words = words(text);
        let mut counts: HashMap<[u8; 32], u32> = HashMap::new();
        for w in &words {
            *counts
                .entry(key.blind("lexical", w.as_bytes()))
                .or_insert(0) += 1;
        }
        let len = words.len() as u32;
        let mut doc = len.to_be_bytes().to_vec();
        for (token, tf) in &counts {
            let row = [ns.as_bytes().as_slice(), b"p", token, id.as_bytes()].concat();
            rows.push((row, [tf.to_be_bytes(), len.to_be_bytes()].concat()));
            doc.extend_from_slice(token);
        }
        rows.push((
            [ns.as_bytes().as_slice(), b"d", id.as_bytes()].concat(),
            doc,
        ));
        docs += 1;
        total += u64::from(len);
    }
    rows.push((
        [ns.as_bytes().as_slice(), b"s"].concat(),
        [docs.to_be_bytes(), total.to_be_bytes()].concat(),
    ));
    rows
}

/// Up to `max` rows from `start` on that begin with `prefix`, copied.
fn rows_from(
    txn: &RwTransaction<'_>,
    t: &Tables,
    start: &[u8],
    prefix: &[u8],
    max: usize,
) -> Result<Vec<crate::store::Row>, StoreError> {
    let mut out = Vec::new();
    crate::store::visit_in(txn, t.terms, start, max, |k, v| {
        let more = k.starts_with(prefix);
        if more {
            out.push((k.to_vec(), v.to_vec()));
        }
        more
    })?;
    Ok(out)
}

fn upgrade_namespace(
    txn: &mut RwTransaction<'_>,
    t: &Tables,
    ns: &Uuid,
) -> Result<bool, StoreError> {
    const CHUNK: usize = 4096;
    let old_stats = [ns.as_bytes().as_slice(), b"s"].concat();
    let Some(old) = get_in(txn, t.terms, &old_stats)? else {
        return Ok(false);
    };
    let total = old
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes);
    // Documents in memory-id order (the order of their creation), numbered.
    let doc_prefix = [ns.as_bytes().as_slice(), b"d"].concat();
    let mut numbers: HashMap<Uuid, u32> = HashMap::new();
    let mut start = doc_prefix.clone();
    loop {
        let chunk = rows_from(txn, t, &start, &doc_prefix, CHUNK)?;
        let Some((last, _)) = chunk.last() else {
            break;
        };
        start = [last.as_slice(), &[0]].concat();
        for (k, v) in &chunk {
            let Some(id) = k.get(17..33).and_then(|b| Uuid::from_slice(b).ok()) else {
                continue;
            };
            let doc = numbers.len() as u32;
            let len = v
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_be_bytes);
            let mut tokens: Vec<Token> = v
                .get(4..)
                .unwrap_or_default()
                .chunks_exact(32)
                .filter_map(|c| c.get(..TOKEN)?.try_into().ok())
                .collect();
            tokens.sort_unstable();
            let mut row = id.as_bytes().to_vec();
            row.extend_from_slice(&digest(tokens.iter()));
            put_varint(&mut row, tokens.len() as u32);
            txn.put(t.terms, &doc_key(ns, doc), &row, WriteFlags::empty())?;
            txn.put(
                t.terms,
                &member_key(ns, &id),
                &doc.to_be_bytes(),
                WriteFlags::empty(),
            )?;
            set_length(txn, t, ns, doc, len)?;
            numbers.insert(id, doc);
        }
    }
    // Postings word by word, each word's in memory-id order: in document
    // order, so each is appended where it belongs.
    let posting_prefix = [ns.as_bytes().as_slice(), b"p"].concat();
    let mut postings = 0u64;
    loop {
        let chunk = rows_from(txn, t, &posting_prefix, &posting_prefix, CHUNK)?;
        if chunk.is_empty() {
            break;
        }
        for (k, v) in &chunk {
            let token: Option<Token> = k.get(17..17 + TOKEN).and_then(|b| b.try_into().ok());
            let doc = k
                .get(49..65)
                .and_then(|b| Uuid::from_slice(b).ok())
                .and_then(|id| numbers.get(&id).copied());
            let tf = v
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map_or(1, u32::from_be_bytes);
            if let (Some(token), Some(doc)) = (token, doc) {
                append(txn, t, ns, &token, doc, tf)?;
                postings += 1;
            }
            txn.del(t.terms, k)?;
        }
    }
    loop {
        let chunk = rows_from(txn, t, &doc_prefix, &doc_prefix, CHUNK)?;
        if chunk.is_empty() {
            break;
        }
        for (k, _) in &chunk {
            txn.del(t.terms, k)?;
        }
    }
    txn.del(t.terms, &old_stats)?;
    let docs = numbers.len() as u64;
    put_stats(
        txn,
        t,
        ns,
        &Stats {
            docs,
            total,
            next: docs,
            postings,
            dead: 0,
        },
    )?;
    Ok(true)
}

/// Remove every row of namespace `ns` from the index, in batches.
pub fn drop_namespace(store: &Store, ns: &Uuid) -> Result<(), StoreError> {
    store.delete_prefix(|t| t.terms, ns.as_bytes(), |_| false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflections_meet_at_one_stem() {
        for group in [
            &["morning", "mornings"][..],
            &["run", "running", "runs"],
            &["budget", "budgets", "budgeted"],
            &["study", "studies"],
            &["class", "classes"],
        ] {
            let stems: Vec<String> = group.iter().map(|w| stem(w)).collect();
            assert!(
                stems.windows(2).all(|p| p[0] == p[1]),
                "{group:?} → {stems:?}"
            );
        }
    }

    #[test]
    fn words_are_normalised_stemmed_and_stopped() {
        assert_eq!(
            words("The RUNNING notes of Café ﬁles, studies and classes!"),
            ["run", "note", "café", "file", "study", "class"]
        );
        assert_eq!(words("Ａｄａ's 2026 plans"), ["ada", "s", "2026", "plan"]);
        assert!(words("the and of").is_empty());
    }

    #[test]
    fn bm25_ranks_the_document_about_the_query_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::store::StoreOptions::default()).unwrap();
        let key = std::sync::Arc::new(DataKey::generate());
        let ns = Uuid::now_v7();
        let docs = [
            "Ada prefers tea in the morning and coffee after lunch",
            "The quarterly budget review moved to Thursday",
            "Budget: the budget for the offsite budget is approved",
            "Tea ceremony notes",
        ];
        let mut ids = Vec::new();
        for text in docs {
            let id = Uuid::now_v7();
            let terms = Terms::of(&key, text);
            store
                .write_blocking(move |txn, t| put(txn, t, &ns, &id, &terms, None))
                .unwrap();
            ids.push(id);
        }
        let ranked = search(&store, &key, &ns, "budgets", usize::MAX, &HashSet::new()).unwrap();
        assert!(ranked.hits.iter().all(|h| h.1 < ranked.best_possible));
        let hits = ranked.hits;
        assert_eq!(
            hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            [ids[2], ids[1]]
        );
        let hits = search(
            &store,
            &key,
            &ns,
            "morning tea",
            usize::MAX,
            &HashSet::new(),
        )
        .unwrap()
        .hits;
        assert_eq!(hits[0].0, ids[0]);
        // A limit keeps the best, in the same order.
        let top = search(&store, &key, &ns, "morning tea", 1, &HashSet::new()).unwrap();
        assert_eq!(top.hits, hits[..1]);
        assert_eq!(top.beyond.len(), hits.len() - 1);
        let tail: Vec<(Uuid, f32)> = hits[1..].iter().rev().copied().collect();
        let ranks: Vec<usize> = (1..hits.len()).rev().collect();
        assert_eq!(top.ranks_beyond(&tail), ranks);
        // Removed documents are gone from results and from the statistics,
        // and so are their postings.
        let gone = ids[2];
        let indexed_with = Terms::of(&key, docs[2]);
        let before = store.footprint().unwrap()["terms"].rows;
        store
            .write_blocking(move |txn, t| remove(txn, t, &ns, &gone, Some(&indexed_with)))
            .unwrap();
        // Its one block ("budget" is shared) changed; its N, M rows went.
        assert_eq!(store.footprint().unwrap()["terms"].rows, before - 4);
        let hits = search(&store, &key, &ns, "budget", usize::MAX, &HashSet::new())
            .unwrap()
            .hits;
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [ids[1]]);
        let s = store.read(|txn, t| stats(txn, t, &ns)).unwrap();
        assert_eq!((s.docs, s.dead), (3, 0));
        assert!(
            search(&store, &key, &ns, "", usize::MAX, &HashSet::new())
                .unwrap()
                .hits
                .is_empty()
        );
    }

    #[test]
    fn a_common_word_is_read_no_further_than_the_cap_and_adds_to_what_rarer_words_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::store::StoreOptions::default()).unwrap();
        let key = std::sync::Arc::new(DataKey::generate());
        let ns = Uuid::now_v7();
        let mut ids = Vec::new();
        for n in 0..60 {
            let id = Uuid::now_v7();
            let text = match n {
                7 => "zebra meeting".to_string(),
                8 => "zebra sighting near the old river bank".to_string(),
                _ => format!("meeting number {n}"),
            };
            let terms = Terms::of(&key, &text);
            store
                .write_blocking(move |txn, t| put(txn, t, &ns, &id, &terms, None))
                .unwrap();
            ids.push(id);
        }
        // "meeting" is in 59 memories, over a cap of 20: alone, it is read
        // 20 postings deep.
        let alone = search_within(
            &store,
            &key,
            &ns,
            "meeting",
            20,
            usize::MAX,
            &HashSet::new(),
        )
        .unwrap();
        assert_eq!(alone.hits.len(), 20);
        // With a rare word, it only ranks what the rare word found: the
        // memory holding both comes first.
        let both = search_within(
            &store,
            &key,
            &ns,
            "zebra meeting",
            20,
            usize::MAX,
            &HashSet::new(),
        )
        .unwrap();
        assert_eq!(
            both.hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            [ids[7], ids[8]]
        );
        assert!(both.hits.iter().all(|h| h.1 < both.best_possible));
        // Under the cap, nothing changes.
        let full = search_within(
            &store,
            &key,
            &ns,
            "meeting",
            100,
            usize::MAX,
            &HashSet::new(),
        )
        .unwrap();
        assert_eq!(full.hits.len(), 59);
    }

    fn indexed(store: &Store, key: &DataKey, ns: Uuid, texts: &[String]) -> Vec<Uuid> {
        texts
            .iter()
            .map(|text| {
                let id = Uuid::now_v7();
                let terms = Terms::of(key, text);
                store
                    .write_blocking(move |txn, t| put(txn, t, &ns, &id, &terms, None))
                    .unwrap();
                id
            })
            .collect()
    }

    fn ids_found(store: &Store, key: &DataKey, ns: &Uuid, query: &str) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = search(store, key, ns, query, usize::MAX, &HashSet::new())
            .unwrap()
            .hits
            .into_iter()
            .map(|h| h.0)
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn postings_cost_a_few_bytes_and_blocks_split_and_empty_correctly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::store::StoreOptions::default()).unwrap();
        let key = DataKey::generate();
        let ns = Uuid::now_v7();
        // 600 documents: every one holds "common" (many blocks), each
        // third "third", and a word of its own.
        let texts: Vec<String> = (0..600)
            .map(|n| {
                let third = if n % 3 == 0 { "third" } else { "" };
                format!("common {third} word{n} word{n}")
            })
            .collect();
        let ids = indexed(&store, &key, ns, &texts);
        let s = store.read(|txn, t| stats(txn, t, &ns)).unwrap();
        assert_eq!((s.docs, s.postings, s.dead), (600, 600 + 200 + 600, 0));
        // A word's postings are a few bytes each once blocks fill.
        let common = store
            .read(|txn, t| {
                let prefix = word_prefix(&ns, &blind(&key, "common"));
                crate::store::rows_in(txn, t.terms, &prefix)
            })
            .unwrap();
        assert!(common.len() > 1, "{} blocks", common.len());
        let bytes: usize = common.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(bytes < 600 * 3, "{bytes} bytes for 600 postings");
        // Found across blocks; a term frequency of two counts.
        assert_eq!(ids_found(&store, &key, &ns, "common").len(), 600);
        assert_eq!(ids_found(&store, &key, &ns, "third").len(), 200);
        assert_eq!(ids_found(&store, &key, &ns, "word599"), [ids[599]]);
        // Removing every other document, with its terms, empties nothing
        // it should not and leaves no posting behind.
        for (n, id) in ids.iter().enumerate().step_by(2) {
            let (id, terms) = (*id, Terms::of(&key, &texts[n]));
            store
                .write_blocking(move |txn, t| remove(txn, t, &ns, &id, Some(&terms)))
                .unwrap();
        }
        let s = store.read(|txn, t| stats(txn, t, &ns)).unwrap();
        assert_eq!((s.docs, s.postings, s.dead), (300, 300 + 100 + 300, 0));
        let left: Vec<Uuid> = ids.iter().skip(1).step_by(2).copied().collect();
        let mut sorted = left.clone();
        sorted.sort();
        assert_eq!(ids_found(&store, &key, &ns, "common"), sorted);
        assert!(ids_found(&store, &key, &ns, "word598").is_empty());
        let own = store
            .read(|txn, t| {
                let prefix = word_prefix(&ns, &blind(&key, "word598"));
                crate::store::rows_in(txn, t.terms, &prefix)
            })
            .unwrap();
        assert!(
            own.is_empty(),
            "the removed document's own word left a block"
        );
    }

    #[test]
    fn a_removal_without_the_indexed_terms_leaves_postings_dead_and_unfound() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::store::StoreOptions::default()).unwrap();
        let key = DataKey::generate();
        let ns = Uuid::now_v7();
        let texts = ["alpha beta".to_string(), "alpha gamma".to_string()];
        let ids = indexed(&store, &key, ns, &texts);
        // The text as shown now differs from what was indexed.
        let (id, shown) = (ids[0], Terms::of(&key, "alpha [redacted]"));
        store
            .write_blocking(move |txn, t| remove(txn, t, &ns, &id, Some(&shown)))
            .unwrap();
        let s = store.read(|txn, t| stats(txn, t, &ns)).unwrap();
        assert_eq!((s.docs, s.dead), (1, 2));
        assert_eq!(ids_found(&store, &key, &ns, "alpha"), [ids[1]]);
        assert!(ids_found(&store, &key, &ns, "beta").is_empty());
        // Indexed again (as an update does), it is found under a new number.
        let (id, terms) = (ids[0], Terms::of(&key, "alpha delta"));
        store
            .write_blocking(move |txn, t| put(txn, t, &ns, &id, &terms, None))
            .unwrap();
        assert_eq!(ids_found(&store, &key, &ns, "delta"), [ids[0]]);
        assert!(ids_found(&store, &key, &ns, "beta").is_empty());
    }

    #[test]
    fn a_schema_1_index_is_rewritten_and_finds_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::store::StoreOptions::default()).unwrap();
        let key = DataKey::generate();
        let ns = Uuid::now_v7();
        let texts: Vec<String> = (0..50)
            .map(|n| {
                format!(
                    "meeting {} notes about budget number{n}",
                    ["alpha", "beta"][n % 2]
                )
            })
            .collect();
        let ids: Vec<Uuid> = texts.iter().map(|_| Uuid::now_v7()).collect();
        let rows = schema_1_rows(
            &key,
            &ns,
            &ids.iter()
                .copied()
                .zip(texts.iter().cloned())
                .collect::<Vec<_>>(),
        );
        store
            .write_blocking(move |txn, t| {
                for (k, v) in &rows {
                    txn.put(t.terms, k, v, WriteFlags::empty())?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(upgrade(&store).unwrap(), 1);
        assert_eq!(upgrade(&store).unwrap(), 0, "done once");
        let kinds: HashSet<u8> = store
            .rows(|t| t.terms, ns.as_bytes(), |_| true)
            .unwrap()
            .iter()
            .map(|(k, _)| k[16])
            .collect();
        assert_eq!(kinds, HashSet::from([b'T', b'N', b'M', b'L', b'S']));
        let s = store.read(|txn, t| stats(txn, t, &ns)).unwrap();
        assert_eq!((s.docs, s.next, s.dead), (50, 50, 0));
        let mut alpha: Vec<Uuid> = ids.iter().step_by(2).copied().collect();
        alpha.sort();
        assert_eq!(ids_found(&store, &key, &ns, "alpha meetings"), {
            let mut all = ids.clone();
            all.sort();
            all
        });
        assert_eq!(ids_found(&store, &key, &ns, "alpha"), alpha);
        assert_eq!(ids_found(&store, &key, &ns, "number7"), [ids[7]]);
        // Its memories are removed with the terms re-derived from their text.
        let (id, terms) = (ids[7], Terms::of(&key, &texts[7]));
        store
            .write_blocking(move |txn, t| remove(txn, t, &ns, &id, Some(&terms)))
            .unwrap();
        let s = store.read(|txn, t| stats(txn, t, &ns)).unwrap();
        assert_eq!((s.docs, s.dead), (49, 0));
        assert!(ids_found(&store, &key, &ns, "number7").is_empty());
    }
}
