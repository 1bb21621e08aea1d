//! The per-store memory cap.

use wasmtime::ResourceLimiter;

/// Returned (as a trap) when a plugin asks for more memory than its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {cap} bytes exceeded (asked for {requested} bytes)")]
pub struct MemoryCapExceeded {
    /// The cap, in bytes.
    pub cap: usize,
    /// The total the plugin asked for, in bytes.
    pub requested: usize,
}

/// Caps the total linear memory of one store; a grow past the cap traps
/// (rather than returning -1 to the guest, which Rust guests turn into an
/// abort anyway) so the error names the real cause.
pub(crate) struct MemoryCap {
    cap: usize,
    used: usize,
}

/// Enough for any plugin we know of; stops table and instance bombs.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 8;

impl MemoryCap {
    pub(crate) fn new(cap: usize) -> Self {
        MemoryCap { cap, used: 0 }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let requested = self.used.saturating_sub(current).saturating_add(desired);
        if requested > self.cap {
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                cap: self.cap,
                requested,
            }));
        }
        self.used = requested;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}
