//! The real function binary (built and served by `cargo lambda watch`, running
//! `sensor_lambda::runtime::run`) given API Gateway envelopes whose base64 body is garbage:
//! a 400 naming `body`, not a function error, and the next good event is stored.

#[path = "../../crates/lambda/tests/support/mod.rs"]
mod support;

use integration_tests::{start_watch, Peers, WATCH_BUILD as BUILD};
use serde_json::Value;
use support::{apigw_rest_event, http_api_event, SEED};

async fn invoke(http: &reqwest::Client, port: u16, event: String) -> (Option<String>, Value) {
    let response = http
        .post(format!(
            "http://127.0.0.1:{port}/2015-03-31/functions/gasdetector/invocations"
        ))
        .header("content-type", "application/json")
        .body(event)
        .timeout(BUILD)
        .send()
        .await
        .expect("invoke");
    let error = response
        .headers()
        .get("x-amz-function-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.expect("body");
    (
        error,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_base64_through_cargo_lambda_watch_is_a_400() {
    let peers = Peers::start().await;
    let (_watch, port) = start_watch(&peers.env(), &[]).await;
    let http = reqwest::Client::new();

    for event in [
        apigw_rest_event("POST", "/gasdetector", "!!! not base64 !!!", true),
        http_api_event("POST", "/gasdetector", "Zm9v=", true),
    ] {
        let (error, reply) = invoke(&http, port, event).await;
        assert_eq!(error, None, "not a function error: {reply}");
        assert_eq!(reply["statusCode"], 400, "{reply}");
        let body: Value =
            serde_json::from_str(reply["body"].as_str().expect("body")).expect("JSON body");
        assert_eq!(body["field"], "body", "{body}");
        let message = body["message"].as_str().unwrap_or("");
        assert!(message.contains("base64"), "the guard answered: {body}");
    }
    let (error, reply) = invoke(
        &http,
        port,
        apigw_rest_event("POST", "/gasdetector", SEED, false),
    )
    .await;
    assert_eq!(error, None, "{reply}");
    assert_eq!(reply["statusCode"], 200, "still serving: {reply}");
    peers
        .opensearch
        .wait_count("gasdetect", serde_json::json!({"match_all": {}}), 1)
        .await;
}
