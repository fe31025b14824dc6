//! CloudWatch Embedded Metric Format: per request, one JSON line on stdout that CloudWatch
//! Logs turns into metrics (no PutMetricData call, no background flush, no global state).
//! A request whose downstreams retried or failed adds one line per such target, with the
//! `target` dimension.
//!
//! Why not `metrics_cloudwatch_embedded`: it is a global `metrics` recorder that
//! accumulates into a mutex-guarded registry and flushes deltas per invocation, so
//! concurrent invocations of one process (Lambda Managed Instances) share one flush and a
//! request's counts cannot be attributed or tested per request (its own tests fork the
//! process); it also brings the `metrics` crate and its registry into a binary that only
//! needs to format one line from counts the handler already holds. Here the line is built
//! from the request's outcomes and [`sensor_core::downstream`] counters.
//!
//! EMF limits respected by construction: one namespace, at most 3 dimensions (limit 30),
//! at most 10 metrics per line (limit 100), dimension values are the function name and
//! fixed words.

use sensor_core::downstream::{DownstreamStats, Target};
use sensor_core::pipeline::Outcome;
use sensor_model::domain::sensor::Sensor;
use serde_json::{json, Map, Value};
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The CloudWatch namespace of the functions' metrics (`METRICS_NAMESPACE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsNamespace(String);

pub const DEFAULT_NAMESPACE: &str = "SensorIngest";

impl Default for MetricsNamespace {
    fn default() -> Self {
        MetricsNamespace(DEFAULT_NAMESPACE.into())
    }
}

impl MetricsNamespace {
    /// CloudWatch's rule: 1-255 of letters, digits, `.-_/#: `, not starting with `AWS/`.
    pub fn parse(text: &str) -> Result<MetricsNamespace, String> {
        let text = text.trim();
        if text.is_empty() || text.len() > 255 {
            return Err(format!("{text:?} must be 1 to 255 characters"));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || ".-_/#: ".contains(*c)))
        {
            return Err(format!(
                "{text:?} has {bad:?}; use letters, digits and . - _ / # : or space"
            ));
        }
        if text.starts_with("AWS/") {
            return Err(format!("{text:?} starts with AWS/, which is reserved"));
        }
        Ok(MetricsNamespace(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MetricsNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What became of a stream batch's records (the readings are in [`RequestCounts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamCounts {
    pub records: u32,
    /// Final for good: not the rule's record, another sensor's, a bad body, a refused box.
    pub dropped: u32,
    /// Reported in `batchItemFailures`, for the event source mapping to retry.
    pub retried: u32,
}

/// What one request did, counted from its outcomes and downstream counters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RequestCounts {
    pub stored: u32,
    pub duplicate: u32,
    pub invalid: u32,
    /// Readings the box must resend (503).
    pub retry: u32,
    /// Readings OpenSearch refused for good (answered `rejected`, dead-lettered by the box).
    pub rejected: u32,
    /// Readings for another group than the registry binds their box to (403): a box
    /// misconfigured, or one that is not what it claims.
    pub forbidden: u32,
    pub warnings: u32,
    /// A stream batch's records.
    pub stream: Option<StreamCounts>,
}

impl RequestCounts {
    pub fn of(outcomes: &[Outcome]) -> RequestCounts {
        let mut counts = RequestCounts::default();
        for outcome in outcomes {
            match outcome {
                Outcome::Stored {
                    duplicate,
                    warnings,
                    ..
                } => {
                    if *duplicate {
                        counts.duplicate += 1;
                    } else {
                        counts.stored += 1;
                    }
                    counts.warnings += u32::try_from(warnings.len()).unwrap_or(u32::MAX);
                }
                Outcome::Invalid(_) => counts.invalid += 1,
                Outcome::Forbidden(_) => counts.forbidden += 1,
                Outcome::Unavailable { .. } => counts.retry += 1,
                Outcome::Rejected { warnings, .. } => {
                    counts.rejected += 1;
                    counts.warnings += u32::try_from(warnings.len()).unwrap_or(u32::MAX);
                }
            }
        }
        counts
    }
}

/// Where EMF lines go: stdout on Lambda, memory in tests.
#[derive(Debug, Clone, Default)]
pub enum MetricsSink {
    #[default]
    Stdout,
    Memory(Arc<Mutex<Vec<String>>>),
}

impl MetricsSink {
    pub fn memory() -> (MetricsSink, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        (MetricsSink::Memory(lines.clone()), lines)
    }

    fn write(&self, line: &str) {
        match self {
            MetricsSink::Stdout => {
                // One write per line, newline included, so lines never interleave.
                let mut buffer = String::with_capacity(line.len() + 1);
                buffer.push_str(line);
                buffer.push('\n');
                let _ = std::io::stdout().lock().write_all(buffer.as_bytes());
            }
            MetricsSink::Memory(lines) => {
                if let Ok(mut lines) = lines.lock() {
                    lines.push(line.to_string());
                }
            }
        }
    }
}

/// Writes a request's EMF lines: the function's fixed dimensions and the sink.
#[derive(Debug, Clone)]
pub struct MetricsWriter {
    namespace: MetricsNamespace,
    function: String,
    sensor: Sensor,
    sink: MetricsSink,
}

/// The per-request figures a request's EMF lines are made of.
#[derive(Debug, Clone, Copy)]
pub struct RequestMetrics<'a> {
    pub counts: RequestCounts,
    /// The request was answered 503 (some reading must be resent).
    pub unavailable: bool,
    pub cold_start: bool,
    pub downstream: &'a DownstreamStats,
}

/// Metric units used here (a subset of EMF's).
#[derive(Debug, Clone, Copy)]
enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

impl MetricsWriter {
    pub fn new(
        namespace: MetricsNamespace,
        function: impl Into<String>,
        sensor: Sensor,
    ) -> MetricsWriter {
        MetricsWriter {
            namespace,
            function: function.into(),
            sensor,
            sink: MetricsSink::Stdout,
        }
    }

    pub fn with_sink(mut self, sink: MetricsSink) -> MetricsWriter {
        self.sink = sink;
        self
    }

    pub fn function(&self) -> &str {
        &self.function
    }

    /// Formats and writes the request's lines; `request_id` goes in as a property (not a
    /// dimension) so a metric can be traced back to the request's logs.
    pub fn write(&self, request_id: &str, metrics: &RequestMetrics<'_>) {
        for line in self.lines(request_id, metrics, epoch_ms()) {
            self.sink.write(&line);
        }
    }

    /// The lines for a request: the request line, then one per target that retried or
    /// failed.
    pub fn lines(
        &self,
        request_id: &str,
        metrics: &RequestMetrics<'_>,
        timestamp_ms: u64,
    ) -> Vec<String> {
        let c = metrics.counts;
        let iot = metrics.downstream.summary(Target::Iot);
        let opensearch = metrics.downstream.summary(Target::OpenSearch);
        let mut values: Vec<(&str, Unit, f64)> = vec![
            ("Requests", Unit::Count, 1.0),
            (
                "RequestsUnavailable",
                Unit::Count,
                f64::from(u8::from(metrics.unavailable)),
            ),
            ("ReadingsStored", Unit::Count, f64::from(c.stored)),
            ("ReadingsDuplicate", Unit::Count, f64::from(c.duplicate)),
            ("ReadingsInvalid", Unit::Count, f64::from(c.invalid)),
            ("ReadingsRejected", Unit::Count, f64::from(c.rejected)),
            ("ReadingsForbidden", Unit::Count, f64::from(c.forbidden)),
            ("WarningsPublished", Unit::Count, f64::from(c.warnings)),
            // Issue 13 (alarm state): `("AlarmTransitions", Unit::Count, ...)` goes here,
            // counted from the outcomes like the warnings above.
            (
                "ColdStart",
                Unit::Count,
                f64::from(u8::from(metrics.cold_start)),
            ),
        ];
        // A stream batch's records; only on stream invocations, so the HTTP path's lines
        // stay as they were.
        if let Some(stream) = c.stream {
            values.push(("StreamRecords", Unit::Count, f64::from(stream.records)));
            values.push((
                "StreamRecordsDropped",
                Unit::Count,
                f64::from(stream.dropped),
            ));
            values.push((
                "StreamRecordsRetried",
                Unit::Count,
                f64::from(stream.retried),
            ));
        }
        // Latencies only when the target was called: a zero would drag the percentiles.
        if iot.calls > 0 {
            values.push(("PublishLatency", Unit::Milliseconds, iot.busy_ms));
        }
        if opensearch.calls > 0 {
            values.push(("IndexLatency", Unit::Milliseconds, opensearch.busy_ms));
        }
        let mut lines = vec![self.line(&[], &values, request_id, timestamp_ms)];
        for (target, summary) in [(Target::Iot, iot), (Target::OpenSearch, opensearch)] {
            if summary.retries > 0 || summary.failures > 0 {
                let values = [
                    ("DownstreamRetries", Unit::Count, f64::from(summary.retries)),
                    (
                        "DownstreamFailures",
                        Unit::Count,
                        f64::from(summary.failures),
                    ),
                ];
                lines.push(self.line(
                    &[("target", target.name())],
                    &values,
                    request_id,
                    timestamp_ms,
                ));
            }
        }
        lines
    }

    fn line(
        &self,
        extra_dimensions: &[(&str, &str)],
        values: &[(&str, Unit, f64)],
        request_id: &str,
        timestamp_ms: u64,
    ) -> String {
        let mut dimension_names = vec!["function", "sensor"];
        dimension_names.extend(extra_dimensions.iter().map(|(name, _)| *name));
        let definitions: Vec<Value> = values
            .iter()
            .map(|(name, unit, _)| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace.as_str(),
                    "Dimensions": [dimension_names],
                    "Metrics": definitions,
                }],
            }),
        );
        root.insert("function".into(), Value::from(self.function.as_str()));
        root.insert("sensor".into(), Value::from(self.sensor.name()));
        for (name, value) in extra_dimensions {
            root.insert((*name).into(), Value::from(*value));
        }
        for (name, _, value) in values {
            root.insert((*name).into(), json!(value));
        }
        root.insert("requestId".into(), Value::from(request_id));
        Value::Object(root).to_string()
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_parse_follows_cloudwatch_rules() {
        assert_eq!(MetricsNamespace::default().as_str(), "SensorIngest");
        for good in ["SensorIngest", "acme/sensors-prod", " Team #1: ingest "] {
            assert!(MetricsNamespace::parse(good).is_ok(), "{good}");
        }
        assert_eq!(
            MetricsNamespace::parse(" a ").unwrap().as_str(),
            "a",
            "trimmed"
        );
        for bad in [
            "",
            "   ",
            "AWS/Lambda",
            "a\"b",
            "tab\there",
            &"x".repeat(256),
        ] {
            assert!(MetricsNamespace::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stream_batch_adds_its_record_counts_and_only_it_does() {
        let writer = MetricsWriter::new(MetricsNamespace::default(), "fn-gas", Sensor::Gasdetector);
        let stats = DownstreamStats::default();
        let metrics = |stream| RequestMetrics {
            counts: RequestCounts {
                stored: 7,
                stream,
                ..Default::default()
            },
            unavailable: false,
            cold_start: false,
            downstream: &stats,
        };
        let batch = StreamCounts {
            records: 5,
            dropped: 1,
            retried: 2,
        };
        let line: Value =
            serde_json::from_str(&writer.lines("r", &metrics(Some(batch)), 1)[0]).unwrap();
        assert_eq!(
            (
                &line["StreamRecords"],
                &line["StreamRecordsDropped"],
                &line["StreamRecordsRetried"]
            ),
            (&json!(5.0), &json!(1.0), &json!(2.0))
        );
        let names = line["_aws"]["CloudWatchMetrics"][0]["Metrics"].to_string();
        assert!(names.contains("StreamRecordsDropped"), "{names}");
        let http: Value = serde_json::from_str(&writer.lines("r", &metrics(None), 1)[0]).unwrap();
        assert!(http.get("StreamRecords").is_none(), "{http}");
    }

    #[test]
    fn healthy_request_is_one_line_with_the_request_metrics() {
        let writer = MetricsWriter::new(MetricsNamespace::default(), "fn-gas", Sensor::Gasdetector);
        let stats = DownstreamStats::default();
        let metrics = RequestMetrics {
            counts: RequestCounts {
                stored: 2,
                invalid: 1,
                warnings: 1,
                ..Default::default()
            },
            unavailable: false,
            cold_start: true,
            downstream: &stats,
        };
        let lines = writer.lines("req-1", &metrics, 1_700_000_000_000);
        assert_eq!(lines.len(), 1);
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["function", "sensor"]])
        );
        assert_eq!(v["function"], "fn-gas");
        assert_eq!(v["sensor"], "gasdetector");
        assert_eq!(v["ReadingsStored"], 2.0);
        assert_eq!(v["ReadingsInvalid"], 1.0);
        assert_eq!(v["ColdStart"], 1.0);
        assert!(v.get("IndexLatency").is_none(), "no call, no latency");
        assert_eq!(v["requestId"], "req-1");
    }

    /// A reading OpenSearch refused for good is counted apart from the ones to resend,
    /// and its warnings (published) still count.
    #[test]
    fn rejected_readings_are_counted_as_such() {
        let rejected = Outcome::Rejected {
            id: "a".into(),
            warnings: Vec::new(),
            reason: "indexing refused: OpenSearch bulk item: 400 mapper_parsing_exception".into(),
        };
        let counts = RequestCounts::of(&[rejected]);
        assert_eq!((counts.rejected, counts.retry, counts.stored), (1, 0, 0));
        let writer = MetricsWriter::new(MetricsNamespace::default(), "fn-temp", Sensor::Temp);
        let stats = DownstreamStats::default();
        let metrics = RequestMetrics {
            counts,
            unavailable: false,
            cold_start: false,
            downstream: &stats,
        };
        let lines = writer.lines("req-2", &metrics, 1_700_000_000_000);
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["ReadingsRejected"], 1.0);
    }
}
