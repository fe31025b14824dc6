//! The domain model of the sensor fleet, shared by the functions and the box. Pure: no
//! AWS, no Lambda, no HTTP, no async runtime (ARCHITECTURE.md, "sensor-model").
//! - [`domain`]: the reading schema, each type built only through validation;
//! - [`rules`]: the threshold rules; [`warning`]: what a breach publishes;
//! - [`topic`]: where warnings go; [`document`] and [`index_name`]: what is indexed, under
//!   which id (the resend-safe [`document::DocId`]) and in which index;
//! - [`alarms`]: alarm state per group and the pure state machine that moves it.

pub mod alarms;
pub mod document;
pub mod domain;
pub mod index_name;
pub mod rules;
pub mod topic;
pub mod warning;

pub use domain::error::ValidationError;
pub use domain::measure::Measure;
pub use domain::reading::Reading;
pub use domain::sensor::Sensor;
