//! A message as `POST /mcp` reads it, through the real route: the key gate
//! (no-auth, loopback), rmcp's Streamable HTTP transport and memhost's
//! tools over a real encrypted store with no plugins loaded (so every
//! change is refused by the missing policy). Any bytes get an answer — a
//! JSON-RPC result or error, or a problem — never a panic and never a 5xx.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use memhost::api::rest::auth::Gate;
use memhost::auth::limits::{LimitSettings, Limiter};
use memhost::crypto::MasterKey;
use memhost::plugins::{PluginRegistry, PluginSettings};
use memhost::runtime::{Runtime, RuntimeConfig};
use memhost::service::Service;
use memhost::store::keyring::Keyring;
use memhost::store::{Store, StoreOptions};
use warp::filters::BoxedFilter;

struct Server {
    runtime: tokio::runtime::Runtime,
    route: BoxedFilter<(warp::reply::Response,)>,
    _dir: tempfile::TempDir,
}

static SERVER: LazyLock<Server> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(&dir.path().join("db"), &StoreOptions::default()).expect("a store");
    let keyring = Arc::new(Keyring::open(&store, MasterKey::generate()).expect("a keyring"));
    let plugins = Arc::new(
        PluginRegistry::new(
            Runtime::new(&RuntimeConfig::default()).expect("a runtime"),
            PluginSettings::default(),
        )
        .expect("a registry"),
    );
    let service = Service::new(store, keyring, plugins).expect("a service");
    let gate = Gate::new(
        service.clone(),
        Arc::new(Limiter::new(LimitSettings {
            requests_per_second: 1e9,
            burst: u32::MAX,
            concurrent_requests: u32::MAX,
            ..LimitSettings::default()
        })),
        true,
    );
    Server {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime"),
        route: memhost::api::mcp::route(service, gate, Vec::new()),
        _dir: dir,
    }
});

fuzz_target!(|data: &[u8]| {
    let server = &*SERVER;
    let reply = server.runtime.block_on(
        warp::test::request()
            .method("POST")
            .path("/mcp")
            .header("host", "127.0.0.1:7077")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(data.to_vec())
            .reply(&server.route),
    );
    assert!(
        reply.status().as_u16() < 500,
        "{}: {}",
        reply.status(),
        String::from_utf8_lossy(reply.body())
    );
});
