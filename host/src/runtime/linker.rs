//! The imports every plugin gets: WASI p2 over an empty context, with clock
//! waits cut to the call's deadline, and — for embedders only — `wasi:http`
//! behind the egress allow-list.

use std::time::Duration;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host as MonotonicClock;

use super::{Runtime, StoreState};

/// The WASI clock interface whose waits are bounded. Guests built against
/// any 0.2.x version link to it.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Which outbound capabilities a linker carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imports {
    /// WASI only (redactors, extractors, policies).
    Wasi,
    /// WASI and outbound HTTP (embedders).
    WasiHttp,
}

impl Runtime {
    /// A linker with WASI (and HTTP if asked). The caller adds the plugin
    /// contract's own `host` interface.
    pub fn linker(&self, imports: Imports) -> wasmtime::Result<Linker<StoreState>> {
        let mut linker = Linker::new(self.engine());
        // Rust std guests import wasi:cli/io even when they do nothing with
        // them; the context behind these is empty (see `store.rs`).
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bound_clock_waits(&mut linker)?;
        if imports == Imports::WasiHttp {
            wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)?;
        }
        Ok(linker)
    }
}

/// Epoch interruption stops guest code, not a host call the guest is
/// blocked in: without this, `sleep(1 hour)` would hold a host thread for an
/// hour. Every clock subscription ends by the call's deadline; the guest then
/// resumes and is stopped at its next epoch check.
fn bound_clock_waits(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut cx: StoreContextMut<'_, StoreState>, (nanos,): (u64,)| {
            let wait = cx.data_mut().clamp_wait(Duration::from_nanos(nanos));
            let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
            let pollable: Resource<DynPollable> =
                cx.data_mut().clocks().subscribe_duration(nanos)?;
            Ok((pollable,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut cx: StoreContextMut<'_, StoreState>, (when,): (u64,)| {
            let now = cx.data_mut().clocks().now()?;
            let wait = cx
                .data_mut()
                .clamp_wait(Duration::from_nanos(when.saturating_sub(now)));
            let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
            let pollable: Resource<DynPollable> =
                cx.data_mut().clocks().subscribe_duration(nanos)?;
            Ok((pollable,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
