//! `memhost serve`: the HTTP server, plugin loading, reload on SIGHUP and on
//! changes in the plugin directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use warp::Filter;

use crate::config::HostConfig;
use crate::data_dir::DataDir;
use crate::plugins::status::PluginStatus;
use crate::plugins::{PluginRegistry, ReloadSummary};
use crate::runtime::{Runtime, RuntimeConfig};

/// What `serve` needs.
pub struct ServeOptions {
    /// The data directory.
    pub data: DataDir,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The configuration.
    pub config: HostConfig,
    /// `--no-auth`: local development only, refused off loopback.
    pub no_auth: bool,
}

/// Build the runtime and plugin registry for a data directory and config.
pub fn plugin_registry(data: &DataDir, config: &HostConfig) -> anyhow::Result<PluginRegistry> {
    let mut settings = config.plugins.clone();
    if settings.dir.is_none() {
        settings.dir = Some(data.plugins());
    }
    let runtime = Runtime::new(&RuntimeConfig {
        pooling: settings.pooling,
        fuel_per_call: settings.fuel_per_call,
        max_memory_mb: settings.max_memory_mb,
        cache_dir: Some(data.component_cache()),
        ..RuntimeConfig::default()
    })?;
    PluginRegistry::new(runtime, settings)
}

/// Reloads the registry and keeps the status file current.
struct Reloader {
    registry: Arc<PluginRegistry>,
    status_path: PathBuf,
    attempts: AtomicU64,
    /// Every reload is an admin action: it goes to the audit log.
    service: crate::service::Service,
}

impl Reloader {
    fn reload(&self) -> Result<ReloadSummary, ReloadSummary> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let (summary, ok) = match self.registry.reload() {
            Ok(s) => (s, true),
            Err(e) => (e.summary, false),
        };
        self.service.record_event(
            crate::audit::Record::by(&crate::auth::Principal::system(), "plugins.reload")
                .outcome(if ok { "ok" } else { "failed" }, Some(summary.to_string())),
        );
        let status = PluginStatus::of(&self.registry, attempt, &summary, ok);
        if let Err(e) = status.write(&self.status_path) {
            tracing::warn!(error = %e, path = %self.status_path.display(), "cannot write plugin status");
        }
        if ok { Ok(summary) } else { Err(summary) }
    }
}

/// Run the server until Ctrl-C or SIGTERM.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    if opts.no_auth && !opts.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve {} without authentication: --no-auth is for local development on a loopback address (127.0.0.1 or ::1). Drop --no-auth and create keys with `memhost keys create`",
            opts.listen
        );
    }
    opts.data.create()?;
    // The sealed store first: a wrong master key refuses to start before
    // anything else happens.
    let data = opts.data.clone();
    let store_options = opts.config.store.options();
    let (store, keyring) =
        tokio::task::spawn_blocking(move || data.open_store_with(&store_options)).await??;
    tracing::info!(master_key = %keyring.fingerprint(), db = %opts.data.db().display(), "store open");
    let registry = Arc::new(plugin_registry(&opts.data, &opts.config)?);
    // Opening may upgrade an older store (blocking writes): off the runtime.
    let service = {
        let (store, registry) = (store.clone(), registry.clone());
        tokio::task::spawn_blocking(move || {
            crate::service::Service::new(store, Arc::new(keyring), registry)
        })
        .await??
    }
    .with_limits(crate::service::Limits {
        namespaces: opts.config.limits.max_namespaces,
        ..crate::service::Limits::default()
    });
    let reloader = Arc::new(Reloader {
        registry: registry.clone(),
        status_path: opts.data.plugin_status(),
        attempts: AtomicU64::new(0),
        service: service.clone(),
    });
    let first = {
        let r = reloader.clone();
        tokio::task::spawn_blocking(move || r.reload()).await?
    };
    // What compiling the plugins left free goes back to the system.
    crate::runtime::trim_allocator();
    match first {
        Ok(summary) => {
            tracing::info!("plugins ready: {summary}");
            // Fail closed is right, but should not be a surprise.
            if !registry
                .snapshot()
                .entries()
                .any(|e| e.info.manifest.kind == crate::plugins::PluginKind::Policy)
            {
                tracing::warn!(
                    "no policy plugin is loaded: every change will be denied until one is (add policy-standard to the plugin directory)"
                );
            }
        }
        Err(summary) => anyhow::bail!(
            "cannot start: plugins failed to load: {}",
            summary
                .failed
                .iter()
                .map(|(id, why)| format!("{id}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
    DataDir::write_atomic(
        &opts.data.pid_file(),
        std::process::id().to_string().as_bytes(),
    )?;

    spawn_sighup_reloader(reloader.clone())?;
    let _watcher = match (registry.settings().watch, registry.settings().dir) {
        (true, Some(dir)) => Some(watch(dir, reloader.clone())?),
        _ => None,
    };

    let health_registry = registry.clone();
    let health = warp::path("health")
        .and(warp::path::end())
        .and(warp::get())
        .map(move || {
            let set = health_registry.snapshot();
            warp::reply::json(&serde_json::json!({
                "status": "ok",
                "version": env!("CARGO_PKG_VERSION"),
                "plugins": { "loaded": set.len(), "generation": set.generation },
            }))
        });
    if opts.no_auth {
        tracing::warn!(
            "AUTHENTICATION IS OFF (--no-auth): every request without a key acts as the local operator with full rights. Local development only; never expose this port"
        );
    } else if !service.has_keys()? {
        tracing::info!(
            "no API keys yet: create one with `memhost keys create --agent <you> --agent-type human --role '*=admin' --data {}`",
            opts.data.root().display()
        );
    }
    spawn_instance_retirement(registry.clone());
    if let Some(label) = store.shared_label() {
        spawn_follower(service.clone(), &store)?;
        tracing::info!(database = %label, "store shared in PostgreSQL: following other hosts' changes");
    }
    for worker in 0..INDEX_WORKERS {
        let indexer = service.clone();
        std::thread::Builder::new()
            .name(format!("memhost-indexer-{worker}"))
            .spawn(move || indexer.run_indexer(worker, INDEX_WORKERS))
            .context("cannot start an indexing thread")?;
    }
    let mut limiter = crate::auth::limits::Limiter::new(opts.config.limits.clone());
    if store.is_shared() {
        // Sign-in guessing, failed authentications and registrations are
        // counted by every host together.
        limiter = limiter.with_shared(Arc::new(crate::service::shared_limits::StoreBuckets::new(
            &service,
        )?));
    }
    let limiter = Arc::new(limiter);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let public_url = opts
        .config
        .server
        .public_url()
        .map_err(anyhow::Error::msg)?;
    let oauth =
        crate::auth::oauth::AuthServer::new(public_url.as_deref(), addr, opts.config.oauth.clone())
            .map_err(|e| anyhow::anyhow!("[oauth] enabled = true, but {e}"))?
            .map(Arc::new);
    if let Some(server) = &oauth {
        tracing::info!(issuer = %server.issuer, resource = %server.resource, "OAuth for MCP clients is on");
    }
    let gate = crate::api::rest::auth::Gate::new(service.clone(), limiter.clone(), opts.no_auth)
        .with_oauth(oauth.clone());
    spawn_expiry_sweep(service.clone(), opts.config.console, oauth.clone());
    let mcp = crate::api::mcp::route(
        service.clone(),
        gate.clone(),
        opts.config.server.mcp_allowed_origins.clone(),
    );
    // Ready once the meaning indexes are loaded: the first questions
    // after a start do not wait for them.
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (s, ready) = (service.clone(), ready.clone());
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            match s.warm_up() {
                Ok(n) => tracing::info!(
                    namespaces = n,
                    took_ms = started.elapsed().as_millis() as u64,
                    "meaning indexes loaded: ready"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "loading the meaning indexes failed; they load on first use: ready")
                }
            }
            ready.store(true, Ordering::Relaxed);
            if let Some(m) = crate::metrics::get() {
                m.ready.set(1);
            }
        });
    }
    let readiness = warp::path("ready")
        .and(warp::path::end())
        .and(warp::get())
        .map(move || {
            let (status, body) = if ready.load(Ordering::Relaxed) {
                (warp::http::StatusCode::OK, serde_json::json!({"status": "ready"}))
            } else {
                (
                    warp::http::StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"status": "starting", "waiting_for": "meaning indexes to load"}),
                )
            };
            warp::Reply::into_response(warp::reply::with_status(warp::reply::json(&body), status))
        });
    if let Some(addr) = &opts.config.server.metrics_listen {
        spawn_metrics_listener(addr, service.clone(), opts.config.server.connections).await?;
    }
    let metrics = crate::api::rest::metrics(service.clone(), gate.clone());
    let console = {
        let r = reloader.clone();
        crate::api::console::routes(
            crate::api::console::Console::new(
                service.clone(),
                opts.config.console,
                public_url.clone(),
                limiter.clone(),
                opts.data.plugin_status(),
                Arc::new(move || r.reload()),
            )
            .with_oauth(oauth.clone()),
        )
    };
    let oauth_routes = match &oauth {
        Some(server) => crate::api::oauth::routes(service.clone(), server.clone(), limiter.clone()),
        None => warp::any()
            .and_then(|| async { Err::<warp::reply::Response, _>(warp::reject::not_found()) })
            .boxed(),
    };
    let routes = warp::path::full()
        .and(
            health
                .map(warp::Reply::into_response)
                .or(readiness)
                .unify()
                .or(metrics)
                .unify()
                .or(mcp)
                .unify()
                .or(console)
                .unify()
                .or(oauth_routes)
                .unify()
                .or(crate::api::rest::routes(service, gate))
                .unify(),
        )
        .map(crate::api::rest::with_allow)
        .with(warp::log::custom(|info| {
        // A sign-in link's token is a credential until used: not in logs.
        let path = if info.path().starts_with("/console/link/") {
            "/console/link/…"
        } else {
            info.path()
        };
        tracing::debug!(method = %info.method(), path, status = info.status().as_u16(), "request");
    }));

    tracing::info!(
        "memhost {} listening on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    crate::api::listener::serve(
        listener,
        routes,
        opts.config.server.connections,
        opts.config.server.trusted_proxies.clone().into(),
        shutdown_signal(),
        Duration::from_secs(10),
    )
    .await;
    let _ = std::fs::remove_file(opts.data.pid_file());
    store.close();
    tracing::info!("memhost stopped");
    Ok(())
}

/// An embedder's warm instance unused this long is dropped: each holds its
/// model, and an idle server should give that memory back.
const INSTANCE_IDLE: Duration = Duration::from_secs(120);

fn spawn_instance_retirement(registry: Arc<PluginRegistry>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INSTANCE_IDLE / 4);
        loop {
            tick.tick().await;
            let set = registry.snapshot();
            let retired: usize = tokio::task::spawn_blocking(move || {
                set.embedders().map(|e| e.retire_idle(INSTANCE_IDLE)).sum()
            })
            .await
            .unwrap_or(0);
            if retired > 0 {
                tracing::debug!(retired, "idle embedder instances dropped");
            }
        }
    });
}

/// Serve `GET /metrics` without a key on `addr`, which must be a private
/// address (a scraper's network), never a public or wildcard one.
async fn spawn_metrics_listener(
    addr: &str,
    service: crate::service::Service,
    connections: crate::api::listener::ConnectionSettings,
) -> anyhow::Result<()> {
    let at: std::net::SocketAddr = addr.parse().with_context(|| {
        format!("[server] metrics_listen \"{addr}\" is not an address like 10.0.0.5:9477")
    })?;
    let private = match at.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback() || ip.is_private(),
        std::net::IpAddr::V6(ip) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
    };
    if !private {
        anyhow::bail!(
            "[server] metrics_listen {at} is not a loopback or private address: /metrics without a key would be open to anyone who reaches it; use a private address, or scrape the main port with a global admin key"
        );
    }
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .with_context(|| format!("cannot listen on {at} for metrics"))?;
    tracing::info!(
        "metrics on http://{}/metrics (no key: keep this address private)",
        listener.local_addr()?
    );
    let route = warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .then(move || crate::api::rest::metrics_reply(service.clone()));
    tokio::spawn(crate::api::listener::serve(
        listener,
        route,
        connections,
        Arc::from(Vec::new()),
        shutdown_signal(),
        Duration::from_secs(1),
    ));
    Ok(())
}

/// Indexing workers: each embeds its share of the queued memories, in
/// batches, on its own warm instance: both cores for a transformer like
/// embed-local, two requests in flight for a remote embedder. Embedders
/// keep one more instance for questions.
const INDEX_WORKERS: usize = 2;

/// How often expired memories are purged from disk (they are invisible to
/// reads from the moment they expire), ended console sessions and spent
/// links deleted, overdue approvals expired and closed ones past retention
/// purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Every how many expiry sweeps rows left by deleted namespaces and
/// earlier index generations are collected (also at the first).
const LEFTOVERS_EVERY: u32 = 60;

/// How long a follower waits for a notification before it looks anyway.
const FOLLOW_POLL: Duration = Duration::from_secs(1);

/// How long the change sequence keeps a batch: a host that stops following
/// for longer reads its vector indexes again.
const CHANGES_KEPT: Duration = Duration::from_secs(3600);

/// A shared store: apply every other host's batch as it commits (woken by
/// its notification, or after [`FOLLOW_POLL`]).
fn spawn_follower(
    service: crate::service::Service,
    store: &crate::store::Store,
) -> anyhow::Result<()> {
    let mut changed = store
        .watch_changes()?
        .context("a shared store has a change sequence")?;
    service.start_following()?;
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            let _ = tokio::time::timeout(FOLLOW_POLL, changed.changed()).await;
            let s = service.clone();
            match tokio::task::spawn_blocking(move || s.follow()).await {
                Ok(Ok(_)) => {
                    if failing {
                        tracing::info!("following other hosts' changes again");
                    }
                    failing = false;
                }
                Ok(Err(e)) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot read other hosts' changes; retrying");
                    }
                    failing = true;
                }
                Err(e) => tracing::warn!(error = %e, "following changes panicked"),
            }
        }
    });
    Ok(())
}

fn spawn_expiry_sweep(
    service: crate::service::Service,
    sessions: crate::auth::sessions::SessionSettings,
    oauth: Option<Arc<crate::auth::oauth::AuthServer>>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_INTERVAL);
        for round in 0u32.. {
            tick.tick().await;
            if round % LEFTOVERS_EVERY == 0 {
                let s = service.clone();
                match tokio::task::spawn_blocking(move || s.collect_leftovers()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "collecting leftover rows failed"),
                    Err(e) => tracing::warn!(error = %e, "collecting leftover rows panicked"),
                }
            }
            let s = service.clone();
            match tokio::task::spawn_blocking(move || {
                s.purge_limits()?;
                s.purge_leases()
            })
            .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "purging full rate-limit buckets failed"),
                Err(e) => tracing::warn!(error = %e, "purging rate-limit buckets panicked"),
            }
            let s = service.clone();
            match tokio::task::spawn_blocking(move || s.prune_changes(CHANGES_KEPT)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "pruning the change sequence failed"),
                Err(e) => tracing::warn!(error = %e, "pruning the change sequence panicked"),
            }
            let s = service.clone();
            match tokio::task::spawn_blocking(move || s.purge_expired()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(purged = n, "expired memories purged"),
                Ok(Err(e)) => tracing::warn!(error = %e, "expiry sweep failed"),
                Err(e) => tracing::warn!(error = %e, "expiry sweep panicked"),
            }
            let s = service.clone();
            match tokio::task::spawn_blocking(move || s.purge_sessions(&sessions)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "purging ended console sessions failed"),
                Err(e) => tracing::warn!(error = %e, "purging ended console sessions panicked"),
            }
            if let Some(server) = oauth.clone() {
                let s = service.clone();
                match tokio::task::spawn_blocking(move || s.purge_oauth(&server)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "purging spent OAuth rows failed"),
                    Err(e) => tracing::warn!(error = %e, "purging spent OAuth rows panicked"),
                }
            }
            let s = service.clone();
            match tokio::task::spawn_blocking(move || s.sweep_approvals()).await {
                Ok(Ok((0, 0))) => {}
                Ok(Ok((expired, purged))) => {
                    tracing::info!(expired, purged, "approvals swept")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "approval sweep failed"),
                Err(e) => tracing::warn!(error = %e, "approval sweep panicked"),
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

fn spawn_sighup_reloader(reloader: Arc<Reloader>) -> anyhow::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading plugins");
            let r = reloader.clone();
            let _ = tokio::task::spawn_blocking(move || r.reload()).await;
        }
    });
    Ok(())
}

/// Reload when files in the plugin directory change, after things settle
/// (a copy of a large .wasm produces many events).
fn watch(dir: PathBuf, reloader: Arc<Reloader>) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
        {
            let _ = tx.send(());
        }
    })
    .context("cannot watch the plugin directory")?;
    watcher
        .watch(&dir, notify::RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait until no event has arrived for 500 ms.
            loop {
                match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            tracing::info!("plugin directory changed: reloading plugins");
            let r = reloader.clone();
            let _ = tokio::task::spawn_blocking(move || r.reload()).await;
        }
    });
    tracing::info!(dir = %dir.display(), "watching plugin directory");
    Ok(watcher)
}
