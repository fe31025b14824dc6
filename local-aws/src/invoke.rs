//! A client of the Lambda invoke API (`POST {base}/2015-03-31/functions/{fn}/invocations`,
//! as `cargo lambda watch` serves it), shared by the gateway and the IoT rules.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::time::Duration;

/// Largest invocation response read back (Lambda's synchronous response limit).
const MAX_RESPONSE: usize = 6 * 1024 * 1024;

/// The HTTP client invocations go through.
pub type InvokeClient = Client<HttpConnector, Full<Bytes>>;

/// A client for [`invoke`] (plain HTTP, kept-alive connections).
pub fn client() -> InvokeClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The invoke URL of `function` under the invoke API at `base`.
pub fn url(base: &str, function: &str) -> String {
    format!("{base}/2015-03-31/functions/{function}/invocations")
}

/// Why an invocation gave no result.
#[derive(Debug)]
pub enum InvokeError {
    /// Nothing accepted the connection: the function host is not up (yet).
    Unreachable(String),
    /// The function ran and failed, or its answer could not be read.
    Failed(String),
}

/// Calls the Lambda invoke API; `Ok` holds the function's result JSON.
pub async fn invoke(
    client: &InvokeClient,
    url: &str,
    event: &Value,
    timeout: Duration,
) -> Result<Value, InvokeError> {
    let request = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(event.to_string())))
        .map_err(|e| InvokeError::Failed(format!("bad invoke URL: {e}")))?;
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| InvokeError::Failed(format!("no response within {} s", timeout.as_secs())))?
        .map_err(|e| {
            let why = format!("{e} (is `cargo lambda watch` running?)");
            // Only a refused connection proves the request never reached a function, so
            // only then is "resend later" true; anything else may have run it.
            if e.is_connect() {
                InvokeError::Unreachable(why)
            } else {
                InvokeError::Failed(why)
            }
        })?;
    let status = response.status();
    let function_error = response.headers().get("x-amz-function-error").cloned();
    let body = tokio::time::timeout(
        timeout,
        http_body_util::Limited::new(response.into_body(), MAX_RESPONSE).collect(),
    )
    .await
    .map_err(|_| InvokeError::Failed("timed out reading the invocation response".to_owned()))?
    .map_err(|e| InvokeError::Failed(format!("cannot read the invocation response: {e}")))?
    .to_bytes();
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        return Err(InvokeError::Failed(format!(
            "invoke API answered {status}: {text}"
        )));
    }
    if let Some(kind) = function_error {
        return Err(InvokeError::Failed(format!(
            "function error ({kind:?}): {text}"
        )));
    }
    serde_json::from_slice(&body)
        .map_err(|e| InvokeError::Failed(format!("response is not JSON ({e}): {text}")))
}
