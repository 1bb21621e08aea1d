//! The process's metrics, served in Prometheus' text format by `GET
//! /metrics`. Every layer counts here what it does (the counters and
//! histograms below); what is state — the store's size, the queues, the
//! audit chain — is read when scraped ([`crate::service::Service::observe`]).
//! Labels stay few and bounded: route templates, plugin ids, fixed
//! outcome words; never a namespace, key or memory id.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `memhost_http_requests_total` | counter | `route`, `method`, `status` |
//! | `memhost_http_request_duration_seconds` | histogram | `route`, `method` |
//! | `memhost_operations_total` | counter | `op` (store, update, forget, recall, import), `outcome` |
//! | `memhost_recall_duration_seconds` | histogram | `mode` (hybrid, lexical, vector) |
//! | `memhost_plugin_calls_total` | counter | `plugin`, `kind`, `outcome` (ok, timeout, trap, …) |
//! | `memhost_plugin_call_duration_seconds` | histogram | `plugin`, `kind` |
//! | `memhost_auth_failures_total` | counter | `reason` |
//! | `memhost_rate_limited_total` | counter | — |
//! | `memhost_indexed_total` | counter | — (memories embedded) |
//! | `memhost_index_queue_depth` | gauge | — (memories waiting to be embedded) |
//! | `memhost_index_failed` | gauge | — (memories the embedder failed on) |
//! | `memhost_index_lag_seconds` | gauge | — (how long the queue has not been empty: a bound on the oldest wait; 0 when empty) |
//! | `memhost_approvals` | gauge | `state` |
//! | `memhost_namespaces` | gauge | — |
//! | `memhost_store_map_size_bytes`, `memhost_store_used_bytes`, `memhost_store_readers` | gauge | — |
//! | `memhost_audit_entries` | gauge | — (the chain's length) |
//! | `memhost_last_backup_timestamp_seconds` | gauge | — (0: never) |
//! | `memhost_ready` | gauge | — (1 once warmed up) |
//! | `memhost_build_info` | gauge | `version` |
//! | `process_*` | | the standard process metrics (resident memory, CPU, open files) |

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric of this process.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    operations: IntCounterVec,
    recall_duration: HistogramVec,
    plugin_calls: IntCounterVec,
    plugin_duration: HistogramVec,
    auth_failures: IntCounterVec,
    rate_limited: IntCounter,
    indexed: IntCounter,
    /// Read when scraped.
    pub index_queue: IntGauge,
    /// Read when scraped.
    pub index_failed: IntGauge,
    /// Seconds since the embedding queue was last seen empty.
    pub index_lag: IntGauge,
    /// Read when scraped, by state.
    pub approvals: IntGaugeVec,
    /// Read when scraped.
    pub namespaces: IntGauge,
    /// Read when scraped.
    pub map_size: IntGauge,
    /// Read when scraped.
    pub used: IntGauge,
    /// Read when scraped.
    pub readers: IntGauge,
    /// Read when scraped.
    pub audit_entries: IntGauge,
    /// Read when scraped.
    pub last_backup: IntGauge,
    /// 1 once the server has warmed up.
    pub ready: IntGauge,
}

/// Request latencies: 1 ms to 10 s.
const LATENCY: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Plugin calls: 10 µs to 5 s.
const PLUGIN_LATENCY: &[f64] = &[
    0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let counter =
        |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels);
    let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )
    };
    let gauge = |name: &str, help: &str| IntGauge::new(name, help);
    let m = Metrics {
        http_requests: counter(
            "memhost_http_requests_total",
            "HTTP requests answered, by route template, method and status",
            &["route", "method", "status"],
        )?,
        http_duration: histogram(
            "memhost_http_request_duration_seconds",
            "Time from a request's head to its response's head",
            &["route", "method"],
            LATENCY,
        )?,
        operations: counter(
            "memhost_operations_total",
            "Memory operations through the service, by outcome (ok, duplicate, held, denied, invalid, not_found, error, skipped, expired)",
            &["op", "outcome"],
        )?,
        recall_duration: histogram(
            "memhost_recall_duration_seconds",
            "Recall latency, question embedding included, by mode",
            &["mode"],
            LATENCY,
        )?,
        plugin_calls: counter(
            "memhost_plugin_calls_total",
            "Plugin calls, by plugin, kind and outcome (ok, timeout, memory_limit, out_of_fuel, panic, trap, returned_error, capability_denied, invalid_output, busy, instantiate)",
            &["plugin", "kind", "outcome"],
        )?,
        plugin_duration: histogram(
            "memhost_plugin_call_duration_seconds",
            "Plugin call time inside the sandbox",
            &["plugin", "kind"],
            PLUGIN_LATENCY,
        )?,
        auth_failures: counter(
            "memhost_auth_failures_total",
            "Requests refused for their credential, by reason (missing, malformed, unknown, revoked, expired; console: a failed console sign-in)",
            &["reason"],
        )?,
        rate_limited: IntCounter::new(
            "memhost_rate_limited_total",
            "Requests refused by a rate limit",
        )?,
        indexed: IntCounter::new(
            "memhost_indexed_total",
            "Memories embedded by the indexing workers",
        )?,
        index_queue: gauge(
            "memhost_index_queue_depth",
            "Memories waiting to be embedded, in every namespace",
        )?,
        index_failed: gauge(
            "memhost_index_failed",
            "Memories the embedder could not embed (status failed)",
        )?,
        index_lag: gauge(
            "memhost_index_lag_seconds",
            "Seconds the embedding queue has not been empty, as seen by scrapes: no memory has waited longer (0 when empty)",
        )?,
        approvals: IntGaugeVec::new(
            Opts::new("memhost_approvals", "Approval items, by state"),
            &["state"],
        )?,
        namespaces: gauge("memhost_namespaces", "Namespaces")?,
        map_size: gauge(
            "memhost_store_map_size_bytes",
            "The LMDB map size (address space reserved; grows on demand); 0 on PostgreSQL",
        )?,
        used: gauge(
            "memhost_store_used_bytes",
            "Bytes of the LMDB file in use (PostgreSQL: of the rows table)",
        )?,
        readers: gauge(
            "memhost_store_readers",
            "LMDB reader slots in use (all processes); PostgreSQL: this host's connections",
        )?,
        audit_entries: gauge("memhost_audit_entries", "Length of the audit chain")?,
        last_backup: gauge(
            "memhost_last_backup_timestamp_seconds",
            "When the last backup was written (Unix seconds; 0: never)",
        )?,
        ready: gauge(
            "memhost_ready",
            "1 once the server has loaded its plugins and warmed its indexes",
        )?,
        registry,
    };
    let build_info = IntGaugeVec::new(
        Opts::new("memhost_build_info", "This build of memhost"),
        &["version"],
    )?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    let r = &m.registry;
    r.register(Box::new(build_info))?;
    r.register(Box::new(m.http_requests.clone()))?;
    r.register(Box::new(m.http_duration.clone()))?;
    r.register(Box::new(m.operations.clone()))?;
    r.register(Box::new(m.recall_duration.clone()))?;
    r.register(Box::new(m.plugin_calls.clone()))?;
    r.register(Box::new(m.plugin_duration.clone()))?;
    r.register(Box::new(m.auth_failures.clone()))?;
    r.register(Box::new(m.rate_limited.clone()))?;
    r.register(Box::new(m.indexed.clone()))?;
    r.register(Box::new(m.index_queue.clone()))?;
    r.register(Box::new(m.index_failed.clone()))?;
    r.register(Box::new(m.index_lag.clone()))?;
    r.register(Box::new(m.approvals.clone()))?;
    r.register(Box::new(m.namespaces.clone()))?;
    r.register(Box::new(m.map_size.clone()))?;
    r.register(Box::new(m.used.clone()))?;
    r.register(Box::new(m.readers.clone()))?;
    r.register(Box::new(m.audit_entries.clone()))?;
    r.register(Box::new(m.last_backup.clone()))?;
    r.register(Box::new(m.ready.clone()))?;
    #[cfg(target_os = "linux")]
    r.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(m)
}

static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| match build() {
    Ok(m) => Some(m),
    Err(e) => {
        tracing::error!(error = %e, "metrics cannot be registered; /metrics will be empty");
        None
    }
});

/// The metrics, once registered (None only if registration failed, which
/// the fixed names above never make it).
pub fn get() -> Option<&'static Metrics> {
    METRICS.as_ref()
}

/// An HTTP request answered.
pub fn http(route: &str, method: &str, status: u16, took: Duration) {
    if let Some(m) = get() {
        m.http_requests
            .with_label_values(&[route, method, status_text(status)])
            .inc();
        m.http_duration
            .with_label_values(&[route, method])
            .observe(took.as_secs_f64());
    }
}

fn status_text(status: u16) -> &'static str {
    // The codes this server answers; anything else is its class.
    match status {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        406 => "406",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        503 => "503",
        507 => "507",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// A memory operation's outcome.
pub fn operation(op: &str, outcome: &str) {
    if let Some(m) = get() {
        m.operations.with_label_values(&[op, outcome]).inc();
    }
}

/// A recall answered in `took`.
pub fn recall(mode: &str, took: Duration) {
    if let Some(m) = get() {
        m.recall_duration
            .with_label_values(&[mode])
            .observe(took.as_secs_f64());
    }
}

/// A plugin call that did not succeed, as the console lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    /// Unix ms.
    pub at: i64,
    /// The plugin's id.
    pub plugin: String,
    /// Its kind.
    pub kind: String,
    /// How it failed (`error`, `timeout`, `trap`, …).
    pub outcome: String,
}

/// How many recent plugin failures are kept.
const RECENT_FAILURES: usize = 50;

static FAILURES: std::sync::Mutex<std::collections::VecDeque<PluginFailure>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// The latest plugin failures of this process, newest first.
pub fn recent_plugin_failures() -> Vec<PluginFailure> {
    FAILURES
        .lock()
        .map(|f| f.iter().rev().cloned().collect())
        .unwrap_or_default()
}

/// A plugin call.
pub fn plugin_call(plugin: &str, kind: &str, outcome: &str, took: Duration) {
    if outcome != "ok"
        && let Ok(mut failures) = FAILURES.lock()
    {
        if failures.len() == RECENT_FAILURES {
            failures.pop_front();
        }
        failures.push_back(PluginFailure {
            at: crate::clock::now_ms(),
            plugin: plugin.into(),
            kind: kind.into(),
            outcome: outcome.into(),
        });
    }
    if let Some(m) = get() {
        m.plugin_calls
            .with_label_values(&[plugin, kind, outcome])
            .inc();
        m.plugin_duration
            .with_label_values(&[plugin, kind])
            .observe(took.as_secs_f64());
    }
}

/// A request refused for its credential.
pub fn auth_failure(reason: &str) {
    if let Some(m) = get() {
        m.auth_failures.with_label_values(&[reason]).inc();
    }
}

/// A request refused by a rate limit.
pub fn rate_limited() {
    if let Some(m) = get() {
        m.rate_limited.inc();
    }
}

/// Memories embedded.
pub fn indexed(n: usize) {
    if let Some(m) = get() {
        m.indexed.inc_by(n as u64);
    }
}

/// Everything, in the Prometheus text format (0.0.4).
pub fn render() -> String {
    let Some(m) = get() else {
        return String::new();
    };
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
