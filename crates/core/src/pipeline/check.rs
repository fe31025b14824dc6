//! Rules, document and clock skew for one valid reading: pure, no I/O.

use super::settings::PipelineSettings;
use sensor_model::document::Document;
use sensor_model::domain::arrival::Arrival;
use sensor_model::domain::measure::Measure;
use sensor_model::domain::reading::Reading;
use sensor_model::topic::Topic;
use sensor_model::warning::Warning;

/// A validated reading and what the rules made of it.
pub(super) struct Checked {
    /// The message of the call it came in ([`super::Sent::message`]).
    pub message: usize,
    pub reading: Reading,
    pub document: Document,
    pub warnings: Vec<Warning>,
    pub topic: Topic,
    /// Receive time minus `createdtime` when above `CLOCK_SKEW_WARN`.
    pub skew_warn_s: Option<i64>,
}

/// Rules and document for one valid reading, plus the skew its alarm messages carry
/// (see [`skew`]): pure, no I/O.
pub(super) fn check_with_skew(
    settings: &PipelineSettings,
    reading: &Reading,
    arrival: Arrival,
) -> (Document, Vec<Warning>, Option<i64>) {
    let trips: Vec<_> = reading
        .measures()
        .iter()
        .filter_map(|m| {
            settings
                .rules
                .check(m.measure(), m.value())
                .map(|trip| (m, trip))
        })
        .collect();
    let tripped: Vec<Measure> = trips.iter().map(|(m, _)| m.measure()).collect();
    let mut document = Document::build(reading, &settings.index, &tripped, arrival);
    let (skew_s, skew_warn) = skew(settings, reading, arrival);
    document
        .body
        .insert("clock_skew_s".into(), serde_json::Value::from(skew_s));
    // The read API marks a box by this: its clock (or this reading's delivery) is
    // off by more than `CLOCK_SKEW_WARN`.
    document.body.insert(
        "clock_skewed".into(),
        serde_json::Value::from(skew_warn.is_some()),
    );
    let warnings = trips
        .into_iter()
        .map(|(m, trip)| {
            let mut warning = Warning::new(reading, m, trip, document.id.as_str());
            warning.clock_skew_s = skew_warn;
            warning
        })
        .collect();
    (document, warnings, skew_warn)
}

/// Receive time minus `createdtime` in seconds, and the same again when a warning
/// must carry it: past `CLOCK_SKEW_WARN` either way, or for any reading dated after
/// its arrival (beyond the tolerance), a time no clock can be right about however
/// small the skew.
fn skew(settings: &PipelineSettings, reading: &Reading, arrival: Arrival) -> (i64, Option<i64>) {
    let taken = reading.taken_at().utc();
    let skew_s = (arrival.received() - taken).num_seconds();
    let notable = arrival.is_future(taken)
        || skew_s.unsigned_abs() > settings.clock_skew_warn_s.unsigned_abs();
    (skew_s, notable.then_some(skew_s))
}
