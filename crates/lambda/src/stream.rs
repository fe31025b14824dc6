//! The stream boundary: a batch of Kinesis records from the event source mapping, each
//! the stream rule's `{"thing", "sensor", "groupid", "payload": base64}`, turned into the
//! box and body of every record, and the answer the mapping expects
//! (`{"batchItemFailures": [{"itemIdentifier": <sequence number>}]}`: the records to
//! retry).
//!
//! A record that can never succeed (not the rule's JSON, another sensor's, a bad thing
//! name, a body that is not a reading or a batch) is final: it is logged and counted,
//! never reported as a failure, so a poison record cannot hold its shard. Only a
//! downstream that is still failing after the bounded retries makes a record a failure.

use crate::request::{parse_body, Payload, RequestError};
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use base64::Engine;
use sensor_model::domain::sensor::Sensor;
use sensor_model::domain::thing_name::ThingName;
use serde_json::Value;

/// The stream rule's record (`SELECT topic(2) AS thing, topic(4) AS sensor, topic(5) AS
/// groupid, encode(*, 'base64') AS payload`). `groupid` is the partition key the rule
/// used; the readings' group is still checked against the registry, never taken from it.
#[derive(serde::Deserialize)]
struct RuleRecord {
    thing: String,
    sensor: String,
    #[allow(dead_code)]
    groupid: Option<String>,
    payload: String,
}

/// `Some` when `event` is Lambda's Kinesis event (a direct invoke whose records come from
/// `aws:kinesis`); `None` for anything else, which is then a reading, a batch or the data
/// rules' envelope. A body that names Kinesis but does not parse is an invalid request.
pub fn kinesis_event(event: &[u8]) -> Option<Result<KinesisEvent, RequestError>> {
    const SOURCE: &[u8] = b"\"aws:kinesis\"";
    // Cheap pre-check: a reading or an envelope never contains the source's name.
    if !event.windows(SOURCE.len()).any(|w| w == SOURCE) {
        return None;
    }
    let value: Value = serde_json::from_slice(event).ok()?;
    let records = value.get("Records")?.as_array()?;
    if !records
        .iter()
        .any(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:kinesis"))
    {
        return None;
    }
    Some(serde_json::from_value(value).map_err(|e| {
        RequestError::Invalid(sensor_model::ValidationError::new(
            "Records",
            format!("is not a Kinesis event: {e}"),
        ))
    }))
}

/// One record of a batch, decoded.
#[derive(Debug)]
pub struct StreamRecord {
    /// Its sequence number: what a failure is reported by.
    pub sequence: String,
    pub content: Result<(ThingName, Payload), Final>,
}

/// Why a record is dropped for good (logged and counted, never retried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    /// A short name for logs and metrics.
    pub kind: &'static str,
    pub message: String,
}

impl Final {
    fn new(kind: &'static str, message: impl Into<String>) -> Final {
        Final {
            kind,
            message: message.into(),
        }
    }
}

/// Decodes every record of `event` for the function of `sensor`, in order.
pub fn decode(event: &KinesisEvent, sensor: Sensor) -> Vec<StreamRecord> {
    event
        .records
        .iter()
        .map(|record| StreamRecord {
            sequence: record.kinesis.sequence_number.clone(),
            content: decode_data(&record.kinesis.data.0, sensor),
        })
        .collect()
}

fn decode_data(data: &[u8], sensor: Sensor) -> Result<(ThingName, Payload), Final> {
    let record: RuleRecord = serde_json::from_slice(data).map_err(|e| {
        Final::new(
            "not_a_rule_record",
            format!("not the stream rule's record: {e}"),
        )
    })?;
    if record.sensor != sensor.name() {
        return Err(Final::new(
            "other_sensor",
            format!(
                "a {:?} record reached the {} function (check the mapping's filter)",
                record.sensor,
                sensor.name()
            ),
        ));
    }
    let thing = ThingName::parse(&record.thing)
        .map_err(|e| Final::new("bad_thing", format!("thing: {}", e.message())))?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(record.payload.as_bytes())
        .map_err(|e| Final::new("bad_payload", format!("payload is not base64: {e}")))?;
    let payload = parse_body(&payload).map_err(|e| match e {
        RequestError::Invalid(e) => Final::new("invalid_body", e.message().to_string()),
        RequestError::TooLarge(n) => Final::new("payload_too_large", format!("{n} bytes")),
        RequestError::MethodNotAllowed(_) | RequestError::Forbidden(_) => {
            Final::new("invalid_body", "not a reading")
        }
    })?;
    Ok((thing, payload))
}

/// The answer to the event source mapping: the records to retry, in order. Lambda
/// retries from the lowest of them, so every record after it is seen again; the
/// deterministic document ids and the alarm state's per-id bookkeeping make that safe.
pub fn response(failed: &[&str]) -> Value {
    let mut response = KinesisEventResponse::default();
    response.batch_item_failures = failed
        .iter()
        .map(|sequence| {
            let mut failure = KinesisBatchItemFailure::default();
            failure.item_identifier = Some((*sequence).to_string());
            failure
        })
        .collect();
    serde_json::to_value(response).unwrap_or_else(|_| serde_json::json!({"batchItemFailures": []}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn record(sequence: &str, data: &[u8]) -> Value {
        json!({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": "2",
                "sequenceNumber": sequence,
                "data": b64(data),
                "approximateArrivalTimestamp": 1_764_000_000.5
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": format!("shardId-000000000000:{sequence}"),
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/ingest",
            "awsRegion": "us-east-1",
            "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/sensor-readings"
        })
    }

    fn rule_record(thing: &str, sensor: &str, payload: &[u8]) -> Vec<u8> {
        json!({"thing": thing, "sensor": sensor, "groupid": "2", "payload": b64(payload)})
            .to_string()
            .into_bytes()
    }

    fn event(records: Vec<Value>) -> Vec<u8> {
        json!({ "Records": records }).to_string().into_bytes()
    }

    #[test]
    fn a_kinesis_event_is_recognised_and_nothing_else_is() {
        let body = event(vec![record("1", b"{}")]);
        assert!(matches!(kinesis_event(&body), Some(Ok(e)) if e.records.len() == 1));
        for other in [
            &br#"{"groupid": "aws:kinesis"}"#[..],
            br#"{"thing":"pi","payload":"e30="}"#,
            br#"[{"groupid": 1}]"#,
            br#"{"Records": [{"eventSource": "aws:sqs"}]}"#,
            b"\"aws:kinesis\"",
        ] {
            assert!(
                kinesis_event(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        assert!(matches!(
            kinesis_event(br#"{"Records": [{"eventSource": "aws:kinesis"}]}"#),
            Some(Err(RequestError::Invalid(_)))
        ));
    }

    #[test]
    fn records_decode_in_order_and_bad_ones_are_final() {
        let batch = br#"[{"groupid":"2"},{"groupid":"2"}]"#;
        let body = event(vec![
            record("10", &rule_record("pi-19", "gasdetector", batch)),
            record("11", b"not json"),
            record("12", &rule_record("pi-19", "dust", batch)),
            record("13", &rule_record("a/b", "gasdetector", batch)),
            record(
                "14",
                br#"{"thing":"pi","sensor":"gasdetector","payload":"%%"}"#,
            ),
            record("15", &rule_record("pi-19", "gasdetector", b"[]")),
            record(
                "16",
                &rule_record("pi-20", "gasdetector", br#"{"groupid":"2"}"#),
            ),
        ]);
        let Some(Ok(event)) = kinesis_event(&body) else {
            panic!("a Kinesis event")
        };
        let records = decode(&event, Sensor::Gasdetector);
        let sequences: Vec<&str> = records.iter().map(|r| r.sequence.as_str()).collect();
        assert_eq!(sequences, ["10", "11", "12", "13", "14", "15", "16"]);
        assert!(
            matches!(&records[0].content, Ok((thing, Payload::Batch(items))) if thing.as_str() == "pi-19" && items.len() == 2)
        );
        let kinds: Vec<&str> = records[1..6]
            .iter()
            .map(|r| r.content.as_ref().map_err(|f| f.kind).err().unwrap_or("ok"))
            .collect();
        assert_eq!(
            kinds,
            [
                "not_a_rule_record",
                "other_sensor",
                "bad_thing",
                "bad_payload",
                "invalid_body"
            ]
        );
        assert!(matches!(&records[6].content, Ok((_, Payload::Single(_)))));
    }

    #[test]
    fn the_response_lists_the_failed_sequence_numbers() {
        assert_eq!(response(&[]), json!({"batchItemFailures": []}));
        assert_eq!(
            response(&["11", "13"]),
            json!({"batchItemFailures": [{"itemIdentifier": "11"}, {"itemIdentifier": "13"}]})
        );
    }
}
