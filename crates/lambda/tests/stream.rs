//! The stream path at the function: Lambda's Kinesis events from the event source
//! mapping, each record the stream rule's `{"thing", "sensor", "groupid", "payload"}`.
//! A batch is one pipeline call (alarm state written once per group, its records applied
//! one after another as the direct path would; size-bounded bulks); the
//! answer lists only the records to retry; a poison record is final and never blocks
//! the shard. Fakes for the ports; the stream itself is in `tests/` and `local-aws`.

mod support;

use base64::Engine;
use lambda_http::Request;
use sensor_core::ports::{DownstreamError, Registration, Registry};
use sensor_model::domain::group_id::GroupId;
use sensor_model::domain::thing_name::ThingName;
use sensor_model::Sensor;
use serde_json::{json, Value};
use support::{json_of, Harness, SEED};

const GAS: Sensor = Sensor::Gasdetector;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Boxes `pi-a` and `pi-c` in group "2", `pi-b` in group "9".
fn harness(extra: &[(&str, &str)]) -> Harness {
    let h = Harness::with_env(GAS, extra);
    for (thing, group) in [("pi-a", "2"), ("pi-b", "9"), ("pi-c", "2")] {
        h.registry.set(
            &ThingName::parse(thing).unwrap(),
            Registration::Group(GroupId::parse(group).unwrap()),
        );
    }
    h
}

/// A gas reading of `group` taken at second `second` of the seed's minute, with `no2`.
fn reading(group: &str, second: u32, no2: &str) -> Value {
    let mut value: Value = serde_json::from_str(SEED).unwrap();
    value["groupid"] = json!(group);
    for measure in ["co", "no2", "c2h5oh", "h2"] {
        value[measure]["createdtime"] = json!(format!(
            "2021-09-03 18:{:02}:{:02}",
            second / 60,
            second % 60
        ));
    }
    value["no2"]["value"] = json!(no2);
    value
}

/// The data of one stream record: what the stream rule puts into Kinesis.
fn rule_record(thing: &str, sensor: &str, group: &str, payload: &[u8]) -> Vec<u8> {
    json!({"thing": thing, "sensor": sensor, "groupid": group, "payload": b64(payload)})
        .to_string()
        .into_bytes()
}

/// Gas records of the stream rule, one per (thing, group, payload), with sequence numbers
/// counting from `first`.
fn gas_records(first: u64, messages: &[(&str, &str, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    (first..)
        .zip(messages)
        .map(|(sequence, (thing, group, payload))| {
            (
                sequence.to_string(),
                rule_record(thing, "gasdetector", group, payload),
            )
        })
        .collect()
}

/// Lambda's Kinesis event for `records` (sequence number, data), as the mapping sends it.
fn kinesis_event(records: &[(String, Vec<u8>)]) -> Request {
    let records: Vec<Value> = records
        .iter()
        .map(|(sequence, data)| {
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "2",
                    "sequenceNumber": sequence,
                    "data": b64(data),
                    "approximateArrivalTimestamp": 1_764_000_000.25
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("shardId-000000000000:{sequence}"),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/ingest",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/sensor-readings"
            })
        })
        .collect();
    lambda_http::request::from_str(&json!({ "Records": records }).to_string()).unwrap()
}

fn batch(group: &str, seconds: std::ops::Range<u32>, no2: &str) -> Vec<u8> {
    let items: Vec<Value> = seconds.map(|s| reading(group, s, no2)).collect();
    serde_json::to_vec(&items).unwrap()
}

/// `records` as one batch through `h`'s function: the sequence numbers it hands back to
/// retry.
async fn retried(h: &Harness, records: &[(String, Vec<u8>)]) -> Vec<String> {
    let response = h
        .app
        .invoke(kinesis_event(records))
        .await
        .expect("no function error");
    failures(&json_of(&response))
}

fn failures(body: &Value) -> Vec<String> {
    body["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("no batchItemFailures: {body}"))
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_batch_of_many_boxes_is_stored_with_one_bulk_and_one_state_write_per_group() {
    let h = harness(&[]);
    // Group 2 (two boxes) crosses no2's high threshold; group 9 stays quiet.
    let single = serde_json::to_vec(&reading("2", 20, "97")).unwrap();
    let records = gas_records(
        1,
        &[
            ("pi-a", "2", batch("2", 0..10, "95")),
            ("pi-b", "9", batch("9", 0..10, "20")),
            ("pi-c", "2", batch("2", 10..20, "96")),
            ("pi-a", "2", single),
        ],
    );
    assert_eq!(retried(&h, &records).await, Vec::<String>::new());
    assert_eq!(h.indexed(), 31, "every reading stored once");
    assert_eq!(h.index_calls(), 1, "one bulk for the whole batch");
    // Once per group: the state records each group's newest reading, so a group's first
    // batch always writes it.
    assert_eq!(
        *h.alarms.stores.lock().unwrap(),
        2,
        "one state write per group"
    );
    let warnings: Vec<(String, Value)> = h
        .sent()
        .into_iter()
        .filter(|(_, m)| m.get("warning").is_some())
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "exactly one transition for group 2: {warnings:?}"
    );
    assert_eq!(warnings[0].1["groupid"], "2");

    // The mapping retries a batch from its lowest failure; the same records again
    // store nothing twice and warn nothing twice.
    assert_eq!(retried(&h, &records).await, Vec::<String>::new());
    assert_eq!(h.indexed(), 31);
    let warnings_after = h
        .sent()
        .into_iter()
        .filter(|(_, m)| m.get("warning").is_some())
        .count();
    assert_eq!(
        warnings_after, 1,
        "the resent batch published no second warning"
    );
    assert_eq!(
        *h.alarms.stores.lock().unwrap(),
        2,
        "nothing changed, nothing written"
    );
}

#[tokio::test]
async fn poison_records_are_final_and_never_fail_the_batch() {
    let h = harness(&[]);
    let good = batch("2", 0..2, "20");
    let records = vec![
        ("1".to_string(), b"not json".to_vec()),
        ("2".to_string(), rule_record("pi-a", "dust", "2", &good)),
        (
            "3".to_string(),
            rule_record("a/b", "gasdetector", "2", &good),
        ),
        (
            "4".to_string(),
            rule_record("pi-a", "gasdetector", "2", b"{\"groupid\": "),
        ),
        (
            "5".to_string(),
            rule_record("pi-unknown", "gasdetector", "2", &good),
        ),
        // pi-b is bound to group 9: its readings claiming group 2 are refused.
        (
            "6".to_string(),
            rule_record("pi-b", "gasdetector", "2", &good),
        ),
        (
            "7".to_string(),
            rule_record("pi-a", "gasdetector", "2", &good),
        ),
    ];
    assert_eq!(retried(&h, &records).await, Vec::<String>::new());
    assert_eq!(h.indexed(), 2, "only the good record's readings");
}

/// `kinesis_event` with a Lambda deadline `budget` from now, as the runtime sets it.
fn kinesis_event_due_in(records: &[(String, Vec<u8>)], budget: std::time::Duration) -> Request {
    use lambda_http::RequestExt;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut context = lambda_http::Context::default();
    context.deadline = now_ms + budget.as_millis() as u64;
    kinesis_event(records).with_lambda_context(context)
}

fn three_records() -> Vec<(String, Vec<u8>)> {
    gas_records(
        100,
        &[
            ("pi-a", "2", batch("2", 0..3, "20")),
            ("pi-b", "9", batch("9", 0..3, "20")),
            ("pi-c", "2", batch("2", 3..6, "20")),
        ],
    )
}

/// The 5th document (record 101's second reading) fails `times` times: first in the whole
/// bulk, then alone in each retry.
fn fail_fifth_document(h: &Harness, times: usize) {
    let unavailable = DownstreamError::Retryable("429".into());
    let mut failing = h.indexer.item_failures.lock().unwrap();
    failing.push_back((vec![4], unavailable.clone()));
    for _ in 1..times {
        failing.push_back((vec![0], unavailable.clone()));
    }
}

/// The three records invoked with a Lambda deadline `budget` from now; the answer's body.
async fn invoke_due_in(h: &Harness, budget: std::time::Duration) -> Value {
    let request = kinesis_event_due_in(&three_records(), budget);
    json_of(&h.app.invoke(request).await.expect("no function error"))
}

#[tokio::test]
async fn an_outage_shorter_than_the_invocation_is_ridden_out_not_retried_by_the_mapping() {
    let h = harness(&[]);
    // More failures than the HTTP path's attempts (4 here): a stream batch retries until
    // its deadline instead, so the mapping's few retries are kept for longer outages.
    fail_fifth_document(&h, 12);
    let body = invoke_due_in(&h, std::time::Duration::from_secs(5)).await;
    assert_eq!(failures(&body), Vec::<String>::new());
    assert_eq!(h.indexed(), 9);
}

#[tokio::test]
async fn only_records_with_a_reading_still_failing_at_the_deadline_are_retried() {
    let h = harness(&[]);
    fail_fifth_document(&h, 1_000_000);
    let body = invoke_due_in(&h, std::time::Duration::from_millis(1_500)).await;
    assert_eq!(failures(&body), ["101"], "{body}");
    assert_eq!(h.indexed(), 8, "the other readings are stored");
}

/// A registry that cannot be reached for `pi-new` and binds every other box to "2".
struct FlakyRegistry;

impl Registry for FlakyRegistry {
    async fn lookup(&self, thing: &ThingName) -> Result<Registration, DownstreamError> {
        if thing.as_str() == "pi-new" {
            return Err(DownstreamError::Retryable("DescribeThing: 503".into()));
        }
        Ok(Registration::Group(GroupId::parse("2").unwrap()))
    }
}

#[tokio::test]
async fn an_unavailable_registry_retries_only_its_records() {
    let h = harness(&[]);
    let indexer = h.indexer.clone();
    let app = h.app.with_registry(FlakyRegistry);
    let records = gas_records(
        1,
        &[
            ("pi-a", "2", batch("2", 0..2, "20")),
            ("pi-new", "2", batch("2", 2..4, "20")),
        ],
    );
    let response = app
        .invoke(kinesis_event(&records))
        .await
        .expect("no function error");
    let body = json_of(&response);
    assert_eq!(failures(&body), ["2"], "{body}");
    assert_eq!(indexer.docs.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_large_batch_goes_out_as_size_bounded_bulks() {
    let h = harness(&[("BULK_MAX_BYTES", "65536")]);
    let records: Vec<(String, Vec<u8>)> = (0..20)
        .map(|r| {
            let payload = batch("2", r * 25..(r + 1) * 25, "20");
            (
                r.to_string(),
                rule_record("pi-a", "gasdetector", "2", &payload),
            )
        })
        .collect();
    assert_eq!(retried(&h, &records).await, Vec::<String>::new());
    assert_eq!(h.indexed(), 500);
    let calls = h.indexer.calls.lock().unwrap().clone();
    assert!(calls.len() > 1, "{calls:?}");
    assert_eq!(calls.iter().sum::<usize>(), 500);
    // Each bulk holds as many documents as fit in 64 KiB (a document is about 600
    // bytes in a bulk body), so none is tiny and none is over.
    assert!(
        calls
            .iter()
            .take(calls.len() - 1)
            .all(|&n| (80..=110).contains(&n)),
        "{calls:?}"
    );
}

#[tokio::test]
async fn the_sample_kinesis_event_is_stored_and_warns_once() {
    let h = harness(&[]);
    let text =
        std::fs::read_to_string(support::events_dir().join("stream/gasdetector-kinesis.json"))
            .expect("events/stream/gasdetector-kinesis.json");
    let request = lambda_http::request::from_str(&text).expect("a Kinesis event");
    let response = h.app.invoke(request).await.expect("no function error");
    assert_eq!(failures(&json_of(&response)), Vec::<String>::new());
    assert_eq!(h.indexed(), 3);
    let warnings = h
        .sent()
        .into_iter()
        .filter(|(_, m)| m.get("warning").is_some())
        .count();
    assert_eq!(warnings, 1, "the third reading's no2 of 95 warns");
}

/// The direct path's event for one MQTT message: what the data rule hands the function.
fn from_mqtt(thing: &str, payload: &[u8]) -> Request {
    let event = json!({"thing": thing, "payload": b64(payload)});
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

/// The alarm transitions published so far, in order: `"alarm"` or `"normal"` (a clear).
fn transitions(h: &Harness) -> Vec<String> {
    h.sent()
        .into_iter()
        .filter_map(|(_, m)| m.get("state").and_then(Value::as_str).map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_batch_announces_every_transition_the_direct_path_would() {
    // Two episodes of group 2 within one batch, from two boxes: each record is what one
    // MQTT message would have been on the direct path, and must count as one.
    let rules = [("RULES", r#"{"no2": {"high": 70, "clear": 60, "for": 1}}"#)];
    let messages = [
        ("pi-a", "2", batch("2", 0..2, "95")),
        ("pi-c", "2", batch("2", 2..4, "20")),
        ("pi-a", "2", batch("2", 4..5, "96")),
        ("pi-c", "2", batch("2", 5..7, "20")),
    ];

    let direct = harness(&rules);
    for (thing, _, payload) in &messages {
        let response = direct
            .app
            .invoke(from_mqtt(thing, payload))
            .await
            .expect("no function error");
        assert_eq!(response.status(), 200, "{}", json_of(&response));
    }
    let expected = transitions(&direct);
    assert_eq!(expected, ["alarm", "normal", "alarm", "normal"]);

    let streamed = harness(&rules);
    let records = gas_records(0, &messages);
    assert_eq!(retried(&streamed, &records).await, Vec::<String>::new());
    assert_eq!(transitions(&streamed), expected);
    assert_eq!(
        *streamed.alarms.stores.lock().unwrap(),
        1,
        "still one state write for the group"
    );
    // A record resent within the batch (the box published it twice) is no new episode.
    let mut twice = records.clone();
    twice.push(("4".to_string(), records[2].1.clone()));
    let again = harness(&rules);
    assert_eq!(retried(&again, &twice).await, Vec::<String>::new());
    assert_eq!(transitions(&again), expected);
}
