//! From a source line to a validated reading: the line protocol the boxes' scripts print,
//! filled with the box's identity from the configuration, then validated by the same
//! schema types the functions use (`sensor_model::Reading::parse`), so a reading the API would
//! refuse is never queued.
//!
//! A line is one JSON object whose keys are measures of the sensor's route. Each value is
//! a number or decimal string (`{"no2": 52.0, "co": "26.20"}`), or an object with `value`
//! and optionally `sensorid`, `sensortype` and `createdtime` (the full reading form, so
//! scripts that already build readings keep working).

use crate::config::{MeasureLabels, SensorConfig};
use chrono::{DateTime, SecondsFormat, Utc};
use sensor_model::document::DocId;
use sensor_model::domain::group_id::GroupId;
use sensor_model::{Reading, Sensor, ValidationError};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A reading ready for the queue: its route, body, document id and time.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedReading {
    pub route: Sensor,
    pub doc_id: String,
    /// The reading's time (UTC), the order in which the queue drains.
    pub created: DateTime<Utc>,
    pub body: String,
}

pub struct ReadingBuilder {
    group: GroupId,
    gps: Option<String>,
    thing: String,
    route: Sensor,
    labels: BTreeMap<sensor_model::Measure, MeasureLabels>,
}

impl ReadingBuilder {
    pub fn new(group: GroupId, gps: Option<String>, thing: String, sensor: &SensorConfig) -> Self {
        ReadingBuilder {
            group,
            gps,
            thing,
            route: sensor.route,
            labels: sensor.labels.clone(),
        }
    }

    pub fn route(&self) -> Sensor {
        self.route
    }

    /// Builds and validates the reading of one line taken at `now`. Errors name the field
    /// as the API would (`no2.value`), so the log line says what the script got wrong.
    pub fn build(&self, line: &str, now: DateTime<Utc>) -> Result<QueuedReading, ValidationError> {
        let parsed: Value = serde_json::from_str(line.trim())
            .map_err(|e| ValidationError::new("", format!("not a JSON line: {e}")))?;
        let Value::Object(measures) = parsed else {
            return Err(ValidationError::new(
                "",
                "a line must be a JSON object of measures, e.g. {\"no2\": 52.0}",
            ));
        };
        // Microseconds: two readings of one sensor in the same second must not share an id,
        // and the agent's bump for lines read at the same instant (1 us each) must stay far
        // below the time a restart takes, or a restarted agent could reuse a stamp.
        let stamp = now.to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut reading = Map::new();
        reading.insert("groupid".into(), Value::String(self.group.as_str().into()));
        if let Some(gps) = &self.gps {
            reading.insert("gps".into(), Value::String(gps.clone()));
        }
        for (name, value) in measures {
            let labels = self
                .route
                .measure_named(&name)
                .and_then(|m| self.labels.get(&m));
            let mut object = match value {
                Value::Object(object) => object,
                other => {
                    let mut object = Map::new();
                    object.insert("value".into(), other);
                    object
                }
            };
            let label = |configured: Option<&String>, default: &str| {
                Value::String(configured.cloned().unwrap_or_else(|| default.to_string()))
            };
            object
                .entry("sensorid")
                .or_insert_with(|| label(labels.and_then(|l| l.sensorid.as_ref()), &self.thing));
            object
                .entry("sensortype")
                .or_insert_with(|| label(labels.and_then(|l| l.sensortype.as_ref()), &name));
            object
                .entry("createdtime")
                .or_insert_with(|| Value::String(stamp.clone()));
            reading.insert(name, Value::Object(object));
        }
        let value = Value::Object(reading);
        let body = value.to_string();
        let validated = Reading::parse(self.route, value, chrono_tz::UTC)?;
        Ok(QueuedReading {
            route: self.route,
            doc_id: DocId::of(&validated).as_str().to_string(),
            created: validated.taken_at().utc(),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceSpec;
    use chrono::TimeZone;
    use std::time::Duration;

    fn builder() -> ReadingBuilder {
        let mut labels = BTreeMap::new();
        labels.insert(
            sensor_model::Measure::parse("no2").expect("no2"),
            MeasureLabels {
                sensorid: Some("0006".into()),
                sensortype: Some("9".into()),
            },
        );
        let sensor = SensorConfig {
            route: Sensor::Gasdetector,
            interval: Duration::from_secs(30),
            source: SourceSpec::Stdin,
            labels,
        };
        ReadingBuilder::new(
            GroupId::parse("2").expect("group"),
            Some("37.61, 126.99".into()),
            "box-2".into(),
            &sensor,
        )
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn short_lines_are_filled_from_the_configuration() {
        let built = builder()
            .build(r#"{"no2": 52.0, "co": "26.20"}"#, now())
            .expect("valid");
        let body: Value = serde_json::from_str(&built.body).expect("json");
        assert_eq!(body["groupid"], "2");
        assert_eq!(body["no2"]["sensorid"], "0006");
        assert_eq!(body["no2"]["sensortype"], "9");
        assert_eq!(body["co"]["sensorid"], "box-2");
        assert_eq!(body["co"]["createdtime"], "2026-12-01T10:00:00.000000Z");
        assert_eq!(built.created, now());
        assert_eq!(built.route, Sensor::Gasdetector);
    }

    #[test]
    fn full_readings_keep_their_own_fields() {
        let line = r#"{"no2": {"sensorid": "77", "sensortype": "9", "value": "95", "createdtime": "2026-11-30 08:00:00"}}"#;
        let built = builder().build(line, now()).expect("valid");
        let body: Value = serde_json::from_str(&built.body).expect("json");
        assert_eq!(body["no2"]["sensorid"], "77");
        assert_eq!(body["no2"]["createdtime"], "2026-11-30 08:00:00");
    }

    #[test]
    fn lines_the_api_would_refuse_name_the_field() {
        for (line, field) in [
            ("not json", ""),
            ("[1, 2]", ""),
            ("{}", ""),
            (r#"{"n02": 5}"#, "n02"),
            (r#"{"pm25": 5}"#, "pm25"),
            (r#"{"no2": "high"}"#, "no2.value"),
            (r#"{"no2": true}"#, "no2.value"),
            (r#"{"no2": {"value": 1, "colour": "red"}}"#, "no2.colour"),
            (
                r#"{"no2": {"value": 1, "createdtime": "yesterday"}}"#,
                "no2.createdtime",
            ),
        ] {
            let err = builder().build(line, now()).expect_err(line);
            assert_eq!(err.field(), field, "{line}: {err}");
        }
    }

    #[test]
    fn the_same_line_at_the_same_second_has_the_same_id() {
        let a = builder().build(r#"{"no2": 1}"#, now()).expect("valid");
        let b = builder().build(r#"{"no2": 2}"#, now()).expect("valid");
        assert_eq!(
            a.doc_id, b.doc_id,
            "the id is the reading's identity, not its value"
        );
    }
}
