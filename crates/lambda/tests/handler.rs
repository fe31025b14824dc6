//! The handler end to end with in-process fakes for the two ports: every event shape in
//! `events/`, status codes, retries and error paths. Real peers are exercised in `tests/`.

mod support;

use lambda_http::{Body, Request, Response};
use sensor_core::ports::DownstreamError;
use sensor_model::Sensor;
use serde_json::{json, Value};
use support::{events_dir, Harness};

fn harness(sensor: Sensor) -> Harness {
    Harness::new(sensor)
}

fn harness_with(sensor: Sensor, extra: &[(&str, &str)]) -> Harness {
    Harness::with_env(sensor, extra)
}

fn doc_count(h: &Harness) -> usize {
    h.indexed()
}

fn event(path: &str) -> Request {
    let text = std::fs::read_to_string(events_dir().join(path)).unwrap();
    lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn post(path: &str, body: impl Into<Body>) -> Request {
    lambda_http::http::Request::builder()
        .method("POST")
        .uri(path)
        .body(body.into())
        .unwrap()
}

fn json_of(response: &Response<Body>) -> Value {
    serde_json::from_slice(response.body().as_ref()).unwrap()
}

const SEED: &str = r#"{"groupid": "2", "gps": "37.61002501514269, 126.99636868892937",
 "co":     {"sensorid": "0005", "sensortype": "8",  "value": "26.20", "createdtime": "2021-09-03 18:14:49"},
 "no2":    {"sensorid": "0006", "sensortype": "9",  "value": "52.00", "createdtime": "2021-09-03 18:14:49"},
 "c2h5oh": {"sensorid": "0007", "sensortype": "27", "value": "26.11", "createdtime": "2021-09-03 18:14:49"},
 "h2":     {"sensorid": "0008", "sensortype": "30", "value": "400",   "createdtime": "2021-09-03 18:14:49"}}"#;

/// The seed reading with no2 = 95: trips the no2 rule (>= 88) and nothing else.
fn seed_with_no2_95() -> String {
    SEED.replace("\"52.00\"", "\"95\"")
}

#[tokio::test]
async fn every_sample_event_is_accepted_and_stored() {
    for sensor in Sensor::ALL {
        let dir = events_dir().join(sensor.name());
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(names.len() >= 6, "{dir:?} has every event shape");
        for name in names {
            let h = harness(sensor);
            let response = h
                .app
                .handle(event(&format!("{}/{name}", sensor.name())))
                .await;
            let body = json_of(&response);
            assert_eq!(response.status(), 200, "{name}: {body}");
            assert!(doc_count(&h) >= 1, "{name} indexed");
            let warned: Vec<String> = h
                .sent()
                .iter()
                .map(|(_, m)| m["measure"].as_str().unwrap().to_string())
                .collect();
            if let Some(rule) = name.strip_prefix("warn-") {
                let measure = rule.split('-').next().unwrap();
                assert_eq!(warned, [measure], "{name} trips exactly its rule");
                assert!(h.sent().iter().all(|(topic, _)| topic == "pi/2"));
            } else {
                assert!(
                    warned.is_empty(),
                    "{name}: the seed readings trip no rule, got {warned:?}"
                );
            }
        }
    }
}

/// Today's behaviour: one warning per breaching reading, and (the seed being from 2021)
/// a clock-skew bound wide enough that the message is exactly the original one.
const EVERY: &[(&str, &str)] = &[("ALARM_MODE", "every"), ("CLOCK_SKEW_WARN", "999999999")];

#[tokio::test]
async fn seed_reading_with_no2_95_warns_on_pi_2() {
    let h = harness_with(Sensor::Gasdetector, EVERY);
    let body = seed_with_no2_95();
    let response = h.app.handle(post("/gasdetector", body)).await;
    assert_eq!(response.status(), 200);
    let reply = json_of(&response);
    assert_eq!(reply["status"], "ok");
    let id = reply["id"].as_str().unwrap().to_string();
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "pi/2");
    assert_eq!(
        sent[0].1,
        json!({"warning": "no2 warning", "sensor": "gasdetector", "groupid": "2", "measure": "no2",
               "value": 95.0, "threshold": 88.0, "bound": "high", "createdtime": "2021-09-03 18:14:49", "id": id})
    );
    assert_eq!(reply["warnings"], json!([sent[0].1]));
    let docs = h.indexer.docs.lock().unwrap();
    let doc = &docs[&("gasdetect".to_string(), id)];
    assert_eq!(doc["no2"]["value"], "95");
    assert_eq!(doc["warnings"], json!(["no2"]));
}

#[tokio::test]
async fn by_default_the_warning_is_an_alarm_transition_with_the_clock_skew() {
    let h = harness(Sensor::Gasdetector);
    let response = h.app.handle(post("/gasdetector", seed_with_no2_95())).await;
    assert_eq!(response.status(), 200);
    let reply = json_of(&response);
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    let message = &sent[0].1;
    assert_eq!(
        message["warning"], "no2 warning",
        "existing subscribers keep working"
    );
    assert_eq!(message["state"], "alarm");
    // 2021-09-03 is years before any receive time: the skew is reported, not ignored.
    assert!(
        message["clock_skew_s"].as_i64().unwrap() > 3 * 365 * 86_400,
        "{message}"
    );
    assert_eq!(
        reply["warnings"][0]["measure"], "no2",
        "the reply lists tripped rules"
    );
    let docs = h.indexer.docs.lock().unwrap();
    let doc = &docs[&(
        "gasdetect".to_string(),
        reply["id"].as_str().unwrap().to_string(),
    )];
    assert!(doc["clock_skew_s"].as_i64().unwrap() > 3 * 365 * 86_400);
}

#[tokio::test]
async fn a_reading_dated_after_its_arrival_warns_with_its_skew_and_is_indexed_at_arrival() {
    let h = harness(Sensor::Gasdetector);
    // Five minutes ahead: under CLOCK_SKEW_WARN (10 min), but no clock can be right
    // about a time after the reading arrived.
    let before = chrono::Utc::now();
    let created = (before + chrono::Duration::minutes(5)).format("%Y-%m-%d %H:%M:%S");
    let body = json!({"groupid": "2",
        "no2": {"sensorid": "0006", "sensortype": "9", "value": "95", "createdtime": created.to_string()}});
    let response = h.app.handle(post("/gasdetector", body.to_string())).await;
    assert_eq!(response.status(), 200);
    let after = chrono::Utc::now();
    let reply = json_of(&response);
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let skew = sent[0].1["clock_skew_s"]
        .as_i64()
        .expect("clock_skew_s on the warning");
    assert!((-301..=-298).contains(&skew), "{skew}");
    let docs = h.indexer.docs.lock().unwrap();
    let doc = &docs[&(
        "gasdetect".to_string(),
        reply["id"].as_str().unwrap().to_string(),
    )];
    assert_eq!(doc["clock_skewed"], true);
    assert_eq!(
        doc["no2"]["createdtime"],
        created.to_string(),
        "kept as sent"
    );
    let stamped = doc["@timestamp"].as_str().expect("@timestamp");
    let stamped = chrono::DateTime::parse_from_rfc3339(stamped).expect("RFC 3339");
    assert!(
        stamped >= before + chrono::Duration::seconds(1)
            && stamped <= after + chrono::Duration::seconds(2),
        "{stamped}: arrival plus the 2 s tolerance"
    );
}

/// Posts one breaching reading twice: both answered 200 with the same id, one document.
async fn post_the_same_warning_twice(h: &Harness) {
    let body = seed_with_no2_95();
    let first = json_of(&h.app.handle(post("/gasdetector", body.clone())).await);
    let second = h.app.handle(post("/gasdetector", body)).await;
    assert_eq!(second.status(), 200);
    assert_eq!(json_of(&second)["id"], first["id"]);
    assert_eq!(doc_count(h), 1);
}

#[tokio::test]
async fn duplicate_post_stores_one_document_and_warns_again_with_alarm_mode_every() {
    let h = harness_with(Sensor::Gasdetector, EVERY);
    post_the_same_warning_twice(&h).await;
    assert_eq!(h.sent().len(), 2, "warnings are at-least-once");
}

#[tokio::test]
async fn duplicate_post_applies_once_by_default() {
    let h = harness(Sensor::Gasdetector);
    post_the_same_warning_twice(&h).await;
    assert_eq!(h.sent().len(), 1, "one transition, delivered once");
}

#[tokio::test]
async fn other_methods_get_405() {
    let h = harness(Sensor::Dust);
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let request = lambda_http::http::Request::builder()
            .method(method)
            .uri("/dust")
            .body(Body::Empty)
            .unwrap();
        let response = h.app.handle(request).await;
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "POST", "{method}");
        assert_eq!(json_of(&response)["error"], "method_not_allowed");
    }
    assert_eq!(doc_count(&h), 0);
}

#[tokio::test]
async fn oversize_body_gets_413_and_changes_nothing() {
    let h = harness(Sensor::Temp);
    let response = h
        .app
        .handle(post("/temp", vec![b' '; 1024 * 1024 + 1]))
        .await;
    assert_eq!(response.status(), 413);
    assert_eq!(doc_count(&h), 0);
    assert!(h.sent().is_empty());
}

#[tokio::test]
async fn bad_input_names_the_field_and_changes_nothing() {
    let h = harness(Sensor::Gasdetector);
    for (body, field) in [
        ("not json".to_string(), "body"),
        ("[]".to_string(), "body"),
        (SEED.replace("\"no2\"", "\"n02\""), "n02"),
        (SEED.replace("\"52.00\"", "\"NaN\""), "no2.value"),
        (
            SEED.replace("\"groupid\": \"2\"", "\"groupid\": \"2/#\""),
            "groupid",
        ),
        (SEED.replace("37.61002501514269", "97.6"), "gps"),
    ] {
        let response = h.app.handle(post("/gasdetector", body)).await;
        assert_eq!(response.status(), 400);
        let reply = json_of(&response);
        assert_eq!(reply["error"], "invalid_reading");
        assert_eq!(reply["field"], field, "{reply}");
        assert!(!reply["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(doc_count(&h), 0);
    assert!(h.sent().is_empty());
}

#[tokio::test]
async fn batch_answers_per_item_and_stores_the_valid_ones() {
    let h = harness(Sensor::Gasdetector);
    let good: Value = serde_json::from_str(SEED).unwrap();
    let mut hot = good.clone();
    hot["no2"]["value"] = json!(100);
    hot["no2"]["createdtime"] = json!("2021-09-03 18:15:00");
    let bad = json!({"groupid": "2", "no2": {"sensorid": "1", "sensortype": "1", "value": "x", "createdtime": "2021-09-03 18:14:49"}});
    let batch = json!([good, bad, hot, good]);
    let response = h.app.handle(post("/gasdetector", batch.to_string())).await;
    assert_eq!(response.status(), 200);
    let reply = json_of(&response);
    let statuses: Vec<&str> = reply["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    // The 4th repeats the 1st in the same bulk request: stored once.
    assert_eq!(statuses, ["stored", "invalid", "stored", "already_stored"]);
    assert_eq!(reply["items"][1]["field"], "no2.value");
    assert_eq!(doc_count(&h), 2);
    assert_eq!(h.sent().len(), 1);
    assert_eq!(*h.indexer.calls.lock().unwrap(), [3], "one bulk request");
}

#[tokio::test]
async fn batch_limits() {
    let h = harness(Sensor::Dust);
    let item = json!({"groupid": 1, "pm10": {"sensorid": 1, "sensortype": 1, "value": 1, "createdtime": "2021-09-03 18:14:49"}});
    let items: Vec<Value> = (0..501).map(|_| item.clone()).collect();
    let response = h
        .app
        .handle(post("/dust", Value::Array(items).to_string()))
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(doc_count(&h), 0);
}

#[tokio::test]
async fn throttling_is_retried_until_it_succeeds() {
    let h = harness(Sensor::Gasdetector);
    h.publisher.failures.lock().unwrap().extend([
        DownstreamError::Retryable("429 ThrottlingException".into()),
        DownstreamError::Retryable("503".into()),
    ]);
    h.indexer
        .request_failures
        .lock()
        .unwrap()
        .push_back(DownstreamError::Retryable("502".into()));
    let response = h.app.handle(post("/gasdetector", seed_with_no2_95())).await;
    assert_eq!(response.status(), 200);
    assert_eq!(*h.publisher.attempts.lock().unwrap(), 3);
    assert_eq!(h.indexer.calls.lock().unwrap().len(), 2);
    assert_eq!(doc_count(&h), 1);
}

#[tokio::test]
async fn only_failed_bulk_items_are_retried() {
    let h = harness(Sensor::Gasdetector);
    let a: Value = serde_json::from_str(SEED).unwrap();
    let mut b = a.clone();
    b["groupid"] = json!("3");
    h.indexer.item_failures.lock().unwrap().push_back((
        vec![1],
        DownstreamError::Retryable("429 es_rejected_execution_exception".into()),
    ));
    let response = h
        .app
        .handle(post("/gasdetector", json!([a, b]).to_string()))
        .await;
    assert_eq!(response.status(), 200, "{}", json_of(&response));
    assert_eq!(*h.indexer.calls.lock().unwrap(), [2, 1]);
    assert_eq!(doc_count(&h), 2);
}

#[tokio::test]
async fn lasting_failure_is_a_503_with_retry_after_and_a_retry_stores_once() {
    let h = harness(Sensor::Gasdetector);
    h.fail_index_requests(4);
    let response = h.app.handle(post("/gasdetector", SEED)).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(json_of(&response)["error"], "unavailable");
    assert_eq!(
        h.indexer.calls.lock().unwrap().len(),
        4,
        "bounded by max_attempts"
    );
    let again = h.app.handle(post("/gasdetector", SEED)).await;
    assert_eq!(again.status(), 200);
    assert_eq!(doc_count(&h), 1);
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let h = harness(Sensor::Gasdetector);
    h.publisher
        .failures
        .lock()
        .unwrap()
        .push_back(DownstreamError::Permanent("403 Forbidden".into()));
    let response = h.app.handle(post("/gasdetector", seed_with_no2_95())).await;
    assert_eq!(response.status(), 503);
    assert_eq!(*h.publisher.attempts.lock().unwrap(), 1);
}

/// Issue 20: a reading OpenSearch refuses for good (a mapping conflict) is final, never
/// "resend": 422 alone, `rejected` in a batch (200 when nothing else must be resent).
#[tokio::test]
async fn a_reading_opensearch_refuses_for_good_is_final_and_tried_once() {
    let h = harness(Sensor::Dust);
    h.reject_group("conflict");
    let item = |g: &str| json!({"groupid": g, "pm10": {"sensorid": 1, "sensortype": 1, "value": 1, "createdtime": "2021-09-03 18:14:49"}});
    let response = h
        .app
        .handle(post("/dust", item("conflict").to_string()))
        .await;
    assert_eq!(response.status(), 422);
    assert!(!response.headers().contains_key("retry-after"));
    let reply = json_of(&response);
    assert_eq!(reply["error"], "rejected", "{reply}");
    assert!(reply["id"].is_string(), "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains("mapper_parsing_exception"), "{message}");
    assert_eq!(*h.indexer.calls.lock().unwrap(), [1], "not retried");

    let batch = json!([item("2"), item("conflict"), {"groupid": "x"}]);
    let response = h.app.handle(post("/dust", batch.to_string())).await;
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("retry-after"));
    let reply = json_of(&response);
    let statuses: Vec<&str> = reply["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["stored", "rejected", "invalid"]);
    assert_eq!(
        (
            &reply["status"],
            &reply["stored"],
            &reply["rejected"],
            &reply["retry"]
        ),
        (&json!("ok"), &json!(1), &json!(1), &json!(0))
    );
    assert_eq!(
        *h.indexer.calls.lock().unwrap(),
        [1, 2],
        "one bulk, no retry"
    );
}

#[tokio::test]
async fn batch_with_a_lasting_failure_is_503_per_item() {
    let h = harness(Sensor::Dust);
    let item = |t: &str| json!({"groupid": 1, "pm10": {"sensorid": 1, "sensortype": 1, "value": 1, "createdtime": t}});
    h.indexer
        .item_failures
        .lock()
        .unwrap()
        .extend((0..4).map(|_| (vec![0], DownstreamError::Retryable("503".into()))));
    let batch = json!([item("2021-09-03 18:14:49"), item("2021-09-03 18:14:50"), {"groupid": "x"}]);
    let response = h.app.handle(post("/dust", batch.to_string())).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let reply = json_of(&response);
    let statuses: Vec<&str> = reply["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["retry", "stored", "invalid"]);
}

#[tokio::test]
async fn direct_invoke_failure_is_a_function_error() {
    let h = harness(Sensor::Gasdetector);
    h.fail_index_requests(4);
    let result = h.app.invoke(event("gasdetector/direct.json")).await;
    assert!(result.is_err(), "the invoker must see a failure");
    // Through API Gateway the same failure is an answer the box understands.
    let h = harness(Sensor::Gasdetector);
    h.fail_index_requests(4);
    let response = h
        .app
        .invoke(event("gasdetector/apigw-rest.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn direct_invoke_with_a_bad_reading_is_an_answer_not_an_error() {
    let h = harness(Sensor::Temp);
    let request =
        lambda_http::request::from_str(r#"{"groupid": "1", "temperature": {"value": 1}}"#).unwrap();
    let response = h.app.invoke(request).await.unwrap();
    assert_eq!(json_of(&response)["field"], "temperature.sensorid");
}

#[tokio::test]
async fn rules_override_and_topic_template_apply() {
    let h = harness_with(
        Sensor::Gasdetector,
        &[
            ("RULES", r#"{"no2": {"high": 50}}"#),
            ("TOPIC_TEMPLATE", "alerts/{sensor}/{groupid}"),
        ],
    );
    let response = h.app.handle(post("/gasdetector", SEED)).await;
    assert_eq!(response.status(), 200);
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "alerts/gasdetector/2");
    assert_eq!(sent[0].1["threshold"], 50.0);
}

#[tokio::test]
async fn ack_messages_report_success_and_failure() {
    let h = harness_with(Sensor::Gasdetector, &[("ACK_MESSAGES", "true")]);
    h.app.handle(post("/gasdetector", SEED)).await;
    assert_eq!(h.sent(), [("pi/2".to_string(), json!({"msg": "success"}))]);

    let h = harness_with(Sensor::Gasdetector, &[("ACK_MESSAGES", "true")]);
    h.fail_index_requests(4);
    h.app.handle(post("/gasdetector", SEED)).await;
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].1["msg"].as_str().unwrap().starts_with("failure: "),
        "{sent:?}"
    );
}

#[tokio::test]
async fn time_based_index_uses_the_reading_time() {
    let h = harness_with(Sensor::Gasdetector, &[("INDEX", "gasdetect-%Y.%m")]);
    let response = h.app.handle(post("/gasdetector", SEED)).await;
    assert_eq!(response.status(), 200);
    let docs = h.indexer.docs.lock().unwrap();
    assert!(docs.keys().all(|(index, _)| index == "gasdetect-2021.09"));
}
