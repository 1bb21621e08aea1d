//! Accepting connections: how many at once, how long each may take, and
//! the client's address for the routes. What a client without a key can
//! make the server hold is decided here.
//!
//! | bound | default | what happens |
//! |---|---|---|
//! | `max_connections` | 1024 | past it the server stops accepting (the kernel queues new connections) and logs it once per episode |
//! | `header_timeout_seconds` | 10 | a request's headers must arrive within this long of the connection opening, or of the previous response; else the connection is closed |
//! | `keep_alive_seconds` | 5 | a connection that sends nothing after a response is closed after this long (at most the header timeout) |
//! | `body_timeout_seconds` | 30 | a request's body must arrive whole within this long of its headers; else 408 and the connection is closed |
//!
//! HTTP/1.1 only: TLS and HTTP/2 belong to the proxy in front.
//!
//! The client's address is the TCP peer's — unless the peer is one of
//! `[server] trusted_proxies`: then it is the nearest address in
//! `X-Forwarded-For` that is not a trusted proxy (each proxy appends the
//! address it saw, so the entries a client wrote itself come first and
//! are never taken while a proxy's own entry follows).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::logging::Sampled;

/// The connection bounds, `[server.connections]` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionSettings {
    /// Connections served at once.
    pub max_connections: usize,
    /// Seconds for a request's headers to arrive.
    pub header_timeout_seconds: f64,
    /// Seconds an idle connection is kept open after a response.
    pub keep_alive_seconds: f64,
    /// Seconds for a request's body to arrive, from its headers.
    pub body_timeout_seconds: f64,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            max_connections: 1024,
            header_timeout_seconds: 10.0,
            keep_alive_seconds: 5.0,
            body_timeout_seconds: 30.0,
        }
    }
}

impl ConnectionSettings {
    /// Refuse bounds that would disable a bound or refuse every request.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("[server.connections] max_connections must be at least 1".into());
        }
        for (name, v) in [
            ("header_timeout_seconds", self.header_timeout_seconds),
            ("keep_alive_seconds", self.keep_alive_seconds),
            ("body_timeout_seconds", self.body_timeout_seconds),
        ] {
            if !(v.is_finite() && (0.05..=3600.0).contains(&v)) {
                return Err(format!(
                    "[server.connections] {name} must be between 0.05 and 3600 seconds"
                ));
            }
        }
        Ok(())
    }
}

/// The client's address, in each request's extensions (read it with
/// `warp::ext::optional::<ClientAddr>()`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The client a request comes from: `peer`, or when `peer` is a trusted
/// proxy, the nearest untrusted address in `X-Forwarded-For`.
pub fn client_of(peer: SocketAddr, headers: &http::HeaderMap, trusted: &[IpAddr]) -> SocketAddr {
    if !trusted.contains(&peer.ip()) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        let hop = hop.trim().trim_start_matches('[');
        let hop = hop.split(']').next().unwrap_or(hop);
        let Ok(ip) = hop.parse::<IpAddr>() else {
            // Garbage from the client's side of the chain: stop here.
            return peer;
        };
        if !trusted.contains(&ip) {
            return SocketAddr::new(ip, 0);
        }
    }
    peer
}

/// Serve `routes` on `listener` within `settings` until `shutdown`
/// resolves; then stop accepting and give open connections up to
/// `drain` to finish. `trusted`: the proxies whose `X-Forwarded-For` is
/// believed.
pub async fn serve<F>(
    listener: TcpListener,
    routes: F,
    settings: ConnectionSettings,
    trusted: Arc<[IpAddr]>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let service = warp::service(routes);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let full = Sampled::every(Duration::from_secs(10));
    let refused = Sampled::every(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if let Some(left_out) = full.take() {
                    tracing::warn!(
                        max_connections = settings.max_connections,
                        episodes_since_last_line = left_out,
                        "connection cap reached: not accepting until a connection closes (raise [server.connections] max_connections if these are real clients)"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some
                    // to close instead of spinning on the error.
                    if let Some(left_out) = refused.take() {
                        tracing::warn!(error = %e, left_out, "cannot accept a connection");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let handler = {
            let activity = activity.clone();
            let trusted = trusted.clone();
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let mut service = service.clone();
                let busy = Busy::start(activity.clone());
                let (mut parts, body) = req.into_parts();
                parts
                    .extensions
                    .insert(ClientAddr(client_of(addr, &parts.headers, &trusted)));
                let route = super::route_label(parts.uri.path());
                let method = super::method_label(&parts.method);
                let started = std::time::Instant::now();
                let limit = Duration::from_secs_f64(settings.body_timeout_seconds);
                let body = Deadline::new(body, limit);
                let expired = body.expired.clone();
                let req = http::Request::from_parts(parts, body);
                async move {
                    let response = tower_service::Service::call(&mut service, req).await;
                    drop(busy);
                    // Whichever route read the body, the answer to a body
                    // that did not arrive is the same.
                    let response = if expired.load(Ordering::Relaxed) {
                        Ok(body_timeout(limit))
                    } else {
                        response
                    };
                    if let Ok(r) = &response {
                        crate::metrics::http(route, method, r.status().as_u16(), started.elapsed());
                    }
                    response
                }
            })
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs_f64(settings.header_timeout_seconds))
            .keep_alive(true);
        let conn = graceful.watch(http.serve_connection(io, handler));
        let keep_alive = Duration::from_secs_f64(settings.keep_alive_seconds);
        tokio::spawn(async move {
            tokio::pin!(conn);
            let idle = activity.idle_for(keep_alive);
            tokio::select! {
                result = &mut conn => {
                    if let Err(e) = result {
                        tracing::debug!(client = %addr, error = %e, "connection ended");
                    }
                }
                () = idle => {
                    tracing::debug!(client = %addr, "idle connection closed");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(drain) => {
            tracing::warn!("connections still open after {} s: closing them", drain.as_secs());
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are
/// being answered.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once the connection has had no request in hand and moved
    /// no byte for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = self.epoch.elapsed().saturating_sub(last);
            if self.busy.load(Ordering::Relaxed) == 0 && quiet >= limit {
                return;
            }
            let wait = limit.saturating_sub(quiet).max(Duration::from_millis(50));
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request being answered on a connection.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Busy {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that notes when it last moved a byte.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// 408, and the connection closed: its stream is out of step.
fn body_timeout(limit: Duration) -> warp::reply::Response {
    let mut r = crate::api::rest::problem::Problem::new(
        http::StatusCode::REQUEST_TIMEOUT,
        "request-timeout",
        "Request timeout",
        format!(
            "the request body did not arrive within {} s of its headers",
            limit.as_secs_f64()
        ),
    )
    .reply();
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    r
}

/// A request body that must arrive whole before a deadline: a client that
/// sends its headers and then trickles (or withholds) the body is cut off.
struct Deadline {
    inner: hyper::body::Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    expired: Arc<std::sync::atomic::AtomicBool>,
}

impl Deadline {
    fn new(inner: hyper::body::Incoming, limit: Duration) -> Deadline {
        Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep(limit)),
            limit,
            expired: Arc::default(),
        }
    }
}

/// A body that did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
struct BodyTimeout(Duration);

impl Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::Relaxed);
            let limit = self.limit;
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_address_counts_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let peer = SocketAddr::new(proxy, 5555);
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 203.0.113.9".parse().unwrap());
        // Not trusted: the peer, whatever the header says.
        assert_eq!(client_of(peer, &h, &[]), peer);
        // Trusted: the nearest address the proxy saw, not one the client wrote.
        assert_eq!(
            client_of(peer, &h, &[proxy]).ip(),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Two trusted proxies in a row.
        let inner: IpAddr = "10.0.0.3".parse().unwrap();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.3".parse().unwrap());
        assert_eq!(
            client_of(peer, &h, &[proxy, inner]).ip(),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Garbage or nothing: the peer.
        h.insert("x-forwarded-for", "not-an-address".parse().unwrap());
        assert_eq!(client_of(peer, &h, &[proxy]), peer);
        assert_eq!(client_of(peer, &http::HeaderMap::new(), &[proxy]), peer);
        h.insert("x-forwarded-for", "[2001:db8::1]".parse().unwrap());
        assert_eq!(
            client_of(peer, &h, &[proxy]).ip(),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }
}
