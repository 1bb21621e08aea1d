//! The lexical index: BM25 over blind tokens.
//!
//! Text is cut into words (Unicode NFKC, lowercase, letters and digits),
//! common English stop words dropped, words lightly stemmed (`notes` →
//! `note`, `running` → `run`), and each word replaced by its blind token —
//! HMAC-SHA256 under a key derived from the namespace's data key — before
//! it is written. The file reveals which rows share a word, never the word.
//!
//! | table | row key | value |
//! |---|---|---|
//! | `terms` | namespace id + `p` + blind token + memory id | term frequency, document length (u32 each) |
//! | `terms` | namespace id + `d` + memory id | document length, then its blind tokens |
//! | `terms` | namespace id + `s` | documents, total length (u64 each) |
//!
//! Term frequencies and document lengths are visible at rest (like sizes).

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

use crate::crypto::DataKey;
use crate::store::{RwTransaction, Store, StoreError, Tables, WriteFlags, del_in, get_in};

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

fn blind(key: &DataKey, word: &str) -> [u8; 32] {
    key.blind("lexical", word.as_bytes())
}

/// A document's blind terms with their frequencies, and its length.
pub struct Terms {
    counts: HashMap<[u8; 32], u32>,
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
}

fn posting_key(ns: &Uuid, token: &[u8; 32], id: &Uuid) -> Vec<u8> {
    [ns.as_bytes().as_slice(), b"p", token, id.as_bytes()].concat()
}

fn doc_key(ns: &Uuid, id: &Uuid) -> Vec<u8> {
    [ns.as_bytes().as_slice(), b"d", id.as_bytes()].concat()
}

fn stats_key(ns: &Uuid) -> Vec<u8> {
    [ns.as_bytes().as_slice(), b"s"].concat()
}

fn stats(
    txn: &impl crate::store::Transaction,
    t: &Tables,
    ns: &Uuid,
) -> Result<(u64, u64), StoreError> {
    Ok(match get_in(txn, t.terms, &stats_key(ns))? {
        Some(v) if v.len() == 16 => (
            u64::from_be_bytes(v[..8].try_into().unwrap_or_default()),
            u64::from_be_bytes(v[8..].try_into().unwrap_or_default()),
        ),
        _ => (0, 0),
    })
}

fn put_stats(
    txn: &mut RwTransaction<'_>,
    t: &Tables,
    ns: &Uuid,
    docs: u64,
    total: u64,
) -> Result<(), StoreError> {
    let value = [docs.to_be_bytes(), total.to_be_bytes()].concat();
    txn.put(t.terms, &stats_key(ns), &value, WriteFlags::empty())?;
    Ok(())
}

/// Index memory `id` with `terms` (replacing what it had), inside the
/// caller's write transaction.
pub fn put(
    txn: &mut RwTransaction<'_>,
    t: &Tables,
    ns: &Uuid,
    id: &Uuid,
    terms: &Terms,
) -> Result<(), StoreError> {
    remove(txn, t, ns, id)?;
    let len = terms.len;
    let mut doc = len.to_be_bytes().to_vec();
    for (token, tf) in &terms.counts {
        let value = [tf.to_be_bytes(), len.to_be_bytes()].concat();
        txn.put(
            t.terms,
            &posting_key(ns, token, id),
            &value,
            WriteFlags::empty(),
        )?;
        doc.extend_from_slice(token);
    }
    txn.put(t.terms, &doc_key(ns, id), &doc, WriteFlags::empty())?;
    let (docs, total) = stats(txn, t, ns)?;
    put_stats(txn, t, ns, docs + 1, total + u64::from(len))
}

/// Remove memory `id` from the index, inside the caller's transaction.
pub fn remove(
    txn: &mut RwTransaction<'_>,
    t: &Tables,
    ns: &Uuid,
    id: &Uuid,
) -> Result<(), StoreError> {
    let Some(doc) = get_in(txn, t.terms, &doc_key(ns, id))? else {
        return Ok(());
    };
    let len = doc
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap_or_default()));
    for token in doc.get(4..).unwrap_or_default().chunks_exact(32) {
        let token: [u8; 32] = token.try_into().unwrap_or([0; 32]);
        del_in(txn, t.terms, &posting_key(ns, &token, id))?;
    }
    txn.del(t.terms, &doc_key(ns, id), None)?;
    let (docs, total) = stats(txn, t, ns)?;
    put_stats(
        txn,
        t,
        ns,
        docs.saturating_sub(1),
        total.saturating_sub(u64::from(len)),
    )
}

/// Memories of namespace `ns` matching `query`, best first, with BM25
/// scores, at most `limit` of them. Reads one posting list per distinct
/// query word, in one read transaction.
pub fn search(
    store: &Store,
    key: &DataKey,
    ns: &Uuid,
    query: &str,
    limit: usize,
) -> Result<Ranked, StoreError> {
    search_within(store, key, ns, query, MAX_POSTINGS, limit)
}

/// Most postings of one word read in full per question. A word in more
/// memories than this is common: its idf is small, so it only adds to the
/// scores of the memories the rarer words found (one lookup each), or, in
/// a question of common words only, is read this far and no further.
pub const MAX_POSTINGS: usize = 10_000;

/// Most memories a common word is looked up for.
const MAX_CANDIDATES: usize = 1_000;

/// One posting: the memory, its term frequency and length.
type Posting = (Uuid, u32, u32);

/// A posting row's value: the term frequency and the document length.
fn tf_len(v: &[u8]) -> Option<(u32, u32)> {
    Some((
        u32::from_be_bytes(v.get(..4)?.try_into().ok()?),
        u32::from_be_bytes(v.get(4..8)?.try_into().ok()?),
    ))
}

/// The postings of `prefix` (a word's), at most `max`, read in place.
fn postings<T: crate::store::Transaction>(
    txn: &T,
    t: &Tables,
    prefix: &[u8],
    max: usize,
) -> Result<Vec<Posting>, StoreError> {
    let mut out = Vec::new();
    crate::store::visit_in(txn, t.terms, prefix, max, |k, v| {
        let Some(rest) = k.strip_prefix(prefix) else {
            return false;
        };
        if let (Ok(id), Some((tf, len))) = (Uuid::from_slice(rest), tf_len(v)) {
            out.push((id, tf, len));
        }
        true
    })?;
    Ok(out)
}

fn search_within(
    store: &Store,
    key: &DataKey,
    ns: &Uuid,
    query: &str,
    cap: usize,
    limit: usize,
) -> Result<Ranked, StoreError> {
    let mut distinct: Vec<[u8; 32]> = words(query).iter().map(|w| blind(key, w)).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.is_empty() {
        return Ok(Ranked::default());
    }
    store.read(|txn, t| {
        let (docs, total) = stats(txn, t, ns)?;
        if docs == 0 {
            return Ok(Ranked::default());
        }
        let avg = (total as f32 / docs as f32).max(1.0);
        let idf = |df: f32| (1.0 + (docs as f32 - df + 0.5) / (df + 0.5)).ln();
        let weight = |idf: f32, tf: u32, len: u32| -> f32 {
            let (tf, len) = (tf as f32, len as f32);
            let norm = K1 * (1.0 - B + B * len / avg);
            idf * tf * (K1 + 1.0) / (tf + norm)
        };
        let mut scores: HashMap<Uuid, f32> = HashMap::new();
        let mut best_possible = 0.0;
        let mut common = Vec::new();
        for token in distinct {
            let prefix = [ns.as_bytes().as_slice(), b"p", &token].concat();
            let found = postings(txn, t, &prefix, cap + 1)?;
            if found.len() > cap {
                common.push((prefix, found));
                continue;
            }
            let idf = idf(found.len() as f32);
            // A memory holding this word many times, in a short text.
            best_possible += idf * (K1 + 1.0);
            for (id, tf, len) in found {
                *scores.entry(id).or_insert(0.0) += weight(idf, tf, len);
            }
        }
        for (prefix, found) in common {
            // At least `cap + 1` memories hold it: its idf is at most this.
            let idf = idf((cap + 1) as f32);
            best_possible += idf * (K1 + 1.0);
            if scores.is_empty() {
                for (id, tf, len) in found.into_iter().take(cap) {
                    *scores.entry(id).or_insert(0.0) += weight(idf, tf, len);
                }
                continue;
            }
            let mut candidates: Vec<(Uuid, f32)> = scores.iter().map(|(id, s)| (*id, *s)).collect();
            if candidates.len() > MAX_CANDIDATES {
                candidates.select_nth_unstable_by(MAX_CANDIDATES, better);
                candidates.truncate(MAX_CANDIDATES);
            }
            for (id, _) in candidates {
                let row = [prefix.as_slice(), id.as_bytes()].concat();
                if let Some((tf, len)) = get_in(txn, t.terms, &row)?.as_deref().and_then(tf_len) {
                    *scores.entry(id).or_insert(0.0) += weight(idf, tf, len);
                }
            }
        }
        let mut hits: Vec<(Uuid, f32)> = scores.into_iter().collect();
        let mut beyond = Vec::new();
        if hits.len() > limit {
            hits.select_nth_unstable_by(limit, better);
            beyond = hits.split_off(limit);
        }
        hits.sort_by(better);
        Ok(Ranked {
            hits,
            beyond,
            best_possible,
        })
    })
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
    /// The other matches, in no order: all below the last of `hits`.
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
                .write_blocking(move |txn, t| put(txn, t, &ns, &id, &terms))
                .unwrap();
            ids.push(id);
        }
        let ranked = search(&store, &key, &ns, "budgets", usize::MAX).unwrap();
        assert!(ranked.hits.iter().all(|h| h.1 < ranked.best_possible));
        let hits = ranked.hits;
        assert_eq!(
            hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            [ids[2], ids[1]]
        );
        let hits = search(&store, &key, &ns, "morning tea", usize::MAX)
            .unwrap()
            .hits;
        assert_eq!(hits[0].0, ids[0]);
        // A limit keeps the best, in the same order.
        let top = search(&store, &key, &ns, "morning tea", 1).unwrap();
        assert_eq!(top.hits, hits[..1]);
        assert_eq!(top.beyond.len(), hits.len() - 1);
        let tail: Vec<(Uuid, f32)> = hits[1..].iter().rev().copied().collect();
        let ranks: Vec<usize> = (1..hits.len()).rev().collect();
        assert_eq!(top.ranks_beyond(&tail), ranks);
        // Removed documents are gone from results and from the statistics.
        let gone = ids[2];
        store
            .write_blocking(move |txn, t| remove(txn, t, &ns, &gone))
            .unwrap();
        let hits = search(&store, &key, &ns, "budget", usize::MAX)
            .unwrap()
            .hits;
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [ids[1]]);
        assert_eq!(store.read(|txn, t| stats(txn, t, &ns)).unwrap().0, 3);
        assert!(
            search(&store, &key, &ns, "", usize::MAX)
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
                .write_blocking(move |txn, t| put(txn, t, &ns, &id, &terms))
                .unwrap();
            ids.push(id);
        }
        // "meeting" is in 59 memories, over a cap of 20: alone, it is read
        // 20 postings deep.
        let alone = search_within(&store, &key, &ns, "meeting", 20, usize::MAX).unwrap();
        assert_eq!(alone.hits.len(), 20);
        // With a rare word, it only ranks what the rare word found: the
        // memory holding both comes first.
        let both = search_within(&store, &key, &ns, "zebra meeting", 20, usize::MAX).unwrap();
        assert_eq!(
            both.hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            [ids[7], ids[8]]
        );
        assert!(both.hits.iter().all(|h| h.1 < both.best_possible));
        // Under the cap, nothing changes.
        let full = search_within(&store, &key, &ns, "meeting", 100, usize::MAX).unwrap();
        assert_eq!(full.hits.len(), 59);
    }
}
