//! Sending a plugin's outbound request once the allow-list has approved it:
//! the connection goes to the addresses the check resolved and judged —
//! never to a second lookup of the name, whose answer could differ — and
//! for `https` the server's certificate is validated for the URL's host
//! (Mozilla's roots, from `webpki-roots`). HTTP/1.1, with the request's
//! connect, first-byte and between-bytes timeouts.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Drives the connection after the response head arrived.
pub(crate) type ResponseIo = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// What a plugin may wait for when its request names no timeout (the
/// caller cuts every one to the time its call has left anyway).
const UNSET: Duration = Duration::from_secs(600);

/// Either transport under the HTTP connection.
trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// One TLS client configuration for the process: building the root store
/// costs more than a request.
static TLS: LazyLock<Result<Arc<rustls::ClientConfig>, String>> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|builder| Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|e| format!("cannot set up TLS: {e}"))
});

/// Send `request` over a connection to the first of `addrs` that accepts.
/// `addrs` are the addresses the allow-list check approved for the URL's
/// host; the host name itself is used only for TLS (SNI and the
/// certificate) and the `Host` header the request already carries.
pub(crate) async fn send(
    mut request: http::Request<WasiBody>,
    addrs: &[SocketAddr],
    options: &RequestOptions,
) -> Result<(http::Response<WasiBody>, ResponseIo), Error> {
    let connect = options.connect_timeout.unwrap_or(UNSET);
    let within = |what| {
        move |_| {
            tracing::debug!("outbound {what} timed out");
            Error::ConnectionTimeout
        }
    };
    let tcp = tokio::time::timeout(connect, tokio::net::TcpStream::connect(addrs))
        .await
        .map_err(within("connect"))?
        .map_err(Error::Connect)?;
    let transport: Box<dyn Transport> = match request.uri().scheme_str() {
        Some("https") => {
            let host = request
                .uri()
                .host()
                .ok_or(Error::HttpRequestUriInvalid)?
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let config = TLS
                .as_ref()
                .map_err(|e| Error::InternalError(Some(e.clone())))?
                .clone();
            let tls = tokio::time::timeout(
                connect,
                tokio_rustls::TlsConnector::from(config).connect(name, tcp),
            )
            .await
            .map_err(within("TLS handshake"))?
            .map_err(Error::Tls)?;
            Box::new(tls)
        }
        _ => Box::new(tcp),
    };
    let (mut sender, connection) = tokio::time::timeout(
        connect,
        hyper::client::conn::http1::handshake(TokioIo::new(transport)),
    )
    .await
    .map_err(within("HTTP handshake"))??;
    // The request line names the path only: the absolute form is for
    // proxies.
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    *request.uri_mut() = target;
    let driver = tokio::spawn(connection);
    let response = tokio::time::timeout(
        options.first_byte_timeout.unwrap_or(UNSET),
        sender.send_request(request),
    )
    .await
    .map_err(|_| Error::ConnectionReadTimeout)??;
    let gap = options
        .between_bytes_timeout
        .unwrap_or(UNSET)
        .max(Duration::from_millis(1));
    let io: ResponseIo = Box::new(async move {
        match driver.await {
            Ok(done) => done.map_err(Error::from),
            Err(e) => Err(Error::InternalError(Some(e.to_string()))),
        }
    });
    Ok((
        response.map(|body| Paced::new(body, gap).boxed_unsync()),
        io,
    ))
}

/// A response body that fails when the server sends nothing for `gap`.
struct Paced {
    body: hyper::body::Incoming,
    gap: Duration,
    quiet: Pin<Box<tokio::time::Sleep>>,
}

impl Paced {
    fn new(body: hyper::body::Incoming, gap: Duration) -> Paced {
        Paced {
            body,
            gap,
            quiet: Box::pin(tokio::time::sleep(gap)),
        }
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + this.gap;
                this.quiet.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.quiet.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// GET a small public document over `https` for the host itself (an
/// OAuth client's metadata document), with the care plugin egress takes:
/// the name is resolved once and every address it gives must be public
/// (no loopback, private, link-local or metadata address), the connection
/// goes to those addresses, the certificate is checked, redirects are not
/// followed, the answer must be `200` and at most `max_bytes`, and the
/// whole exchange ends within `within`.
pub async fn fetch_public(
    url: &str,
    max_bytes: usize,
    within: Duration,
) -> Result<Vec<u8>, String> {
    tokio::time::timeout(within, fetch_public_inner(url, max_bytes))
        .await
        .map_err(|_| format!("no answer within {} s", within.as_secs_f64()))?
}

async fn fetch_public_inner(url: &str, max_bytes: usize) -> Result<Vec<u8>, String> {
    let uri: http::Uri = url.parse().map_err(|_| "not a URL".to_string())?;
    if uri.scheme_str() != Some("https") {
        return Err("only https URLs are fetched".into());
    }
    let host = uri
        .host()
        .ok_or("the URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    if let Some(a) = addrs.iter().find(|a| super::egress::is_special(a.ip())) {
        return Err(format!(
            "{host} resolves to {}, a loopback, private or otherwise special address: refused",
            a.ip()
        ));
    }
    let tcp = tokio::net::TcpStream::connect(addrs.as_slice())
        .await
        .map_err(|e| format!("cannot connect to {host}: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| format!("{host} is not a TLS server name"))?;
    let config = TLS.as_ref().map_err(Clone::clone)?.clone();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host} failed: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP with {host} failed: {e}"))?;
    tokio::spawn(connection);
    let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            http::header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("memhost/", env!("CARGO_PKG_VERSION")),
        )
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP with {host} failed: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!(
            "{host} answered {} (redirects are not followed)",
            response.status().as_u16()
        ));
    }
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading from {host} failed: {e}"))?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > max_bytes {
                return Err(format!("the document is larger than {max_bytes} bytes"));
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn request(url: &str) -> http::Request<WasiBody> {
        let uri: http::Uri = url.parse().unwrap();
        let host = uri.authority().unwrap().to_string();
        http::Request::get(uri)
            .header(http::header::HOST, host)
            .body(
                http_body_util::Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn options(gap: Duration) -> RequestOptions {
        RequestOptions {
            connect_timeout: Some(Duration::from_secs(5)),
            first_byte_timeout: Some(Duration::from_secs(5)),
            between_bytes_timeout: Some(gap),
        }
    }

    /// A loopback listener, its address, and `origin` + its port + `path`.
    async fn listening(origin: &str, path: &str) -> (tokio::net::TcpListener, SocketAddr, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("{origin}:{}{path}", addr.port());
        (listener, addr, url)
    }

    #[test]
    fn https_goes_to_the_checked_address_and_validates_for_the_name() {
        runtime().block_on(async {
            // A name that resolves nowhere here: only the checked address
            // can be reached.
            let (listener, addr, url) =
                listening("https://embeddings.memhost.invalid", "/v1/embed").await;
            let server = tokio::spawn(async move {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut hello = vec![0; 2048];
                let n = conn.read(&mut hello).await.unwrap();
                hello.truncate(n);
                hello
            });
            let sent = send(request(&url), &[addr], &options(Duration::from_secs(5))).await;
            let hello = server.await.unwrap();
            assert_eq!(hello.first(), Some(&0x16), "a TLS handshake arrived");
            assert!(
                hello
                    .windows(26)
                    .any(|w| w == b"embeddings.memhost.invalid"),
                "the server name is the URL's host"
            );
            // The listener is no TLS server: nothing is sent in the clear.
            assert!(matches!(sent, Err(Error::Tls(_))), "{:?}", sent.err());
        });
    }

    #[test]
    fn http_sends_the_path_to_the_checked_address_and_a_stalled_body_times_out() {
        runtime().block_on(async {
            let (listener, addr, url) =
                listening("http://ollama.memhost.invalid", "/api/embed?x=1").await;
            let server = tokio::spawn(async move {
                let mut heads = Vec::new();
                for body in [&b"ok"[..], b"o"] {
                    let (mut conn, _) = listener.accept().await.unwrap();
                    let mut head = vec![0; 2048];
                    let n = conn.read(&mut head).await.unwrap();
                    head.truncate(n);
                    heads.push(String::from_utf8(head).unwrap());
                    // The second answer promises two bytes and sends one.
                    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
                        .await
                        .unwrap();
                    conn.write_all(body).await.unwrap();
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                heads
            });
            let (response, io) = send(request(&url), &[addr], &options(Duration::from_secs(5)))
                .await
                .unwrap();
            tokio::spawn(Box::into_pin(io));
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");

            let (response, io) = send(request(&url), &[addr], &options(Duration::from_millis(200)))
                .await
                .unwrap();
            tokio::spawn(Box::into_pin(io));
            let stalled = response.into_body().collect().await;
            assert!(
                matches!(stalled, Err(Error::ConnectionReadTimeout)),
                "{:?}",
                stalled.err()
            );
            let heads = server.await.unwrap();
            assert!(
                heads[0].starts_with("GET /api/embed?x=1 HTTP/1.1\r\n"),
                "{}",
                heads[0]
            );
            assert!(
                heads[0]
                    .to_ascii_lowercase()
                    .contains(&format!("host: ollama.memhost.invalid:{}", addr.port())),
                "{}",
                heads[0]
            );
        });
    }
}
