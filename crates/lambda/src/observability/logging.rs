//! The functions' tracing subscriber. Format and level come from Lambda's advanced logging
//! controls (`AWS_LAMBDA_LOG_FORMAT=JSON`, `AWS_LAMBDA_LOG_LEVEL`), else `RUST_LOG`, as
//! `lambda_runtime`'s default subscriber reads them. JSON lines are flat: every field of
//! every enclosing span (the request span's `requestId`, `function`, `sensor`, `groupid`,
//! `documentId`) sits at the top level beside `timestamp`, `level`, `message` and the
//! event's own fields, so CloudWatch Logs Insights filters on them directly.
//!
//! Cheap at init: one `EnvFilter` and the fmt layer, as the default subscriber builds; no
//! thread, no non-blocking writer (stdout is what Lambda captures).

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// `AWS_LAMBDA_LOG_FORMAT`: JSON, or text for anything else (Lambda's `Text`, unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How the functions log, read once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `EnvFilter` directives, e.g. `info` or `info,sensor_core=debug`.
    pub filter: String,
}

impl LogSettings {
    pub fn from_env() -> LogSettings {
        LogSettings::from_lookup(|key| std::env::var(key).ok())
    }

    /// `AWS_LAMBDA_LOG_LEVEL` (TRACE..FATAL) wins over `RUST_LOG`; default `info`. Never
    /// fails: an unknown level or directive falls back to `info`, as Lambda's default
    /// subscriber does, because logging must not stop the function from starting.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> LogSettings {
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let format = match get("AWS_LAMBDA_LOG_FORMAT") {
            Some(f) if f.trim().eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Text,
        };
        let filter = match get("AWS_LAMBDA_LOG_LEVEL") {
            // Lambda's FATAL has no tracing level; ERROR is the closest.
            Some(level) if level.trim().eq_ignore_ascii_case("fatal") => "error".to_string(),
            Some(level) => level.trim().to_ascii_lowercase(),
            None => get("RUST_LOG").unwrap_or_else(|| "info".into()),
        };
        LogSettings { format, filter }
    }

    fn env_filter(&self) -> EnvFilter {
        EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            .parse_lossy(&self.filter)
    }
}

/// Installs the subscriber for the process (the functions' `main`). A second call (tests)
/// leaves the first one in place.
pub fn init(settings: &LogSettings) {
    let _ = tracing::subscriber::set_global_default(subscriber(settings, std::io::stdout));
}

/// The subscriber [`init`] installs, writing to `writer` (tests capture it).
pub fn subscriber<W>(settings: &LogSettings, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // No colour codes: CloudWatch shows them raw, and another crate of the workspace
    // turning tracing-subscriber's `ansi` feature on must not change what is logged.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(settings.env_filter())
        .with_ansi(false)
        .with_writer(writer);
    match settings.format {
        LogFormat::Json => Box::new(
            builder
                .fmt_fields(JsonFields::new())
                .event_format(FlatJson)
                .finish(),
        ),
        // CloudWatch stamps every line; the target is noise for a reader.
        LogFormat::Text => Box::new(builder.with_target(false).without_time().finish()),
    }
}

/// One JSON object per event, span fields flattened (innermost wins, the event's own
/// fields win over spans').
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // With `JsonFields`, a span's recorded fields are a JSON object.
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(fields)) = serde_json::from_str(fields.as_str()) {
                        line.extend(fields);
                    }
                }
            }
        }
        event.record(&mut FieldsInto(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct FieldsInto<'a>(&'a mut Map<String, Value>);

impl Visit for FieldsInto<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> LogSettings {
        let env: HashMap<&str, &str> = pairs.iter().copied().collect();
        LogSettings::from_lookup(|k| env.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn format_and_level_follow_lambda_then_rust_log() {
        assert_eq!(
            settings(&[]),
            LogSettings {
                format: LogFormat::Text,
                filter: "info".into()
            }
        );
        let s = settings(&[
            ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
            ("AWS_LAMBDA_LOG_LEVEL", "DEBUG"),
            ("RUST_LOG", "trace"),
        ]);
        assert_eq!((s.format, s.filter.as_str()), (LogFormat::Json, "debug"));
        assert_eq!(
            settings(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]).filter,
            "error"
        );
        assert_eq!(
            settings(&[("RUST_LOG", "info,sensor_core=debug")]).filter,
            "info,sensor_core=debug"
        );
        assert_eq!(
            settings(&[("AWS_LAMBDA_LOG_FORMAT", "Text")]).format,
            LogFormat::Text
        );
        // Garbage never fails start-up: the filter falls back to info.
        let _ = settings(&[("RUST_LOG", "=!=")]).env_filter();
    }
}
