//! The one place a `wasmtime::Store` is made, and the state it carries.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::egress::{EgressHooks, EgressPolicy};
use super::limits::MemoryCap;
use super::output::CapturedOutput;
use super::{CallError, EPOCH_TICK, Runtime};

/// Who a store runs: used in every log line and error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginIdentity {
    /// The plugin id from its manifest.
    pub id: String,
    /// The plugin version from its manifest.
    pub version: String,
}

impl std::fmt::Display for PluginIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin \"{}\" {}", self.id, self.version)
    }
}

/// Time and memory a plugin may use per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBudget {
    /// Wall-clock deadline for one call.
    pub timeout: Duration,
    /// Cap on the plugin's linear memory, in bytes.
    pub memory_bytes: usize,
}

/// Everything that shapes a plugin's stores: its identity, budget and the
/// effective grants. Built once per loaded plugin.
#[derive(Debug, Clone)]
pub struct StoreSpec {
    /// Who runs.
    pub identity: PluginIdentity,
    /// Its kind's name (`redactor`, …), for metrics.
    pub kind: &'static str,
    /// Per-call limits.
    pub budget: CallBudget,
    /// Configuration values the plugin may read (already the intersection of
    /// what it asked for and what the operator granted).
    pub config: Arc<BTreeMap<String, String>>,
    /// Read-only directories, as (host path, guest path).
    pub read_only_dirs: Vec<(PathBuf, String)>,
    /// Where outbound HTTP may go; `None` for kinds that cannot make calls.
    pub egress: Option<Arc<EgressPolicy>>,
}

/// What a call left behind besides its result: what the guest printed and
/// whether the host refused it something.
#[derive(Debug, Default, Clone)]
pub struct GuestOutput {
    /// Bytes written to stdout (truncated).
    pub stdout: String,
    /// Bytes written to stderr (truncated).
    pub stderr: String,
    /// The first capability the host denied during the call, if any.
    pub denied: Option<String>,
    /// A host-side wait was cut short because the deadline arrived: the
    /// call ran out of time even if the guest then returned.
    pub deadline_cut: bool,
}

/// The data of every plugin store.
pub struct StoreState {
    pub(crate) identity: PluginIdentity,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) limits: MemoryCap,
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: EgressHooks,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    /// When the current call must be over; host-side waits are cut to it.
    deadline: Option<Instant>,
    deadline_cut: bool,
    /// `host.log` lines written during the current call.
    pub(crate) log_lines: u32,
    /// Capabilities refused during the current call (shared with the
    /// egress hooks, which run on another task).
    denied: Arc<Mutex<Option<String>>>,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl StoreState {
    /// Take what the guest printed since the last call, and log it with the
    /// plugin's id.
    pub(crate) fn drain_output(&mut self) -> GuestOutput {
        let out = GuestOutput {
            stdout: self.stdout.take(),
            stderr: self.stderr.take(),
            denied: self.denied.lock().ok().and_then(|mut d| d.take()),
            deadline_cut: std::mem::take(&mut self.deadline_cut),
        };
        self.log_lines = 0;
        // At debug only: what a plugin prints may quote the text it was
        // given, and memory text does not belong in the host's log.
        for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                tracing::debug!(
                    target: "memhost::plugin",
                    plugin = %self.identity.id,
                    version = %self.identity.version,
                    stream,
                    "{}",
                    crate::logging::untrusted(line, 2048)
                );
            }
        }
        out
    }

    /// How long a host-side wait (a clock subscription, an HTTP response)
    /// may last: never past the call's deadline, so a guest cannot hide
    /// from epoch interruption inside a host call.
    pub(crate) fn clamp_wait(&mut self, wait: Duration) -> Duration {
        let Some(deadline) = self.deadline else {
            return wait;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if wait > left {
            self.deadline_cut = true;
        }
        wait.min(left)
    }
}

impl Runtime {
    /// Create a store for one plugin: empty WASI context (no env, no args,
    /// no sockets, no stdin; stdout/stderr captured for `tracing`; only the
    /// granted read-only directories), the memory cap, and fuel if enabled.
    ///
    /// No guest code can run in it until [`Runtime::arm_deadline`] is called.
    pub fn new_store(&self, spec: &StoreSpec) -> Result<Store<StoreState>, CallError> {
        let stdout = CapturedOutput::default();
        let stderr = CapturedOutput::default();
        let denied = Arc::new(Mutex::new(None));
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (host, guest) in &spec.read_only_dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly)
                .map_err(|e| {
                    CallError::capability(
                        &spec.identity,
                        format!("cannot open granted directory {}: {e}", host.display()),
                    )
                })?;
        }
        let state = StoreState {
            identity: spec.identity.clone(),
            config: spec.config.clone(),
            limits: MemoryCap::new(spec.budget.memory_bytes),
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: EgressHooks::new(spec.identity.clone(), spec.egress.clone(), denied.clone()),
            stdout,
            stderr,
            deadline: None,
            deadline_cut: false,
            log_lines: 0,
            denied,
        };
        let mut store = Store::new(self.engine(), state);
        store.limiter(|s| &mut s.limits);
        // With epoch interruption on, a fresh store's deadline is "now": any
        // guest code traps until `arm_deadline` sets a real one.
        store.set_epoch_deadline(0);
        store.epoch_deadline_trap();
        Ok(store)
    }

    /// Arm the deadline and refill fuel. Call this right before entering the
    /// guest (instantiation or an export call), never earlier.
    pub fn arm_deadline(&self, store: &mut Store<StoreState>, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        store.data_mut().deadline = Some(deadline);
        store.data_mut().hooks.set_deadline(deadline);
        let ticks = timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()).max(1);
        // +1: the current tick may be about to end.
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX / 2) + 1);
        if let Some(fuel) = self.fuel_per_call() {
            // Fuel is only consumed when enabled, and then it is always set:
            // a store left at zero would trap at once.
            let _ = store.set_fuel(fuel);
        }
    }
}
