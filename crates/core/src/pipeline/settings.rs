//! What a sensor function's pipeline is told; the Lambda boundary parses it from the
//! environment.

use chrono_tz::Tz;
use sensor_model::alarms::settings::{AlarmMode, DEFAULT_CLOCK_SKEW_WARN_S};
use sensor_model::domain::arrival::AheadTolerance;
use sensor_model::domain::sensor::Sensor;
use sensor_model::index_name::IndexName;
use sensor_model::rules::Rules;
use sensor_model::topic::TopicTemplate;

/// What the pipeline of one sensor function is told (the Lambda boundary parses it from
/// the environment: `sensor_lambda::settings::IngestSettings`).
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub sensor: Sensor,
    pub rules: Rules,
    pub topic: TopicTemplate,
    pub index: IndexName,
    /// `DEVICE_TIMEZONE`: how a `createdtime` without an offset is read.
    pub device_timezone: Tz,
    /// `ACK_MESSAGES`: one `{"msg": ...}` per request and group.
    pub ack_messages: bool,
    /// `ALARM_MODE`: transitions (default) or `every` (one warning per breaching reading).
    pub alarm_mode: AlarmMode,
    /// `CLOCK_SKEW_WARN` (seconds): a warning carries `clock_skew_s` above it.
    pub clock_skew_warn_s: i64,
    /// `CLOCK_AHEAD_TOLERANCE`: how far after its arrival a reading's own time is still
    /// believed (`sensor_model::domain::arrival`).
    pub clock_ahead_tolerance: AheadTolerance,
}

impl PipelineSettings {
    /// The defaults of every setting for `sensor` (what an empty environment gives).
    pub fn new(sensor: Sensor) -> PipelineSettings {
        PipelineSettings {
            sensor,
            rules: Rules::default(),
            topic: TopicTemplate::default(),
            index: IndexName::parse(sensor.default_index())
                .unwrap_or_else(|_| unreachable!("every default index name is valid")),
            device_timezone: Tz::UTC,
            ack_messages: false,
            alarm_mode: AlarmMode::default(),
            clock_skew_warn_s: DEFAULT_CLOCK_SKEW_WARN_S,
            clock_ahead_tolerance: AheadTolerance::default(),
        }
    }
}
