//! The API Gateway REST API (v1) Lambda proxy integration, both ways, as pure functions:
//! an HTTP request becomes the proxy event a function receives ([`rest_event`]), and the
//! function's proxy result becomes the HTTP response ([`proxy_response`]). The gateway
//! emulator uses both; the cold-start harness (`bench/coldstart`) builds its warm-path
//! events with [`rest_event`].

use crate::http::{self, HttpResponse};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::Response;
use serde_json::{json, Map, Value};
use std::net::IpAddr;
use std::time::SystemTime;

/// The HTTP request, as the client sent it.
pub struct ProxyRequest<'a> {
    pub method: &'a str,
    /// The path without the query.
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// How the request body goes into the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEncoding {
    /// Base64 with `isBase64Encoded: true` (API Gateway's binary media types); an empty
    /// body is `null`.
    Base64,
    /// As text (invalid UTF-8 replaced) with `isBase64Encoded: false`.
    Text,
}

/// How much of `requestContext` the event carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextFields {
    /// As a deployed REST API sends it.
    Full,
    /// Without `extendedRequestId`, `requestTime`, `domainName` and `identity.userAgent`:
    /// the cold-start harness's event, as its earlier runs sent it, so their warm-path
    /// numbers stay comparable.
    Lean,
}

/// What API Gateway adds to the request: the matched resource, the stage, the ids.
pub struct ProxyContext<'a> {
    /// The resource path that matched (`resource`, `requestContext.resourcePath`).
    pub resource: &'a str,
    pub stage: &'a str,
    /// `requestContext.apiId` and `requestContext.resourceId`.
    pub api_id: &'a str,
    pub request_id: &'a str,
    /// The caller (`requestContext.identity.sourceIp`).
    pub source_ip: IpAddr,
    /// When the request arrived (`requestTime`, `requestTimeEpoch`).
    pub time: SystemTime,
    pub body: BodyEncoding,
    pub fields: ContextFields,
}

/// Builds the API Gateway REST (v1) proxy event for a request.
pub fn rest_event(request: &ProxyRequest, context: &ProxyContext) -> Value {
    let mut headers = Map::new();
    let mut multi_headers: Map<String, Value> = Map::new();
    for (name, value) in request.headers {
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
    let pairs = http::query_pairs(request.query);
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
    let (body, is_base64) = match context.body {
        BodyEncoding::Base64 if request.body.is_empty() => (Value::Null, false),
        BodyEncoding::Base64 => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(request.body)),
            true,
        ),
        BodyEncoding::Text => (
            Value::String(String::from_utf8_lossy(request.body).into_owned()),
            false,
        ),
    };
    let (resource, path, stage) = (context.resource, request.path, context.stage);
    let time = chrono::DateTime::<chrono::Utc>::from(context.time);
    let mut request_context = json!({
        "accountId": "123456789012",
        "apiId": context.api_id,
        "resourceId": context.api_id,
        "stage": stage,
        "requestId": context.request_id,
        "requestTimeEpoch": time.timestamp_millis(),
        "path": format!("/{stage}{path}"),
        "resourcePath": resource,
        "httpMethod": request.method,
        "protocol": "HTTP/1.1",
        "identity": {
            "sourceIp": context.source_ip.to_string(),
        },
    });
    if context.fields == ContextFields::Full {
        let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
        let user_agent = header("user-agent").map(str::to_owned);
        let host = header("host").unwrap_or("localhost").to_owned();
        request_context["extendedRequestId"] = json!(context.request_id);
        request_context["requestTime"] = json!(time.format("%d/%b/%Y:%H:%M:%S +0000").to_string());
        request_context["domainName"] = json!(host);
        request_context["identity"]["userAgent"] = json!(user_agent);
    }
    json!({
        "resource": resource,
        "path": path,
        "httpMethod": request.method,
        "headers": if headers.is_empty() { Value::Null } else { Value::Object(headers) },
        "multiValueHeaders": if multi_headers.is_empty() { Value::Null } else { Value::Object(multi_headers) },
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": null,
        "stageVariables": null,
        "requestContext": request_context,
        "body": body,
        "isBase64Encoded": is_base64,
    })
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
    use std::time::{Duration, UNIX_EPOCH};

    fn context(body: BodyEncoding, fields: ContextFields) -> ProxyContext<'static> {
        ProxyContext {
            resource: "/gasdetector",
            stage: "local",
            api_id: "local",
            request_id: "id-1",
            source_ip: [10, 0, 0, 7].into(),
            time: UNIX_EPOCH + Duration::from_millis(1_630_692_889_123),
            body,
            fields,
        }
    }

    #[test]
    fn a_full_event_carries_what_a_deployed_rest_api_sends() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.com"));
        headers.append("x-tag", HeaderValue::from_static("a"));
        headers.append("x-tag", HeaderValue::from_static("b"));
        let request = ProxyRequest {
            method: "POST",
            path: "/gasdetector",
            query: Some("k=1&k=2&x=a+b"),
            headers: &headers,
            body: b"{}",
        };
        let event = rest_event(
            &request,
            &context(BodyEncoding::Base64, ContextFields::Full),
        );
        assert_eq!(
            event,
            json!({
                "resource": "/gasdetector",
                "path": "/gasdetector",
                "httpMethod": "POST",
                "headers": {"host": "example.com", "x-tag": "b"},
                "multiValueHeaders": {"host": ["example.com"], "x-tag": ["a", "b"]},
                "queryStringParameters": {"k": "2", "x": "a b"},
                "multiValueQueryStringParameters": {"k": ["1", "2"], "x": ["a b"]},
                "pathParameters": null,
                "stageVariables": null,
                "requestContext": {
                    "accountId": "123456789012",
                    "apiId": "local",
                    "resourceId": "local",
                    "stage": "local",
                    "requestId": "id-1",
                    "extendedRequestId": "id-1",
                    "requestTime": "03/Sep/2021:18:14:49 +0000",
                    "requestTimeEpoch": 1_630_692_889_123u64,
                    "path": "/local/gasdetector",
                    "resourcePath": "/gasdetector",
                    "httpMethod": "POST",
                    "protocol": "HTTP/1.1",
                    "domainName": "example.com",
                    "identity": {"sourceIp": "10.0.0.7", "userAgent": null},
                },
                "body": "e30=",
                "isBase64Encoded": true,
            })
        );
    }

    #[test]
    fn bodies_are_base64_or_text() {
        let headers = HeaderMap::new();
        let request = |body: &'static [u8]| ProxyRequest {
            method: "GET",
            path: "/",
            query: None,
            headers: &headers,
            body,
        };
        let lean = |body, request: &ProxyRequest| {
            let event = rest_event(request, &context(body, ContextFields::Lean));
            (event["body"].clone(), event["isBase64Encoded"].clone())
        };
        let empty = request(b"");
        assert_eq!(
            lean(BodyEncoding::Base64, &empty),
            (json!(null), json!(false))
        );
        assert_eq!(lean(BodyEncoding::Text, &empty), (json!(""), json!(false)));
        let text = request(b"{\"a\": 1}");
        assert_eq!(
            lean(BodyEncoding::Text, &text),
            (json!("{\"a\": 1}"), json!(false))
        );
        let event = rest_event(&text, &context(BodyEncoding::Text, ContextFields::Lean));
        assert_eq!(event["headers"], Value::Null);
        assert_eq!(
            event["requestContext"]["identity"],
            json!({"sourceIp": "10.0.0.7"})
        );
        assert!(event["requestContext"].get("domainName").is_none());
    }
}
