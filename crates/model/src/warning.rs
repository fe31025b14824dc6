//! The MQTT warning message, one per tripped rule. The `warning` key keeps the
//! subscribers of the original function working.

use crate::domain::reading::{MeasureReading, Reading};
use crate::rules::Trip;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    pub warning: String,
    pub sensor: &'static str,
    pub groupid: String,
    pub measure: &'static str,
    pub value: f64,
    pub threshold: f64,
    pub bound: &'static str,
    pub createdtime: String,
    pub id: String,
    /// `"alarm"` on an alarm transition (or its renotification); absent in
    /// `ALARM_MODE=every` and in the HTTP reply, which lists every tripped rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// Receive time minus `createdtime`, when it exceeds `CLOCK_SKEW_WARN`: the box's
    /// clock is off (the warning still counts; the operator should fix the clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_skew_s: Option<i64>,
}

impl Warning {
    pub fn new(reading: &Reading, measure: &MeasureReading, trip: Trip, doc_id: &str) -> Warning {
        let name = measure.measure().name();
        Warning {
            warning: format!("{name} warning"),
            sensor: reading.sensor().name(),
            groupid: reading.group().as_str().to_string(),
            measure: name,
            value: measure.value(),
            threshold: trip.threshold,
            bound: trip.bound.name(),
            createdtime: measure.created().as_str().to_string(),
            id: doc_id.to_string(),
            state: None,
            clock_skew_s: None,
        }
    }
}
