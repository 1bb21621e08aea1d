//! The limits every host of a shared store counts together
//! ([`SharedBuckets`]): token buckets kept in the store, each taken in one
//! write (under the writer lock, so two hosts never both take the last
//! token). Used only with PostgreSQL; one LMDB process counts alone.
//!
//! | table | row key | value |
//! |---|---|---|
//! | `principals` | `limit/` + kind + `/` + blind(system key, subject), 16 bytes | tokens (f64) + at (Unix ms) + rate per second (f64) + burst (f64), big-endian |
//!
//! The subject — an address, a user name — is blinded: the database does
//! not list who failed to sign in. Rows of buckets that have filled up
//! again are deleted by the sweep ([`Service::purge_limits`]).

use std::sync::Arc;

use crate::auth::limits::SharedBuckets;
use crate::crypto::DataKey;
use crate::store::{Store, WriteFlags, get_in};

use super::{Service, ServiceError};

const PREFIX: &[u8] = b"limit/";

/// Buckets in the store.
#[derive(Clone)]
pub struct StoreBuckets {
    store: Store,
    key: Arc<DataKey>,
}

impl std::fmt::Debug for StoreBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreBuckets")
    }
}

/// One bucket as stored.
#[derive(Debug, Clone, Copy)]
struct Level {
    tokens: f64,
    at: i64,
    per_second: f64,
    burst: f64,
}

impl Level {
    fn decode(v: &[u8]) -> Option<Level> {
        let f = |i: usize| v.get(i..i + 8).and_then(|b| b.try_into().ok());
        Some(Level {
            tokens: f64::from_be_bytes(f(0)?),
            at: i64::from_be_bytes(f(8)?),
            per_second: f64::from_be_bytes(f(16)?),
            burst: f64::from_be_bytes(f(24)?),
        })
    }

    fn encode(&self) -> Vec<u8> {
        [
            self.tokens.to_be_bytes(),
            self.at.to_be_bytes(),
            self.per_second.to_be_bytes(),
            self.burst.to_be_bytes(),
        ]
        .concat()
    }

    /// The tokens at `now`.
    fn now(&self, now: i64) -> f64 {
        let elapsed = (now - self.at).max(0) as f64 / 1000.0;
        (self.tokens + elapsed * self.per_second).min(self.burst)
    }
}

/// Seconds until `tokens` reach one (at least 1).
fn wait(tokens: f64, per_second: f64) -> u64 {
    if per_second > 0.0 {
        (((1.0 - tokens) / per_second).ceil() as u64).max(1)
    } else {
        3600
    }
}

/// Run `f`, which may block on the store, from any thread: on an async
/// worker the runtime is told first (the limiter is asked from handlers).
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl StoreBuckets {
    /// Buckets in `service`'s store, subjects blinded under its system key.
    pub fn new(service: &Service) -> Result<StoreBuckets, ServiceError> {
        Ok(StoreBuckets {
            store: service.store.clone(),
            key: service.system_key()?,
        })
    }

    fn row(&self, kind: &str, subject: &str) -> Vec<u8> {
        let blind = self.key.blind("limit", subject.as_bytes());
        [PREFIX, kind.as_bytes(), b"/", &blind[..16]].concat()
    }
}

impl SharedBuckets for StoreBuckets {
    fn take(
        &self,
        kind: &str,
        subject: &str,
        per_second: f64,
        burst: f64,
    ) -> Result<Option<u64>, String> {
        let row = self.row(kind, subject);
        blocking(|| {
            self.store.write_blocking(move |txn, t| {
                let now = crate::clock::now_ms();
                let tokens = get_in(txn, t.principals, &row)?
                    .as_deref()
                    .and_then(Level::decode)
                    .map_or(burst, |l| l.now(now));
                if tokens < 1.0 {
                    return Ok(Some(wait(tokens, per_second)));
                }
                let level = Level {
                    tokens: tokens - 1.0,
                    at: now,
                    per_second,
                    burst,
                };
                txn.put(t.principals, &row, &level.encode(), WriteFlags::empty())?;
                Ok(None)
            })
        })
        .map_err(|e| e.to_string())
    }

    fn peek(&self, kind: &str, subject: &str, per_second: f64, _burst: f64) -> Option<u64> {
        let row = self.row(kind, subject);
        let value = blocking(|| self.store.get(|t| t.principals, &row)).ok()??;
        let level = Level::decode(&value)?;
        let tokens = level.now(crate::clock::now_ms());
        (tokens < 1.0).then(|| wait(tokens, per_second))
    }

    fn give(&self, kind: &str, subject: &str, burst: f64) {
        let row = self.row(kind, subject);
        let given = blocking(|| {
            self.store.write_blocking(move |txn, t| {
                let now = crate::clock::now_ms();
                if let Some(l) = get_in(txn, t.principals, &row)?
                    .as_deref()
                    .and_then(Level::decode)
                {
                    let level = Level {
                        tokens: (l.now(now) + 1.0).min(burst),
                        at: now,
                        ..l
                    };
                    txn.put(t.principals, &row, &level.encode(), WriteFlags::empty())?;
                }
                Ok(())
            })
        });
        if let Err(e) = given {
            tracing::warn!(error = %e, kind, "a shared limit could not be given back");
        }
    }
}

impl Service {
    /// Delete the bucket rows that have filled up again (a full bucket is
    /// what no row means); returns how many.
    pub fn purge_limits(&self) -> Result<usize, ServiceError> {
        let now = crate::clock::now_ms();
        let full: Vec<Vec<u8>> = self
            .store
            .rows(|t| t.principals, PREFIX, |k| k.starts_with(PREFIX))?
            .into_iter()
            .filter(|(_, v)| Level::decode(v).is_none_or(|l| l.now(now) >= l.burst))
            .map(|(k, _)| k)
            .collect();
        let n = full.len();
        if n > 0 {
            self.store.write_blocking(move |txn, t| {
                // Taken from meanwhile: kept.
                let now = crate::clock::now_ms();
                for k in &full {
                    let still_full = get_in(txn, t.principals, k)?
                        .as_deref()
                        .and_then(Level::decode)
                        .is_none_or(|l| l.now(now) >= l.burst);
                    if still_full {
                        txn.del(t.principals, k)?;
                    }
                }
                Ok(())
            })?;
        }
        Ok(n)
    }
}
