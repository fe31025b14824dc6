//! The warm path's API Gateway stand-in: an HTTP request becomes a REST (v1) proxy event
//! (the local gateway's own mapping, `local_aws::apigw_event`) on the Runtime API; the
//! proxy response becomes the HTTP response.

use crate::runtime_api::Job;
use crate::server::{reply, Body};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response};
use local_aws::apigw_event::{self, BodyEncoding, ContextFields, ProxyContext, ProxyRequest};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{mpsc, oneshot};

/// API Gateway stand-in: an HTTP request becomes a REST (v1) proxy event on the Runtime
/// API; the proxy response becomes the HTTP response.
pub async fn gateway(
    jobs: mpsc::Sender<Job>,
    seq: Arc<AtomicUsize>,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(400, ""),
    };
    let n = seq.fetch_add(1, Ordering::Relaxed);
    let request = ProxyRequest {
        method: method.as_str(),
        path: &path,
        query: query.as_deref(),
        headers: &headers(),
        body: &body,
    };
    let event = event(&request, n, SystemTime::now());
    let (tx, rx) = oneshot::channel();
    if jobs
        .send(Job {
            event: Bytes::from(event.to_string()),
            reply: tx,
        })
        .await
        .is_err()
    {
        return reply(502, "");
    }
    let Ok(outcome) = rx.await else {
        return reply(502, "");
    };
    if !outcome.ok {
        return reply(502, outcome.body);
    }
    let Ok(proxy) = serde_json::from_slice::<Value>(&outcome.body) else {
        return reply(502, outcome.body);
    };
    let status = proxy
        .get("statusCode")
        .and_then(Value::as_u64)
        .unwrap_or(200) as u16;
    let body = proxy
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    reply(status, body)
}

/// The headers the events carry: what the harness's client sends (`content-length`
/// aside), the same for every request, as in earlier runs.
fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("host", HeaderValue::from_static("127.0.0.1"));
    headers
}

/// The event of the `n`th request: stage `prod` of API `bench`, the path as the resource,
/// the body as text, the lean request context (the fields earlier runs sent, so the
/// warm-path numbers stay comparable).
fn event(request: &ProxyRequest, n: usize, time: SystemTime) -> Value {
    // A box's own route: the resource with its path parameter, as API Gateway sends it.
    let thing_route = request
        .path
        .strip_prefix("/things/")
        .and_then(|rest| rest.split_once('/'));
    let resource = match thing_route {
        Some((_, sensor)) => format!("/things/{{thing}}/{sensor}"),
        None => request.path.to_string(),
    };
    let context = ProxyContext {
        resource: &resource,
        stage: "prod",
        api_id: "bench",
        request_id: &format!("gw-{n}"),
        source_ip: Ipv4Addr::LOCALHOST.into(),
        time,
        body: BodyEncoding::Text,
        fields: ContextFields::Lean,
    };
    let mut event = apigw_event::rest_event(request, &context);
    if let Some((thing, _)) = thing_route {
        event["pathParameters"] = serde_json::json!({ "thing": thing });
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn events_carry_the_fields_earlier_runs_sent() {
        let time = UNIX_EPOCH + Duration::from_millis(1_630_692_889_123);
        let (method, path, n) = ("POST", "/gasdetector", 7);
        let body = r#"{"groupid": "2"}"#;
        let request = ProxyRequest {
            method,
            path,
            query: None,
            headers: &headers(),
            body: body.as_bytes(),
        };
        // The event this harness built by hand before it used the local gateway's mapping.
        let epoch_ms = 1_630_692_889_123u64;
        let earlier = json!({
            "resource": path, "path": path, "httpMethod": method,
            "headers": {"content-type": "application/json", "host": "127.0.0.1"},
            "multiValueHeaders": {"content-type": ["application/json"], "host": ["127.0.0.1"]},
            "queryStringParameters": null, "multiValueQueryStringParameters": null,
            "pathParameters": null, "stageVariables": null,
            "requestContext": {
                "accountId": "123456789012", "resourceId": "bench", "stage": "prod",
                "requestId": format!("gw-{n}"), "httpMethod": method, "path": format!("/prod{path}"),
                "resourcePath": path, "protocol": "HTTP/1.1", "apiId": "bench",
                "identity": {"sourceIp": "127.0.0.1"}, "requestTimeEpoch": epoch_ms
            },
            "body": body, "isBase64Encoded": false
        });
        assert_eq!(event(&request, n, time), earlier);
    }
}
