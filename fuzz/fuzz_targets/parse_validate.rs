//! The request boundary and everything pure behind it: `parse_body`, `Pipeline::validate`
//! (`Reading::parse`), `Pipeline::check` (rules, warnings, document), and the topic a
//! warning goes to. Besides "no panic", it checks the invariants other code relies on.
//!
//! Input: byte 0 picks the route and the device time zone; the rest is the HTTP body.

#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sensor_model::document::Document;
use sensor_core::pipeline::Pipeline;
use sensor_model::topic::TopicTemplate;
use sensor_lambda::request::{parse_body, Payload, RequestError, MAX_BATCH, MAX_BODY_BYTES};
use sensor_core::ports::{DownstreamError, IndexOutcome, Indexer, Message, Publisher};
use sensor_lambda::IngestSettings;
use sensor_model::Sensor;
use std::collections::HashMap;
use std::sync::OnceLock;

struct Nowhere;

impl Publisher for Nowhere {
    async fn publish(&self, _: &Message) -> Result<(), DownstreamError> {
        Ok(())
    }
}

impl Indexer for Nowhere {
    async fn create_all(&self, d: &[&Document]) -> Result<Vec<IndexOutcome>, DownstreamError> {
        Ok(vec![IndexOutcome::Created; d.len()])
    }
}

const ZONES: [&str; 2] = ["UTC", "America/New_York"];

fn pipelines() -> &'static Vec<(Sensor, Pipeline<Nowhere, Nowhere>)> {
    static PIPELINES: OnceLock<Vec<(Sensor, Pipeline<Nowhere, Nowhere>)>> = OnceLock::new();
    PIPELINES.get_or_init(|| {
        let mut all = Vec::new();
        for zone in ZONES {
            for sensor in Sensor::ALL {
                let env: HashMap<&str, &str> = HashMap::from([
                    ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", "http://127.0.0.1:1"),
                    ("OPENSEARCH_URL", "http://127.0.0.1:2"),
                    ("OPENSEARCH_AUTH", "none"),
                    ("DEVICE_TIMEZONE", zone),
                ]);
                let config = IngestSettings::from_lookup(sensor, |k| env.get(k).map(|v| v.to_string()))
                    .expect("fuzz configuration");
                all.push((sensor, Pipeline::new(&config.pipeline, Nowhere, Nowhere)));
            }
        }
        all
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let all = pipelines();
    let (sensor, pipeline) = &all[usize::from(selector) % all.len()];
    match parse_body(body) {
        Ok(Payload::Single(value)) => {
            assert!(value.is_object());
            check_one(*sensor, pipeline, value);
        }
        Ok(Payload::Batch(items)) => {
            assert!(!items.is_empty() && items.len() <= MAX_BATCH);
            for value in items {
                check_one(*sensor, pipeline, value);
            }
        }
        Err(RequestError::TooLarge(n)) => assert!(n > MAX_BODY_BYTES),
        Err(RequestError::Invalid(e)) => assert_eq!(e.field(), "body"),
        Err(RequestError::MethodNotAllowed(_)) => unreachable!("parse_body knows no method"),
    }
});

fn check_one(sensor: Sensor, pipeline: &Pipeline<Nowhere, Nowhere>, value: Value) {
    let raw = value.clone();
    let reading = match pipeline.validate(value) {
        Ok(reading) => reading,
        Err(e) => {
            // An error names a field of the reading (or the reading as a whole). Field
            // paths are dotted; an unknown key may itself contain dots.
            let top = e.field().split('.').next().unwrap_or("");
            assert!(
                top.is_empty()
                    || raw.get(top).is_some()
                    || raw.get(e.field()).is_some()
                    || top == "groupid",
                "error names {:?}, not in the reading",
                e.field()
            );
            return;
        }
    };
    // The group can only address its own topic: no level separators, wildcards or `$`.
    let group = reading.group().as_str();
    assert!(!group.is_empty() && group.len() <= 64);
    assert!(group
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
    let topic = TopicTemplate::default().topic(sensor, reading.group());
    assert_eq!(topic.as_str(), format!("pi/{group}"));

    assert!(!reading.measures().is_empty());
    for m in reading.measures() {
        assert!(m.value().is_finite());
        assert!(sensor.measures().contains(&m.measure()));
    }
    if let Some(location) = reading.location() {
        assert!((-90.0..=90.0).contains(&location.lat()));
        assert!((-180.0..=180.0).contains(&location.lon()));
    }

    let received = pipeline.arrival(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
    let (document, warnings) = pipeline.check(&reading, received);
    let (again, _) = pipeline.check(&reading, received);
    assert_eq!(document.id, again.id, "document ids are deterministic");
    assert!(serde_json::to_vec(&document.body).is_ok());
    // Nothing is dated after its arrival (plus the tolerance), whatever the box's clock.
    let stamped = document.body["@timestamp"].as_str().expect("@timestamp");
    let stamped = chrono::DateTime::parse_from_rfc3339(stamped).expect("RFC 3339");
    assert!(stamped <= received.latest_believable());
    for w in &warnings {
        let payload = serde_json::to_vec(w).expect("warning serializes");
        // The MQTT payload limit of IoT Core is 128 KB.
        assert!(payload.len() < 128 * 1024);
    }
}
