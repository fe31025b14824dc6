//! Error responses in the shape of AWS's restJson1 services (the IoT data plane, its
//! shadow API): the status code, an `x-amzn-ErrorType` header, a fresh `x-amzn-RequestId`
//! and a `{"message": ...}` body, which the AWS SDKs turn into the matching error variant.

use crate::http::{self, HttpResponse};
use serde_json::json;

/// An error response as the IoT data plane sends it.
pub fn error(status: u16, error_type: &str, message: &str) -> HttpResponse {
    let id = http::request_id();
    http::json(
        status,
        &json!({ "message": message }),
        &[("x-amzn-ErrorType", error_type), ("x-amzn-RequestId", &id)],
    )
}
