//! Alarm state: each (group, sensor, measure, bound) is `normal` or `alarm`, and messages
//! go out on transitions only (DESIGN.md "Alarms").
//! - [`state`]: the per-group state document, kept in the group's named IoT shadow;
//! - [`machine`]: the pure state machine (hysteresis, `for`, `renotify`, staleness);
//! - [`message`]: the transition messages (alarm, clear, no data);
//! - [`settings`]: `ALARM_MODE`, `CLOCK_SKEW_WARN`, the shadow's thing and name.
//!
//! The scheduled check for silent groups uses these from `sensor_core::no_data`.

pub mod machine;
pub mod message;
pub mod settings;
pub mod state;
