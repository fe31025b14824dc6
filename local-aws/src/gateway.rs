//! An API Gateway (REST API, Lambda proxy integration) emulator: each request to a
//! configured route becomes an API Gateway v1 proxy event ([`crate::apigw_event`]), the
//! function is invoked through the Lambda invoke API of `cargo lambda watch`
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

use crate::apigw_event::{self, BodyEncoding, ContextFields, ProxyContext, ProxyRequest};
use crate::http::{self, BodyError, HttpResponse, Server};
use crate::invoke::{self, invoke, InvokeClient, InvokeError};
use crate::signature::{self, Refusal};
use crate::sts::IssuedCredentials;
use hyper::body::Incoming;
use hyper::Request;
use serde_json::{json, Value};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// API Gateway's payload limit.
pub const MAX_REQUEST: usize = 10 * 1024 * 1024;
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
    /// The sessions of the local credentials provider: with them, the IAM-authorized
    /// routes (`/things/{thing}/<sensor>`) take requests signed with their credentials
    /// ([`crate::signature`]). None: no credentials provider, so every request there is
    /// refused as one with unknown credentials.
    pub sessions: Option<IssuedCredentials>,
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
            sessions: None,
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
    client: InvokeClient,
    /// `api/openapi.yaml` as JSON; `servers` is filled in per request (the Host asked for).
    contract: Value,
}

impl Gateway {
    pub async fn start(addr: SocketAddr, config: GatewayConfig) -> io::Result<Gateway> {
        let contract = crate::openapi::document()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let state = Arc::new(State {
            config,
            client: invoke::client(),
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

/// The thing and sensor of an IAM-authorized ingest route, `/things/{thing}/<sensor>`.
pub fn thing_route(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/things/")?;
    let (thing, sensor) = rest.split_once('/')?;
    (!thing.is_empty() && INGEST_FUNCTIONS.contains(&sensor)).then_some((thing, sensor))
}

/// API Gateway's answer on an IAM-authorized route when there is no credentials provider
/// to have issued credentials: no signature at all, or credentials it does not know.
fn unsigned(request: &Request<Incoming>, request_id: &str) -> HttpResponse {
    let refusal = if request.headers().contains_key(hyper::header::AUTHORIZATION) {
        Refusal::InvalidToken
    } else {
        Refusal::Missing
    };
    refused(&refusal, request_id)
}

fn refused(refusal: &Refusal, request_id: &str) -> HttpResponse {
    http::json(
        403,
        &refusal.body(),
        &[
            ("x-amzn-RequestId", request_id),
            ("x-amzn-ErrorType", "AccessDeniedException"),
        ],
    )
}

async fn route(
    request: Request<Incoming>,
    peer: SocketAddr,
    state: &State,
    request_id: &str,
) -> (HttpResponse, Option<String>) {
    let (config, client) = (&state.config, &state.client);
    let path = request.uri().path().to_owned();
    // A box's own route: IAM-authorized, the thing a path parameter.
    let box_route = thing_route(&path).map(|(thing, sensor)| {
        (
            format!("/things/{{thing}}/{sensor}"),
            sensor.to_owned(),
            thing.to_owned(),
        )
    });
    let (resource, function) = match &box_route {
        Some((resource, sensor, _)) => {
            if config.sessions.is_none() {
                return (unsigned(&request, request_id), None);
            }
            (resource.as_str(), sensor.as_str())
        }
        None => {
            let Some((resource, function)) =
                config.routes.iter().find(|(resource, _)| *resource == path)
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
            (resource.as_str(), function.as_str())
        }
    };
    let (parts, body) = request.into_parts();
    let body = match http::read_body(body, MAX_REQUEST).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return (message(413, "Request Too Long", request_id), None),
        Err(BodyError::Read(e)) => {
            eprintln!("gateway: cannot read request body: {e}");
            return (message(400, "Bad Request", request_id), None);
        }
    };
    let caller = match (&box_route, &config.sessions) {
        (Some(_), Some(sessions)) => {
            let checked =
                signature::verify(&parts, &body, sessions, SystemTime::now()).and_then(|caller| {
                    signature::authorize(&caller, parts.method.as_str(), &path, &config.stage)
                        .map(|()| caller)
                });
            match checked {
                Ok(caller) => Some(caller),
                Err(refusal) => {
                    if config.log {
                        eprintln!(
                            "gateway: {} {path} refused: {}",
                            parts.method,
                            refusal.body()
                        );
                    }
                    return (refused(&refusal, request_id), None);
                }
            }
        }
        _ => None,
    };
    let request = ProxyRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        body: &body,
    };
    let context = ProxyContext {
        resource,
        stage: &config.stage,
        api_id: "local",
        request_id,
        source_ip: peer.ip(),
        time: SystemTime::now(),
        body: BodyEncoding::Base64,
        fields: ContextFields::Full,
    };
    let mut event = apigw_event::rest_event(&request, &context);
    if let (Some((_, _, thing)), Some(caller)) = (&box_route, &caller) {
        event["pathParameters"] = json!({ "thing": thing });
        if let (Some(identity), Some(signed)) = (
            event["requestContext"]["identity"].as_object_mut(),
            caller.identity().as_object(),
        ) {
            identity.extend(signed.clone());
        }
    }
    let url = invoke::url(config.invoke_base.trim_end_matches('/'), function);
    // As API Gateway does, the invocation runs to completion even when the caller hangs up
    // (a box killed mid-request): dropping it mid-flight would make `cargo lambda watch`
    // reset the function's Runtime API connection, and the function process exits.
    let invocation = tokio::spawn({
        let (client, url, timeout) = (client.clone(), url.clone(), config.timeout);
        async move { invoke(&client, &url, &event, timeout).await }
    });
    let result = invocation
        .await
        .unwrap_or_else(|e| Err(InvokeError::Failed(format!("invocation task: {e}"))));
    match result {
        Ok(result) => match apigw_event::proxy_response(&result, request_id) {
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
