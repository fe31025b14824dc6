//! `sensor_lambda::runtime::run` against a local Lambda Runtime API (the real `lambda_runtime`
//! client polling `/next` and posting `/response` over HTTP): API Gateway envelopes whose
//! base64 body is garbage get a 400 naming `body` instead of a function error (the
//! panic in lambda_http's decoder), and the same process keeps serving.

mod support;
#[path = "support/tiny_http.rs"]
mod tiny_http;

use sensor_model::Sensor;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{apigw_rest_event, http_api_event, Harness, SEED};
use tiny_http::{RawRequest, RawResponse};
use tokio::sync::mpsc;

/// What the function posted back for one invocation.
#[derive(Debug)]
struct Posted {
    request_id: String,
    kind: String,
    body: Value,
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_base64_is_a_400_through_the_real_runtime_and_serving_continues() {
    let hot = SEED.replace("\"52.00\"", "\"95\"");
    let later = SEED.replace("18:14:49", "18:15:49");
    let events: Vec<(&str, String)> = vec![
        (
            "rest-garbage",
            apigw_rest_event("POST", "/gasdetector", "!!! not base64 !!!", true),
        ),
        (
            "http-api-garbage",
            http_api_event("POST", "/gasdetector", "Zm9v=", true),
        ),
        (
            "rest-good-base64",
            apigw_rest_event("POST", "/gasdetector", &b64(&hot), true),
        ),
        (
            "rest-plain",
            apigw_rest_event("POST", "/gasdetector", &later, false),
        ),
        ("direct", SEED.to_string()),
    ];
    let queue: Arc<Mutex<VecDeque<(String, String)>>> = Arc::new(Mutex::new(
        events
            .iter()
            .map(|(name, event)| (name.to_string(), event.clone()))
            .collect(),
    ));
    let (posted_tx, mut posted) = mpsc::unbounded_channel::<Posted>();
    let (addr, server) = tiny_http::serve(move |request: RawRequest| {
        let queue = queue.clone();
        let posted_tx = posted_tx.clone();
        async move { runtime_api(request, &queue, &posted_tx) }
    })
    .await;

    // The variables Lambda sets; lambda_runtime reads them in `Runtime::new`.
    // SAFETY (edition 2021: safe): this test binary has this one test, nothing else reads
    // the environment concurrently.
    std::env::set_var("AWS_LAMBDA_RUNTIME_API", addr.to_string());
    std::env::set_var("AWS_LAMBDA_FUNCTION_NAME", "gasdetector");
    std::env::set_var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128");
    std::env::set_var("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
    std::env::set_var("AWS_LAMBDA_LOG_STREAM_NAME", "test");
    std::env::set_var("AWS_LAMBDA_LOG_GROUP_NAME", "test");

    let h = Harness::new(Sensor::Gasdetector);
    let indexer = h.indexer.clone();
    let publisher = h.publisher.clone();
    // The runtime's future borrows the app (not Send): run it beside the collector.
    let collect = async {
        let mut answers = Vec::new();
        for (name, _) in &events {
            let answer = tokio::time::timeout(Duration::from_secs(20), posted.recv())
                .await
                .unwrap_or_else(|_| panic!("{name}: no answer from the function within 20 s"))
                .expect("runtime API closed");
            assert_eq!(&answer.request_id, name, "answers come in order");
            answers.push(answer);
        }
        answers
    };
    let answers = tokio::select! {
        result = sensor_lambda::runtime::run(h.app) => panic!("the runtime stopped: {result:?}"),
        answers = collect => answers,
    };
    server.abort();

    for answer in &answers[..2] {
        assert_eq!(answer.kind, "response", "{answer:?}: not a function error");
        assert_eq!(answer.body["statusCode"], 400, "{answer:?}");
        let body: Value =
            serde_json::from_str(answer.body["body"].as_str().expect("body")).expect("JSON");
        assert_eq!(body["error"], "invalid_reading");
        assert_eq!(body["field"], "body");
    }
    // The function kept serving: the good ones are stored, the hot one warned.
    for answer in &answers[2..4] {
        assert_eq!(answer.kind, "response");
        assert_eq!(answer.body["statusCode"], 200, "{answer:?}");
    }
    assert_eq!(answers[4].kind, "response");
    assert_eq!(answers[4].body["status"], "ok", "direct invoke: the body");
    // hot and direct share one id (same group, sensors and times): stored once.
    assert_eq!(indexer.docs.lock().unwrap().len(), 2);
    // The hot reading raised the alarm, the later normal one cleared it; the direct
    // invoke (a resend of the hot reading's id) applied nothing again.
    let states: Vec<Value> = publisher
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|m| serde_json::from_slice::<Value>(&m.payload).expect("JSON")["state"].clone())
        .collect();
    assert_eq!(states, ["alarm", "normal"]);
}

fn runtime_api(
    request: RawRequest,
    queue: &Mutex<VecDeque<(String, String)>>,
    posted: &mpsc::UnboundedSender<Posted>,
) -> Option<RawResponse> {
    let path = request.path.as_str();
    if path.ends_with("/runtime/invocation/next") {
        // Nothing left: hold the long poll, as Lambda does between invocations.
        let (id, event) = queue.lock().unwrap().pop_front()?;
        let deadline = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            + 30_000;
        return Some(
            RawResponse::new(200, event)
                .header("content-type", "application/json")
                .header("lambda-runtime-aws-request-id", &id)
                .header("lambda-runtime-deadline-ms", &deadline.to_string())
                .header(
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:gasdetector",
                )
                .header(
                    "lambda-runtime-trace-id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793",
                ),
        );
    }
    if let Some(rest) = path.strip_prefix("/2018-06-01/runtime/invocation/") {
        let (id, kind) = rest.split_once('/').unwrap_or((rest, ""));
        let body = serde_json::from_slice(&request.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&request.body).into_owned()));
        let _ = posted.send(Posted {
            request_id: id.to_string(),
            kind: kind.to_string(),
            body,
        });
        return Some(RawResponse::json(202, &json!({"status": "OK"})));
    }
    Some(RawResponse::json(404, &json!({"message": "unknown path"})))
}
