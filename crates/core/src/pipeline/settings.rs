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
    /// `BULK_MAX_BYTES`: the largest `_bulk` body one request sends; a stream batch of
    /// thousands of readings goes out as several of these.
    pub bulk_max_bytes: usize,
}

/// 5 MiB: the low end of the 5-15 MiB bulk size AWS recommends for OpenSearch Service,
/// and under the 10 MiB HTTP payload limit of its smallest instance types.
pub const DEFAULT_BULK_MAX_BYTES: usize = 5 * 1024 * 1024;
/// The range `BULK_MAX_BYTES` accepts: at least one large reading, at most what the
/// largest OpenSearch Service instance types accept (100 MiB).
pub const BULK_MAX_BYTES_RANGE: std::ops::RangeInclusive<usize> = 16 * 1024..=100 * 1024 * 1024;

/// Parses `BULK_MAX_BYTES`: a whole number of bytes within [`BULK_MAX_BYTES_RANGE`].
pub fn parse_bulk_max_bytes(text: &str) -> Result<usize, String> {
    let bytes: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of bytes"))?;
    if !BULK_MAX_BYTES_RANGE.contains(&bytes) {
        return Err(format!(
            "{bytes} is outside {}..={} bytes",
            BULK_MAX_BYTES_RANGE.start(),
            BULK_MAX_BYTES_RANGE.end()
        ));
    }
    Ok(bytes)
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
            bulk_max_bytes: DEFAULT_BULK_MAX_BYTES,
        }
    }
}
