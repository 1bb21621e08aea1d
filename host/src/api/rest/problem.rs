//! Errors as RFC 9457 `application/problem+json`, with a stable `type` per
//! kind of failure.
//!
//! | type (after `https://memhost.dev/problems/`) | status | when |
//! |---|---|---|
//! | `malformed-json` | 400 | the body is not JSON, or nests deeper than 32 levels |
//! | `bad-query` | 400 | unknown or malformed query parameters |
//! | `validation` | 422 | a field is missing, unknown, of the wrong type or out of range |
//! | `too-large` | 413 | the body is over its limit (422 for a field over its length) |
//! | `unsupported-media-type` | 415 | a body that is not `application/json` |
//! | `unauthorized` | 401 | no API key, or one that is unknown, revoked or expired |
//! | `forbidden` | 403 | the key's roles do not allow this |
//! | `key-in-query` | 400 | a credential was sent in the URL |
//! | `rate-limited` | 429 | too many requests for the key, or failed authentications from the address; see `Retry-After` |
//! | `key-not-found` | 404 | no API key with that id |
//! | `namespace-not-found` | 404 | the namespace does not exist |
//! | `memory-not-found` | 404 | the memory does not exist, expired or was forgotten |
//! | `route-not-found` | 404 | no such route |
//! | `method-not-allowed` | 405 | the route exists, the method does not |
//! | `conflict` | 409 | the name is taken, or a concurrent update won |
//! | `redaction-failed` | 503 | the namespace's redactor is missing or failed; nothing was stored |
//! | `unavailable` | 503 | a plugin the request needs (the namespace's embedder) is not loaded or failed |
//! | `policy-denied` | 403 | the namespace's policy refused the change (audited; nothing was written) |
//! | `policy-failed` | 503 | the namespace's policy plugin is missing or failed, so the change was denied; the detail names the plugin |
//! | `approval-not-found` | 404 | no approval with that id that the caller may see |
//! | `self-approval` | 403 | the requester voted on its own action |
//! | `not-an-approver` | 403 | the voter's agent type is not one the approval accepts |
//! | `approval-closed` | 409 | the approval is already executed, failed, rejected, cancelled or superseded |
//! | `approval-expired` | 409 | the approval expired before it was decided; it was not run |
//! | `stale-approval` | 409 | the vote names a payload hash the approval does not hold |
//! | `storage-full` | 507 | the database reached `[store] max_map_size_mb`; nothing was stored |
//! | `internal` | 500 | anything else (details in the server log) |

use serde::Serialize;
use warp::http::StatusCode;

use crate::service::ServiceError;

/// Base of every problem `type`.
pub const PROBLEM_BASE: &str = "https://memhost.dev/problems/";

/// One problem document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short human summary of the kind.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What exactly was wrong, and what to do.
    pub detail: String,
    /// Seconds to wait (`Retry-After`), for 429.
    #[serde(skip)]
    pub retry_after: Option<u64>,
    /// The `WWW-Authenticate` value to send (401, 403).
    #[serde(skip)]
    pub challenge: Option<String>,
}

impl Problem {
    /// A problem of `slug` with `status` and `detail`.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
            challenge: None,
        }
    }

    /// As a warp reply with the problem content type.
    pub fn reply(&self) -> warp::reply::Response {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut response = warp::reply::Response::new(body.into());
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(
            warp::http::header::CONTENT_TYPE,
            warp::http::HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(warp::http::header::RETRY_AFTER, secs.into());
        }
        if let Some(v) = self
            .challenge
            .as_deref()
            .and_then(|c| warp::http::HeaderValue::from_str(c).ok())
        {
            response
                .headers_mut()
                .insert(warp::http::header::WWW_AUTHENTICATE, v);
        }
        response
    }
}

impl From<&ServiceError> for Problem {
    fn from(e: &ServiceError) -> Problem {
        let detail = e.to_string();
        match e {
            ServiceError::Invalid { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid field",
                detail,
            ),
            // A field over its length is invalid (422); only a body over
            // the body cap is "payload too large" (413).
            ServiceError::TooLarge { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too-large",
                "Too large",
                detail,
            ),
            ServiceError::NoNamespace(_) => Problem::new(
                StatusCode::NOT_FOUND,
                "namespace-not-found",
                "No such namespace",
                detail,
            ),
            ServiceError::NoMemory { .. } => Problem::new(
                StatusCode::NOT_FOUND,
                "memory-not-found",
                "No such memory",
                detail,
            ),
            ServiceError::Forbidden(_) => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
            }
            ServiceError::NoKey(_) => Problem::new(
                StatusCode::NOT_FOUND,
                "key-not-found",
                "No such key",
                detail,
            ),
            ServiceError::Conflict(_) | ServiceError::Raced(_) => {
                Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
            }
            ServiceError::Redaction(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "redaction-failed",
                "Redaction failed",
                detail,
            ),
            ServiceError::Unavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Unavailable",
                detail,
            ),
            ServiceError::Backup(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "backup-failed",
                "Backup failed",
                detail,
            ),
            ServiceError::StorageFull(_) => Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage-full",
                "Storage full",
                detail,
            ),
            ServiceError::Held(item) => {
                // Not a problem: the REST layer answers 202 with the item.
                Problem::new(
                    StatusCode::ACCEPTED,
                    "pending-approval",
                    "Held for approval",
                    format!("held for approval {}: nothing was written yet", item.id),
                )
            }
            ServiceError::PolicyDenied(_) => Problem::new(
                StatusCode::FORBIDDEN,
                "policy-denied",
                "Denied by policy",
                detail,
            ),
            ServiceError::PolicyFailed { .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "policy-failed",
                "Policy failed",
                detail,
            ),
            ServiceError::NoApproval(_) => Problem::new(
                StatusCode::NOT_FOUND,
                "approval-not-found",
                "No such approval",
                detail,
            ),
            ServiceError::SelfApproval(_) => Problem::new(
                StatusCode::FORBIDDEN,
                "self-approval",
                "Self-approval",
                detail,
            ),
            ServiceError::NotAnApprover(_) => Problem::new(
                StatusCode::FORBIDDEN,
                "not-an-approver",
                "Not an approver",
                detail,
            ),
            ServiceError::ApprovalClosed { .. } => Problem::new(
                StatusCode::CONFLICT,
                "approval-closed",
                "Approval closed",
                detail,
            ),
            ServiceError::ApprovalExpired(_) => Problem::new(
                StatusCode::CONFLICT,
                "approval-expired",
                "Approval expired",
                detail,
            ),
            ServiceError::StaleApproval(_) => Problem::new(
                StatusCode::CONFLICT,
                "stale-approval",
                "Stale approval",
                detail,
            ),
            ServiceError::Internal(_) => {
                tracing::error!(error = %detail, "internal error");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "internal error; see the server log",
                )
            }
        }
    }
}

/// Turn warp's own rejections (no route, wrong method, body limits) into
/// problems.
pub async fn recover(
    rejection: warp::Rejection,
) -> Result<warp::reply::Response, std::convert::Infallible> {
    let problem = if rejection.is_not_found() {
        Problem::new(
            StatusCode::NOT_FOUND,
            "route-not-found",
            "No such route",
            "no route matches this path",
        )
    } else if let Some(p) = rejection.find::<ProblemRejection>() {
        p.0.clone()
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Too large",
            format!("the request body is larger than {} bytes", super::MAX_BODY),
        )
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        Problem::new(
            StatusCode::LENGTH_REQUIRED,
            "length-required",
            "Length required",
            "send a Content-Length header with the body",
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-query",
            "Bad query",
            e.to_string(),
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this route does not accept that method",
        )
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            format!("{rejection:?}"),
        )
    };
    Ok(problem.reply())
}

/// A problem raised inside a filter.
#[derive(Debug)]
pub struct ProblemRejection(pub Problem);

impl warp::reject::Reject for ProblemRejection {}
