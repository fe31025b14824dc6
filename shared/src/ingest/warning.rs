//! The MQTT warning message, one per tripped rule. The `warning` key keeps the
//! subscribers of the original function working.

use crate::domain::reading::{MeasureReading, Reading};
use crate::ingest::rules::Trip;
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
        }
    }
}
