//! The IoT data-plane stub the functions publish to and keep their alarm shadows in.

use crate::server::{reply, whole_body, Body};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// DescribeThing calls answered (`GET /things/{thing}`), for the cache figures.
pub static REGISTRY_LOOKUPS: AtomicU64 = AtomicU64::new(0);

/// The thing of a DescribeThing path (`/things/{thing}`, nothing after it).
fn described_thing(path: &str) -> Option<&str> {
    let thing = path.strip_prefix("/things/")?;
    (!thing.is_empty() && !thing.contains('/')).then_some(thing)
}

/// `POST /topics/{topic}?qos=1` answers 200 `{}`, like the IoT data plane; the alarm
/// shadows (`/things/{thing}/shadow?name=`) are kept with versions and answer at once
/// (409 on a stale version, 404 before the first update), so the alarm state's round
/// trip is measured as the function's own cost, as the publish is.
pub async fn iot_stub(count: Arc<AtomicU64>, req: Request<Incoming>) -> Response<Body> {
    static SHADOWS: Mutex<Option<HashMap<String, (Value, u64)>>> = Mutex::new(None);
    let path = req.uri().path().to_string();
    if req.method() == Method::POST && path.starts_with("/topics/") {
        let _ = req.into_body().collect().await;
        count.fetch_add(1, Ordering::Relaxed);
        return reply(200, "{}");
    }
    if !path.starts_with("/things/") {
        return reply(404, r#"{"message":"not found"}"#);
    }
    if let Some(thing) = described_thing(&path) {
        // DescribeThing (the registry): box `box-<group>` belongs to `<group>`, so every
        // cold start's unique group has its own box.
        REGISTRY_LOOKUPS.fetch_add(1, Ordering::Relaxed);
        let group = thing.strip_prefix("box-").unwrap_or(thing);
        return reply(
            200,
            json!({"thingName": thing, "thingId": thing, "version": 1,
                   "thingArn": format!("arn:aws:iot:us-east-1:123456789012:thing/{thing}"),
                   "attributes": {"groupid": group}})
            .to_string(),
        );
    }
    let key = format!("{path}?{}", req.uri().query().unwrap_or(""));
    let method = req.method().clone();
    let body = whole_body(req).await;
    let mut guard = SHADOWS.lock().unwrap_or_else(|e| e.into_inner());
    let shadows = guard.get_or_insert_with(HashMap::new);
    let not_found = || {
        let mut r = reply(404, r#"{"message":"No shadow exists"}"#);
        r.headers_mut().insert(
            "x-amzn-ErrorType",
            hyper::header::HeaderValue::from_static("ResourceNotFoundException"),
        );
        r
    };
    match method {
        Method::GET => match shadows.get(&key) {
            Some((reported, version)) => reply(
                200,
                json!({"state": {"reported": reported}, "version": version}).to_string(),
            ),
            None => not_found(),
        },
        Method::POST => {
            let update: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let current = shadows.get(&key).map(|(_, v)| *v);
            if let Some(expected) = update["version"].as_u64() {
                if current != Some(expected) {
                    let mut r = reply(409, r#"{"message":"Version conflict"}"#);
                    r.headers_mut().insert(
                        "x-amzn-ErrorType",
                        hyper::header::HeaderValue::from_static("ConflictException"),
                    );
                    return r;
                }
            }
            // The alarm state writes whole arrays, so replacing `reported` is merging it.
            let version = current.unwrap_or(0) + 1;
            shadows.insert(key, (update["state"]["reported"].clone(), version));
            reply(200, json!({"version": version}).to_string())
        }
        _ => reply(405, r#"{"message":"method not allowed"}"#),
    }
}
