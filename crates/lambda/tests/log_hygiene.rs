//! Logs carry ids and measure names, never credentials, values or payloads: readings
//! (stored, tripping rules, invalid, in batches, failing downstream with error bodies that
//! echo the document) go through the real app and adapters against a local server while
//! every log line (the project's at TRACE, dependencies' at INFO, Lambda's default) is
//! captured.

mod support;
#[path = "support/tiny_http.rs"]
mod tiny_http;

use sensor_lambda::observability::emf::MetricsSink;
use sensor_lambda::observability::logging::{LogFormat, LogSettings};
use sensor_lambda::{App, IngestSettings};
use sensor_model::Sensor;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::{request, Capture};
use tiny_http::{RawRequest, RawResponse};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETKEY";
const TOKEN: &str = "IQoJb3JpZ2luX2VjSESSIONTOKEN";
const GPS: &str = "37.61002501514269, 126.99636868892937";

fn reading(group: &str, no2: &str, time: &str) -> Value {
    json!({"groupid": group, "gps": GPS,
        "no2": {"sensorid": "0006", "sensortype": "9", "value": no2, "createdtime": time},
        "co": {"sensorid": "0005", "sensortype": "8", "value": "61.25", "createdtime": time}})
}

#[tokio::test]
async fn logs_hold_ids_and_measure_names_but_no_secrets_values_or_payloads() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        )
        .with(
            Targets::new()
                .with_target("sensor_core", tracing::Level::TRACE)
                .with_target("sensor_aws", tracing::Level::TRACE)
                .with_target("sensor_lambda", tracing::Level::TRACE)
                .with_default(tracing::Level::INFO),
        );
    let guard = tracing::subscriber::set_default(subscriber);
    let (ids, emf) = drive_requests().await;
    drop(guard);
    check(&capture, &ids, &emf);
}

/// The same requests with the functions' own subscriber in JSON mode (Lambda's
/// `AWS_LAMBDA_LOG_FORMAT=JSON`): every line is a JSON object, and still nothing secret.
#[tokio::test]
async fn json_logs_hold_no_secrets_values_or_payloads_either() {
    let (capture, guard) = support::capture_logs(&LogSettings {
        format: LogFormat::Json,
        filter: "info,sensor_core=trace,sensor_aws=trace,sensor_lambda=trace".into(),
    });
    let (ids, emf) = drive_requests().await;
    drop(guard);
    let logs = check(&capture, &ids, &emf);
    for line in logs.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["requestId"].is_string(), "{line}");
    }
}

/// The scenario: stored, warning, batch, invalid, bad group, truncated JSON; the
/// downstreams fail (with error bodies echoing the request) from the 6th call on.
/// Returns the ids answered and the EMF lines written.
async fn drive_requests() -> (Vec<String>, Vec<String>) {
    // A local OpenSearch + IoT endpoint answering with real services' errors: OpenSearch
    // mapper errors quote the field's value, an IoT 403 names the caller and the topic.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let (addr, _server) = tiny_http::serve(move |r: RawRequest| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let echo = String::from_utf8_lossy(&r.body).into_owned();
            Some(if r.path.starts_with("/_bulk") {
                let docs = r.body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() / 2;
                let items: Vec<Value> = (0..docs)
                    .map(|i| {
                        if i == 0 && n >= 5 && n.is_multiple_of(2) {
                            json!({"create": {"_id": "x", "status": 400, "error": {"type": "mapper_parsing_exception",
                                "reason": format!("failed to parse; Preview of field's value: {echo}")}}})
                        } else {
                            json!({"create": {"_id": "x", "status": 201}})
                        }
                    })
                    .collect();
                RawResponse::json(200, &json!({"took": 1, "errors": true, "items": items}))
            } else if n >= 5 && n.is_multiple_of(3) {
                // What IoT Core says: it names the caller and the topic, not the payload.
                RawResponse::json(403, &json!({"message": format!(
                    "User: arn:aws:sts::123456789012:assumed-role/fn/gasdetector is not authorized to perform: iot:Publish on resource: arn:aws:iot:eu-west-1:123456789012:topic{}",
                    r.path.trim_start_matches("/topics").split('?').next().unwrap_or(""))}))
                    .header("x-amzn-ErrorType", "ForbiddenException")
            } else if n >= 5 && n % 3 == 1 {
                RawResponse::json(500, &json!({"message": "internal"}))
                    .header("x-amzn-ErrorType", "InternalFailureException")
            } else {
                RawResponse::json(200, &json!({}))
            })
        }
    })
    .await;
    let url = format!("http://{addr}");
    let env: HashMap<&str, &str> = HashMap::from([
        ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", url.as_str()),
        ("OPENSEARCH_URL", url.as_str()),
        ("OPENSEARCH_AUTH", "sigv4"),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDLOGTEST"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_SESSION_TOKEN", TOKEN),
        ("ACK_MESSAGES", "true"),
        // The scripted faults count calls to publish and `_bulk`; this server speaks no
        // shadow API (alarm-state failures are logged by the same code paths, and their
        // reasons are tested in tests/tests/alarm_faults.rs).
        ("ALARM_MODE", "every"),
    ]);
    let config =
        IngestSettings::from_lookup(Sensor::Gasdetector, |k| env.get(k).map(|v| v.to_string()))
            .expect("configuration");
    let (sink, emf) = MetricsSink::memory();
    let app = App::from_settings(config)
        .await
        .expect("init")
        .with_metrics_sink(sink);

    let mut ids = Vec::new();
    for (i, body) in [
        reading("2", "95.00", "2021-09-03 18:14:49").to_string(),
        reading("3", "12.50", "2021-09-03 18:14:50").to_string(),
        json!([
            reading("4", "95.00", "2021-09-03 18:14:51"),
            reading("5", "77.75", "2021-09-03 18:14:52")
        ])
        .to_string(),
        reading("6", "NaN", "2021-09-03 18:14:53").to_string(),
        reading("2/#", "95.00", "2021-09-03 18:14:54").to_string(),
        "{\"groupid\": \"2\", \"no2\": {\"value\": \"95.00\"".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let response = app.handle(request("POST", "/gasdetector", body)).await;
        let reply: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        if let Some(id) = reply["id"].as_str() {
            ids.push(id.to_string());
        }
        assert!(
            [200, 400, 503].contains(&response.status().as_u16()),
            "request {i}: {reply}"
        );
    }
    assert!(
        calls.load(Ordering::SeqCst) > 4,
        "the downstreams were called"
    );
    let emf = emf.lock().unwrap().clone();
    (ids, emf)
}

/// Nothing secret or payload-like in the logs or the metrics; ids and names are there.
fn check(capture: &Capture, ids: &[String], emf: &[String]) -> String {
    let mut logs = capture.text();
    assert!(!emf.is_empty(), "metrics written");
    for line in emf {
        logs.push_str(line);
        logs.push('\n');
    }
    assert!(!logs.is_empty());
    for forbidden in [
        SECRET,
        "wJalrXUtnFEMI",
        TOKEN,
        "Signature=",
        "95.00",
        "12.50",
        "77.75",
        "61.25",
        GPS,
        "37.61002501514269",
        "2021-09-03 18:14:49",
        "createdtime",
        "sensortype",
    ] {
        if let Some(at) = logs.find(forbidden) {
            let line_start = logs[..at].rfind('\n').map_or(0, |n| n + 1);
            let line_end = logs[at..].find('\n').map_or(logs.len(), |n| at + n);
            panic!(
                "logs contain {forbidden:?}:\n{}",
                &logs[line_start..line_end]
            );
        }
    }
    assert!(!ids.is_empty());
    for id in ids {
        assert!(logs.contains(id.as_str()), "id {id} logged:\n{logs}");
    }
    // The first two readings are stored (the downstreams fail only from the 6th call).
    assert!(logs.contains("reading stored"), "{logs}");
    for name in ["no2", "co", "groupid"] {
        assert!(logs.contains(name), "{name} logged:\n{logs}");
    }
    println!("{logs}");
    logs
}
