//! Outbound HTTP for embedders.
//!
//! Only embedders may make outbound calls, and only to the hosts both their
//! `plugin.toml` and the operator's grant list. A request to any other host
//! fails with an error saying it was denied; the host logs the attempt.
//!
//! ```ignore
//! let response = memhost_sdk::http::Request::post("https://api.example.com/v1/embeddings")
//!     .header("content-type", "application/json")
//!     .body(br#"{"input": ["hello"]}"#.to_vec())
//!     .send()?;
//! if response.status != 200 { /* ... */ }
//! ```

use crate::__bindings::embedder::wasi::http::outgoing_handler;
use crate::__bindings::embedder::wasi::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::__bindings::embedder::wasi::io::streams::StreamError;
use crate::{Error, Result};

/// The most bytes of a response body [`Request::send`] reads (16 MiB).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// An HTTP request under construction.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Response headers, in the order received.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Request {
    /// A request with the given method (`GET`, `POST`, ...) to an absolute
    /// `http://` or `https://` URL.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Request {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Send the request and read the whole response.
    ///
    /// Network failures are [`Error::Unavailable`] (the host may retry);
    /// a request the host refused is [`Error::Other`] saying so.
    pub fn send(self) -> Result<Response> {
        let target = Target::parse(&self.url)?;
        let fields: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into_bytes()))
            .collect();
        let headers = Fields::from_list(&fields)
            .map_err(|e| Error::InvalidInput(format!("bad request header: {e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let method = match self.method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            other => Method::Other(other.to_string()),
        };
        let bad = |what: &str| Error::InvalidInput(format!("bad {what} in {}", self.url));
        request.set_method(&method).map_err(|()| bad("method"))?;
        request
            .set_scheme(Some(&target.scheme))
            .map_err(|()| bad("scheme"))?;
        request
            .set_authority(Some(&target.authority))
            .map_err(|()| bad("authority"))?;
        request
            .set_path_with_query(Some(&target.path))
            .map_err(|()| bad("path"))?;
        let outgoing_body = request
            .body()
            .map_err(|()| Error::other("request body already taken"))?;

        // Hand the request over before writing the body: the host buffers
        // little, so writing first could block forever.
        let pending =
            outgoing_handler::handle(request, None).map_err(|code| describe(&self.url, &code))?;
        {
            let stream = outgoing_body
                .write()
                .map_err(|()| Error::other("request body stream unavailable"))?;
            for chunk in self.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| Error::Unavailable(format!("sending to {}: {e:?}", self.url)))?;
            }
        }
        OutgoingBody::finish(outgoing_body, None).map_err(|code| describe(&self.url, &code))?;

        let incoming = loop {
            match pending.get() {
                Some(result) => break result,
                None => pending.subscribe().block(),
            }
        };
        let response = incoming
            .map_err(|()| Error::other("response already taken"))?
            .map_err(|code| describe(&self.url, &code))?;

        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let body = response
            .consume()
            .map_err(|()| Error::other("response body already taken"))?;
        let stream = body
            .stream()
            .map_err(|()| Error::other("response body stream unavailable"))?;
        let mut bytes = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() > MAX_RESPONSE_BYTES {
                        return Err(Error::Unavailable(format!(
                            "response from {} is larger than {MAX_RESPONSE_BYTES} bytes",
                            self.url
                        )));
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(Error::Unavailable(format!(
                        "reading response from {}: {}",
                        self.url,
                        e.to_debug_string()
                    )));
                }
            }
        }
        Ok(Response {
            status,
            headers,
            body: bytes,
        })
    }
}

fn describe(url: &str, code: &ErrorCode) -> Error {
    match code {
        ErrorCode::HttpRequestDenied => Error::Other(format!(
            "the host denied the request to {url}: its host is not in this plugin's granted outbound hosts"
        )),
        other => Error::Unavailable(format!("request to {url} failed: {other:?}")),
    }
}

/// The parts of an absolute URL that wasi:http wants separately.
struct Target {
    scheme: Scheme,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(Error::InvalidInput(format!(
                "\"{url}\" is not an absolute http:// or https:// URL"
            )));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(Error::InvalidInput(format!(
                "\"{url}\" has no host, or carries credentials in the URL"
            )));
        }
        Ok(Target {
            scheme,
            authority: authority.to_string(),
            path,
        })
    }
}
