//! The alarm state of one group, as stored in `state.reported` of its named shadow.
//! Every top-level field is an array: a shadow update merges objects key by key but
//! replaces arrays whole, so writing the document replaces the state exactly.
//! Bounded so the document stays far below the shadow's 8 KB limit.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Doc ids remembered as applied (a resend of one of them applies no second time).
/// Older readings are stale anyway, so a short list is enough.
pub const MAX_APPLIED: usize = 16;
/// Committed transition messages kept for re-publishing on a resend.
pub const MAX_OUTBOX: usize = 6;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupAlarms {
    /// Every (sensor, measure, bound) that is in alarm or counting breaches; a key in
    /// plain `normal` with no breaches is left out.
    #[serde(default)]
    pub alarms: Vec<KeyState>,
    /// Per sensor, the effective time (`createdtime`, capped at arrival + tolerance) of the
    /// newest applied reading (epoch ms): the staleness mark.
    #[serde(default)]
    pub newest: Vec<SensorTime>,
    /// Per sensor, when the newest applied reading was received (epoch ms, our clock):
    /// lets the no-data check see a reading that arrived after its search.
    #[serde(default)]
    pub received: Vec<SensorTime>,
    /// Ids of the most recently applied readings, oldest first.
    #[serde(default)]
    pub applied: Vec<String>,
    /// Transition messages committed with this state: published after the commit, and
    /// published again when the reading that caused them is resent (its first publish
    /// may have failed). Removed once this instance saw them delivered.
    #[serde(default)]
    pub outbox: Vec<Pending>,
    /// Sensors of this group in the `no_data` alarm (set by the scheduled check).
    #[serde(default)]
    pub no_data: Vec<NoData>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    pub sensor: String,
    pub measure: String,
    pub bound: String,
    /// `normal` or `alarm`.
    pub state: String,
    /// Consecutive breaching readings so far (counts towards the rule's `for`).
    #[serde(default)]
    pub breaches: u32,
    /// While in alarm: the `createdtime` of the reading that raised it, as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default)]
    pub since_ms: i64,
    /// While in alarm: the worst value seen (highest for `high`, lowest for `low`).
    #[serde(default)]
    pub peak: f64,
    /// While in alarm: when the last warning went out (reading time, epoch ms).
    #[serde(default)]
    pub notified_ms: i64,
}

pub const ALARM: &str = "alarm";
pub const NORMAL: &str = "normal";

impl KeyState {
    pub fn is_alarm(&self) -> bool {
        self.state == ALARM
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorTime {
    pub sensor: String,
    pub ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The reading (doc id) whose application caused the message.
    pub id: String,
    pub sensor: String,
    pub message: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoData {
    pub sensor: String,
    /// Receive time (`date`) of the group's last reading before it went silent.
    pub since: String,
    pub since_ms: i64,
}

fn time_of(list: &[SensorTime], sensor: &str) -> Option<i64> {
    list.iter().find(|n| n.sensor == sensor).map(|n| n.ms)
}

fn set_time(list: &mut Vec<SensorTime>, sensor: &str, ms: i64) {
    match list.iter_mut().find(|n| n.sensor == sensor) {
        Some(n) => n.ms = n.ms.max(ms),
        None => list.push(SensorTime {
            sensor: sensor.to_string(),
            ms,
        }),
    }
}

impl GroupAlarms {
    pub fn newest_ms(&self, sensor: &str) -> Option<i64> {
        time_of(&self.newest, sensor)
    }

    /// Never moves back.
    pub fn set_newest_ms(&mut self, sensor: &str, ms: i64) {
        set_time(&mut self.newest, sensor, ms);
    }

    pub fn received_ms(&self, sensor: &str) -> Option<i64> {
        time_of(&self.received, sensor)
    }

    pub fn set_received_ms(&mut self, sensor: &str, ms: i64) {
        set_time(&mut self.received, sensor, ms);
    }

    pub fn was_applied(&self, id: &str) -> bool {
        self.applied.iter().any(|a| a == id)
    }

    pub fn mark_applied(&mut self, id: &str) {
        self.applied.push(id.to_string());
        let excess = self.applied.len().saturating_sub(MAX_APPLIED);
        self.applied.drain(..excess);
    }

    pub fn push_outbox(&mut self, pending: Pending) {
        self.outbox.push(pending);
        let excess = self.outbox.len().saturating_sub(MAX_OUTBOX);
        self.outbox.drain(..excess);
    }

    /// Outbox entries caused by `id`.
    pub fn pending_for<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Pending> + 'a {
        self.outbox.iter().filter(move |p| p.id == id)
    }

    /// Drops outbox entries that were delivered.
    pub fn delivered(&mut self, delivered: &[Pending]) {
        self.outbox.retain(|p| !delivered.contains(p));
    }

    pub fn key(&self, sensor: &str, measure: &str, bound: &str) -> Option<&KeyState> {
        self.alarms
            .iter()
            .find(|k| k.sensor == sensor && k.measure == measure && k.bound == bound)
    }

    /// The shadow's `state.reported` for this state.
    pub fn to_reported(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Reads `state.reported`; fields it lacks (or cannot read) start empty, so an older
    /// or hand-edited document never blocks readings.
    pub fn from_reported(reported: &Value) -> GroupAlarms {
        let field = |name: &str| reported.get(name).cloned().unwrap_or(Value::Null);
        GroupAlarms {
            alarms: serde_json::from_value(field("alarms")).unwrap_or_default(),
            newest: serde_json::from_value(field("newest")).unwrap_or_default(),
            received: serde_json::from_value(field("received")).unwrap_or_default(),
            applied: serde_json::from_value(field("applied")).unwrap_or_default(),
            outbox: serde_json::from_value(field("outbox")).unwrap_or_default(),
            no_data: serde_json::from_value(field("no_data")).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_the_reported_document() {
        let mut state = GroupAlarms::default();
        state.set_newest_ms("gasdetector", 5);
        state.set_newest_ms("gasdetector", 3);
        state.mark_applied("a");
        state.alarms.push(KeyState {
            sensor: "gasdetector".into(),
            measure: "no2".into(),
            bound: "high".into(),
            state: ALARM.into(),
            breaches: 2,
            since: Some("2021-09-03 18:14:49".into()),
            since_ms: 1,
            peak: 95.0,
            notified_ms: 1,
        });
        let back = GroupAlarms::from_reported(&state.to_reported());
        assert_eq!(back, state);
        assert_eq!(
            back.newest_ms("gasdetector"),
            Some(5),
            "newest never goes back"
        );
    }

    #[test]
    fn unreadable_fields_start_empty() {
        let state = GroupAlarms::from_reported(&json!({"alarms": 3, "applied": ["x"], "other": 1}));
        assert!(state.alarms.is_empty());
        assert!(state.was_applied("x"));
        assert_eq!(
            GroupAlarms::from_reported(&Value::Null),
            GroupAlarms::default()
        );
    }

    #[test]
    fn lists_are_bounded() {
        let mut state = GroupAlarms::default();
        for i in 0..40 {
            state.mark_applied(&i.to_string());
            state.push_outbox(Pending {
                id: i.to_string(),
                sensor: "dust".into(),
                message: json!({"n": i}),
            });
        }
        assert_eq!(state.applied.len(), MAX_APPLIED);
        assert!(state.was_applied("39") && !state.was_applied("0"));
        assert_eq!(state.outbox.len(), MAX_OUTBOX);
        assert_eq!(state.outbox[0].id, (40 - MAX_OUTBOX).to_string());
    }
}
