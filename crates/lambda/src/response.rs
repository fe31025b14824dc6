//! Response bodies and status codes, as DESIGN.md fixes them.

use crate::request::RequestError;
use lambda_http::http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
use lambda_http::http::{HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use sensor_core::pipeline::Outcome;
use serde_json::{json, Value};

/// Seconds a box should wait before resending after a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// Some: a downstream failure outlasted the retries (503 + `Retry-After`).
    pub retry_after: Option<u32>,
    /// Some: the answer to a stream batch, with what became of its records.
    pub stream: Option<crate::observability::emf::StreamCounts>,
}

impl Reply {
    /// The HTTP response: JSON body, `Retry-After` on a 503, `Allow` on a 405 (RFC 9110
    /// requires it; api/openapi.yaml documents it).
    pub fn to_response(&self) -> Response<Body> {
        let mut response = Response::new(Body::Text(self.body.to_string()));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == 405 {
            headers.insert(ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }

    pub fn from_request_error(error: &RequestError) -> Reply {
        match error {
            RequestError::MethodNotAllowed(method) => Reply {
                status: 405,
                body: json!({"error": "method_not_allowed", "message": format!("{method} is not allowed; use POST")}),
                retry_after: None,
                stream: None,
            },
            RequestError::TooLarge(len) => Reply {
                status: 413,
                body: json!({"error": "payload_too_large", "message": format!(
                    "body is {len} bytes; at most {} bytes", crate::request::MAX_BODY_BYTES)}),
                retry_after: None,
                stream: None,
            },
            RequestError::Invalid(e) => Reply {
                status: 400,
                body: json!({"error": "invalid_reading", "field": e.field(), "message": e.message()}),
                retry_after: None,
                stream: None,
            },
            RequestError::Forbidden(e) => Reply::forbidden(e),
        }
    }

    /// 403: not this box's to send (field `groupid`), or not a box this function takes
    /// readings from (field `thing`). Final: nothing was stored, published or applied.
    pub fn forbidden(e: &sensor_model::ValidationError) -> Reply {
        Reply {
            status: 403,
            body: json!({"error": "forbidden", "field": e.field(), "message": e.message()}),
            retry_after: None,
            stream: None,
        }
    }

    /// 503 + `Retry-After` for a whole request: something every reading needs (the
    /// registry) was unreachable past the retries.
    pub fn unavailable(reason: &str) -> Reply {
        Reply {
            status: 503,
            body: json!({"error": "unavailable", "message": format!(
                "{reason}; resend the readings (each will be stored once)")}),
            retry_after: Some(RETRY_AFTER_SECS),
            stream: None,
        }
    }

    pub fn single(outcome: &Outcome) -> Reply {
        match outcome {
            Outcome::Stored { id, warnings, .. } => Reply {
                status: 200,
                body: json!({"status": "ok", "id": id, "warnings": warnings}),
                retry_after: None,
                stream: None,
            },
            Outcome::Invalid(e) => Reply {
                status: 400,
                body: json!({"error": "invalid_reading", "field": e.field(), "message": e.message()}),
                retry_after: None,
                stream: None,
            },
            Outcome::Forbidden(e) => Reply::forbidden(e),
            Outcome::Rejected { id, reason, .. } => Reply {
                status: 422,
                body: json!({"error": "rejected", "id": id, "message": format!(
                    "{reason}; this reading can never be stored as it is: do not resend it")}),
                retry_after: None,
                stream: None,
            },
            Outcome::Unavailable { id, reason, .. } => Reply {
                status: 503,
                body: json!({"error": "unavailable", "id": id, "message": format!(
                    "{reason}; resend the reading (it will be stored once)")}),
                retry_after: Some(RETRY_AFTER_SECS),
                stream: None,
            },
        }
    }

    /// One entry per reading; 200 unless some item must be resent, then 503.
    pub fn batch(outcomes: &[Outcome]) -> Reply {
        let items: Vec<Value> = outcomes
            .iter()
            .enumerate()
            .map(|(index, outcome)| match outcome {
                Outcome::Stored {
                    id,
                    warnings,
                    duplicate,
                } => json!({
                    "index": index,
                    "status": if *duplicate { "already_stored" } else { "stored" },
                    "id": id,
                    "warnings": warnings,
                }),
                Outcome::Invalid(e) => json!({
                    "index": index,
                    "status": "invalid",
                    "error": "invalid_reading",
                    "field": e.field(),
                    "message": e.message(),
                }),
                Outcome::Forbidden(e) => json!({
                    "index": index,
                    "status": "forbidden",
                    "error": "forbidden",
                    "field": e.field(),
                    "message": e.message(),
                }),
                Outcome::Rejected { id, reason, .. } => json!({
                    "index": index,
                    "status": "rejected",
                    "id": id,
                    "message": reason,
                }),
                Outcome::Unavailable { id, reason, .. } => json!({
                    "index": index,
                    "status": "retry",
                    "id": id,
                    "message": reason,
                }),
            })
            .collect();
        let retry = outcomes.iter().any(Outcome::needs_retry);
        let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
        Reply {
            status: if retry { 503 } else { 200 },
            body: json!({
                "status": if retry { "retry" } else { "ok" },
                "stored": count(|o| matches!(o, Outcome::Stored { .. })),
                "invalid": count(|o| matches!(o, Outcome::Invalid(_))),
                "retry": count(Outcome::needs_retry),
                "rejected": count(|o| matches!(o, Outcome::Rejected { .. })),
                "forbidden": count(|o| matches!(o, Outcome::Forbidden(_))),
                "items": items,
            }),
            retry_after: retry.then_some(RETRY_AFTER_SECS),
            stream: None,
        }
    }
}
