//! Talking to moto server, whose IoT control plane is the local registry.
//!
//! moto tells its services apart by the credential scope of a request's signature and
//! checks no signature, so a call of our own carries [`UNSIGNED`]: the IoT control plane of
//! `us-east-1`, the region every local client (`fleet`, the functions, the tests) uses.

use crate::aws_error::error;
use crate::http::HttpResponse;
use crate::invoke::InvokeClient;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::Value;
use std::time::Duration;

/// The Authorization header that routes an unsigned request to moto's IoT control plane.
pub const UNSIGNED: &str = "AWS4-HMAC-SHA256 Credential=LOCAL/20260101/us-east-1/iot/aws4_request, SignedHeaders=host, Signature=0";

/// moto's answer, read whole; a 503 in AWS's error shape when it does not answer.
pub async fn fetch(
    client: &InvokeClient,
    request: Request<Full<Bytes>>,
) -> Result<(hyper::http::response::Parts, Bytes), HttpResponse> {
    let unavailable = |why: String| {
        error(
            503,
            "ServiceUnavailableException",
            &format!("registry: {why}"),
        )
    };
    let answer = match tokio::time::timeout(Duration::from_secs(30), client.request(request)).await
    {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(unavailable(e.to_string())),
        Err(_) => return Err(unavailable("no answer in 30 s".into())),
    };
    let (parts, body) = answer.into_parts();
    match body.collect().await {
        Ok(body) => Ok((parts, body.to_bytes())),
        Err(e) => Err(unavailable(e.to_string())),
    }
}

/// `GET {moto}{path}` as the IoT control plane: the status and the JSON body (`Null` when
/// the body is not JSON). `Err` when moto does not answer.
pub async fn get(client: &InvokeClient, moto: &str, path: &str) -> Result<(u16, Value), String> {
    let request = Request::get(format!("{moto}{path}"))
        .header(hyper::header::AUTHORIZATION, UNSIGNED)
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("registry request {path}: {e}"))?;
    let (parts, body) = fetch(client, request)
        .await
        .map_err(|_| format!("registry (moto at {moto}) did not answer"))?;
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok((parts.status.as_u16(), value))
}
