//! One reading from one box: validated into domain types, so the rest of the code
//! cannot hold an invalid value. The JSON as received is kept for the indexed document.

use crate::domain::created_time::CreatedTime;
use crate::domain::error::{json_type, ValidationError};
use crate::domain::group_id::GroupId;
use crate::domain::location::Location;
use crate::domain::measure::Measure;
use crate::domain::sensor::Sensor;
use crate::domain::sensor_label::SensorLabel;
use crate::domain::value::MeasureValue;
use chrono_tz::Tz;
use serde_json::{Map, Value};

/// One measure of a reading (`"no2": {...}`).
#[derive(Debug, Clone, PartialEq)]
pub struct MeasureReading {
    measure: Measure,
    sensor_id: SensorLabel,
    sensor_type: SensorLabel,
    value: MeasureValue,
    created: CreatedTime,
}

impl MeasureReading {
    const FIELDS: [&'static str; 4] = ["sensorid", "sensortype", "value", "createdtime"];

    fn from_json(
        measure: Measure,
        value: &Value,
        zone: Tz,
    ) -> Result<MeasureReading, ValidationError> {
        let object = value.as_object().ok_or_else(|| {
            ValidationError::new(
                "",
                format!(
                    "must be an object with {}, got {}",
                    Self::FIELDS.join(", "),
                    json_type(value)
                ),
            )
        })?;
        if let Some(unknown) = object.keys().find(|k| !Self::FIELDS.contains(&k.as_str())) {
            return Err(ValidationError::new(
                unknown.as_str(),
                format!("unknown field; expected {}", Self::FIELDS.join(", ")),
            ));
        }
        let field = |name: &str| {
            object
                .get(name)
                .ok_or_else(|| ValidationError::new(name, "is required"))
        };
        Ok(MeasureReading {
            measure,
            sensor_id: SensorLabel::from_json(field("sensorid")?)
                .map_err(|e| e.within("sensorid"))?,
            sensor_type: SensorLabel::from_json(field("sensortype")?)
                .map_err(|e| e.within("sensortype"))?,
            value: MeasureValue::from_json(field("value")?).map_err(|e| e.within("value"))?,
            created: CreatedTime::from_json(field("createdtime")?, zone)
                .map_err(|e| e.within("createdtime"))?,
        })
    }

    pub fn measure(&self) -> Measure {
        self.measure
    }
    pub fn sensor_id(&self) -> &SensorLabel {
        &self.sensor_id
    }
    pub fn sensor_type(&self) -> &SensorLabel {
        &self.sensor_type
    }
    pub fn value(&self) -> f64 {
        self.value.get()
    }
    pub fn created(&self) -> &CreatedTime {
        &self.created
    }
}

/// A validated reading for one route.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    sensor: Sensor,
    group: GroupId,
    location: Option<Location>,
    /// Non-empty, in the route's measure order.
    measures: Vec<MeasureReading>,
    raw: Map<String, Value>,
}

impl Reading {
    /// Validates one reading object for `sensor`; device-local `createdtime`s are in `zone`.
    pub fn parse(sensor: Sensor, value: Value, zone: Tz) -> Result<Reading, ValidationError> {
        let raw = match value {
            Value::Object(map) => map,
            other => {
                return Err(ValidationError::new(
                    "",
                    format!("a reading must be a JSON object, got {}", json_type(&other)),
                ))
            }
        };
        let expected = || {
            let mut names = vec!["groupid", "gps"];
            names.extend(sensor.measures().iter().map(|m| m.name()));
            names.join(", ")
        };
        // Unknown keys first: a typo such as `n02` must never silently disable a warning.
        if let Some(unknown) = raw
            .keys()
            .find(|k| *k != "groupid" && *k != "gps" && sensor.measure_named(k).is_none())
        {
            let hint = match Measure::parse(unknown) {
                Some(m) => format!("{m} is not measured on /{sensor}; "),
                None => String::new(),
            };
            return Err(ValidationError::new(
                unknown.as_str(),
                format!("unknown field; {hint}expected {}", expected()),
            ));
        }
        let group = GroupId::from_json(
            raw.get("groupid")
                .ok_or_else(|| ValidationError::new("groupid", "is required"))?,
        )
        .map_err(|e| e.within("groupid"))?;
        let location = raw
            .get("gps")
            .map(Location::from_json)
            .transpose()
            .map_err(|e| e.within("gps"))?;
        let mut measures = Vec::with_capacity(sensor.measures().len());
        for &measure in sensor.measures() {
            if let Some(v) = raw.get(measure.name()) {
                measures.push(
                    MeasureReading::from_json(measure, v, zone)
                        .map_err(|e| e.within(measure.name()))?,
                );
            }
        }
        if measures.is_empty() {
            let names: Vec<&str> = sensor.measures().iter().map(|m| m.name()).collect();
            return Err(ValidationError::new(
                "",
                format!(
                    "a reading needs at least one measure of {}",
                    names.join(", ")
                ),
            ));
        }
        Ok(Reading {
            sensor,
            group,
            location,
            measures,
            raw,
        })
    }

    pub fn sensor(&self) -> Sensor {
        self.sensor
    }
    pub fn group(&self) -> &GroupId {
        &self.group
    }
    pub fn location(&self) -> Option<Location> {
        self.location
    }
    pub fn measures(&self) -> &[MeasureReading] {
        &self.measures
    }
    /// The reading exactly as received (strings kept).
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }
    /// When the reading was taken: the first measure's `createdtime`.
    pub fn taken_at(&self) -> &CreatedTime {
        // `measures` is never empty (checked in `parse`).
        &self.measures[0].created
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub const SEED: &str = r#"{"groupid": "2", "gps": "37.61002501514269, 126.99636868892937",
 "co":     {"sensorid": "0005", "sensortype": "8",  "value": "26.20", "createdtime": "2021-09-03 18:14:49"},
 "no2":    {"sensorid": "0006", "sensortype": "9",  "value": "52.00", "createdtime": "2021-09-03 18:14:49"},
 "c2h5oh": {"sensorid": "0007", "sensortype": "27", "value": "26.11", "createdtime": "2021-09-03 18:14:49"},
 "h2":     {"sensorid": "0008", "sensortype": "30", "value": "400",   "createdtime": "2021-09-03 18:14:49"}}"#;

    fn parse(sensor: Sensor, v: Value) -> Result<Reading, ValidationError> {
        Reading::parse(sensor, v, Tz::UTC)
    }

    fn field_of(sensor: Sensor, v: Value) -> String {
        parse(sensor, v).unwrap_err().field().to_string()
    }

    fn measure(value: Value) -> Value {
        json!({"sensorid": "1", "sensortype": "2", "value": value, "createdtime": "2021-09-03 18:14:49"})
    }

    #[test]
    fn seed_payload_is_accepted_byte_for_byte() {
        let r = parse(Sensor::Gasdetector, serde_json::from_str(SEED).unwrap()).unwrap();
        assert_eq!(r.group().as_str(), "2");
        let names: Vec<_> = r.measures().iter().map(|m| m.measure().name()).collect();
        assert_eq!(names, ["co", "no2", "c2h5oh", "h2"]);
        assert_eq!(r.measures()[1].value(), 52.0);
        assert_eq!(r.measures()[1].sensor_id().as_str(), "0006");
        assert_eq!(r.raw()["co"]["value"], json!("26.20"));
        assert!(r.location().is_some());
    }

    #[test]
    fn every_measure_set_is_accepted_with_numbers_or_strings() {
        for sensor in Sensor::ALL {
            let mut body = json!({"groupid": 7});
            for (i, m) in sensor.measures().iter().enumerate() {
                let v = if i % 2 == 0 {
                    json!(12.5)
                } else {
                    json!("12.5")
                };
                body[m.name()] = measure(v);
            }
            let r = parse(sensor, body).unwrap();
            assert_eq!(r.measures().len(), sensor.measures().len());
            assert!(r.measures().iter().all(|m| m.value() == 12.5));
            assert!(r.location().is_none());
        }
    }

    #[test]
    fn one_measure_is_enough() {
        let r = parse(
            Sensor::Dust,
            json!({"groupid": "1", "pm10": measure(json!(3))}),
        )
        .unwrap();
        assert_eq!(r.measures().len(), 1);
    }

    #[test]
    fn no_measure_is_rejected() {
        let err = parse(Sensor::Dust, json!({"groupid": "1"})).unwrap_err();
        assert!(err.message().contains("pm1, pm25, pm10"), "{err}");
    }

    #[test]
    fn unknown_top_level_key_is_named_with_the_expected_ones() {
        let err = parse(
            Sensor::Gasdetector,
            json!({"groupid": "1", "n02": measure(json!(1))}),
        )
        .unwrap_err();
        assert_eq!(err.field(), "n02");
        assert!(
            err.message().contains("groupid, gps, co, no2, c2h5oh, h2"),
            "{err}"
        );
        let err = parse(
            Sensor::Dust,
            json!({"groupid": "1", "no2": measure(json!(1))}),
        )
        .unwrap_err();
        assert!(err.message().contains("not measured on /dust"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let g = Sensor::Gasdetector;
        assert_eq!(field_of(g, json!({"no2": measure(json!(1))})), "groupid");
        assert_eq!(
            field_of(g, json!({"groupid": "a/b", "no2": measure(json!(1))})),
            "groupid"
        );
        assert_eq!(
            field_of(
                g,
                json!({"groupid": "1", "gps": "91, 0", "no2": measure(json!(1))})
            ),
            "gps"
        );
        assert_eq!(
            field_of(g, json!({"groupid": "1", "no2": measure(json!("NaN"))})),
            "no2.value"
        );
        assert_eq!(
            field_of(g, json!({"groupid": "1", "no2": measure(json!(""))})),
            "no2.value"
        );
        assert_eq!(field_of(g, json!({"groupid": "1", "no2": 5})), "no2");
        let mut m = measure(json!(1));
        m["createdtime"] = json!("2021-09-03");
        assert_eq!(
            field_of(g, json!({"groupid": "1", "no2": m})),
            "no2.createdtime"
        );
        let mut m = measure(json!(1));
        m.as_object_mut().unwrap().remove("sensorid");
        assert_eq!(
            field_of(g, json!({"groupid": "1", "no2": m})),
            "no2.sensorid"
        );
        let mut m = measure(json!(1));
        m["vaule"] = json!(1);
        assert_eq!(field_of(g, json!({"groupid": "1", "no2": m})), "no2.vaule");
    }

    #[test]
    fn non_objects_are_rejected() {
        for bad in [json!(null), json!(1), json!("x"), json!([1])] {
            assert_eq!(field_of(Sensor::Temp, bad), "");
        }
    }
}
