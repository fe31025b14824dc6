//! The real adapters against a local server answering chosen statuses: throttling and
//! 5xx are retried (bounded), 400/403 are not, and a downstream that never answers is
//! cut off by the Lambda deadline so the function answers 503 + Retry-After in time.

mod support;
#[path = "support/tiny_http.rs"]
mod tiny_http;

use lambda_http::RequestExt;
use sensor_lambda::{App, IngestSettings};
use sensor_model::Sensor;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{request, SEED};
use tiny_http::{RawRequest, RawResponse};

/// How the fake downstream answers.
#[derive(Clone, Copy)]
enum Mode {
    /// IoT publishes get this status (with this AWS error type); bulk requests succeed.
    Iot(u16, &'static str),
    /// Bulk requests get this status; publishes succeed.
    Bulk(u16),
    /// Nothing is ever answered.
    Hang,
}

struct Downstream {
    app: App,
    publishes: Arc<AtomicUsize>,
    bulks: Arc<AtomicUsize>,
}

async fn downstream(mode: Mode) -> Downstream {
    let publishes = Arc::new(AtomicUsize::new(0));
    let bulks = Arc::new(AtomicUsize::new(0));
    let (p, b) = (publishes.clone(), bulks.clone());
    let (addr, _server) = tiny_http::serve(move |r: RawRequest| {
        let is_bulk = r.path.starts_with("/_bulk");
        if is_bulk {
            b.fetch_add(1, Ordering::SeqCst);
        } else {
            p.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            let ok_bulk = || {
                RawResponse::json(
                    200,
                    &json!({"errors": false, "items": [{"create": {"_id": "x", "status": 201}}]}),
                )
            };
            match (mode, is_bulk) {
                (Mode::Hang, _) => None,
                (Mode::Iot(status, kind), false) => Some(
                    RawResponse::json(status, &json!({"message": format!("{kind} from test")}))
                        .header("x-amzn-ErrorType", kind),
                ),
                (Mode::Iot(..), true) => Some(ok_bulk()),
                (Mode::Bulk(status), true) => Some(RawResponse::json(
                    status,
                    &json!({"error": {"type": "test", "reason": "test"}, "status": status}),
                )),
                (Mode::Bulk(_), false) => Some(RawResponse::json(200, &json!({}))),
            }
        }
    })
    .await;
    let url = format!("http://{addr}");
    let env: HashMap<&str, &str> = HashMap::from([
        ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", url.as_str()),
        ("OPENSEARCH_URL", url.as_str()),
        ("OPENSEARCH_AUTH", "none"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
    ]);
    let config =
        IngestSettings::from_lookup(Sensor::Gasdetector, |k| env.get(k).map(|v| v.to_string()))
            .expect("configuration");
    Downstream {
        app: App::from_settings(config).await.expect("init"),
        publishes,
        bulks,
    }
}

fn hot() -> String {
    SEED.replace("\"52.00\"", "\"95\"")
}

fn json_of(response: &lambda_http::Response<lambda_http::Body>) -> Value {
    serde_json::from_slice(response.body().as_ref()).expect("JSON")
}

/// Attempts the production policy makes (RetryPolicy::default().max_attempts).
const MAX_ATTEMPTS: usize = 6;

#[tokio::test]
async fn iot_throttling_and_5xx_are_retried_to_the_bound() {
    for (status, kind) in [
        (429, "ThrottlingException"),
        (500, "InternalFailureException"),
        (503, "ServiceUnavailableException"),
    ] {
        let d = downstream(Mode::Iot(status, kind)).await;
        let response = d.app.handle(request("POST", "/gasdetector", hot())).await;
        assert_eq!(response.status(), 503, "{status}");
        assert_eq!(response.headers()["retry-after"], "5");
        assert_eq!(
            d.publishes.load(Ordering::SeqCst),
            MAX_ATTEMPTS,
            "{status} retried"
        );
    }
}

#[tokio::test]
async fn iot_400_and_403_are_not_retried_and_say_why() {
    for (status, kind) in [
        (400, "InvalidRequestException"),
        (403, "ForbiddenException"),
    ] {
        let d = downstream(Mode::Iot(status, kind)).await;
        let response = d.app.handle(request("POST", "/gasdetector", hot())).await;
        assert_eq!(response.status(), 503, "{status}");
        assert_eq!(
            d.publishes.load(Ordering::SeqCst),
            1,
            "{status}: one attempt"
        );
        let message = json_of(&response)["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(message.contains(kind), "{status}: reason given: {message}");
    }
}

#[tokio::test]
async fn opensearch_statuses_are_classified() {
    for (status, attempts) in [(429, MAX_ATTEMPTS), (502, MAX_ATTEMPTS), (400, 1), (403, 1)] {
        let d = downstream(Mode::Bulk(status)).await;
        let response = d.app.handle(request("POST", "/gasdetector", SEED)).await;
        assert_eq!(response.status(), 503, "{status}");
        assert_eq!(d.bulks.load(Ordering::SeqCst), attempts, "{status}");
        let message = json_of(&response)["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(message.contains(&format!("HTTP {status}")), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_downstream_gets_a_503_before_the_lambda_deadline() {
    let d = downstream(Mode::Hang).await;
    let budget = Duration::from_millis(2500);
    let deadline_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + budget.as_millis();
    let mut context = lambda_http::Context::default();
    context.deadline = u64::try_from(deadline_ms).unwrap();
    let started = Instant::now();
    let response = d
        .app
        .handle(request("POST", "/gasdetector", hot()).with_lambda_context(context))
        .await;
    let took = started.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert!(took < budget, "answered in {took:?}, before the deadline");
    assert!(
        took >= budget - Duration::from_millis(700),
        "used the time it had: {took:?}"
    );
}
