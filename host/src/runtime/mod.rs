//! The WebAssembly runtime: the process's one `wasmtime::Engine`, its epoch
//! ticker, per-call stores with their limits, the precompile cache and the
//! egress allow-list.
//!
//! This module narrows wasmtime to what memhost needs and must never know
//! what a memory is; `crate::plugins` builds the plugin kinds on top of it.

mod cache;
pub mod egress;
mod error;
mod limits;
mod linker;
mod outbound;
pub use outbound::fetch_public;
mod output;
mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Bytes of each pooled memory and table slot kept resident between
/// instances (see `Runtime::new`).
const KEEP_RESIDENT: usize = 2 << 20;

pub use cache::{CacheOutcome, ComponentCache, trim_allocator};
pub use error::{CallError, CallErrorKind};
pub use limits::MemoryCapExceeded;
pub use linker::Imports;
pub use store::{CallBudget, GuestOutput, PluginIdentity, StoreSpec, StoreState};

/// How often the epoch ticker advances the engine's epoch. Deadlines are
/// rounded up to whole ticks, so a plugin is stopped at most one tick late.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Settings for the [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Use the pooling instance allocator (faster fresh stores). If the
    /// probe fails (for instance under a tight virtual-memory ulimit) the
    /// runtime falls back to on-demand allocation and says so.
    pub pooling: bool,
    /// Fuel per call, if fuel metering is enabled. `None` disables it.
    pub fuel_per_call: Option<u64>,
    /// The largest memory any plugin may be granted, in MiB. Sizes the pool.
    pub max_memory_mb: u64,
    /// How many plugin instances may be alive at once (pool size).
    pub max_instances: u32,
    /// Where precompiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            pooling: true,
            fuel_per_call: None,
            max_memory_mb: 1024,
            max_instances: 128,
            cache_dir: None,
        }
    }
}

/// Errors building the runtime or compiling a component.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be created with the given settings.
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    /// The ticker thread could not be started.
    #[error("cannot start the epoch ticker thread: {0}")]
    Ticker(std::io::Error),
    /// A component failed to compile or load.
    #[error("cannot compile {what}: {reason}")]
    Compile {
        /// What was being compiled (plugin id and version, or a path).
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The precompile cache directory could not be used.
    #[error("precompile cache {path}: {reason}")]
    Cache {
        /// The cache directory.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
}

/// The process-wide wasm runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    pooling: bool,
    fuel_per_call: Option<u64>,
    cache: Option<ComponentCache>,
    ticks: Arc<AtomicU64>,
}

impl Runtime {
    /// Create the engine (component model, epoch interruption, optional
    /// fuel, pooling with fallback) and start its epoch ticker.
    pub fn new(config: &RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let mut base = Config::new();
        base.wasm_component_model(true);
        // Every store gets a deadline before any guest code runs (see
        // `store.rs`); without epoch interruption a loop could never be stopped.
        base.epoch_interruption(true);
        base.consume_fuel(config.fuel_per_call.is_some());

        let (engine, pooling) = if config.pooling {
            let mut pooled = base.clone();
            let mut pool = PoolingAllocationConfig::default();
            let max_bytes =
                usize::try_from(config.max_memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
            pool.total_component_instances(config.max_instances)
                .total_core_instances(config.max_instances.saturating_mul(4))
                .total_memories(config.max_instances.saturating_mul(2))
                .total_tables(config.max_instances.saturating_mul(4))
                .max_memory_size(max_bytes)
                // A slot's first pages are zeroed by hand when it is reused
                // instead of given back with madvise: fresh stores per call
                // (a policy on every write) from many threads otherwise
                // serialise on the process's memory map, and so does every
                // LMDB page fault with them.
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(KEEP_RESIDENT);
            pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
            match Engine::new(&pooled) {
                Ok(engine) => (engine, true),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "pooling allocator unavailable here; falling back to on-demand instance allocation"
                    );
                    (
                        Engine::new(&base).map_err(|e| RuntimeError::Engine(e.to_string()))?,
                        false,
                    )
                }
            }
        } else {
            (
                Engine::new(&base).map_err(|e| RuntimeError::Engine(e.to_string()))?,
                false,
            )
        };

        let ticks = Arc::new(AtomicU64::new(0));
        start_ticker(&engine, ticks.clone())?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(ComponentCache::open(dir, &engine)?),
            None => None,
        };
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                pooling,
                fuel_per_call: config.fuel_per_call,
                cache,
                ticks,
            }),
        })
    }

    /// The engine. Only `crate::plugins` uses it, to build linkers.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Whether the pooling allocator is in use.
    pub fn uses_pooling(&self) -> bool {
        self.inner.pooling
    }

    /// Whether fuel metering is on.
    pub fn fuel_per_call(&self) -> Option<u64> {
        self.inner.fuel_per_call
    }

    /// How many times the epoch ticker has advanced the epoch. Grows about
    /// once per [`EPOCH_TICK`] for as long as the runtime lives.
    pub fn ticks(&self) -> u64 {
        self.inner.ticks.load(Ordering::Relaxed)
    }

    /// Compile `wasm` into a component, or load it from the precompile cache.
    pub fn compile(
        &self,
        what: &str,
        wasm: &[u8],
    ) -> Result<(Component, CacheOutcome), RuntimeError> {
        match &self.inner.cache {
            Some(cache) => cache.load_or_compile(&self.inner.engine, what, wasm),
            None => Component::new(&self.inner.engine, wasm)
                .map(|c| (c, CacheOutcome::Disabled))
                .map_err(|e| RuntimeError::Compile {
                    what: what.to_string(),
                    reason: format!("{e:#}"),
                }),
        }
    }
}

/// Advance the epoch every [`EPOCH_TICK`] until the engine is dropped.
fn start_ticker(engine: &Engine, ticks: Arc<AtomicU64>) -> Result<(), RuntimeError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("memhost-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                // Holding only a weak reference lets the engine (and this
                // thread) go away when the last runtime handle is dropped.
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        })
        .map(|_| ())
        .map_err(RuntimeError::Ticker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticker_really_advances_the_epoch() {
        let rt = Runtime::new(&RuntimeConfig::default()).unwrap();
        let before = rt.ticks();
        std::thread::sleep(EPOCH_TICK * 10);
        assert!(rt.ticks() >= before + 3, "ticker did not run");
    }

    #[test]
    fn pooling_falls_back_when_the_pool_cannot_be_reserved() {
        // An absurd pool (far beyond the address space) must not stop the
        // host from starting.
        let rt = Runtime::new(&RuntimeConfig {
            max_memory_mb: u64::MAX / (1 << 20),
            max_instances: u32::MAX / 8,
            ..RuntimeConfig::default()
        })
        .unwrap();
        assert!(!rt.uses_pooling());
    }
}
