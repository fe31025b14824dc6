//! Logs and metrics per request, with the in-process fakes of the two ports: in JSON mode
//! every line parses and carries the request's ids; a request's lines share its request id;
//! its summary line and EMF lines count what it did (stored, invalid, retried, failed).

#[path = "support/emf.rs"]
mod emf;
mod support;

use lambda_http::{Context, Request, RequestExt};
use sensor_core::ports::DownstreamError;
use sensor_lambda::observability::emf::MetricsSink;
use sensor_lambda::observability::logging::{LogFormat, LogSettings};
use sensor_model::Sensor;
use serde_json::{json, Value};
use support::{capture_logs, Harness, SEED};

fn json_settings() -> LogSettings {
    LogSettings {
        format: LogFormat::Json,
        filter: "info,sensor_core=trace,sensor_aws=trace,sensor_lambda=trace".into(),
    }
}

fn post(body: String, request_id: &str) -> Request {
    let mut context = Context::default();
    context.request_id = request_id.to_string();
    support::request("POST", "/gasdetector", body).with_lambda_context(context)
}

/// SEED with no2 = 95: trips the no2 rule, so one warning is published.
fn warning_reading(time: &str) -> String {
    SEED.replace("\"52.00\"", "\"95\"")
        .replace("2021-09-03 18:14:49", time)
}

struct Run {
    logs: Vec<Value>,
    emf: Vec<Value>,
    status: u16,
}

/// One request through the handler, its log lines (JSON) and EMF lines captured.
async fn run(h: Harness, body: String, request_id: &str) -> Run {
    let (capture, _guard) = capture_logs(&json_settings());
    let (sink, lines) = MetricsSink::memory();
    let app = h.app.with_metrics_sink(sink);
    let response = app.handle(post(body, request_id)).await;
    drop(_guard);
    let logs = capture
        .lines()
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"))
        })
        .collect();
    let emf = lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| emf::validate(l))
        .collect();
    Run {
        logs,
        emf,
        status: response.status().as_u16(),
    }
}

fn summary(run: &Run) -> &Value {
    let done: Vec<&Value> = run
        .logs
        .iter()
        .filter(|l| l["message"] == "request done")
        .collect();
    assert_eq!(done.len(), 1, "one summary line: {:?}", run.logs);
    done[0]
}

/// The request line (dimensions function, sensor) and the per-target lines.
fn emf_lines(run: &Run) -> (&Value, Vec<&Value>) {
    let (request, targets): (Vec<&Value>, Vec<&Value>) =
        run.emf.iter().partition(|l| l.get("target").is_none());
    assert_eq!(request.len(), 1, "one request line: {:?}", run.emf);
    (request[0], targets)
}

fn assert_common_keys(run: &Run, request_id: &str) {
    assert!(!run.logs.is_empty());
    for line in &run.logs {
        for key in [
            "timestamp",
            "level",
            "message",
            "target",
            "function",
            "sensor",
        ] {
            assert!(line.get(key).is_some(), "{key} in {line}");
        }
        assert_eq!(line["requestId"], request_id, "{line}");
        assert_eq!(line["function"], "gasdetector");
        assert_eq!(line["sensor"], "gasdetector");
    }
    for line in &run.emf {
        assert_eq!(line["requestId"], request_id);
        assert_eq!(line["function"], "gasdetector");
        assert_eq!(line["sensor"], "gasdetector");
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "SensorIngest"
        );
    }
}

#[tokio::test]
async fn a_stored_reading_is_logged_with_its_ids_and_counted() {
    let h = Harness::new(Sensor::Gasdetector);
    let run = run(h, warning_reading("2021-09-03 18:14:49"), "req-stored").await;
    assert_eq!(run.status, 200);
    assert_common_keys(&run, "req-stored");
    // The reading is known from validation on: every line carries group and document id.
    let document_id = summary(&run)["documentId"].as_str().unwrap().to_string();
    assert_eq!(document_id.len(), 32);
    for line in &run.logs {
        assert_eq!(line["groupid"], "2", "{line}");
        assert_eq!(line["documentId"], document_id.as_str(), "{line}");
    }
    let s = summary(&run);
    assert_eq!(s["outcome"], "ok");
    assert_eq!(s["status"], 200);
    assert_eq!(
        (&s["stored"], &s["duplicate"], &s["invalid"], &s["retry"]),
        (&json!(1), &json!(0), &json!(0), &json!(0))
    );
    assert_eq!(s["warnings"], 1);
    assert_eq!(s["retries"], 0);
    assert!(s["downstream_ms"].as_f64().unwrap() >= 0.0);

    let (line, targets) = emf_lines(&run);
    assert!(targets.is_empty(), "no retry, no failure: {targets:?}");
    assert_eq!(line["Requests"], 1.0);
    assert_eq!(line["ReadingsStored"], 1.0);
    assert_eq!(line["ReadingsDuplicate"], 0.0);
    assert_eq!(line["ReadingsInvalid"], 0.0);
    assert_eq!(line["WarningsPublished"], 1.0);
    assert_eq!(line["RequestsUnavailable"], 0.0);
    assert!(line["PublishLatency"].as_f64().is_some(), "{line}");
    assert!(line["IndexLatency"].as_f64().is_some(), "{line}");
    let cold = line["ColdStart"].as_f64().unwrap();
    assert!(cold == 0.0 || cold == 1.0);
    let names: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    for name in [
        "ReadingsStored",
        "ReadingsDuplicate",
        "ReadingsInvalid",
        "WarningsPublished",
        "ColdStart",
        "PublishLatency",
        "IndexLatency",
    ] {
        assert!(names.contains(&name), "{name} declared: {names:?}");
    }
}

#[tokio::test]
async fn a_resent_reading_counts_as_duplicate() {
    let h = Harness::new(Sensor::Gasdetector);
    let first = h
        .app
        .handle(support::request("POST", "/gasdetector", SEED))
        .await;
    assert_eq!(first.status(), 200);
    let run = run(h, SEED.to_string(), "req-dup").await;
    let (line, _) = emf_lines(&run);
    assert_eq!(line["ReadingsDuplicate"], 1.0);
    assert_eq!(line["ReadingsStored"], 0.0);
    assert_eq!(summary(&run)["duplicate"], 1);
}

#[tokio::test]
async fn an_invalid_reading_is_counted_and_names_no_value() {
    let h = Harness::new(Sensor::Gasdetector);
    let body = SEED.replace("\"52.00\"", "\"NaN\"");
    let run = run(h, body, "req-invalid").await;
    assert_eq!(run.status, 400);
    assert_common_keys(&run, "req-invalid");
    let s = summary(&run);
    assert_eq!(s["outcome"], "rejected");
    assert_eq!((&s["invalid"], &s["stored"]), (&json!(1), &json!(0)));
    let (line, targets) = emf_lines(&run);
    assert_eq!(line["ReadingsInvalid"], 1.0);
    assert_eq!(line["ReadingsStored"], 0.0);
    assert!(line.get("IndexLatency").is_none(), "nothing was indexed");
    assert!(targets.is_empty());
    for l in &run.logs {
        assert!(!l.to_string().contains("NaN"), "no value logged: {l}");
    }
}

#[tokio::test]
async fn a_retried_request_counts_its_retries_by_target() {
    let h = Harness::new(Sensor::Gasdetector);
    h.fail_index_requests(2);
    h.publisher
        .failures
        .lock()
        .unwrap()
        .push_back(DownstreamError::Retryable("throttled".into()));
    let run = run(h, warning_reading("2021-09-03 18:15:00"), "req-retried").await;
    assert_eq!(run.status, 200);
    assert_common_keys(&run, "req-retried");
    let s = summary(&run);
    assert_eq!(s["outcome"], "ok");
    assert_eq!(s["stored"], 1);
    assert_eq!(s["retries"], 3);
    assert_eq!(s["failures"], 0);
    let (line, targets) = emf_lines(&run);
    assert_eq!(line["ReadingsStored"], 1.0);
    let by_target = |name: &str| {
        *targets
            .iter()
            .find(|l| l["target"] == name)
            .unwrap_or_else(|| panic!("a {name} line in {targets:?}"))
    };
    assert_eq!(by_target("opensearch")["DownstreamRetries"], 2.0);
    assert_eq!(by_target("opensearch")["DownstreamFailures"], 0.0);
    assert_eq!(by_target("iot")["DownstreamRetries"], 1.0);
    for t in &targets {
        assert_eq!(
            t["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["function", "sensor", "target"]])
        );
    }
}

#[tokio::test]
async fn a_failed_request_is_a_503_counted_as_unavailable() {
    let h = Harness::new(Sensor::Gasdetector);
    h.fail_index_requests(100);
    let run = run(h, SEED.to_string(), "req-failed").await;
    assert_eq!(run.status, 503);
    assert_common_keys(&run, "req-failed");
    let s = summary(&run);
    assert_eq!(s["outcome"], "unavailable");
    assert_eq!((&s["retry"], &s["stored"]), (&json!(1), &json!(0)));
    // The harness allows 4 attempts: 3 retries, then the document gives up.
    assert_eq!(s["retries"], 3);
    assert_eq!(s["failures"], 1);
    let (line, targets) = emf_lines(&run);
    assert_eq!(line["RequestsUnavailable"], 1.0);
    assert_eq!(line["ReadingsStored"], 0.0);
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(targets[0]["target"], "opensearch");
    assert_eq!(targets[0]["DownstreamRetries"], 3.0);
    assert_eq!(targets[0]["DownstreamFailures"], 1.0);
}

#[tokio::test]
async fn concurrent_requests_keep_their_own_ids_and_counts() {
    let (capture, _guard) = capture_logs(&json_settings());
    let (sink, lines) = MetricsSink::memory();
    let h = Harness::new(Sensor::Gasdetector);
    let app = h.app.with_metrics_sink(sink);
    let batch = format!(
        "[{}, {}, {}]",
        warning_reading("2021-09-03 18:16:00"),
        warning_reading("2021-09-03 18:16:01"),
        SEED.replace("\"52.00\"", "\"x\"")
    );
    let (a, b) = tokio::join!(
        app.handle(post(batch, "req-a")),
        app.handle(post(warning_reading("2021-09-03 18:16:02"), "req-b"))
    );
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    drop(_guard);
    let logs: Vec<Value> = capture
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for id in ["req-a", "req-b"] {
        let done: Vec<&Value> = logs
            .iter()
            .filter(|l| l["requestId"] == id && l["message"] == "request done")
            .collect();
        assert_eq!(done.len(), 1, "{id}: {logs:?}");
    }
    assert!(logs
        .iter()
        .all(|l| l["requestId"] == "req-a" || l["requestId"] == "req-b"));
    let emf: Vec<Value> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| emf::validate(l))
        .collect();
    let of = |id: &str| emf.iter().find(|l| l["requestId"] == id).unwrap().clone();
    assert_eq!(of("req-a")["ReadingsStored"], 2.0);
    assert_eq!(of("req-a")["ReadingsInvalid"], 1.0);
    assert_eq!(of("req-a")["WarningsPublished"], 2.0);
    assert_eq!(of("req-b")["ReadingsStored"], 1.0);
    assert_eq!(of("req-b")["ReadingsInvalid"], 0.0);
    // A batch from one box names the box on the request span.
    assert!(logs
        .iter()
        .filter(|l| l["requestId"] == "req-a")
        .all(|l| l["groupid"] == "2"));
}

#[tokio::test]
async fn text_mode_is_readable_and_carries_the_request_span() {
    let (capture, _guard) = capture_logs(&LogSettings {
        format: LogFormat::Text,
        filter: "info".into(),
    });
    let (sink, _lines) = MetricsSink::memory();
    let app = Harness::new(Sensor::Gasdetector)
        .app
        .with_metrics_sink(sink);
    let response = app.handle(post(SEED.to_string(), "req-text")).await;
    assert_eq!(response.status(), 200);
    drop(_guard);
    let lines = capture.lines();
    let done = lines
        .iter()
        .find(|l| l.contains("request done"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    for part in [
        "requestId=\"req-text\"",
        "sensor=\"gasdetector\"",
        "stored=1",
        "outcome=\"ok\"",
    ] {
        assert!(done.contains(part), "{part} in {done}");
    }
    assert!(!done.starts_with('{'), "text, not JSON: {done}");
}
