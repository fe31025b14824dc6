//! Alarm transitions through the whole handler, with in-process fakes for the ports
//! (the state machine's own table tests are in `crates/model/src/alarms/machine.rs`; real
//! shadows and MQTT in `tests/`): what gets published for leak scenarios, batches,
//! resends, and shadow failures within and past the retries.

mod support;

use sensor_core::ports::DownstreamError;
use sensor_model::domain::group_id::GroupId;
use sensor_model::Sensor;
use serde_json::{json, Value};
use support::{json_of, request, Harness};

/// A gasdetector reading of group 2: no2 at `no2`, taken `t` seconds after a base time.
fn gas(no2: f64, t: i64) -> Value {
    let base = chrono::Utc::now() - chrono::Duration::hours(1);
    let at = (base + chrono::Duration::seconds(t))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    json!({"groupid": "2", "no2": {"sensorid": "6", "sensortype": "9", "value": no2, "createdtime": at}})
}

async fn post(h: &Harness, body: &Value) -> (u16, Value) {
    let response = h
        .app
        .handle(request("POST", "/gasdetector", body.to_string()))
        .await;
    (response.status().as_u16(), json_of(&response))
}

/// The `state` of every published message, in order ("alarm", "normal").
fn states(h: &Harness) -> Vec<String> {
    h.sent()
        .iter()
        .map(|(_, m)| m["state"].as_str().unwrap_or("none").to_string())
        .collect()
}

#[tokio::test]
async fn a_leak_publishes_one_warning_and_one_clear() {
    let h = Harness::new(Sensor::Gasdetector);
    let mut values = vec![20.0];
    values.extend([95.0; 10]);
    values.push(20.0);
    for (i, v) in values.iter().enumerate() {
        let (status, reply) = post(&h, &gas(*v, 30 * i as i64)).await;
        assert_eq!(status, 200, "{reply}");
    }
    assert_eq!(states(&h), ["alarm", "normal"]);
    let sent = h.sent();
    assert_eq!(sent[1].1["clear"], "no2 clear");
    assert_eq!(sent[1].1["duration_s"], 300);
    assert_eq!(sent[1].1["peak"], 95.0);
    assert_eq!(h.indexed(), 12, "every reading is indexed");
}

#[tokio::test]
async fn hovering_with_hysteresis_is_one_alarm_and_every_mode_warns_per_reading() {
    let rules = r#"{"no2": {"high": 88, "clear": 80}}"#;
    let values = [87.0, 89.0, 87.0, 89.0, 87.0, 89.0, 87.0, 89.0];
    let transitions = Harness::with_env(Sensor::Gasdetector, &[("RULES", rules)]);
    let every = Harness::with_env(
        Sensor::Gasdetector,
        &[("RULES", rules), ("ALARM_MODE", "every")],
    );
    for (i, v) in values.iter().enumerate() {
        assert_eq!(post(&transitions, &gas(*v, 30 * i as i64)).await.0, 200);
        assert_eq!(post(&every, &gas(*v, 30 * i as i64)).await.0, 200);
    }
    assert_eq!(states(&transitions), ["alarm"]);
    assert_eq!(
        states(&every),
        ["none"; 4],
        "one plain warning per reading at or over 88"
    );
}

#[tokio::test]
async fn a_catch_up_batch_publishes_at_most_the_transition_of_its_newest_reading() {
    let h = Harness::new(Sensor::Gasdetector);
    // 200 readings: a whole leak in the middle, normal at the end.
    let batch: Vec<Value> = (0..200)
        .map(|i| gas(if (40..120).contains(&i) { 150.0 } else { 10.0 }, 10 * i))
        .collect();
    let (status, reply) = post(&h, &Value::from(batch)).await;
    assert_eq!(status, 200, "{reply}");
    assert!(h.sent().is_empty(), "{:?}", h.sent());
    assert_eq!(h.indexed(), 200);
    // The warnings stay in the indexed documents: the leak is in the history.
    let docs = h.indexer.docs.lock().unwrap();
    let flagged = docs
        .values()
        .filter(|d| d["warnings"] == json!(["no2"]))
        .count();
    assert_eq!(flagged, 80);
}

#[tokio::test]
async fn a_late_older_reading_changes_nothing() {
    let h = Harness::new(Sensor::Gasdetector);
    assert_eq!(post(&h, &gas(95.0, 600)).await.0, 200);
    // Older than the applied one: a normal value must not clear, a high one not re-alarm.
    assert_eq!(post(&h, &gas(10.0, 0)).await.0, 200);
    assert_eq!(post(&h, &gas(99.0, 30)).await.0, 200);
    assert_eq!(states(&h), ["alarm"]);
    let state = h.alarms.inner.get(&GroupId::parse("2").unwrap());
    assert!(state
        .state
        .key("gasdetector", "no2", "high")
        .unwrap()
        .is_alarm());
}

#[tokio::test]
async fn a_warm_request_costs_one_state_write_and_no_read() {
    let h = Harness::new(Sensor::Gasdetector);
    for i in 0..5 {
        assert_eq!(post(&h, &gas(20.0, 30 * i)).await.0, 200);
    }
    // The first request reads (nothing there) and creates; the others use the cache.
    assert_eq!(*h.alarms.loads.lock().unwrap(), 1);
    assert_eq!(*h.alarms.stores.lock().unwrap(), 5);
    assert_eq!(
        h.alarms.inner.get(&GroupId::parse("2").unwrap()).version,
        Some(5)
    );
}

#[tokio::test]
async fn shadow_throttling_within_the_retries_is_invisible() {
    let h = Harness::new(Sensor::Gasdetector);
    h.fail_alarm_calls(
        3,
        DownstreamError::Retryable("HTTP 429 ThrottlingException".into()),
    );
    let (status, reply) = post(&h, &gas(95.0, 0)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(states(&h), ["alarm"]);
}

#[tokio::test]
async fn shadow_failure_past_the_retries_is_a_503_and_the_resend_loses_nothing() {
    let h = Harness::new(Sensor::Gasdetector);
    h.fail_alarm_calls(50, DownstreamError::Retryable("HTTP 503".into()));
    let reading = gas(95.0, 0);
    let (status, reply) = post(&h, &reading).await;
    assert_eq!(status, 503, "{reply}");
    assert!(reply.to_string().contains("alarm state"), "{reply}");
    assert!(h.sent().is_empty());
    h.alarms.failures.lock().unwrap().clear();
    let (status, reply) = post(&h, &reading).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        states(&h),
        ["alarm"],
        "the transition happens on the resend"
    );
    assert_eq!(h.indexed(), 1);
}

#[tokio::test]
async fn publish_failure_after_the_commit_is_republished_by_the_resend() {
    let h = Harness::new(Sensor::Gasdetector);
    h.fail_publishes(50, DownstreamError::Retryable("HTTP 500".into()));
    let reading = gas(95.0, 0);
    assert_eq!(post(&h, &reading).await.0, 503);
    assert!(h.sent().is_empty());
    h.publisher.failures.lock().unwrap().clear();
    // The state already holds the alarm: the resend applies nothing new, but publishes
    // the committed message; a third send publishes nothing more.
    assert_eq!(post(&h, &reading).await.0, 200);
    assert_eq!(post(&h, &reading).await.0, 200);
    assert_eq!(states(&h), ["alarm"]);
    // A later breaching reading is no new transition.
    assert_eq!(post(&h, &gas(96.0, 30)).await.0, 200);
    assert_eq!(states(&h), ["alarm"]);
}

#[tokio::test]
async fn a_permanent_shadow_error_is_not_retried_and_answers_503() {
    let h = Harness::new(Sensor::Gasdetector);
    h.fail_alarm_calls(
        1,
        DownstreamError::Permanent("HTTP 403 ForbiddenException".into()),
    );
    let (status, _) = post(&h, &gas(95.0, 0)).await;
    assert_eq!(status, 503);
    assert_eq!(
        *h.alarms.loads.lock().unwrap() + *h.alarms.stores.lock().unwrap(),
        1
    );
}
