//! Requests to AWS OpenSearch are SigV4-signed: the real app (`App::from_config`, the
//! real `opensearch` and `aws-sdk-iotdataplane` clients) against a local HTTP server that
//! records the headers as they arrive.

mod support;
#[path = "support/tiny_http.rs"]
mod tiny_http;

use sensor_lambda::{App, IngestSettings};
use sensor_model::Sensor;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{request, SEED};
use tiny_http::{RawRequest, RawResponse};
use tokio::sync::mpsc;

/// Starts a server playing both OpenSearch (`/_bulk`) and the IoT data plane
/// (`/topics/...` and the alarm shadow under `/things/...`), and an app configured for it with `extra` settings.
async fn app_against_recorder(
    extra: &[(&str, &str)],
) -> (App, mpsc::UnboundedReceiver<RawRequest>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let versions = Arc::new(AtomicU64::new(0));
    let (addr, _server) = tiny_http::serve(move |request: RawRequest| {
        let tx = tx.clone();
        let versions = versions.clone();
        async move {
            let response = if request.path.starts_with("/_bulk") {
                RawResponse::json(
                    200,
                    &json!({"took": 1, "errors": false, "items": [{"create": {"_id": "x", "status": 201}}]}),
                )
            } else if request.path.starts_with("/things/") && request.method == "GET" {
                // The alarm shadow of a group never seen: the shadow API's 404.
                RawResponse::json(
                    404,
                    &json!({"message": "No shadow exists with name: 'alarms'"}),
                )
                .header("x-amzn-ErrorType", "ResourceNotFoundException")
            } else if request.path.starts_with("/things/") {
                // Each write is the next version, as the shadow service answers.
                let version = versions.fetch_add(1, Ordering::SeqCst) + 1;
                RawResponse::json(200, &json!({"state": {}, "version": version, "timestamp": 1}))
            } else {
                RawResponse::json(200, &json!({}))
            };
            let _ = tx.send(request);
            Some(response)
        }
    })
    .await;
    let url = format!("http://{addr}");
    let mut env: HashMap<&str, &str> = HashMap::from([
        ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", url.as_str()),
        ("OPENSEARCH_URL", url.as_str()),
        ("OPENSEARCH_AUTH", "sigv4"),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        ),
    ]);
    for (k, v) in extra {
        env.insert(k, v);
    }
    let config =
        IngestSettings::from_lookup(Sensor::Gasdetector, |k| env.get(k).map(|v| v.to_string()))
            .expect("configuration");
    let app = App::from_settings(config).await.expect("init");
    (app, rx)
}

/// Posts a reading that trips no2 and returns the requests the server saw by path.
async fn requests_of_one_reading(
    app: &App,
    rx: &mut mpsc::UnboundedReceiver<RawRequest>,
) -> (RawRequest, RawRequest) {
    let body = SEED.replace("\"52.00\"", "\"95\"");
    let response = app.handle(request("POST", "/gasdetector", body)).await;
    assert_eq!(response.status(), 200);
    let mut bulk = None;
    let mut publish = None;
    while bulk.is_none() || publish.is_none() {
        let r = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("requests arrive")
            .expect("server running");
        if r.path.starts_with("/_bulk") {
            bulk = Some(r);
        } else if r.path.starts_with("/topics/") {
            publish = Some(r);
        }
    }
    (bulk.unwrap(), publish.unwrap())
}

fn authorization(r: &RawRequest) -> &str {
    r.header("authorization")
        .unwrap_or_else(|| panic!("{} {} is not signed: {:?}", r.method, r.path, r.headers))
}

#[tokio::test]
async fn opensearch_requests_are_signed_for_es_with_the_session_token() {
    let (app, mut rx) = app_against_recorder(&[("AWS_SESSION_TOKEN", "SESSIONTOKENEXAMPLE")]).await;
    let (bulk, publish) = requests_of_one_reading(&app, &mut rx).await;

    let auth = authorization(&bulk);
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        "{auth}"
    );
    assert!(auth.contains("/eu-west-1/es/aws4_request"), "{auth}");
    assert!(
        auth.contains("SignedHeaders=") && auth.contains("Signature="),
        "{auth}"
    );
    let signed = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("");
    for header in ["host", "x-amz-date"] {
        assert!(
            signed.split(';').any(|h| h == header),
            "{header} signed: {auth}"
        );
    }
    let date = bulk.header("x-amz-date").expect("x-amz-date");
    assert_eq!(date.len(), 16, "{date}");
    assert_eq!(
        bulk.header("x-amz-security-token"),
        Some("SESSIONTOKENEXAMPLE")
    );
    assert!(!auth.contains("wJalrXUtnFEMI"), "the secret never travels");

    // The IoT publish is signed too, for the iotdata service.
    let auth = authorization(&publish);
    assert!(auth.contains("/eu-west-1/iotdata/aws4_request"), "{auth}");
    assert_eq!(
        publish.header("x-amz-security-token"),
        Some("SESSIONTOKENEXAMPLE")
    );
}

#[tokio::test]
async fn serverless_requests_are_signed_for_aoss_without_a_token() {
    let (app, mut rx) = app_against_recorder(&[("OPENSEARCH_SERVICE", "aoss")]).await;
    let (bulk, _) = requests_of_one_reading(&app, &mut rx).await;
    let auth = authorization(&bulk);
    assert!(auth.contains("AKIDEXAMPLE/"), "{auth}");
    assert!(auth.contains("/eu-west-1/aoss/aws4_request"), "{auth}");
    assert!(bulk.header("x-amz-date").is_some());
    assert_eq!(bulk.header("x-amz-security-token"), None);
}

#[tokio::test]
async fn without_sigv4_nothing_is_signed() {
    let (app, mut rx) = app_against_recorder(&[("OPENSEARCH_AUTH", "none")]).await;
    let (bulk, _) = requests_of_one_reading(&app, &mut rx).await;
    assert_eq!(bulk.header("authorization"), None, "{:?}", bulk.headers);
}
