//! The typed faces the rest of the host calls: [`Redactor`], [`Extractor`],
//! [`Policy`], [`Embedder`]. Nothing outside `runtime` and `plugins` touches
//! wasmtime.
//!
//! | kind      | instances                                  | on failure (caller's rule)  |
//! |-----------|--------------------------------------------|-----------------------------|
//! | redactor  | fresh store per call from an `InstancePre` | reject the write            |
//! | extractor | fresh store per call                       | skip and log                |
//! | policy    | fresh store per call                       | deny ([`Policy::decide`])   |
//! | embedder  | bounded pool of warm instances, each retired after N calls or any trap | retry, then leave queued |
//!
//! Every call is synchronous and may block for up to the plugin's deadline:
//! call it from a blocking thread (`tokio::task::spawn_blocking`), never
//! from an async task.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use wasmtime::Store;

use super::bindings::PluginError;
use super::bindings::embedder::EmbedderPlugin;
use super::bindings::embedder::EmbedderPluginPre;
use super::bindings::extractor::ExtractorPluginPre;
use super::bindings::policy::PolicyPluginPre;
use super::bindings::redactor::{RedactorPlugin, RedactorPluginPre};
use crate::runtime::{CallError, CallErrorKind, GuestOutput, Runtime, StoreSpec, StoreState};

pub use super::bindings::embedder::exports::memhost::plugin0_1_0::embedder::ModelInfo;
pub use super::bindings::extractor::exports::memhost::plugin0_2_0::extractor::{
    Context as ExtractContext, Entity, EventTime, Extraction, Fact,
};
pub use super::bindings::policy::exports::memhost::plugin0_1_0::policy::{
    Action, ActionKind, Actor, Decision, Outcome, Requirement, Vote,
};
pub use super::bindings::redactor::exports::memhost::plugin0_1_0::redactor::Finding;

type Wasm<T> = wasmtime::Result<T>;

/// Run one call in a fresh store: arm the deadline, instantiate, re-arm,
/// call, drain guest output, classify failures.
fn call_fresh<B, R>(
    runtime: &Runtime,
    spec: &StoreSpec,
    instantiate: impl FnOnce(&mut Store<StoreState>) -> Wasm<B>,
    call: impl FnOnce(&mut Store<StoreState>, &B) -> Wasm<Result<R, PluginError>>,
) -> Result<R, CallError> {
    let timeout = spec.budget.timeout;
    let started = std::time::Instant::now();
    let mut store = runtime.new_store(spec)?;
    runtime.arm_deadline(&mut store, timeout);
    let result = instantiate(&mut store).and_then(|bindings| {
        runtime.arm_deadline(&mut store, timeout);
        call(&mut store, &bindings)
    });
    let output = store.data_mut().drain_output();
    finish(spec, started, result, timeout, &output)
}

/// The outcome of a call that `started`, classified and counted.
fn finish<R>(
    spec: &StoreSpec,
    started: std::time::Instant,
    result: Wasm<Result<R, PluginError>>,
    timeout: Duration,
    output: &GuestOutput,
) -> Result<R, CallError> {
    let outcome = classify(spec, result, timeout, output);
    crate::metrics::plugin_call(
        &spec.identity.id,
        spec.kind,
        match &outcome {
            Ok(_) => "ok",
            Err(e) => e.kind.label(),
        },
        started.elapsed(),
    );
    outcome
}

fn classify<R>(
    spec: &StoreSpec,
    result: Wasm<Result<R, PluginError>>,
    timeout: Duration,
    output: &GuestOutput,
) -> Result<R, CallError> {
    // The host cut a wait short at the deadline: the call ran out of time,
    // whatever the guest did with the rest of it.
    if output.deadline_cut {
        return Err(CallError::new(
            &spec.identity,
            CallErrorKind::Timeout(timeout),
        ));
    }
    // A call that failed after the host refused it something failed
    // because of that refusal: say so, whatever the plugin made of it.
    if let (false, Some(denied)) = (matches!(result, Ok(Ok(_))), &output.denied) {
        return Err(CallError::capability(&spec.identity, denied.clone()));
    }
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(CallError::new(
            &spec.identity,
            CallErrorKind::Returned(e.describe()),
        )),
        Err(e) => {
            let err = CallError::from_wasm(&spec.identity, &e, timeout, &output.stderr);
            tracing::warn!(plugin = %spec.identity.id, version = %spec.identity.version, error = %err.kind.without_words(), "plugin call failed");
            tracing::debug!(plugin = %spec.identity.id, error = %crate::logging::untrusted(&err.kind.to_string(), 1024), "plugin call failed (in its own words)");
            Err(err)
        }
    }
}

fn invalid(spec: &StoreSpec, what: String) -> CallError {
    CallError::new(&spec.identity, CallErrorKind::InvalidOutput(what))
}

/// A loaded redactor.
pub struct Redactor {
    pub(crate) runtime: Runtime,
    pub(crate) spec: StoreSpec,
    pub(crate) pre: RedactorPluginPre<StoreState>,
}

impl Redactor {
    /// Sensitive spans in `text`. Spans are checked: each lies inside the
    /// text on character boundaries; otherwise the call fails with
    /// [`CallErrorKind::InvalidOutput`].
    pub fn redact(&self, text: &str) -> Result<Vec<Finding>, CallError> {
        let findings = call_fresh(
            &self.runtime,
            &self.spec,
            |store| self.pre.instantiate(store),
            |store, b| b.memhost_plugin0_1_0_redactor().call_redact(store, text),
        )?;
        check_findings(&self.spec, text, findings)
    }

    /// A session that keeps one instance for several calls — for redacting
    /// the items of one batch, where a fresh store per item would be waste.
    /// Never share a session between tenants: instance state persists.
    pub fn session(&self) -> Result<RedactorSession<'_>, CallError> {
        let timeout = self.spec.budget.timeout;
        let mut store = self.runtime.new_store(&self.spec)?;
        self.runtime.arm_deadline(&mut store, timeout);
        match self.pre.instantiate(&mut store) {
            Ok(bindings) => Ok(RedactorSession {
                redactor: self,
                store,
                bindings,
            }),
            Err(e) => {
                let out = store.data_mut().drain_output();
                Err(CallError::from_wasm(
                    &self.spec.identity,
                    &e,
                    timeout,
                    &out.stderr,
                ))
            }
        }
    }
}

/// One redactor instance reused across calls; see [`Redactor::session`].
pub struct RedactorSession<'a> {
    redactor: &'a Redactor,
    store: Store<StoreState>,
    bindings: RedactorPlugin,
}

impl RedactorSession<'_> {
    /// Like [`Redactor::redact`], on this session's instance. After a trap
    /// the instance is replaced before the next call.
    pub fn redact(&mut self, text: &str) -> Result<Vec<Finding>, CallError> {
        let r = self.redactor;
        let timeout = r.spec.budget.timeout;
        let started = std::time::Instant::now();
        r.runtime.arm_deadline(&mut self.store, timeout);
        let result = self
            .bindings
            .memhost_plugin0_1_0_redactor()
            .call_redact(&mut self.store, text);
        let output = self.store.data_mut().drain_output();
        if result.is_err() {
            // After a trap an instance cannot be entered again.
            if let Ok(fresh) = r.session() {
                self.store = fresh.store;
                self.bindings = fresh.bindings;
            }
        }
        let findings = finish(&r.spec, started, result, timeout, &output)?;
        check_findings(&r.spec, text, findings)
    }
}

/// Each finding must be a span of `text` on character boundaries.
fn check_findings(
    spec: &StoreSpec,
    text: &str,
    findings: Vec<Finding>,
) -> Result<Vec<Finding>, CallError> {
    for f in &findings {
        let (start, end) = (f.start as usize, f.end as usize);
        if start > end
            || end > text.len()
            || !text.is_char_boundary(start)
            || !text.is_char_boundary(end)
        {
            return Err(invalid(
                spec,
                format!(
                    "finding {start}..{end} ({}) is not a span of the {}-byte text",
                    f.label,
                    text.len()
                ),
            ));
        }
    }
    Ok(findings)
}

/// Apply findings to `text`: each span becomes its replacement. Overlapping
/// findings are merged, keeping the earliest-starting (then the longest).
pub fn apply_findings(text: &str, findings: &[Finding]) -> String {
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
    let mut out = String::with_capacity(text.len());
    let mut pos = 0usize;
    for f in sorted {
        let (start, end) = (f.start as usize, f.end as usize);
        if start < pos || end > text.len() || start > end {
            continue;
        }
        let (Some(before), Some(_)) = (text.get(pos..start), text.get(start..end)) else {
            continue;
        };
        out.push_str(before);
        out.push_str(&f.replacement);
        pos = end;
    }
    out.push_str(text.get(pos..).unwrap_or(""));
    out
}

/// A loaded extractor.
pub struct Extractor {
    pub(crate) runtime: Runtime,
    pub(crate) spec: StoreSpec,
    pub(crate) pre: ExtractorPre,
}

/// An extractor's contract: 0.1 takes text only and finds no times.
pub(crate) enum ExtractorPre {
    V01(super::bindings::extractor_v01::ExtractorPluginPre<StoreState>),
    V02(ExtractorPluginPre<StoreState>),
}

impl Extractor {
    /// Entities, facts, tags and times in `text`, said at `context`.
    pub fn extract(&self, text: &str, context: ExtractContext) -> Result<Extraction, CallError> {
        match &self.pre {
            ExtractorPre::V02(pre) => call_fresh(
                &self.runtime,
                &self.spec,
                |store| pre.instantiate(store),
                |store, b| {
                    b.memhost_plugin0_2_0_extractor()
                        .call_extract(store, text, context)
                },
            ),
            ExtractorPre::V01(pre) => call_fresh(
                &self.runtime,
                &self.spec,
                |store| pre.instantiate(store),
                |store, b| b.memhost_plugin0_1_0_extractor().call_extract(store, text),
            )
            .map(|x| Extraction {
                entities: x
                    .entities
                    .into_iter()
                    .map(|e| Entity {
                        name: e.name,
                        kind: e.kind,
                    })
                    .collect(),
                facts: x
                    .facts
                    .into_iter()
                    .map(|f| Fact {
                        subject: f.subject,
                        predicate: f.predicate,
                        object: f.object,
                    })
                    .collect(),
                tags: x.tags,
                event_times: Vec::new(),
            }),
        }
    }
}

/// A loaded policy.
pub struct Policy {
    pub(crate) runtime: Runtime,
    pub(crate) spec: StoreSpec,
    pub(crate) pre: PolicyPluginPre<StoreState>,
}

impl Policy {
    /// Ask the policy about `action`.
    pub fn evaluate(&self, action: &Action) -> Result<Decision, CallError> {
        call_fresh(
            &self.runtime,
            &self.spec,
            |store| self.pre.instantiate(store),
            |store, b| b.memhost_plugin0_1_0_policy().call_evaluate(store, action),
        )
    }

    /// Count `votes` on a pending `action`.
    pub fn tally(&self, action: &Action, votes: &[Vote]) -> Result<Outcome, CallError> {
        call_fresh(
            &self.runtime,
            &self.spec,
            |store| self.pre.instantiate(store),
            |store, b| {
                b.memhost_plugin0_1_0_policy()
                    .call_tally(store, action, votes)
            },
        )
    }

    /// [`Policy::evaluate`], failing closed: any error is a denial that
    /// names the plugin and the cause.
    pub fn decide(&self, action: &Action) -> Decision {
        self.evaluate(action).unwrap_or_else(|e| {
            tracing::warn!(target: "audit", event = "policy.failed_closed", error = %e, "policy failed; denying");
            Decision::Deny(format!("policy unavailable, denied for safety ({e})"))
        })
    }
}

/// A warm embedder instance.
struct Warm {
    store: Store<StoreState>,
    bindings: EmbedderPlugin,
    calls: u64,
    /// When it was last handed back.
    idle_since: std::time::Instant,
}

struct PoolState {
    idle: Vec<Warm>,
    live: u32,
    /// Instances held by background work (indexing).
    background: u32,
    /// Questions waiting for an instance: background work waits for them.
    questions_waiting: u32,
}

/// Who is waiting for an embedding: a question on the request path, or
/// indexing in the background. With two or more warm instances, background
/// work never holds the last one, so a question never waits behind a bulk
/// import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A question, on the request path.
    Question,
    /// Stored texts, off the request path.
    Background,
}

/// A loaded embedder with its pool of warm instances.
pub struct Embedder {
    pub(crate) runtime: Runtime,
    pub(crate) spec: StoreSpec,
    pub(crate) pre: EmbedderPluginPre<StoreState>,
    pub(crate) model: ModelInfo,
    pub(crate) max_instances: u32,
    pub(crate) max_calls: u64,
    pool: Mutex<PoolState>,
    returned: Condvar,
}

/// How long a caller waits for a free warm instance before giving up.
const POOL_WAIT: Duration = Duration::from_secs(30);

impl Embedder {
    pub(crate) fn new(
        runtime: Runtime,
        spec: StoreSpec,
        pre: EmbedderPluginPre<StoreState>,
        max_instances: u32,
        max_calls: u64,
    ) -> Result<Embedder, CallError> {
        let mut embedder = Embedder {
            runtime,
            spec,
            pre,
            model: ModelInfo {
                id: String::new(),
                dimensions: 0,
                max_batch: 0,
            },
            max_instances: max_instances.max(1),
            max_calls: max_calls.max(1),
            pool: Mutex::new(PoolState {
                idle: Vec::new(),
                live: 0,
                background: 0,
                questions_waiting: 0,
            }),
            returned: Condvar::new(),
        };
        let model = embedder.with_instance(Priority::Question, |store, b| {
            b.memhost_plugin0_1_0_embedder().call_model(store)
        })?;
        // Instances are made on first use: an embedder nobody's namespace
        // calls costs no memory (its model is loaded in each instance).
        embedder.retire_idle(Duration::ZERO);
        if model.dimensions == 0 || model.max_batch == 0 || model.id.trim().is_empty() {
            return Err(invalid(
                &embedder.spec,
                format!(
                    "model() must give an id, dimensions > 0 and max-batch > 0, got {:?}",
                    model
                ),
            ));
        }
        embedder.model = model;
        Ok(embedder)
    }

    /// The model: id, dimensions, largest batch.
    pub fn model(&self) -> &ModelInfo {
        &self.model
    }

    /// Instances currently alive (idle or in use).
    pub fn live_instances(&self) -> u32 {
        self.pool.lock().map(|p| p.live).unwrap_or(0)
    }

    /// Drop the warm instances idle for at least `after` (their memory —
    /// the model, loaded in each — goes back to the system); returns how
    /// many. The next call makes a new one.
    pub fn retire_idle(&self, after: Duration) -> usize {
        let retired: Vec<Warm> = match self.pool.lock() {
            Ok(mut pool) => {
                let (old, keep): (Vec<Warm>, Vec<Warm>) = std::mem::take(&mut pool.idle)
                    .into_iter()
                    .partition(|w| w.idle_since.elapsed() >= after);
                pool.idle = keep;
                pool.live = pool.live.saturating_sub(old.len() as u32);
                old
            }
            Err(_) => return 0,
        };
        let n = retired.len();
        // Dropped outside the lock: freeing a large memory takes a while.
        drop(retired);
        if n > 0 {
            self.returned.notify_all();
        }
        n
    }

    /// One vector per text, in order. Batches larger than the model's
    /// `max-batch` are split. Each vector is checked to have the model's
    /// dimensions and only finite values.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, CallError> {
        self.embed_as(texts, Priority::Question)
    }

    /// [`Embedder::embed`] for background work: it leaves one warm
    /// instance to questions (when there are two or more).
    pub fn embed_in_background(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, CallError> {
        self.embed_as(texts, Priority::Background)
    }

    fn embed_as(&self, texts: &[String], priority: Priority) -> Result<Vec<Vec<f32>>, CallError> {
        let batch = self.model.max_batch.max(1) as usize;
        // Texts of like length go in one call: a model pads a batch to its
        // longest text, so mixing a long text with short ones costs as if
        // every one were long.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let sorted: Vec<String> = order.iter().map(|&i| texts[i].clone()).collect();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for (n, chunk) in sorted.chunks(batch).enumerate() {
            let vectors = self.with_instance(priority, |store, b| {
                b.memhost_plugin0_1_0_embedder().call_embed(store, chunk)
            })?;
            if vectors.len() != chunk.len() {
                return Err(invalid(
                    &self.spec,
                    format!("{} vectors for {} texts", vectors.len(), chunk.len()),
                ));
            }
            for v in &vectors {
                if v.len() != self.model.dimensions as usize {
                    return Err(invalid(
                        &self.spec,
                        format!(
                            "a vector of {} dimensions from model {} which declares {}",
                            v.len(),
                            self.model.id,
                            self.model.dimensions
                        ),
                    ));
                }
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(invalid(
                        &self.spec,
                        "a vector with NaN or infinite values".into(),
                    ));
                }
            }
            for (k, v) in vectors.into_iter().enumerate() {
                if let Some(slot) = order.get(n * batch + k).and_then(|&i| out.get_mut(i)) {
                    *slot = v;
                }
            }
        }
        Ok(out)
    }

    /// Run `call` on a warm instance: take an idle one or make one (up to
    /// the pool size, else wait), and put it back unless it trapped or has
    /// served its calls.
    fn with_instance<R>(
        &self,
        priority: Priority,
        call: impl FnOnce(&mut Store<StoreState>, &EmbedderPlugin) -> Wasm<Result<R, PluginError>>,
    ) -> Result<R, CallError> {
        let timeout = self.spec.budget.timeout;
        let mut warm = self.acquire(priority)?;
        let started = std::time::Instant::now();
        self.runtime.arm_deadline(&mut warm.store, timeout);
        let result = call(&mut warm.store, &warm.bindings);
        warm.calls += 1;
        let output = warm.store.data_mut().drain_output();
        // After a trap an instance cannot be entered again: drop it.
        let healthy = result.is_ok() && warm.calls < self.max_calls;
        self.release(warm, healthy, priority);
        finish(&self.spec, started, result, timeout, &output)
    }

    fn acquire(&self, priority: Priority) -> Result<Warm, CallError> {
        let busy = || {
            CallError::new(
                &self.spec.identity,
                CallErrorKind::Busy(format!("all {} warm instances in use", self.max_instances)),
            )
        };
        let background = priority == Priority::Background;
        // Background work may hold all but one instance (all of one), and
        // takes none while a question waits: with one instance, a question
        // waits for at most the call in progress, not the import's queue.
        let background_cap = self.max_instances.saturating_sub(1).max(1);
        let mut pool = self.pool.lock().map_err(|_| busy())?;
        let mut waiting = false;
        let got = loop {
            let may = if background {
                pool.background < background_cap && pool.questions_waiting == 0
            } else {
                true
            };
            if may {
                if let Some(warm) = pool.idle.pop() {
                    pool.background += u32::from(background);
                    break Ok(Some(warm));
                }
                if pool.live < self.max_instances {
                    pool.live += 1;
                    pool.background += u32::from(background);
                    break Ok(None);
                }
            }
            if !background && !waiting {
                waiting = true;
                pool.questions_waiting += 1;
            }
            let (guard, wait) = match self.returned.wait_timeout(pool, POOL_WAIT) {
                Ok(woken) => woken,
                // A poisoned pool only happens after a panic elsewhere; the
                // waiting count no longer matters then.
                Err(_) => return Err(busy()),
            };
            pool = guard;
            if wait.timed_out() {
                break Err(busy());
            }
        };
        if waiting {
            pool.questions_waiting = pool.questions_waiting.saturating_sub(1);
            // Background work held back for this question may go on.
            self.returned.notify_all();
        }
        drop(pool);
        match got? {
            Some(warm) => Ok(warm),
            None => self
                .instantiate()
                .inspect_err(|_| self.release_slot(priority)),
        }
    }

    fn instantiate(&self) -> Result<Warm, CallError> {
        let timeout = self.spec.budget.timeout;
        let mut store = self.runtime.new_store(&self.spec)?;
        self.runtime.arm_deadline(&mut store, timeout);
        match self.pre.instantiate(&mut store) {
            Ok(bindings) => Ok(Warm {
                store,
                bindings,
                calls: 0,
                idle_since: std::time::Instant::now(),
            }),
            Err(e) => {
                let out = store.data_mut().drain_output();
                Err(CallError::from_wasm(
                    &self.spec.identity,
                    &e,
                    timeout,
                    &out.stderr,
                ))
            }
        }
    }

    fn release(&self, mut warm: Warm, healthy: bool, priority: Priority) {
        if healthy && let Ok(mut pool) = self.pool.lock() {
            warm.idle_since = std::time::Instant::now();
            pool.idle.push(warm);
            if priority == Priority::Background {
                pool.background = pool.background.saturating_sub(1);
            }
            // Every waiter looks again: the one woken may be background
            // work that must leave this instance to a question.
            self.returned.notify_all();
            return;
        }
        drop(warm);
        self.release_slot(priority);
    }

    fn release_slot(&self, priority: Priority) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.live = pool.live.saturating_sub(1);
            if priority == Priority::Background {
                pool.background = pool.background.saturating_sub(1);
            }
        }
        self.returned.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(start: u32, end: u32, r: &str) -> Finding {
        Finding {
            start,
            end,
            label: "x".into(),
            replacement: r.into(),
        }
    }

    #[test]
    fn findings_are_applied_and_overlaps_merged() {
        let text = "mail ada@example.com or call 555-0100";
        let out = apply_findings(
            text,
            &[f(29, 37, "[PHONE]"), f(5, 20, "[EMAIL]"), f(9, 16, "[X]")],
        );
        assert_eq!(out, "mail [EMAIL] or call [PHONE]");
        assert_eq!(apply_findings("abc", &[]), "abc");
    }
}
