//! The hash-chained audit log: every mutating action, every admin action,
//! every denied request and every failed authentication.
//!
//! | table | row key | value |
//! |---|---|---|
//! | `audit` | sequence number (u64, big-endian) | sealed [`Entry`] (system key) |
//! | `meta` | `audit_head` | sealed [`Head`]: last sequence number and MAC |
//!
//! Each entry's `mac` is HMAC-SHA256, under a key derived from the system
//! data key (which only the master key unwraps), of the previous entry's
//! MAC and this entry without its MAC. Changing, removing, reordering or
//! inserting an entry breaks the chain at that entry; `verify` names it.
//! The head row catches a tail cut by someone who cannot also put back an
//! older head; every emitted event carries its MAC, so a copy of the log
//! kept elsewhere anchors the chain against that too. Entries carry no
//! memory content.
//!
//! An entry is appended inside the write transaction of the action it
//! records: there is no action without its entry, and no entry for an
//! action that did not happen. After commit the caller emits it as a
//! `tracing` event with target `audit` ([`emit`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::crypto::DataKey;
use crate::store::{RwTransaction, Store, StoreError, Tables, WriteFlags, get_in};

/// The `meta` row holding the chain's head.
pub const META_HEAD: &[u8] = b"audit_head";

/// What happened, before it has a place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The acting key's public id (`cli`, `system`, `no-auth`, or none when
    /// authentication failed).
    pub key_id: Option<String>,
    /// The acting agent.
    pub agent_id: Option<String>,
    /// Its type.
    pub agent_type: Option<String>,
    /// `memory.store`, `namespace.create`, `key.revoke`, `auth.failure`, …
    pub action: String,
    /// The namespace acted on.
    pub namespace: Option<String>,
    /// The memory id, key id, … acted on.
    pub target: Option<String>,
    /// `ok`, `duplicate`, `denied`, `failed`, `rate-limited`.
    pub outcome: String,
    /// Why, for refusals (never content).
    pub detail: Option<String>,
    /// The client's address, when the request came over the network.
    pub source: Option<String>,
}

impl Record {
    /// `action` by `who`, succeeded.
    pub fn by(who: &Principal, action: &str) -> Record {
        Record {
            key_id: Some(who.key_id.clone()),
            agent_id: Some(who.agent_id.clone()),
            agent_type: Some(who.agent_type.clone()),
            action: action.into(),
            namespace: None,
            target: None,
            outcome: "ok".into(),
            detail: None,
            source: None,
        }
    }

    /// `action` by nobody known yet (an anonymous client registering),
    /// from `source`, succeeded.
    pub fn anonymous(action: &str, source: Option<String>) -> Record {
        Record {
            key_id: None,
            agent_id: None,
            agent_type: None,
            action: action.into(),
            namespace: None,
            target: None,
            outcome: "ok".into(),
            detail: None,
            source,
        }
    }

    /// A failed authentication from `source`.
    pub fn auth_failure(key_id: Option<&str>, source: Option<String>, detail: &str) -> Record {
        let mut r =
            Record::anonymous("auth.failure", source).outcome("denied", Some(detail.into()));
        r.key_id = key_id.map(str::to_string);
        r
    }

    /// In namespace `ns`.
    pub fn ns(mut self, ns: &str) -> Record {
        self.namespace = Some(ns.into());
        self
    }

    /// On `target`.
    pub fn target(mut self, target: impl ToString) -> Record {
        self.target = Some(target.to_string());
        self
    }

    /// With outcome `outcome` and `detail`.
    pub fn outcome(mut self, outcome: &str, detail: Option<String>) -> Record {
        self.outcome = outcome.into();
        self.detail = detail;
        self
    }

    /// Every field cut to its bound, control characters escaped: a caller
    /// decides what some fields say (a namespace or memory id it asked
    /// for) but not how much of the chain, which is never trimmed, it
    /// takes up.
    fn bounded(&self) -> Record {
        let cut = |s: &Option<String>, max| {
            s.as_deref()
                .map(|s| crate::logging::untrusted(s, max).into_owned())
        };
        Record {
            key_id: cut(&self.key_id, MAX_FIELD),
            agent_id: cut(&self.agent_id, MAX_FIELD),
            agent_type: cut(&self.agent_type, MAX_FIELD),
            action: crate::logging::untrusted(&self.action, MAX_FIELD).into_owned(),
            namespace: cut(&self.namespace, MAX_FIELD),
            target: cut(&self.target, MAX_FIELD),
            outcome: crate::logging::untrusted(&self.outcome, MAX_FIELD).into_owned(),
            detail: cut(&self.detail, MAX_DETAIL),
            source: cut(&self.source, MAX_FIELD),
        }
    }
}

/// Longest field of an entry, in bytes, before the mark of a cut.
const MAX_FIELD: usize = 256;
/// Longest `detail`.
const MAX_DETAIL: usize = 1024;

/// One link of the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    /// 1, 2, 3, … without gaps.
    pub seq: u64,
    /// Unix ms.
    pub time: i64,
    /// What happened.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub record: Record,
    /// The previous entry's MAC (hex; zeros for the first).
    pub prev: String,
    /// This entry's MAC (hex).
    pub mac: String,
}

/// The chain's end, kept in `meta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// Last sequence number.
    pub seq: u64,
    /// Its MAC.
    pub mac: String,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    /// The chain breaks at entry `seq`.
    #[error("audit chain broken at entry {seq}: {why}")]
    At {
        /// The first entry that does not verify.
        seq: u64,
        /// How.
        why: String,
    },
    /// The store failed while reading.
    #[error("cannot read the audit log: {0}")]
    Store(String),
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Appends to and checks the chain. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    key: Arc<DataKey>,
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(format!("audit: {e}"))
}

impl AuditLog {
    /// A log sealed and chained under the system data key.
    pub fn new(system_key: Arc<DataKey>) -> AuditLog {
        AuditLog { key: system_key }
    }

    fn mac(&self, prev: &str, unsigned: &Entry) -> Result<String, StoreError> {
        let body = serde_json::to_vec(unsigned).map_err(internal)?;
        let input = [prev.as_bytes(), b"\n", &body].concat();
        Ok(hex::encode(self.key.blind("audit-chain", &input)))
    }

    fn head(&self, txn: &impl crate::store::Transaction, t: &Tables) -> Result<Head, StoreError> {
        Ok(self.stored_head(txn, t)?.unwrap_or(Head {
            seq: 0,
            mac: GENESIS.into(),
        }))
    }

    fn stored_head(
        &self,
        txn: &impl crate::store::Transaction,
        t: &Tables,
    ) -> Result<Option<Head>, StoreError> {
        match get_in(txn, t.meta, META_HEAD)? {
            None => Ok(None),
            Some(sealed) => {
                let plain = self
                    .key
                    .open("meta", META_HEAD, &sealed)
                    .map_err(internal)?;
                serde_json::from_slice(&plain).map(Some).map_err(internal)
            }
        }
    }

    /// Append `record` inside the caller's write transaction. Returns the
    /// entry; emit it with [`emit`] once the transaction has committed.
    pub fn append(
        &self,
        txn: &mut RwTransaction<'_>,
        t: &Tables,
        record: &Record,
    ) -> Result<Entry, StoreError> {
        let head = self.head(txn, t)?;
        let mut entry = Entry {
            seq: head.seq + 1,
            time: crate::clock::now_ms(),
            record: record.bounded(),
            prev: head.mac,
            mac: String::new(),
        };
        entry.mac = self.mac(&entry.prev, &entry)?;
        let key = seq_key(entry.seq);
        let sealed = self.key.seal_packed(
            "audit",
            &key,
            &serde_json::to_vec(&entry).map_err(internal)?,
        );
        // Entries only ever go at the end: APPEND fills each page instead
        // of splitting it (and, like NO_OVERWRITE, refuses a sequence
        // number already taken).
        txn.put(t.audit, &key, &sealed, WriteFlags::APPEND)?;
        let head = Head {
            seq: entry.seq,
            mac: entry.mac.clone(),
        };
        let sealed_head = self.key.seal(
            "meta",
            META_HEAD,
            &serde_json::to_vec(&head).map_err(internal)?,
        );
        txn.put(t.meta, &META_HEAD, &sealed_head, WriteFlags::empty())?;
        Ok(entry)
    }

    /// Append `record` in a transaction of its own (a refusal that changes
    /// nothing else). Blocking.
    pub fn record(&self, store: &Store, record: Record) -> Result<Entry, StoreError> {
        let log = self.clone();
        let entry = store.write_blocking(move |txn, t| log.append(txn, t, &record))?;
        emit(&entry);
        Ok(entry)
    }

    fn open_entry(&self, seq: u64, sealed: &[u8]) -> Result<Entry, Broken> {
        let plain = self
            .key
            .open("audit", &seq_key(seq), sealed)
            .map_err(|_| Broken::At {
                seq,
                why: "the entry does not open: it was changed or moved".into(),
            })?;
        serde_json::from_slice(&plain).map_err(|e| Broken::At {
            seq,
            why: format!("the entry is not readable: {e}"),
        })
    }

    /// Walk the chain up to its head as read at the start; `Ok(n)` when all
    /// `n` entries verify. Entries appended meanwhile (the server may be
    /// running) are left for the next walk.
    pub fn verify(&self, store: &Store) -> Result<u64, Broken> {
        let store_err = |e: StoreError| Broken::Store(e.to_string());
        let stored = store
            .read(|txn, t| self.stored_head(txn, t))
            .map_err(|e| Broken::At {
                seq: 0,
                why: format!("the chain head does not open: {e}"),
            })?;
        let head = match stored {
            Some(head) => head,
            None => {
                // No head: only right for a store that never recorded
                // anything. Entries or API keys without one mean it was
                // removed.
                let entries = store
                    .rows_max(|t| t.audit, &[], |_| true, 1)
                    .map_err(store_err)?;
                let keys = store
                    .rows_max(|t| t.principals, b"key/", |k| k.starts_with(b"key/"), 1)
                    .map_err(store_err)?;
                if entries.is_empty() && keys.is_empty() {
                    return Ok(0);
                }
                return Err(Broken::At {
                    seq: 1,
                    why: "the chain head is missing but the store has recorded actions".into(),
                });
            }
        };
        let mut prev = GENESIS.to_string();
        let mut expected = 1u64;
        let mut from = Vec::new();
        loop {
            let rows = store
                .rows_max(|t| t.audit, &from, |_| true, 1024)
                .map_err(store_err)?;
            let mut done = rows.len() < 1024;
            for (k, v) in rows {
                if from == k {
                    continue;
                }
                if k.as_slice() > seq_key(head.seq).as_slice() {
                    done = true;
                    break;
                }
                let seq = <[u8; 8]>::try_from(k.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| Broken::At {
                        seq: expected,
                        why: "a row with a malformed key sits in the audit table".into(),
                    })?;
                if seq != expected {
                    return Err(Broken::At {
                        seq: expected,
                        why: format!("entry {expected} is missing (next is {seq})"),
                    });
                }
                let entry = self.open_entry(seq, &v)?;
                if entry.seq != seq {
                    return Err(Broken::At {
                        seq,
                        why: format!("the entry says it is number {}", entry.seq),
                    });
                }
                if entry.prev != prev {
                    return Err(Broken::At {
                        seq,
                        why: "it does not link to the entry before it".into(),
                    });
                }
                let unsigned = Entry {
                    mac: String::new(),
                    ..entry.clone()
                };
                if self.mac(&prev, &unsigned).map_err(store_err)? != entry.mac {
                    return Err(Broken::At {
                        seq,
                        why: "its MAC does not match its contents".into(),
                    });
                }
                prev = entry.mac;
                expected += 1;
                from = k;
            }
            if done {
                break;
            }
        }
        let last = expected - 1;
        if head.seq != last || head.mac != prev {
            return Err(Broken::At {
                seq: last + 1,
                why: format!(
                    "the chain ends at entry {last} but its head records entry {}: entries were cut",
                    head.seq
                ),
            });
        }
        Ok(last)
    }

    /// Entries after `after`, oldest first, at most `limit`.
    pub fn after(&self, store: &Store, after: u64, limit: usize) -> Result<Vec<Entry>, Broken> {
        let start = seq_key(after.saturating_add(1));
        let rows = store
            .rows_max(|t| t.audit, &start, |_| true, limit)
            .map_err(|e| Broken::Store(e.to_string()))?;
        rows.iter()
            .map(|(k, v)| {
                let seq = <[u8; 8]>::try_from(k.as_slice())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                self.open_entry(seq, v)
            })
            .collect()
    }

    /// How many entries the chain holds.
    pub fn length(&self, store: &Store) -> Result<u64, StoreError> {
        store.read(|txn, t| self.head(txn, t)).map(|h| h.seq)
    }

    /// The last `n` entries, oldest first.
    pub fn tail(&self, store: &Store, n: usize) -> Result<Vec<Entry>, Broken> {
        let head = store
            .read(|txn, t| self.head(txn, t))
            .map_err(|e| Broken::Store(e.to_string()))?;
        self.after(store, head.seq.saturating_sub(n as u64), n)
    }
}

/// Emit a committed entry as a `tracing` event with target `audit`.
pub fn emit(entry: &Entry) {
    let r = &entry.record;
    tracing::info!(
        target: "audit",
        seq = entry.seq,
        mac = %entry.mac,
        action = %r.action,
        outcome = %r.outcome,
        key_id = r.key_id.as_deref().unwrap_or("-"),
        agent_id = r.agent_id.as_deref().unwrap_or("-"),
        namespace = r.namespace.as_deref().unwrap_or("-"),
        target_id = r.target.as_deref().unwrap_or("-"),
        source = r.source.as_deref().unwrap_or("-"),
        detail = r.detail.as_deref().unwrap_or(""),
        "audit"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::store::StoreOptions::default()).unwrap();
        (dir, store, AuditLog::new(Arc::new(DataKey::generate())))
    }

    fn record(n: usize) -> Record {
        Record::by(&Principal::operator(), "memory.store")
            .ns("team-a")
            .target(n)
    }

    #[test]
    fn a_chain_verifies_and_a_changed_entry_is_named() {
        let (_d, store, log) = open();
        for n in 0..5 {
            log.record(&store, record(n)).unwrap();
        }
        assert_eq!(log.verify(&store), Ok(5));
        assert_eq!(
            log.tail(&store, 2)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![4, 5]
        );

        // Replace entry 3 with a validly sealed entry whose text changed:
        // only the MAC can tell.
        let mut forged = log.after(&store, 2, 1).unwrap().remove(0);
        forged.record.outcome = "denied".into();
        let sealed = log
            .key
            .seal("audit", &seq_key(3), &serde_json::to_vec(&forged).unwrap());
        store
            .write_blocking(move |txn, t| {
                txn.put(t.audit, &seq_key(3), &sealed, WriteFlags::empty())?;
                Ok(())
            })
            .unwrap();
        match log.verify(&store) {
            Err(Broken::At { seq: 3, why }) => assert!(why.contains("MAC"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_caller_sized_field_takes_a_bounded_place_in_the_chain() {
        let (_d, store, log) = open();
        let huge = "x".repeat(1 << 20);
        let entry = log
            .record(
                &store,
                record(0)
                    .ns(&huge)
                    .target(format!("id\n{huge}"))
                    .outcome("denied", Some(huge.clone())),
            )
            .unwrap();
        let stored = serde_json::to_vec(&log.after(&store, 0, 1).unwrap()[0]).unwrap();
        assert!(stored.len() < 4096, "{} bytes", stored.len());
        assert_eq!(log.after(&store, 0, 1).unwrap()[0], entry);
        assert!(entry.record.namespace.unwrap().ends_with("(1048576 bytes)"));
        assert_eq!(log.verify(&store), Ok(1));
    }

    #[test]
    fn a_missing_head_is_found_and_an_empty_log_is_fine() {
        let (_d, store, log) = open();
        assert_eq!(log.verify(&store), Ok(0));
        log.record(&store, record(0)).unwrap();
        store
            .write_blocking(|txn, t| {
                txn.del(t.meta, &META_HEAD)?;
                Ok(())
            })
            .unwrap();
        match log.verify(&store) {
            Err(Broken::At { seq: 1, why }) => assert!(why.contains("head is missing"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_removed_entry_and_a_cut_tail_are_found() {
        let (_d, store, log) = open();
        for n in 0..4 {
            log.record(&store, record(n)).unwrap();
        }
        store
            .write_blocking(|txn, t| {
                txn.del(t.audit, &seq_key(4))?;
                Ok(())
            })
            .unwrap();
        match log.verify(&store) {
            Err(Broken::At { seq: 4, why }) => assert!(why.contains("cut"), "{why}"),
            other => panic!("{other:?}"),
        }
        store
            .write_blocking(|txn, t| {
                txn.del(t.audit, &seq_key(2))?;
                Ok(())
            })
            .unwrap();
        match log.verify(&store) {
            Err(Broken::At { seq: 2, why }) => assert!(why.contains("missing"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
