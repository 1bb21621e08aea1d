//! `GET /v1/namespaces/{ns}/export` (streamed, age-encrypted to the
//! recipients the caller names: the server never sends an export in the
//! clear) and `POST /v1/namespaces/{ns}/import` (a decrypted file — the
//! server never holds the caller's age identity — into `{ns}`).

use serde::Deserialize;
use warp::Filter;
use warp::http::StatusCode;

use super::problem::Problem;
use super::{Action, act, blocking, json};
use crate::crypto::age_file;
use crate::service::transfer::OnConflict;
use crate::service::{Service, ServiceError};
use crate::transfer::{self, Format, ImportPlan};

/// The largest file `POST …/import` takes; the CLI has no limit.
pub const MAX_IMPORT_BODY: u64 = 64 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportParams {
    /// age1… recipients, comma-separated.
    recipient: String,
    #[serde(default)]
    versions: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportParams {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    on_conflict: Option<String>,
}

fn bad_query(detail: String) -> warp::reply::Response {
    Problem::new(StatusCode::BAD_REQUEST, "bad-query", "Bad query", detail).reply()
}

/// Sends what is written, 64 KiB at a time, to the response body; fails
/// once the client has gone.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 << 10 {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The export and import routes under `ns_root`.
pub(super) fn routes(
    ns_root: impl Filter<Extract = (), Error = warp::Rejection> + Clone + Send + Sync + 'static,
    svc: impl Filter<Extract = (Service,), Error = std::convert::Infallible>
    + Clone
    + Send
    + Sync
    + 'static,
) -> warp::filters::BoxedFilter<(Action,)> {
    let export = ns_root
        .clone()
        .and(warp::path::param::<String>())
        .and(warp::path("export"))
        .and(warp::path::end())
        .and(warp::get())
        .and(svc.clone())
        .and(warp::query::<ExportParams>())
        .map(|name: String, s: Service, p: ExportParams| {
            act(move |who| async move {
                let list: Vec<String> = p
                    .recipient
                    .split(',')
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty())
                    .collect();
                let recipients =
                    age_file::parse_recipients(&list).map_err(|e| bad_query(e.to_string()))?;
                if recipients.is_empty() {
                    return Err(bad_query(
                        "recipient: at least one age X25519 recipient (age1…)".into(),
                    ));
                }
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                let (ready_tx, ready) = tokio::sync::oneshot::channel();
                let file = format!("memhost-{name}.jsonl.gz.age");
                tokio::task::spawn_blocking(move || {
                    // Told once the export has passed its checks (its first
                    // line is out), or why it did not.
                    let ready_tx = std::sync::Mutex::new(Some(ready_tx));
                    let take = || ready_tx.lock().ok().and_then(|mut r| r.take());
                    let out = ChannelWriter {
                        tx: tx.clone(),
                        buf: Vec::new(),
                    };
                    let written = transfer::write_export(
                        &s,
                        &who,
                        std::slice::from_ref(&name),
                        p.versions,
                        &recipients,
                        out,
                        &|_| {
                            if let Some(r) = take() {
                                let _ = r.send(Ok(()));
                            }
                        },
                    );
                    let failed = match written {
                        Ok((mut out, _)) => std::io::Write::flush(&mut out).err(),
                        Err(transfer::TransferError::Service(e)) => {
                            if let Some(r) = take() {
                                let _ = r.send(Err(e));
                                return;
                            }
                            Some(std::io::Error::other(e.to_string()))
                        }
                        Err(e) => Some(std::io::Error::other(e.to_string())),
                    };
                    if let Some(r) = take() {
                        let _ = r.send(Ok(()));
                    }
                    if let Some(e) = failed {
                        // Cut the body: the client sees a broken transfer,
                        // not a short file that looks whole.
                        tracing::warn!(error = %e, "export stopped");
                        let _ = tx.blocking_send(Err(e));
                    }
                });
                match ready.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(Problem::from(&e).reply()),
                    Err(_) => {}
                }
                let body = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|chunk| (chunk, rx))
                });
                let mut response = warp::reply::Reply::into_response(warp::reply::stream(body));
                let headers = response.headers_mut();
                headers.insert(
                    warp::http::header::CONTENT_TYPE,
                    warp::http::HeaderValue::from_static("application/octet-stream"),
                );
                if let Ok(v) =
                    warp::http::HeaderValue::from_str(&format!("attachment; filename=\"{file}\""))
                {
                    headers.insert(warp::http::header::CONTENT_DISPOSITION, v);
                }
                Ok(response)
            })
        });

    let import = ns_root
        .and(warp::path::param::<String>())
        .and(warp::path("import"))
        .and(warp::path::end())
        .and(warp::post())
        .and(svc)
        .and(warp::query::<ImportParams>())
        .and(warp::body::content_length_limit(MAX_IMPORT_BODY))
        .and(warp::body::bytes())
        .map(
            |name: String, s: Service, p: ImportParams, body: bytes::Bytes| {
                act(move |who| async move {
                    let format: Format = p
                        .format
                        .as_deref()
                        .unwrap_or("auto")
                        .parse()
                        .map_err(|e: String| bad_query(format!("format: {e}")))?;
                    let on_conflict: OnConflict = p
                        .on_conflict
                        .as_deref()
                        .unwrap_or("skip")
                        .parse()
                        .map_err(|e: String| bad_query(format!("on_conflict: {e}")))?;
                    if age_file::is_age(&body) {
                        return Err(Problem::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "encrypted",
                            "Encrypted file",
                            "the file is age-encrypted: decrypt it first (age -d -i KEY FILE) — the server never holds your identity — or use `memhost import FILE --identity KEY`",
                        )
                        .reply());
                    }
                    let report = blocking(move || {
                        // The namespace must exist and the caller write to it
                        // before a byte of the file is read.
                        s.check_import(&who, &name)?;
                        let entries = transfer::read_entries(std::io::Cursor::new(body), format)
                            .map_err(|e| ServiceError::Invalid {
                                field: "file".into(),
                                detail: e.to_string(),
                            })?;
                        let plan = ImportPlan {
                            into: Some(name),
                            on_conflict,
                            ..ImportPlan::default()
                        };
                        Ok(transfer::import(&s, &who, entries, &plan, &|_| {}))
                    })
                    .await?;
                    Ok(json(StatusCode::OK, &report))
                })
            },
        );

    export.or(import).unify().boxed()
}
