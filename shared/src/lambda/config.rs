//! Configuration from the environment, read and checked once per cold start.
//! A bad value fails init with a message naming the variable.

use crate::alarms::settings::{self, AlarmMode, ThingTemplate};
use crate::domain::arrival::AheadTolerance;
use crate::domain::sensor::Sensor;
use crate::ingest::index_name::IndexName;
use crate::ingest::rules::Rules;
use crate::ingest::topic::TopicTemplate;
use crate::observability::emf::MetricsNamespace;
use chrono_tz::Tz;
use opensearch::http::Url;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenSearchAuth {
    /// Requests are SigV4-signed with the function's credentials (AWS OpenSearch).
    SigV4,
    /// Plain HTTP(S), for local servers.
    None,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub sensor: Sensor,
    /// The account's IoT data-ATS endpoint (`AWS_ENDPOINT_URL_IOT_DATA_PLANE`).
    pub iot_endpoint: Url,
    pub opensearch_url: Url,
    pub opensearch_auth: OpenSearchAuth,
    /// SigV4 service name: `es`, or `aoss` for OpenSearch Serverless.
    pub opensearch_service: String,
    pub index: IndexName,
    pub topic: TopicTemplate,
    pub rules: Rules,
    pub ack_messages: bool,
    pub device_timezone: Tz,
    /// `AWS_REGION`, when given through the lookup (otherwise the SDK's own chain).
    pub region: Option<String>,
    /// Static credentials given through the lookup (local stacks and tests).
    pub static_credentials: Option<StaticCredentials>,
    /// CloudWatch namespace of the EMF metrics (`METRICS_NAMESPACE`, default `SensorIngest`).
    pub metrics_namespace: MetricsNamespace,
    /// The `function` metric dimension and log field: `AWS_LAMBDA_FUNCTION_NAME` (Lambda
    /// sets it), else the sensor's name (local runs).
    pub function_name: String,
    /// `ALARM_MODE`: transitions (default) or `every` (one warning per breaching reading).
    pub alarm_mode: AlarmMode,
    /// `CLOCK_SKEW_WARN` (seconds, default 600): a warning carries `clock_skew_s` above it.
    pub clock_skew_warn_s: i64,
    /// `CLOCK_AHEAD_TOLERANCE` (seconds, default 2, at most 60): how far after its arrival
    /// a reading's own time is still believed (`domain::arrival`).
    pub clock_ahead_tolerance: AheadTolerance,
    /// `ALARM_THING_TEMPLATE` (default `{groupid}`) and `ALARM_SHADOW` (default `alarms`):
    /// where a group's alarm state lives.
    pub alarm_thing: ThingTemplate,
    pub alarm_shadow: String,
}

#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticCredentials {
    // Never print secrets, not even in a debug dump of the configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticCredentials(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    pub fn from_env(sensor: Sensor) -> Result<Config, ConfigError> {
        Config::from_lookup(sensor, |key| std::env::var(key).ok())
    }

    /// `lookup` answers like `std::env::var`; unset and empty are the same.
    pub fn from_lookup(
        sensor: Sensor,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let err = |key: &str, message: String| ConfigError(format!("{key}: {message}"));

        let url = |key: &str, what: &str| -> Result<Url, ConfigError> {
            let text = get(key).ok_or_else(|| err(key, format!("is required ({what})")))?;
            let url = Url::parse(text.trim())
                .map_err(|e| err(key, format!("{text:?} is not a URL: {e}")))?;
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(err(key, format!("{text:?} must be an http(s) URL")));
            }
            Ok(url)
        };
        let iot_endpoint = url(
            "AWS_ENDPOINT_URL_IOT_DATA_PLANE",
            "the account's IoT data-ATS endpoint: aws iot describe-endpoint --endpoint-type iot:Data-ATS",
        )?;
        let opensearch_url = url("OPENSEARCH_URL", "the OpenSearch endpoint")?;

        let opensearch_auth = match get("OPENSEARCH_AUTH").as_deref().map(str::trim) {
            None | Some("sigv4") => OpenSearchAuth::SigV4,
            Some("none") => OpenSearchAuth::None,
            Some(other) => {
                return Err(err(
                    "OPENSEARCH_AUTH",
                    format!("{other:?} is not one of sigv4, none"),
                ))
            }
        };
        let opensearch_service = match get("OPENSEARCH_SERVICE").as_deref().map(str::trim) {
            None | Some("es") => "es".to_string(),
            Some("aoss") => "aoss".to_string(),
            Some(other) => {
                return Err(err(
                    "OPENSEARCH_SERVICE",
                    format!("{other:?} is not one of es, aoss"),
                ))
            }
        };
        let index = IndexName::parse(get("INDEX").as_deref().unwrap_or(sensor.default_index()))
            .map_err(|e| ConfigError(e.to_string()))?;
        let topic = match get("TOPIC_TEMPLATE") {
            Some(t) => TopicTemplate::parse(&t).map_err(|e| ConfigError(e.to_string()))?,
            None => TopicTemplate::default(),
        };
        let rules = match get("RULES") {
            Some(r) => Rules::with_overrides(&r).map_err(|e| ConfigError(e.to_string()))?,
            None => Rules::default(),
        };
        let ack_messages = match get("ACK_MESSAGES").as_deref().map(str::trim) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(other) => {
                return Err(err(
                    "ACK_MESSAGES",
                    format!("{other:?} is not true or false"),
                ))
            }
        };
        let device_timezone = match get("DEVICE_TIMEZONE") {
            None => Tz::UTC,
            Some(name) => name.trim().parse::<Tz>().map_err(|_| {
                err(
                    "DEVICE_TIMEZONE",
                    format!("{name:?} is not an IANA time zone such as Asia/Seoul or UTC"),
                )
            })?,
        };
        let static_credentials = match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Some(StaticCredentials {
                access_key_id,
                secret_access_key,
                session_token: get("AWS_SESSION_TOKEN"),
            }),
            _ => None,
        };
        let metrics_namespace = match get("METRICS_NAMESPACE") {
            Some(text) => {
                MetricsNamespace::parse(&text).map_err(|e| err("METRICS_NAMESPACE", e))?
            }
            None => MetricsNamespace::default(),
        };
        let function_name = get("AWS_LAMBDA_FUNCTION_NAME")
            .map(|name| name.trim().to_string())
            .unwrap_or_else(|| sensor.name().to_string());
        let alarm_mode = match get("ALARM_MODE") {
            Some(mode) => AlarmMode::parse(&mode).map_err(|e| err("ALARM_MODE", e))?,
            None => AlarmMode::default(),
        };
        let clock_skew_warn_s = match get("CLOCK_SKEW_WARN") {
            Some(s) => settings::parse_seconds(&s, 0).map_err(|e| err("CLOCK_SKEW_WARN", e))?,
            None => settings::DEFAULT_CLOCK_SKEW_WARN_S,
        };
        let clock_ahead_tolerance = match get("CLOCK_AHEAD_TOLERANCE") {
            Some(s) => settings::parse_seconds(&s, 0)
                .and_then(AheadTolerance::from_seconds)
                .map_err(|e| err("CLOCK_AHEAD_TOLERANCE", e))?,
            None => AheadTolerance::default(),
        };
        let alarm_thing = match get("ALARM_THING_TEMPLATE") {
            Some(t) => {
                ThingTemplate::parse(t.trim()).map_err(|e| err("ALARM_THING_TEMPLATE", e))?
            }
            None => ThingTemplate::default(),
        };
        let alarm_shadow = settings::parse_shadow_name(
            get("ALARM_SHADOW")
                .as_deref()
                .unwrap_or(settings::DEFAULT_SHADOW),
        )
        .map_err(|e| err("ALARM_SHADOW", e))?;
        Ok(Config {
            sensor,
            iot_endpoint,
            opensearch_url,
            opensearch_auth,
            opensearch_service,
            index,
            topic,
            rules,
            ack_messages,
            device_timezone,
            region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
            static_credentials,
            metrics_namespace,
            function_name,
            alarm_mode,
            clock_skew_warn_s,
            clock_ahead_tolerance,
            alarm_thing,
            alarm_shadow,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut env: HashMap<String, String> = HashMap::from([
            (
                "AWS_ENDPOINT_URL_IOT_DATA_PLANE".into(),
                "https://abc-ats.iot.eu-west-1.amazonaws.com".into(),
            ),
            (
                "OPENSEARCH_URL".into(),
                "https://search-x.eu-west-1.es.amazonaws.com".into(),
            ),
        ]);
        for (k, v) in pairs {
            env.insert(k.to_string(), v.to_string());
        }
        Config::from_lookup(Sensor::Gasdetector, |k| env.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.opensearch_auth, OpenSearchAuth::SigV4);
        assert_eq!(c.opensearch_service, "es");
        assert!(!c.ack_messages);
        assert_eq!(c.device_timezone, Tz::UTC);
        assert_eq!(c.rules, Rules::default());
        assert_eq!(c.topic, TopicTemplate::default());
        assert_eq!(c.index, IndexName::parse("gasdetect").unwrap());
        assert!(c.static_credentials.is_none());
        assert_eq!(c.metrics_namespace, MetricsNamespace::default());
        assert_eq!(c.function_name, "gasdetector");
        assert_eq!(c.alarm_mode, AlarmMode::Transitions);
        assert_eq!(c.clock_skew_warn_s, 600);
        assert_eq!(c.clock_ahead_tolerance.seconds(), 2);
        let bounds = |s: &str| {
            config(&[("CLOCK_AHEAD_TOLERANCE", s)]).map(|c| c.clock_ahead_tolerance.seconds())
        };
        assert_eq!((bounds("0").ok(), bounds(" 60 ").ok()), (Some(0), Some(60)));
        assert_eq!(c.alarm_thing, ThingTemplate::default());
        assert_eq!(c.alarm_shadow, "alarms");
    }

    #[test]
    fn overrides() {
        let c = config(&[
            ("OPENSEARCH_AUTH", "none"),
            ("OPENSEARCH_SERVICE", "aoss"),
            ("INDEX", "gas-%Y"),
            ("TOPIC_TEMPLATE", "alerts/{groupid}"),
            ("RULES", r#"{"no2": {"high": 70}}"#),
            ("ACK_MESSAGES", "true"),
            ("DEVICE_TIMEZONE", "Asia/Seoul"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("METRICS_NAMESPACE", "acme/sensors"),
            ("AWS_LAMBDA_FUNCTION_NAME", "prod-gasdetector"),
        ])
        .unwrap();
        assert_eq!(c.metrics_namespace.as_str(), "acme/sensors");
        assert_eq!(c.function_name, "prod-gasdetector");
        assert_eq!(c.opensearch_auth, OpenSearchAuth::None);
        assert_eq!(c.opensearch_service, "aoss");
        assert!(c.ack_messages);
        assert_eq!(c.device_timezone, chrono_tz::Asia::Seoul);
        assert!(c.rules.check(crate::Measure::No2, 70.0).is_some());
        assert!(
            !format!("{c:?}").contains("secret"),
            "credentials never printed"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (key, value) in [
            ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", ""),
            ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", "not a url"),
            ("OPENSEARCH_URL", "ftp://x"),
            ("OPENSEARCH_AUTH", "basic"),
            ("OPENSEARCH_SERVICE", "s3"),
            ("INDEX", "Upper"),
            ("TOPIC_TEMPLATE", "pi/#"),
            ("RULES", "{"),
            ("ACK_MESSAGES", "yes please"),
            ("DEVICE_TIMEZONE", "Mars/Olympus"),
            ("METRICS_NAMESPACE", "AWS/Lambda"),
            ("ALARM_MODE", "sometimes"),
            ("CLOCK_SKEW_WARN", "10 minutes"),
            ("CLOCK_AHEAD_TOLERANCE", "3600"),
            ("CLOCK_AHEAD_TOLERANCE", "61"),
            ("CLOCK_AHEAD_TOLERANCE", "-1"),
            ("CLOCK_AHEAD_TOLERANCE", "2.5"),
            ("CLOCK_AHEAD_TOLERANCE", "two"),
            ("CLOCK_AHEAD_TOLERANCE", "99999999999999999999"),
            ("ALARM_THING_TEMPLATE", "things/{groupid}"),
            ("ALARM_SHADOW", "a b"),
            ("RULES", r#"{"no2": {"high": 88, "for": 0}}"#),
        ] {
            let e = config(&[(key, value)]).unwrap_err().to_string();
            assert!(e.contains(key), "{key}={value}: {e}");
        }
    }
}
