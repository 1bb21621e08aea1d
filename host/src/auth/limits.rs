//! Request limits: a token bucket per key, a cap on concurrent requests per
//! key, and a token bucket of failed authentications per source address.
//!
//! ```toml
//! [limits]
//! requests_per_second = 50        # per key, sustained
//! burst = 100                     # per key, at once
//! concurrent_requests = 16        # per key, in flight
//! auth_failures_per_minute = 10   # per source address
//! max_namespaces = 10000           # on the whole server
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
    /// Namespaces the server holds at most.
    pub max_namespaces: usize,
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
            max_namespaces: 10_000,
        }
    }
}

impl LimitSettings {
    /// Refuse settings that would silently disable a limit or lock everyone out.
    pub fn validate(&self) -> Result<(), String> {
        let rate_ok = |r: f64| r.is_finite() && r > 0.0;
        if !rate_ok(self.requests_per_second) || self.burst == 0 {
            return Err(
                "[limits] requests_per_second must be a number above 0 and burst at least 1".into(),
            );
        }
        if self.max_namespaces == 0 {
            return Err("[limits] max_namespaces must be at least 1".into());
        }
        if self.concurrent_requests == 0 || self.auth_failures_per_minute == 0 {
            return Err(
                "[limits] concurrent_requests and auth_failures_per_minute must be at least 1"
                    .into(),
            );
        }
        for (role, r) in &self.roles {
            if !rate_ok(r.requests_per_second) || r.burst == 0 {
                return Err(format!(
                    "[limits.roles.{}] requests_per_second must be above 0 and burst at least 1",
                    role.as_str()
                ));
            }
        }
        Ok(())
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
        Err(Refused {
            retry_after: self.wait(per_second),
            reason: reason.to_string(),
            first,
        })
    }

    /// Seconds until a token is there (at least 1).
    fn wait(&self, per_second: f64) -> u64 {
        let wait = if per_second > 0.0 {
            (1.0 - self.tokens) / per_second
        } else {
            3600.0
        };
        (wait.ceil() as u64).max(1)
    }
}

/// The bucket of `key` in `map`, made full if new. The map holds at most
/// [`MAX_SOURCES`]: past it, the keys that have fully recovered are
/// forgotten first, then half of the rest rather than grow without bound.
fn bucket_of<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, Bucket>,
    key: K,
    per_second: f64,
    burst: f64,
) -> &mut Bucket {
    if map.len() >= MAX_SOURCES && !map.contains_key(&key) {
        map.retain(|_, b| {
            b.refill(per_second, burst);
            b.tokens < burst
        });
        if map.len() >= MAX_SOURCES {
            let drop: Vec<K> = map.keys().step_by(2).cloned().collect();
            for k in drop {
                map.remove(&k);
            }
        }
    }
    map.entry(key).or_insert_with(|| Bucket::full(burst))
}

/// Most source addresses whose failures are remembered; beyond it, the
/// ones that have fully recovered are forgotten first.
const MAX_SOURCES: usize = 10_000;

/// Buckets every host of a shared store counts in together (the database
/// holds them): the limits whose promise holds only if all hosts count —
/// guessing a person's password, failing authentications from an address,
/// registering OAuth clients from an address. Each call may block on the
/// store; an error (the store away) lets the local limit decide alone.
pub trait SharedBuckets: Send + Sync + std::fmt::Debug {
    /// Take a token from bucket `kind`/`subject` (refilled at `per_second`
    /// up to `burst`): `Ok(None)` taken, `Ok(Some(seconds))` empty for that
    /// long.
    fn take(
        &self,
        kind: &str,
        subject: &str,
        per_second: f64,
        burst: f64,
    ) -> Result<Option<u64>, String>;
    /// Look without taking: `Some(seconds)` while empty.
    fn peek(&self, kind: &str, subject: &str, per_second: f64, burst: f64) -> Option<u64>;
    /// Give a token back (an attempt that was not a failure).
    fn give(&self, kind: &str, subject: &str, burst: f64);
}

/// The limits of one server.
#[derive(Debug)]
pub struct Limiter {
    settings: LimitSettings,
    buckets: Mutex<HashMap<String, Bucket>>,
    inflight: Arc<Mutex<HashMap<String, u32>>>,
    failures: Mutex<HashMap<IpAddr, Bucket>>,
    audited_failures: Mutex<Bucket>,
    /// Keys refused for their in-flight cap since their last admitted request.
    over_cap: Mutex<std::collections::HashSet<String>>,
    /// Failed console sign-ins per user name.
    sign_ins: Mutex<HashMap<String, Bucket>>,
    /// OAuth client registrations per source address.
    registrations: Mutex<HashMap<IpAddr, Bucket>>,
    /// A shared store: the same counts, across every host.
    shared: Option<Arc<dyn SharedBuckets>>,
    /// How many shared takes this host makes per second at most: each is a
    /// write every host waits its turn for, so a flood from many addresses
    /// falls back to the local counts instead of taking the store's writes.
    shared_budget: Mutex<Bucket>,
}

/// Shared takes per second one host makes at most (burst: twice that).
const SHARED_TAKES_PER_SECOND: f64 = 50.0;

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
            audited_failures: Mutex::new(Bucket::full(AUDITED_FAILURES_PER_SECOND * 10.0)),
            over_cap: Mutex::new(std::collections::HashSet::new()),
            sign_ins: Mutex::new(HashMap::new()),
            registrations: Mutex::new(HashMap::new()),
            shared: None,
            shared_budget: Mutex::new(Bucket::full(SHARED_TAKES_PER_SECOND * 2.0)),
        }
    }

    /// Count registrations, failed authentications and sign-in attempts in
    /// `shared` too, so N hosts allow what one would.
    pub fn with_shared(mut self, shared: Arc<dyn SharedBuckets>) -> Limiter {
        self.shared = Some(shared);
        self
    }

    /// Take from the shared bucket as well, if there is one: its refusal
    /// (with `reason`) if it is empty.
    fn shared_take(
        &self,
        kind: &str,
        subject: &str,
        per_second: f64,
        burst: f64,
        reason: &str,
    ) -> Result<(), Refused> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        // Sign-in attempts are always counted: guessing a person's password
        // must not get cheaper while others flood.
        let room = kind == "sign-in"
            || self.shared_budget.lock().is_ok_and(|mut b| {
                b.take(SHARED_TAKES_PER_SECOND, SHARED_TAKES_PER_SECOND * 2.0, "")
                    .is_ok()
            });
        if !room {
            return Ok(());
        }
        match shared.take(kind, subject, per_second, burst) {
            Ok(None) => Ok(()),
            Ok(Some(wait)) => Err(Refused {
                retry_after: wait.max(1),
                reason: reason.to_string(),
                first: false,
            }),
            Err(e) => {
                tracing::warn!(error = %e, kind, "a shared limit could not be counted; this host's decides");
                Ok(())
            }
        }
    }

    /// Take one of `source`'s OAuth client registrations: `per_hour`,
    /// all at once at most (registering is anonymous, and each keeps a
    /// row until it expires).
    pub fn registration(&self, source: IpAddr, per_hour: u32) -> Result<(), Refused> {
        let source = source_of(source);
        let Ok(mut map) = self.registrations.lock() else {
            return Err(poisoned());
        };
        let (per_second, burst) = (f64::from(per_hour) / 3600.0, f64::from(per_hour));
        let reason =
            format!("too many client registrations from {source}; at most {per_hour} an hour");
        bucket_of(&mut map, source, per_second, burst).take(per_second, burst, &reason)?;
        drop(map);
        self.shared_take(
            "registration",
            &source.to_string(),
            per_second,
            burst,
            &reason,
        )
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
        let mut over_cap = self.over_cap.lock().map_err(|_| poisoned())?;
        if *n >= self.settings.concurrent_requests.max(1) {
            return Err(Refused {
                retry_after: 1,
                reason: format!(
                    "key {id} already has {} requests in flight",
                    self.settings.concurrent_requests
                ),
                first: over_cap.insert(id.to_string()),
            });
        }
        over_cap.remove(id);
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

    /// Count a failed authentication from `source`: whether to write it to
    /// the audit log, and whether the source is now refused (429 instead of
    /// 401). A valid key is never refused for its address: only failures
    /// are counted, so clients behind one proxy do not lock each other out.
    pub fn failed(&self, source: IpAddr) -> Failure {
        let source = source_of(source);
        let (per_second, burst) = self.failure_rate();
        let Ok(mut failures) = self.failures.lock() else {
            return Failure {
                audit: false,
                refused: Some(poisoned()),
            };
        };
        let outcome = bucket_of(&mut failures, source, per_second, burst).take(
            per_second,
            burst,
            &self.failures_reason(source),
        );
        drop(failures);
        // Counted by every host together, once this host has room.
        let outcome = outcome.and_then(|()| {
            self.shared_take(
                "auth-failure",
                &source.to_string(),
                per_second,
                burst,
                &self.failures_reason(source),
            )
        });
        // However many sources there are, at most this many failures per
        // second reach the audit log; the rest are counted in the log.
        let audit_room = self
            .audited_failures
            .lock()
            .map(|mut b| {
                b.take(
                    AUDITED_FAILURES_PER_SECOND,
                    AUDITED_FAILURES_PER_SECOND * 10.0,
                    "",
                )
                .is_ok()
            })
            .unwrap_or(false);
        match outcome {
            Ok(()) => Failure {
                audit: audit_room,
                refused: None,
            },
            Err(refused) => Failure {
                audit: refused.first && audit_room,
                refused: Some(refused),
            },
        }
    }
}

/// Console sign-in attempts one user name may fail in a burst, and how
/// fast they come back: 5, then one every 3 minutes. Counted per name
/// whatever the address, so guessing one person's password from many
/// addresses is as slow as from one; a valid password is refused too
/// while the name is throttled, so the guesser learns nothing.
const SIGN_IN_BURST: f64 = 5.0;
const SIGN_INS_PER_SECOND: f64 = 1.0 / 180.0;

impl Limiter {
    /// Is `source` refused for its failed authentications right now? Looks
    /// without counting: a sign-in checks it before any password work, so
    /// an address over its limit costs no Argon2 and learns nothing.
    pub fn failing(&self, source: IpAddr) -> Option<Refused> {
        let source = source_of(source);
        let (per_second, burst) = self.failure_rate();
        let local = {
            let mut failures = self.failures.lock().ok()?;
            failures.get_mut(&source).and_then(|bucket| {
                bucket.refill(per_second, burst);
                (bucket.tokens < 1.0).then(|| bucket.wait(per_second))
            })
        };
        let wait = local.or_else(|| {
            self.shared
                .as_ref()
                .and_then(|s| s.peek("auth-failure", &source.to_string(), per_second, burst))
        })?;
        Some(Refused {
            retry_after: wait.max(1),
            reason: self.failures_reason(source),
            first: false,
        })
    }

    fn failures_reason(&self, source: IpAddr) -> String {
        format!(
            "too many failed authentications from {source}; at most {} per minute",
            self.settings.auth_failures_per_minute
        )
    }

    /// Take one of user `name`'s sign-in attempts before its password is
    /// checked (so parallel guesses cannot all pass before the first
    /// failure is counted); [`Limiter::sign_in_succeeded`] gives it back.
    /// A refusal while its failures are over their rate.
    pub fn sign_in_attempt(&self, name: &str) -> Result<(), Refused> {
        let reason = format!("too many failed sign-ins for \"{name}\"; try again later");
        {
            let Ok(mut map) = self.sign_ins.lock() else {
                return Err(poisoned());
            };
            bucket_of(
                &mut map,
                name.to_string(),
                SIGN_INS_PER_SECOND,
                SIGN_IN_BURST,
            )
            .take(SIGN_INS_PER_SECOND, SIGN_IN_BURST, &reason)?;
        }
        let shared = self.shared_take("sign-in", name, SIGN_INS_PER_SECOND, SIGN_IN_BURST, &reason);
        if shared.is_err() {
            // Refused by the count of all hosts: this host's attempt is
            // not spent.
            self.give_back_sign_in(name);
        }
        shared
    }

    fn give_back_sign_in(&self, name: &str) {
        if let Ok(mut map) = self.sign_ins.lock()
            && let Some(b) = map.get_mut(name)
        {
            b.tokens = (b.tokens + 1.0).min(SIGN_IN_BURST);
        }
    }

    /// User `name` signed in: the attempt taken for it was not a failure.
    pub fn sign_in_succeeded(&self, name: &str) {
        self.give_back_sign_in(name);
        if let Some(shared) = &self.shared {
            shared.give("sign-in", name, SIGN_IN_BURST);
        }
    }
}

/// How many refusals of one key reach the audit log. Every refusal is an
/// fsync'd append to a chain that is never trimmed, so a key that keeps
/// asking for what it may not have gets a budget: the first refusals are
/// written, then one per second; the ones over it are counted and the
/// count is written with the next entry.
#[derive(Debug, Default)]
pub struct RefusalBudget {
    keys: Mutex<HashMap<String, (Bucket, u64)>>,
}

/// Whether to write a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audited {
    /// Write it; `unwritten` refusals of the key were over the budget since
    /// its last written one.
    Write {
        /// Refusals left out since the last written one.
        unwritten: u64,
    },
    /// Over the budget: count it only. `first` is the first one left out
    /// since the key was last in good standing (log that one).
    Skip {
        /// The first one left out of this episode.
        first: bool,
    },
}

/// Refusals of one key written at once, then per second.
const AUDITED_REFUSALS_BURST: f64 = 30.0;
const AUDITED_REFUSALS_PER_SECOND: f64 = 1.0;

impl RefusalBudget {
    /// Count a refusal of key `key_id`.
    pub fn admit(&self, key_id: &str) -> Audited {
        let Ok(mut keys) = self.keys.lock() else {
            return Audited::Write { unwritten: 0 };
        };
        if keys.len() >= MAX_SOURCES && !keys.contains_key(key_id) {
            keys.retain(|_, (b, unwritten)| {
                b.refill(AUDITED_REFUSALS_PER_SECOND, AUDITED_REFUSALS_BURST);
                b.tokens < AUDITED_REFUSALS_BURST || *unwritten > 0
            });
            if keys.len() >= MAX_SOURCES {
                let drop: Vec<String> = keys.keys().step_by(2).cloned().collect();
                for k in drop {
                    keys.remove(&k);
                }
            }
        }
        let (bucket, unwritten) = keys
            .entry(key_id.to_string())
            .or_insert_with(|| (Bucket::full(AUDITED_REFUSALS_BURST), 0));
        match bucket.take(AUDITED_REFUSALS_PER_SECOND, AUDITED_REFUSALS_BURST, "") {
            Ok(()) => Audited::Write {
                unwritten: std::mem::take(unwritten),
            },
            Err(refused) => {
                *unwritten += 1;
                Audited::Skip {
                    first: refused.first,
                }
            }
        }
    }
}

/// Most failed authentications per second written to the audit log, from
/// all sources together.
const AUDITED_FAILURES_PER_SECOND: f64 = 20.0;

/// What a failed authentication leads to.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Write an audit entry for it.
    pub audit: bool,
    /// The source has failed too often: answer 429.
    pub refused: Option<Refused>,
}

/// The unit failures are counted by: an IPv4 address, or an IPv6 /64 (one
/// host usually owns a whole /64 and could otherwise rotate through it).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let mut segments = v6.segments();
            for s in &mut segments[4..] {
                *s = 0;
            }
            IpAddr::V6(segments.into())
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
    fn refusals_past_a_keys_budget_are_counted_and_reported_with_the_next() {
        let budget = RefusalBudget::default();
        for _ in 0..AUDITED_REFUSALS_BURST as usize {
            assert_eq!(budget.admit("k"), Audited::Write { unwritten: 0 });
        }
        assert_eq!(budget.admit("k"), Audited::Skip { first: true });
        assert_eq!(budget.admit("k"), Audited::Skip { first: false });
        // Another key has its own budget.
        assert_eq!(budget.admit("other"), Audited::Write { unwritten: 0 });
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(budget.admit("k"), Audited::Write { unwritten: 2 });
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
            assert_eq!(limiter.failed(bad).refused, None);
        }
        let failure = limiter.failed(bad);
        let refused = failure.refused.unwrap();
        assert!(refused.retry_after >= 1 && refused.retry_after <= 20);
        assert!(failure.audit, "the first refusal is audited");
        assert!(!limiter.failed(bad).audit, "the next ones are not");
        assert_eq!(limiter.failed(good).refused, None);
        // An IPv6 host cannot rotate through its /64.
        for i in 1..=3 {
            let ip: IpAddr = format!("2001:db8::{i}").parse().unwrap();
            assert_eq!(limiter.failed(ip).refused, None);
        }
        assert!(
            limiter
                .failed("2001:db8::ffff".parse().unwrap())
                .refused
                .is_some()
        );
    }

    #[test]
    fn settings_that_disable_a_limit_are_refused() {
        assert!(LimitSettings::default().validate().is_ok());
        for bad in [f64::NAN, 0.0, -1.0, f64::INFINITY] {
            let s = LimitSettings {
                requests_per_second: bad,
                ..LimitSettings::default()
            };
            assert!(s.validate().is_err(), "{bad}");
        }
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
