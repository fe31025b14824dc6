//! An API Gateway (REST API, Lambda proxy integration) emulator: each request to a
//! configured route becomes an API Gateway v1 proxy event, the function is invoked through
//! the Lambda invoke API of `cargo lambda watch`
//! (`POST {invoke_base}/2015-03-31/functions/{fn}/invocations`), and the proxy response
//! is mapped back to HTTP. Bodies go to the function base64-encoded with
//! `isBase64Encoded: true`, as API Gateway does for binary media types.
//!
//! While nothing answers at the invoke URL (`cargo lambda watch` not up yet, or restarting
//! a function) the gateway answers 503 with `Retry-After`, never 502: a client that
//! honours the contract retries. `GET /openapi.json` serves the API contract
//! (`api/openapi.yaml`) with this gateway as its server.
//!
//! With an API key configured, the key is required where the contract requires it: an
//! operation with `security: []` (the page on `GET /`, CORS preflights) is open, as the
//! deployed REST API built from the same document makes it.

use crate::http::{self, BodyError, HttpResponse, Server};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Map, Value};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// API Gateway's payload limit.
pub const MAX_REQUEST: usize = 10 * 1024 * 1024;
/// Largest invocation response read back (Lambda's synchronous response limit).
const MAX_RESPONSE: usize = 6 * 1024 * 1024;
/// Seconds a client should wait when the function is not reachable yet.
pub const STARTING_RETRY_AFTER: &str = "1";
/// Where the contract is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Base URL of the Lambda invoke API, e.g. `http://127.0.0.1:9000`.
    pub invoke_base: String,
    /// `(resource path, function name)`, e.g. `("/gasdetector", "gasdetector")`.
    pub routes: Vec<(String, String)>,
    /// Stage name put into `requestContext.stage`.
    pub stage: String,
    /// How long to wait for an invocation. `cargo lambda watch` compiles a function on
    /// its first invocation, so the default is generous (API Gateway's own is 29 s).
    pub timeout: Duration,
    /// Print one line per request to stderr.
    pub log: bool,
    /// Some: requests to the routes need this `x-api-key` (403 otherwise), as the
    /// deployed REST API requires a key of its usage plan. None (the default for
    /// `cargo xtask dev`): no key is checked.
    pub api_key: Option<String>,
}

impl GatewayConfig {
    /// The project's routes, invoking functions at `invoke_base`: the three ingest
    /// routes, and the page and read API of the `query` function.
    pub fn sensors(invoke_base: impl Into<String>) -> GatewayConfig {
        let ingest = INGEST_FUNCTIONS
            .iter()
            .map(|name| (format!("/{name}"), (*name).to_owned()));
        let query = QUERY_ROUTES
            .iter()
            .map(|path| ((*path).to_owned(), "query".to_owned()));
        GatewayConfig {
            invoke_base: invoke_base.into(),
            routes: ingest.chain(query).collect(),
            stage: "local".into(),
            timeout: Duration::from_secs(600),
            log: false,
            api_key: None,
        }
    }
}

/// The ingest functions, one per sensor route (`POST /<name>`; also the IoT data rules'
/// targets, `devices/+/data/<name>`).
pub const INGEST_FUNCTIONS: [&str; 3] = ["gasdetector", "dust", "temp"];

/// The `query` function's routes (api/openapi.yaml).
pub const QUERY_ROUTES: [&str; 5] = [
    "/",
    "/api/boxes",
    "/api/readings",
    "/api/warnings",
    "/api/rules",
];

pub struct Gateway {
    server: Server,
}

struct State {
    config: GatewayConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    /// `api/openapi.yaml` as JSON; `servers` is filled in per request (the Host asked for).
    contract: Value,
}

impl Gateway {
    pub async fn start(addr: SocketAddr, config: GatewayConfig) -> io::Result<Gateway> {
        let contract = crate::openapi::document()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let state = Arc::new(State {
            config,
            client,
            contract,
        });
        let server = http::serve(addr, move |request, peer| {
            let state = state.clone();
            async move { handle(request, peer, &state).await }
        })
        .await?;
        Ok(Gateway { server })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }
}

fn message(status: u16, text: &str, request_id: &str) -> HttpResponse {
    http::json(
        status,
        &json!({ "message": text }),
        &[("x-amzn-RequestId", request_id)],
    )
}

async fn handle(request: Request<Incoming>, peer: SocketAddr, state: &State) -> HttpResponse {
    let started = Instant::now();
    let request_id = http::request_id();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let config = &state.config;
    let (response, counts) = if path == OPENAPI_PATH && method == hyper::Method::GET {
        (contract(&request, &state.contract, &request_id), None)
    } else {
        route(request, peer, state, &request_id).await
    };
    if config.log {
        eprintln!(
            "gateway: {method} {path} -> {} in {} ms{}",
            response.status().as_u16(),
            started.elapsed().as_millis(),
            counts.map(|c| format!(" {c}")).unwrap_or_default()
        );
    }
    response
}

/// The contract with this gateway (as the client addressed it) as its only server.
fn contract(request: &Request<Incoming>, document: &Value, request_id: &str) -> HttpResponse {
    let host = request
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("127.0.0.1");
    let mut document = document.clone();
    document["servers"] =
        json!([{"url": format!("http://{host}"), "description": "local gateway"}]);
    http::json(200, &document, &[("x-amzn-RequestId", request_id)])
}

/// The function cannot be reached yet: 503 + `Retry-After`, as the contract allows.
fn starting(function: &str, request_id: &str) -> HttpResponse {
    http::json(
        503,
        &json!({
            "error": "unavailable",
            "message": format!("function {function} is not running yet (cargo lambda watch is starting); retry"),
        }),
        &[
            ("x-amzn-RequestId", request_id),
            ("Retry-After", STARTING_RETRY_AFTER),
        ],
    )
}

/// What the function's answer says it did, for the per-request line:
/// `stored=1 invalid=0 retry=0 warnings=2`. `None` when the body is not one of ours.
pub fn reading_counts(proxy_result: &Value) -> Option<String> {
    let body: Value = serde_json::from_str(proxy_result.get("body")?.as_str()?).ok()?;
    let warnings_of = |v: &Value| {
        v.get("warnings")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    let (stored, invalid, retry, warnings) = if let Some(items) = body.get("items") {
        let count = |key: &str| body.get(key).and_then(Value::as_u64).unwrap_or(0);
        let warnings = items
            .as_array()
            .map_or(0, |i| i.iter().map(warnings_of).sum());
        (count("stored"), count("invalid"), count("retry"), warnings)
    } else {
        match (
            body.get("status").and_then(Value::as_str),
            body.get("error").and_then(Value::as_str),
        ) {
            (Some("ok"), _) => (1, 0, 0, warnings_of(&body)),
            (_, Some("invalid_reading")) => (0, 1, 0, 0),
            (_, Some("unavailable")) => (0, 0, 1, 0),
            _ => return None,
        }
    };
    Some(format!(
        "stored={stored} invalid={invalid} retry={retry} warnings={warnings}"
    ))
}

/// Whether the contract requires an API key for `method` on `path`: the operation's own
/// `security` (then `x-amazon-apigateway-any-method`'s), else the document's; an empty
/// list means none, as API Gateway reads it.
pub fn key_required(contract: &Value, path: &str, method: &str) -> bool {
    let item = &contract["paths"][path];
    let operation = &item[method.to_ascii_lowercase().as_str()];
    let operation = if operation.is_object() {
        operation
    } else {
        &item["x-amazon-apigateway-any-method"]
    };
    let security = match operation.get("security") {
        Some(s) => s,
        None => &contract["security"],
    };
    security.as_array().is_some_and(|s| !s.is_empty())
}

async fn route(
    request: Request<Incoming>,
    peer: SocketAddr,
    state: &State,
    request_id: &str,
) -> (HttpResponse, Option<String>) {
    let (config, client) = (&state.config, &state.client);
    let path = request.uri().path().to_owned();
    let Some((resource, function)) = config.routes.iter().find(|(resource, _)| *resource == path)
    else {
        return (message(404, "Not Found", request_id), None);
    };
    let needs_key = key_required(&state.contract, resource, request.method().as_str());
    if let (Some(key), true) = (&config.api_key, needs_key) {
        let given = request.headers().get("x-api-key").map(|v| v.as_bytes());
        if given != Some(key.as_bytes()) {
            // API Gateway's answer to a missing or unknown key.
            return (message(403, "Forbidden", request_id), None);
        }
    }
    let (parts, body) = request.into_parts();
    let body = match http::read_body(body, MAX_REQUEST).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return (message(413, "Request Too Long", request_id), None),
        Err(BodyError::Read(e)) => {
            eprintln!("gateway: cannot read request body: {e}");
            return (message(400, "Bad Request", request_id), None);
        }
    };
    let event = proxy_event(&parts, &body, resource, peer, &config.stage, request_id);
    let url = format!(
        "{}/2015-03-31/functions/{function}/invocations",
        config.invoke_base.trim_end_matches('/')
    );
    match invoke(client, &url, &event, config.timeout).await {
        Ok(result) => match proxy_response(&result, request_id) {
            Ok(response) => (response, reading_counts(&result)),
            Err(why) => {
                eprintln!("gateway: {function}: {why}");
                (message(502, "Internal server error", request_id), None)
            }
        },
        Err(InvokeError::Unreachable(why)) => {
            eprintln!("gateway: invoking {function} at {url}: {why}; answered 503");
            (starting(function, request_id), None)
        }
        Err(InvokeError::Failed(why)) => {
            eprintln!("gateway: invoking {function} at {url}: {why}");
            (message(502, "Internal server error", request_id), None)
        }
    }
}

/// Why an invocation gave no proxy result.
#[derive(Debug)]
pub(crate) enum InvokeError {
    /// Nothing accepted the connection: the function host is not up (yet).
    Unreachable(String),
    /// The function ran and failed, or its answer could not be read.
    Failed(String),
}

/// Builds the API Gateway REST (v1) proxy event for a request.
pub fn proxy_event(
    parts: &hyper::http::request::Parts,
    body: &[u8],
    resource: &str,
    peer: SocketAddr,
    stage: &str,
    request_id: &str,
) -> Value {
    let mut headers = Map::new();
    let mut multi_headers: Map<String, Value> = Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        // API Gateway keeps the last value in `headers` and all of them in
        // `multiValueHeaders`.
        headers.insert(name.as_str().to_owned(), Value::String(value.clone()));
        match multi_headers
            .entry(name.as_str().to_owned())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(values) => values.push(Value::String(value)),
            other => *other = Value::Array(vec![Value::String(value)]),
        }
    }
    let pairs = http::query_pairs(parts.uri.query());
    let (query, multi_query) = if pairs.is_empty() {
        (Value::Null, Value::Null)
    } else {
        let mut single = Map::new();
        let mut multi: Map<String, Value> = Map::new();
        for (key, value) in pairs {
            single.insert(key.clone(), Value::String(value.clone()));
            if let Value::Array(values) =
                multi.entry(key).or_insert_with(|| Value::Array(Vec::new()))
            {
                values.push(Value::String(value));
            }
        }
        (Value::Object(single), Value::Object(multi))
    };
    let now = chrono::Utc::now();
    let user_agent = parts
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let host = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let path = parts.uri.path();
    let (body, is_base64) = if body.is_empty() {
        (Value::Null, false)
    } else {
        (
            Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
            true,
        )
    };
    json!({
        "resource": resource,
        "path": path,
        "httpMethod": parts.method.as_str(),
        "headers": if headers.is_empty() { Value::Null } else { Value::Object(headers) },
        "multiValueHeaders": if multi_headers.is_empty() { Value::Null } else { Value::Object(multi_headers) },
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": null,
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "resourceId": "local",
            "stage": stage,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            "requestTimeEpoch": now.timestamp_millis(),
            "path": format!("/{stage}{path}"),
            "resourcePath": resource,
            "httpMethod": parts.method.as_str(),
            "protocol": "HTTP/1.1",
            "domainName": host,
            "identity": {
                "sourceIp": peer.ip().to_string(),
                "userAgent": user_agent,
            },
        },
        "body": body,
        "isBase64Encoded": is_base64,
    })
}

/// Calls the Lambda invoke API; `Ok` holds the function's result JSON.
pub(crate) async fn invoke(
    client: &Client<HttpConnector, Full<Bytes>>,
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

/// Maps a Lambda proxy integration result to an HTTP response, or says why it is
/// malformed (API Gateway then answers 502).
pub fn proxy_response(result: &Value, request_id: &str) -> Result<HttpResponse, String> {
    let Some(object) = result.as_object() else {
        return Err(format!("malformed proxy response: {result}"));
    };
    if object.contains_key("errorMessage") || object.contains_key("errorType") {
        return Err(format!("function error: {result}"));
    }
    let status = object
        .get("statusCode")
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| format!("malformed proxy response (statusCode): {result}"))?;
    let mut builder = Response::builder().status(status as u16);
    let headers = builder
        .headers_mut()
        .ok_or_else(|| "cannot build the response".to_owned())?;
    let multi = object.get("multiValueHeaders").and_then(Value::as_object);
    if let Some(multi) = multi {
        for (name, values) in multi {
            let Some(values) = values.as_array() else {
                continue;
            };
            for value in values {
                headers.append(header_name(name)?, header_value(value)?);
            }
        }
    }
    if let Some(single) = object.get("headers").and_then(Value::as_object) {
        for (name, value) in single {
            let name = header_name(name)?;
            // API Gateway: a key in both maps keeps only the multiValueHeaders values.
            if !headers.contains_key(&name) {
                headers.insert(name, header_value(value)?);
            }
        }
    }
    if !headers.contains_key("content-type") {
        headers.insert("content-type", HeaderValue::from_static("application/json"));
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    let body = match object.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(text)) => {
            if object.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
                Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(|e| format!("body is not valid base64: {e}"))?,
                )
            } else {
                Bytes::from(text.clone())
            }
        }
        Some(other) => return Err(format!("malformed proxy response (body): {other}")),
    };
    builder
        .body(Full::new(body))
        .map_err(|e| format!("cannot build the response: {e}"))
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name:?}"))
}

fn header_value(value: &Value) -> Result<HeaderValue, String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => return Err(format!("bad header value {other}")),
    };
    HeaderValue::from_str(&text).map_err(|_| format!("bad header value {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_says_which_operations_need_a_key() {
        let contract = crate::openapi::document().unwrap();
        assert!(key_required(&contract, "/gasdetector", "POST"));
        assert!(key_required(&contract, "/gasdetector", "GET"));
        assert!(key_required(&contract, "/api/boxes", "GET"));
        assert!(!key_required(&contract, "/api/boxes", "OPTIONS"));
        assert!(!key_required(&contract, "/", "GET"));
        assert!(!key_required(&contract, "/", "POST"));
    }

    fn result(body: Value) -> Value {
        json!({"statusCode": 200, "body": body.to_string()})
    }

    #[test]
    fn reading_counts_reads_single_and_batch_answers() {
        let single = result(json!({"status": "ok", "id": "a", "warnings": [{}, {}]}));
        assert_eq!(
            reading_counts(&single).as_deref(),
            Some("stored=1 invalid=0 retry=0 warnings=2")
        );
        let invalid = result(json!({"error": "invalid_reading", "field": "groupid"}));
        assert_eq!(
            reading_counts(&invalid).as_deref(),
            Some("stored=0 invalid=1 retry=0 warnings=0")
        );
        let unavailable = result(json!({"error": "unavailable", "id": "a"}));
        assert_eq!(
            reading_counts(&unavailable).as_deref(),
            Some("stored=0 invalid=0 retry=1 warnings=0")
        );
        let batch = result(
            json!({"status": "retry", "stored": 2, "invalid": 1, "retry": 1,
            "items": [{"warnings": [{}]}, {"warnings": []}, {}, {}]}),
        );
        assert_eq!(
            reading_counts(&batch).as_deref(),
            Some("stored=2 invalid=1 retry=1 warnings=1")
        );
        for other in [
            json!({"statusCode": 200}),
            json!({"body": "not json"}),
            result(json!({})),
        ] {
            assert_eq!(reading_counts(&other), None, "{other}");
        }
    }
}
