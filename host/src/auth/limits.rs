//! Request limits: a token bucket per key, a cap on concurrent requests per
//! key, and a token bucket of failed authentications per source address.
//!
//! ```toml
//! [limits]
//! requests_per_second = 50        # per key, sustained
//! burst = 100                     # per key, at once
//! concurrent_requests = 16        # per key, in flight
//! auth_failures_per_minute = 10   # per source address
//! [limits.roles.reader]           # per role (a key's strongest role)
//! requests_per_second = 20
//! burst = 40
//! ```
//!
//! A key's own rate (`keys create --rate-per-second`) beats its role's,
//! which beats the default. Counters live in the server's memory: a restart
//! refills every bucket.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Role;
use super::keys::Rate;

/// `[limits]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Sustained requests per second per key.
    pub requests_per_second: f64,
    /// Burst per key.
    pub burst: u32,
    /// Requests in flight per key.
    pub concurrent_requests: u32,
    /// Failed authentications per source address per minute (also the burst).
    pub auth_failures_per_minute: u32,
    /// Per-role rates.
    pub roles: BTreeMap<Role, RoleRate>,
}

/// `[limits.roles.<role>]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRate {
    /// Sustained requests per second.
    pub requests_per_second: f64,
    /// Burst.
    pub burst: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            requests_per_second: 50.0,
            burst: 100,
            concurrent_requests: 16,
            auth_failures_per_minute: 10,
            roles: BTreeMap::new(),
        }
    }
}

/// A refusal: wait this many seconds (the `Retry-After` value).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// Seconds until a retry can succeed (at least 1).
    pub retry_after: u64,
    /// What was exceeded.
    pub reason: String,
    /// The first refusal after a period in good standing (audited once per
    /// episode, so a flood does not flood the audit log).
    pub first: bool,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    throttled: bool,
}

impl Bucket {
    fn full(burst: f64) -> Bucket {
        Bucket {
            tokens: burst,
            at: Instant::now(),
            throttled: false,
        }
    }

    fn refill(&mut self, per_second: f64, burst: f64) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.at = now;
    }

    /// Take a token, or say how long until one is there.
    fn take(&mut self, per_second: f64, burst: f64, reason: &str) -> Result<(), Refused> {
        self.refill(per_second, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.throttled = false;
            return Ok(());
        }
        let first = !self.throttled;
        self.throttled = true;
        let wait = if per_second > 0.0 {
            (1.0 - self.tokens) / per_second
        } else {
            3600.0
        };
        Err(Refused {
            retry_after: (wait.ceil() as u64).max(1),
            reason: reason.to_string(),
            first,
        })
    }
}

/// Most source addresses whose failures are remembered; beyond it, the
/// ones that have fully recovered are forgotten first.
const MAX_SOURCES: usize = 10_000;

/// The limits of one server.
#[derive(Debug)]
pub struct Limiter {
    settings: LimitSettings,
    buckets: Mutex<HashMap<String, Bucket>>,
    inflight: Arc<Mutex<HashMap<String, u32>>>,
    failures: Mutex<HashMap<IpAddr, Bucket>>,
}

/// One request in flight for a key; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    key: String,
    inflight: Arc<Mutex<HashMap<String, u32>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.inflight.lock()
            && let Some(n) = map.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl Limiter {
    /// Limits from the configuration.
    pub fn new(settings: LimitSettings) -> Limiter {
        Limiter {
            settings,
            buckets: Mutex::new(HashMap::new()),
            inflight: Arc::new(Mutex::new(HashMap::new())),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The rate for a key: its own, else its strongest role's, else the default.
    pub fn rate_for(&self, own: Option<Rate>, strongest: Option<Role>) -> Rate {
        own.or_else(|| {
            strongest
                .and_then(|r| self.settings.roles.get(&r))
                .map(|r| Rate {
                    per_second: r.requests_per_second,
                    burst: r.burst,
                })
        })
        .unwrap_or(Rate {
            per_second: self.settings.requests_per_second,
            burst: self.settings.burst,
        })
    }

    /// Admit one request of key `id` at `rate`: a token from its bucket and
    /// a place among its concurrent requests.
    pub fn admit(&self, id: &str, rate: Rate) -> Result<Arc<Slot>, Refused> {
        let burst = f64::from(rate.burst.max(1));
        {
            let mut buckets = self.buckets.lock().map_err(|_| poisoned())?;
            buckets
                .entry(id.to_string())
                .or_insert_with(|| Bucket::full(burst))
                .take(
                    rate.per_second,
                    burst,
                    &format!(
                        "key {id} is limited to {} requests per second (burst {})",
                        rate.per_second, rate.burst
                    ),
                )?;
        }
        let mut inflight = self.inflight.lock().map_err(|_| poisoned())?;
        let n = inflight.entry(id.to_string()).or_insert(0);
        if *n >= self.settings.concurrent_requests.max(1) {
            return Err(Refused {
                retry_after: 1,
                reason: format!(
                    "key {id} already has {} requests in flight",
                    self.settings.concurrent_requests
                ),
                first: true,
            });
        }
        *n += 1;
        Ok(Arc::new(Slot {
            key: id.to_string(),
            inflight: self.inflight.clone(),
        }))
    }

    fn failure_rate(&self) -> (f64, f64) {
        let per_minute = f64::from(self.settings.auth_failures_per_minute.max(1));
        (per_minute / 60.0, per_minute)
    }

    /// Is `source` still allowed to try authenticating? (Takes nothing.)
    pub fn may_try(&self, source: IpAddr) -> Result<(), Refused> {
        let (per_second, burst) = self.failure_rate();
        let mut failures = self.failures.lock().map_err(|_| poisoned())?;
        let Some(bucket) = failures.get_mut(&source) else {
            return Ok(());
        };
        bucket.refill(per_second, burst);
        if bucket.tokens >= 1.0 {
            return Ok(());
        }
        let first = !bucket.throttled;
        bucket.throttled = true;
        Err(Refused {
            retry_after: (((1.0 - bucket.tokens) / per_second).ceil() as u64).max(1),
            reason: format!(
                "too many failed authentications from {source}; at most {} per minute",
                self.settings.auth_failures_per_minute
            ),
            first,
        })
    }

    /// Count a failed authentication from `source`.
    pub fn failed(&self, source: IpAddr) {
        let (per_second, burst) = self.failure_rate();
        if let Ok(mut failures) = self.failures.lock() {
            if failures.len() >= MAX_SOURCES {
                failures.retain(|_, b| {
                    b.refill(per_second, burst);
                    b.tokens < burst
                });
            }
            let bucket = failures
                .entry(source)
                .or_insert_with(|| Bucket::full(burst));
            bucket.refill(per_second, burst);
            bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        }
    }
}

fn poisoned() -> Refused {
    Refused {
        retry_after: 1,
        reason: "the limiter is unavailable".into(),
        first: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refuses_past_its_burst_with_a_retry_time() {
        let limiter = Limiter::new(LimitSettings::default());
        let rate = Rate {
            per_second: 0.5,
            burst: 2,
        };
        let _a = limiter.admit("k", rate).unwrap();
        let _b = limiter.admit("k", rate).unwrap();
        let refused = limiter.admit("k", rate).unwrap_err();
        assert_eq!(refused.retry_after, 2);
        assert!(refused.first);
        assert!(!limiter.admit("k", rate).unwrap_err().first);
        // Another key has its own bucket.
        assert!(limiter.admit("other", rate).is_ok());
    }

    #[test]
    fn concurrent_requests_are_capped_and_freed_on_drop() {
        let limiter = Limiter::new(LimitSettings {
            concurrent_requests: 2,
            ..LimitSettings::default()
        });
        let rate = limiter.rate_for(None, None);
        let a = limiter.admit("k", rate).unwrap();
        let _b = limiter.admit("k", rate).unwrap();
        assert!(
            limiter
                .admit("k", rate)
                .unwrap_err()
                .reason
                .contains("in flight")
        );
        drop(a);
        assert!(limiter.admit("k", rate).is_ok());
    }

    #[test]
    fn failures_per_source_are_limited_and_other_sources_are_not() {
        let limiter = Limiter::new(LimitSettings {
            auth_failures_per_minute: 3,
            ..LimitSettings::default()
        });
        let bad: IpAddr = "192.0.2.1".parse().unwrap();
        let good: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.may_try(bad).is_ok());
            limiter.failed(bad);
        }
        let refused = limiter.may_try(bad).unwrap_err();
        assert!(refused.retry_after >= 1 && refused.retry_after <= 20);
        assert!(limiter.may_try(good).is_ok());
    }

    #[test]
    fn role_rates_apply_unless_the_key_has_its_own() {
        let mut settings = LimitSettings::default();
        settings.roles.insert(
            Role::Reader,
            RoleRate {
                requests_per_second: 2.0,
                burst: 3,
            },
        );
        let limiter = Limiter::new(settings);
        assert_eq!(limiter.rate_for(None, Some(Role::Reader)).burst, 3);
        assert_eq!(limiter.rate_for(None, Some(Role::Admin)).burst, 100);
        let own = Rate {
            per_second: 9.0,
            burst: 9,
        };
        assert_eq!(limiter.rate_for(Some(own), Some(Role::Reader)), own);
    }
}
