//! The reading schema: every type here is built only through validation (`parse` /
//! `from_json`), with boundary tests beside it. Nothing here knows of AWS or HTTP.

pub mod arrival;
pub mod created_time;
pub mod error;
pub mod group_id;
pub mod location;
pub mod measure;
pub mod reading;
pub mod sensor;
pub mod sensor_label;
pub mod thing_name;
pub mod value;
