//! The messages of alarm transitions, on the group's warning topic. An alarm is the
//! original warning (`crate::warning::Warning`) with `"state": "alarm"`; the
//! others are defined here.

use serde::Serialize;

/// alarm -> normal: `{"clear": "no2 clear", "state": "normal", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Clear {
    pub clear: String,
    pub state: &'static str,
    pub sensor: &'static str,
    pub groupid: String,
    pub measure: &'static str,
    pub bound: &'static str,
    /// The value that cleared the alarm, and the level it went past.
    pub value: f64,
    pub threshold: f64,
    /// `createdtime` of the reading that raised the alarm, and of the one that cleared it.
    pub since: String,
    pub createdtime: String,
    /// Reading time from raise to clear.
    pub duration_s: i64,
    /// The worst value while in alarm.
    pub peak: f64,
    pub id: String,
}

/// A group silent for longer than `NO_DATA_AFTER`: `{"warning": "no data", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoDataWarning {
    pub warning: &'static str,
    pub state: &'static str,
    pub sensor: &'static str,
    pub groupid: String,
    /// Receive time (`date`) of the last reading, UTC.
    pub since: String,
    pub silent_s: i64,
}

/// The group's next reading after a `no data` alarm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoDataClear {
    pub clear: &'static str,
    pub state: &'static str,
    pub sensor: &'static str,
    pub groupid: String,
    pub since: String,
    pub duration_s: i64,
    pub id: String,
}
