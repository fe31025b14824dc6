//! Every bad request in `events/bad/cases.json` sent over HTTP to the local API Gateway
//! emulator (`local_aws::Gateway`, which builds REST proxy events with base64 bodies),
//! invoking the function in-process through the same path as on Lambda: the runtime's
//! base64 guard, lambda_http's event parser and `sensor_lambda::runtime::answer`, with fake
//! ports. Each gets its status and a JSON error naming the field, nothing is published
//! or indexed, and the functions keep serving. (Undecodable base64 cannot be produced by
//! the gateway; those cases run in `crates/lambda/tests/bad_events.rs` and `runtime.rs`.)

#[path = "../../crates/lambda/tests/support/bad_cases.rs"]
mod bad_cases;
#[path = "../../crates/lambda/tests/support/mod.rs"]
mod support;
#[path = "../../crates/lambda/tests/support/tiny_http.rs"]
mod tiny_http;

use local_aws::{Gateway, GatewayConfig};
use sensor_lambda::runtime::{answer, Base64Guard};
use sensor_model::Sensor;
use serde_json::{json, Map};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use support::{good_reading, Harness};
use tiny_http::{RawRequest, RawResponse};

/// A function error as the Lambda invoke API reports it: 200 with `X-Amz-Function-Error`.
fn function_error(kind: &str, message: &str) -> RawResponse {
    RawResponse::json(200, &json!({"errorType": kind, "errorMessage": message}))
        .header("x-amz-function-error", "Unhandled")
}

/// The Lambda invoke API for the three functions, answering like `cargo lambda watch`.
async fn invoke(
    request: RawRequest,
    harnesses: &HashMap<Sensor, Harness>,
    guard: &Base64Guard,
) -> RawResponse {
    let name = request
        .path
        .strip_prefix("/2015-03-31/functions/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    let Some(sensor) = Sensor::ALL.into_iter().find(|s| s.name() == name) else {
        return RawResponse::json(404, &json!({"message": format!("no function {name}")}));
    };
    let event = guard.rewrite(&request.body).unwrap_or(request.body);
    let text = String::from_utf8(event).expect("events are JSON");
    let request = match lambda_http::request::from_str(&text) {
        Ok(r) => r,
        Err(e) => return function_error("Parse", &e.to_string()),
    };
    let response = match answer(&harnesses[&sensor].app, guard, request).await {
        Ok(r) => r,
        Err(e) => return function_error("Handler", &e.to_string()),
    };
    let mut headers = Map::new();
    let mut multi = Map::new();
    for (k, v) in response.headers() {
        let v = v.to_str().unwrap_or("").to_string();
        headers.insert(k.as_str().to_string(), json!(v));
        multi.insert(k.as_str().to_string(), json!([v]));
    }
    RawResponse::json(
        200,
        &json!({
            "statusCode": response.status().as_u16(),
            "headers": headers,
            "multiValueHeaders": multi,
            "body": String::from_utf8_lossy(response.body().as_ref()),
            "isBase64Encoded": false,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_through_the_local_gateway() {
    let harnesses: Arc<HashMap<Sensor, Harness>> = Arc::new(
        Sensor::ALL
            .into_iter()
            .map(|s| (s, Harness::new(s)))
            .collect(),
    );
    let guard = Base64Guard::new();
    let (addr, _invoke_api) = {
        let (harnesses, guard) = (harnesses.clone(), guard.clone());
        tiny_http::serve(move |request: RawRequest| {
            let (harnesses, guard) = (harnesses.clone(), guard.clone());
            async move { Some(invoke(request, &harnesses, &guard).await) }
        })
        .await
    };
    let gateway = Gateway::start(
        "127.0.0.1:0".parse().expect("address"),
        GatewayConfig {
            timeout: Duration::from_secs(30),
            ..GatewayConfig::sensors(format!("http://{addr}"))
        },
    )
    .await
    .expect("gateway");
    let http = reqwest::Client::new();

    let mut failures = Vec::new();
    let mut ran = 0;
    for case in bad_cases::load() {
        let Some(body) = case.body.clone() else {
            continue;
        };
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("method");
        let mut request = http.request(method, format!("{}{}", gateway.url(), case.route));
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = tokio::time::timeout(Duration::from_secs(30), request.send())
            .await
            .unwrap_or_else(|_| panic!("{}: no answer within 30 s", case.name))
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        ran += 1;
        if let Err(e) = bad_cases::check(&case, status, &bytes) {
            failures.push(e);
        }
        for (sensor, h) in harnesses.iter() {
            if h.published() + h.indexed() + h.index_calls() > 0 {
                failures.push(format!("{}: {sensor:?} published or indexed", case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{ran} cases, failures:\n{}",
        failures.join("\n")
    );
    assert!(ran >= 60, "{ran} cases through the gateway");

    for sensor in Sensor::ALL {
        let response = http
            .post(format!("{}/{}", gateway.url(), sensor.name()))
            .header("content-type", "application/json")
            .body(good_reading(sensor).to_string())
            .send()
            .await
            .expect("good reading");
        assert_eq!(response.status(), 200, "{sensor:?} still serves");
        assert_eq!(harnesses[&sensor].indexed(), 1);
    }
    println!("{ran} bad requests through the gateway answered as expected");
}
