//! Alarm state: each (group, sensor, measure, bound) is `normal` or `alarm`, and messages
//! go out on transitions only (DESIGN.md "Alarms").
//! - [`state`]: the per-group state document, kept in the group's named IoT shadow;
//! - [`machine`]: the pure state machine (hysteresis, `for`, `renotify`, staleness);
//! - [`message`]: the transition messages (alarm, clear, no data);
//! - [`settings`]: `ALARM_MODE`, `CLOCK_SKEW_WARN`, the shadow's thing and name;
//! - [`no_data`]: the scheduled check for silent groups.

pub mod machine;
pub mod message;
pub mod no_data;
pub mod settings;
pub mod state;
