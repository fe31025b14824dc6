//! Settings from the environment, one type per function kind, read and checked once per
//! cold start: [`IngestSettings`] (the three sensor functions), [`QuerySettings`] (the read
//! API) and [`NoDataSettings`] (the scheduled check). Each reads only the variables its
//! function uses, so the query function never needs an IoT endpoint and the no-data
//! function never a sensor. A bad value fails init with a message naming the variable.
//!
//! The parts several kinds share (OpenSearch, AWS access, metrics, alarm state, index
//! patterns) are parsed by one function each here; the types they produce belong to the
//! crates that use them (`sensor_aws`, `sensor_core`, `sensor_model`).

use crate::observability::emf::MetricsNamespace;
use chrono_tz::Tz;
use sensor_aws::{
    AwsAccess, CredentialSource, OpenSearchAuth, OpenSearchSettings, StaticCredentials, Url,
};
use sensor_core::no_data::NoDataLimits;
use sensor_core::pipeline::PipelineSettings;
use sensor_model::alarms::settings::{self, AlarmMode, ThingTemplate};
use sensor_model::domain::arrival::AheadTolerance;
use sensor_model::domain::sensor::Sensor;
use sensor_model::index_name::IndexName;
use sensor_model::rules::Rules;
use sensor_model::topic::TopicTemplate;
use std::time::Duration;

/// A setting that could not be used; the message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad configuration: {0}")]
pub struct SettingsError(pub String);

/// The environment as the parsers see it: unset and empty (or blank) are the same.
struct Env<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, key: &str) -> Option<String> {
        (self.lookup)(key).filter(|v| !v.trim().is_empty())
    }

    /// `parse` applied to the trimmed value when set; `default` otherwise.
    fn parsed<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        default: impl FnOnce() -> T,
    ) -> Result<T, SettingsError> {
        match self.get(key) {
            Some(text) => parse(text.trim()).map_err(|e| error(key, e)),
            None => Ok(default()),
        }
    }

    fn url(&self, key: &str, what: &str) -> Result<Url, SettingsError> {
        let text = self
            .get(key)
            .ok_or_else(|| error(key, format!("is required ({what})")))?;
        let url = Url::parse(text.trim())
            .map_err(|e| error(key, format!("{text:?} is not a URL: {e}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(error(key, format!("{text:?} must be an http(s) URL")));
        }
        Ok(url)
    }

    /// An http(s) URL when set.
    fn optional_url(&self, key: &str, what: &str) -> Result<Option<Url>, SettingsError> {
        match self.get(key) {
            Some(_) => self.url(key, what).map(Some),
            None => Ok(None),
        }
    }

    /// The IoT registry a sensor function asks which group a box belongs to.
    fn registry(&self) -> Result<RegistrySettings, SettingsError> {
        Ok(RegistrySettings {
            endpoint: self.optional_url(
                "AWS_ENDPOINT_URL_IOT",
                "the IoT control plane; unset on AWS, the local stack's registry locally",
            )?,
            cache_ttl: self.parsed(
                "REGISTRY_CACHE_TTL",
                |s| settings::parse_seconds(s, 0).map(|s| Duration::from_secs(s.unsigned_abs())),
                || sensor_core::binding::DEFAULT_TTL,
            )?,
        })
    }

    fn one_of<T: Copy>(&self, key: &str, choices: &[(&str, T)]) -> Result<T, SettingsError> {
        let Some(text) = self.get(key) else {
            return Ok(choices[0].1);
        };
        let text = text.trim();
        choices
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
                error(key, format!("{text:?} is not one of {}", names.join(", ")))
            })
    }

    fn opensearch(&self) -> Result<OpenSearchSettings, SettingsError> {
        Ok(OpenSearchSettings {
            url: self.url("OPENSEARCH_URL", "the OpenSearch endpoint")?,
            auth: self.one_of(
                "OPENSEARCH_AUTH",
                &[
                    ("sigv4", OpenSearchAuth::SigV4),
                    ("none", OpenSearchAuth::None),
                ],
            )?,
            service: self
                .one_of("OPENSEARCH_SERVICE", &[("es", "es"), ("aoss", "aoss")])?
                .to_string(),
        })
    }

    fn iot_endpoint(&self) -> Result<Url, SettingsError> {
        self.url(
            "AWS_ENDPOINT_URL_IOT_DATA_PLANE",
            "the account's IoT data-ATS endpoint: aws iot describe-endpoint --endpoint-type iot:Data-ATS",
        )
    }

    /// The region and credentials Lambda puts in every function's environment; off Lambda,
    /// the same variables, or the container credentials endpoint for the credentials.
    fn aws(&self) -> Result<AwsAccess, SettingsError> {
        let region = self
            .get("AWS_REGION")
            .or_else(|| self.get("AWS_DEFAULT_REGION"))
            .map(|r| r.trim().to_string())
            .ok_or_else(|| {
                error(
                    "AWS_REGION",
                    "is required (Lambda sets it; elsewhere set it or AWS_DEFAULT_REGION)".into(),
                )
            })?;
        let credentials = match (
            self.get("AWS_ACCESS_KEY_ID"),
            self.get("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(access_key_id), Some(secret_access_key)) => {
                CredentialSource::Static(StaticCredentials {
                    access_key_id,
                    secret_access_key,
                    session_token: self.get("AWS_SESSION_TOKEN"),
                })
            }
            (Some(_), None) => {
                return Err(error(
                    "AWS_SECRET_ACCESS_KEY",
                    "is required when AWS_ACCESS_KEY_ID is set".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(error(
                    "AWS_ACCESS_KEY_ID",
                    "is required when AWS_SECRET_ACCESS_KEY is set".into(),
                ))
            }
            (None, None)
                if self.get("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
                    || self.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some() =>
            {
                CredentialSource::Container
            }
            (None, None) => {
                return Err(error(
                    "AWS_ACCESS_KEY_ID",
                    "is required (Lambda sets it and AWS_SECRET_ACCESS_KEY from the execution \
                     role; elsewhere set both, or AWS_CONTAINER_CREDENTIALS_FULL_URI)"
                        .into(),
                ))
            }
        };
        Ok(AwsAccess {
            region,
            credentials,
        })
    }

    fn rules(&self) -> Result<Rules, SettingsError> {
        match self.get("RULES") {
            // The rules' own errors name `RULES`.
            Some(r) => Rules::with_overrides(&r).map_err(|e| SettingsError(e.to_string())),
            None => Ok(Rules::default()),
        }
    }

    fn topic(&self) -> Result<TopicTemplate, SettingsError> {
        match self.get("TOPIC_TEMPLATE") {
            Some(t) => TopicTemplate::parse(&t).map_err(|e| SettingsError(e.to_string())),
            None => Ok(TopicTemplate::default()),
        }
    }

    fn alarm_state(&self) -> Result<AlarmStateLocation, SettingsError> {
        Ok(AlarmStateLocation {
            thing: self.parsed(
                "ALARM_THING_TEMPLATE",
                ThingTemplate::parse,
                ThingTemplate::default,
            )?,
            shadow: settings::parse_shadow_name(
                self.get("ALARM_SHADOW")
                    .as_deref()
                    .unwrap_or(settings::DEFAULT_SHADOW),
            )
            .map_err(|e| error("ALARM_SHADOW", e))?,
        })
    }

    fn function_name(&self, default: &str) -> String {
        self.get("AWS_LAMBDA_FUNCTION_NAME")
            .map(|name| name.trim().to_string())
            .unwrap_or_else(|| default.to_string())
    }

    fn indices(&self, key: &str) -> Result<Vec<(Sensor, String)>, SettingsError> {
        parse_indices(self.get(key).as_deref()).map_err(|e| error(key, e))
    }
}

fn error(key: &str, message: String) -> SettingsError {
    SettingsError(format!("{key}: {message}"))
}

/// Where a group's alarm state lives: `ALARM_THING_TEMPLATE` (default `{groupid}`) and
/// `ALARM_SHADOW` (default `alarms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmStateLocation {
    pub thing: ThingTemplate,
    pub shadow: String,
}

/// Where a sensor function asks which group a box belongs to, and for how long a warm
/// instance trusts the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// `AWS_ENDPOINT_URL_IOT`: unset on AWS (the SDK's endpoint for the region).
    pub endpoint: Option<Url>,
    /// `REGISTRY_CACHE_TTL` seconds, default 60: how soon a `fleet move` takes effect.
    pub cache_ttl: Duration,
}

/// A sensor function (`functions/gasdetector`, `dust`, `temp`).
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Sensor, rules, topic, index, time zone, alarm mode and clock settings.
    pub pipeline: PipelineSettings,
    /// The account's IoT data-ATS endpoint (`AWS_ENDPOINT_URL_IOT_DATA_PLANE`).
    pub iot_endpoint: Url,
    pub opensearch: OpenSearchSettings,
    pub aws: AwsAccess,
    pub alarm_state: AlarmStateLocation,
    pub registry: RegistrySettings,
    /// `LEGACY_KEY_ROUTES` (default false): take readings that name no box, from the
    /// shared-API-key routes (`POST /gasdetector`) that the original `pub.py` posts to.
    /// Weaker: whoever holds the key can post for any group. Off, those are refused 403.
    pub legacy_key_routes: bool,
    /// CloudWatch namespace of the EMF metrics (`METRICS_NAMESPACE`, default `SensorIngest`).
    pub metrics_namespace: MetricsNamespace,
    /// The `function` metric dimension and log field: `AWS_LAMBDA_FUNCTION_NAME` (Lambda
    /// sets it), else the sensor's name (local runs).
    pub function_name: String,
}

impl IngestSettings {
    pub fn from_env(sensor: Sensor) -> Result<IngestSettings, SettingsError> {
        IngestSettings::from_lookup(sensor, |key| std::env::var(key).ok())
    }

    /// `lookup` answers like `std::env::var`; unset and empty are the same.
    pub fn from_lookup(
        sensor: Sensor,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<IngestSettings, SettingsError> {
        let env = Env { lookup };
        let iot_endpoint = env.iot_endpoint()?;
        let opensearch = env.opensearch()?;
        let index = IndexName::parse(
            env.get("INDEX")
                .as_deref()
                .unwrap_or(sensor.default_index()),
        )
        .map_err(|e| SettingsError(e.to_string()))?;
        let topic = env.topic()?;
        let rules = env.rules()?;
        let ack_messages = env.parsed("ACK_MESSAGES", parse_bool, || false)?;
        let device_timezone = env.parsed(
            "DEVICE_TIMEZONE",
            |name| {
                name.parse::<Tz>().map_err(|_| {
                    format!("{name:?} is not an IANA time zone such as Asia/Seoul or UTC")
                })
            },
            || Tz::UTC,
        )?;
        let metrics_namespace = env.parsed(
            "METRICS_NAMESPACE",
            MetricsNamespace::parse,
            MetricsNamespace::default,
        )?;
        let alarm_mode = env.parsed("ALARM_MODE", AlarmMode::parse, AlarmMode::default)?;
        let clock_skew_warn_s = env.parsed(
            "CLOCK_SKEW_WARN",
            |s| settings::parse_seconds(s, 0),
            || settings::DEFAULT_CLOCK_SKEW_WARN_S,
        )?;
        let clock_ahead_tolerance = env.parsed(
            "CLOCK_AHEAD_TOLERANCE",
            |s| settings::parse_seconds(s, 0).and_then(AheadTolerance::from_seconds),
            AheadTolerance::default,
        )?;
        let bulk_max_bytes = env.parsed(
            "BULK_MAX_BYTES",
            sensor_core::pipeline::parse_bulk_max_bytes,
            || sensor_core::pipeline::DEFAULT_BULK_MAX_BYTES,
        )?;
        let alarm_state = env.alarm_state()?;
        let legacy_key_routes = env.parsed("LEGACY_KEY_ROUTES", parse_bool, || false)?;
        Ok(IngestSettings {
            pipeline: PipelineSettings {
                sensor,
                rules,
                topic,
                index,
                device_timezone,
                ack_messages,
                alarm_mode,
                clock_skew_warn_s,
                clock_ahead_tolerance,
                bulk_max_bytes,
            },
            iot_endpoint,
            opensearch,
            aws: env.aws()?,
            alarm_state,
            registry: env.registry()?,
            legacy_key_routes,
            metrics_namespace,
            function_name: env.function_name(sensor.name()),
        })
    }

    pub fn sensor(&self) -> Sensor {
        self.pipeline.sensor
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        v if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
        v if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

/// The read API (`functions/query`): `OPENSEARCH_*`, `RULES` (the thresholds the page
/// draws), the AWS region and credentials, `QUERY_INDICES` (index pattern per sensor, like
/// `NO_DATA_INDICES`), `CORS_ORIGIN` and `VIEWER_KEY_IDS` (see `query_function`).
#[derive(Debug, Clone)]
pub struct QuerySettings {
    pub opensearch: OpenSearchSettings,
    pub aws: AwsAccess,
    pub rules: Rules,
    pub indices: Vec<(Sensor, String)>,
    pub cors_origin: Option<http::HeaderValue>,
    pub viewer_keys: Option<Vec<String>>,
    /// `AWS_LAMBDA_FUNCTION_NAME`, else `query`.
    pub function_name: String,
}

impl QuerySettings {
    /// `lookup` answers like `std::env::var`; unset and empty are the same.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<QuerySettings, SettingsError> {
        let env = Env { lookup };
        Ok(QuerySettings {
            opensearch: env.opensearch()?,
            aws: env.aws()?,
            rules: env.rules()?,
            indices: env.indices("QUERY_INDICES")?,
            cors_origin: parse_cors_origin(env.get("CORS_ORIGIN").as_deref())
                .map_err(|e| error("CORS_ORIGIN", e))?,
            viewer_keys: parse_viewer_keys(env.get("VIEWER_KEY_IDS").as_deref())
                .map_err(|e| error("VIEWER_KEY_IDS", e))?,
            function_name: env.function_name("query"),
        })
    }
}

/// The scheduled no-data check (`functions/nodata`): `NO_DATA_AFTER`,
/// `NO_DATA_WITHIN_DAYS`, `NO_DATA_INDICES`, the IoT endpoint and topic template its
/// warnings go to, the alarm state's location, `OPENSEARCH_*` and AWS access.
#[derive(Debug, Clone)]
pub struct NoDataSettings {
    pub limits: NoDataLimits,
    pub indices: Vec<(Sensor, String)>,
    pub iot_endpoint: Url,
    pub topic: TopicTemplate,
    pub alarm_state: AlarmStateLocation,
    pub opensearch: OpenSearchSettings,
    pub aws: AwsAccess,
}

impl NoDataSettings {
    /// `lookup` answers like `std::env::var`; unset and empty are the same.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<NoDataSettings, SettingsError> {
        let env = Env { lookup };
        let defaults = NoDataLimits::default();
        let after_s = env.parsed(
            "NO_DATA_AFTER",
            |v| settings::parse_seconds(v, 60),
            || defaults.after_s,
        )?;
        let within_days = env.parsed(
            "NO_DATA_WITHIN_DAYS",
            |v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|d| (1..=90).contains(d))
                    .ok_or_else(|| format!("{v:?} is not a whole number of days from 1 to 90"))
            },
            || defaults.within_days,
        )?;
        if after_s >= within_days * 86_400 {
            return Err(SettingsError(
                "NO_DATA_AFTER must be shorter than NO_DATA_WITHIN_DAYS".into(),
            ));
        }
        Ok(NoDataSettings {
            limits: NoDataLimits {
                after_s,
                within_days,
            },
            indices: env.indices("NO_DATA_INDICES")?,
            iot_endpoint: env.iot_endpoint()?,
            topic: env.topic()?,
            alarm_state: env.alarm_state()?,
            opensearch: env.opensearch()?,
            aws: env.aws()?,
        })
    }
}

/// `CORS_ORIGIN`: an `http(s)://host[:port]` origin, nothing else (no path, no `*`: the
/// data routes carry a viewer key, so "any origin" is never what is meant).
pub fn parse_cors_origin(text: Option<&str>) -> Result<Option<http::HeaderValue>, String> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not an origin: {e}"))?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !plain {
        return Err(format!(
            "{text:?} must be an origin like https://fleet.example.com (scheme, host, optional port)"
        ));
    }
    let origin = url.origin().ascii_serialization();
    http::HeaderValue::from_str(&origin)
        .map(Some)
        .map_err(|_| format!("{text:?} is not a valid header value"))
}

/// `VIEWER_KEY_IDS`: comma-separated API Gateway key ids (letters and digits).
pub fn parse_viewer_keys(text: Option<&str>) -> Result<Option<Vec<String>>, String> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let ids: Vec<String> = text.split(',').map(|id| id.trim().to_string()).collect();
    if let Some(bad) = ids
        .iter()
        .find(|id| id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(format!("{bad:?} is not an API key id"));
    }
    Ok(Some(ids))
}

/// `NO_DATA_INDICES` / `QUERY_INDICES`: `sensor=pattern` pairs, comma-separated; by
/// default each sensor's default index with `*` (so dated indices such as
/// `gasdetect-2026.11` match).
pub fn parse_indices(text: Option<&str>) -> Result<Vec<(Sensor, String)>, String> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Sensor::ALL
            .iter()
            .map(|s| (*s, format!("{}*", s.default_index())))
            .collect());
    };
    text.split(',')
        .map(|pair| {
            let (sensor, pattern) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not sensor=pattern"))?;
            let sensor = Sensor::parse(sensor.trim())
                .ok_or_else(|| format!("{sensor:?} is not gasdetector, dust or temp"))?;
            let pattern = pattern.trim();
            let ok = !pattern.is_empty()
                && pattern
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.*".contains(c));
            if !ok {
                return Err(format!("{pattern:?} is not an index pattern"));
            }
            Ok((sensor, pattern.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<IngestSettings, SettingsError> {
        let mut env: HashMap<String, String> = HashMap::from([
            (
                "AWS_ENDPOINT_URL_IOT_DATA_PLANE".into(),
                "https://abc-ats.iot.eu-west-1.amazonaws.com".into(),
            ),
            (
                "OPENSEARCH_URL".into(),
                "https://search-x.eu-west-1.es.amazonaws.com".into(),
            ),
            // What Lambda sets in every function's environment.
            ("AWS_REGION".into(), "eu-west-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), "ASIAROLE".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "role-secret".into()),
            ("AWS_SESSION_TOKEN".into(), "role-token".into()),
        ]);
        for (k, v) in pairs {
            env.insert(k.to_string(), v.to_string());
        }
        IngestSettings::from_lookup(Sensor::Gasdetector, |k| env.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.opensearch.auth, OpenSearchAuth::SigV4);
        assert_eq!(c.opensearch.service, "es");
        assert!(!c.pipeline.ack_messages);
        assert_eq!(c.pipeline.device_timezone, Tz::UTC);
        assert_eq!(c.pipeline.rules, Rules::default());
        assert_eq!(c.pipeline.topic, TopicTemplate::default());
        assert_eq!(c.pipeline.index, IndexName::parse("gasdetect").unwrap());
        assert_eq!(c.aws.region, "eu-west-1");
        assert!(matches!(
            &c.aws.credentials,
            CredentialSource::Static(k) if k.access_key_id == "ASIAROLE"
                && k.session_token.as_deref() == Some("role-token")
        ));
        assert_eq!(c.metrics_namespace, MetricsNamespace::default());
        assert_eq!(c.function_name, "gasdetector");
        assert_eq!(c.pipeline.alarm_mode, AlarmMode::Transitions);
        assert_eq!(c.pipeline.clock_skew_warn_s, 600);
        assert_eq!(c.pipeline.clock_ahead_tolerance.seconds(), 2);
        let bounds = |s: &str| {
            config(&[("CLOCK_AHEAD_TOLERANCE", s)])
                .map(|c| c.pipeline.clock_ahead_tolerance.seconds())
        };
        assert_eq!((bounds("0").ok(), bounds(" 60 ").ok()), (Some(0), Some(60)));
        assert_eq!(c.alarm_state.thing, ThingTemplate::default());
        assert_eq!(c.alarm_state.shadow, "alarms");
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
        assert_eq!(c.opensearch.auth, OpenSearchAuth::None);
        assert_eq!(c.opensearch.service, "aoss");
        assert!(c.pipeline.ack_messages);
        assert_eq!(c.pipeline.device_timezone, chrono_tz::Asia::Seoul);
        assert!(c
            .pipeline
            .rules
            .check(sensor_model::Measure::No2, 70.0)
            .is_some());
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
            ("BULK_MAX_BYTES", "5MB"),
            ("BULK_MAX_BYTES", "1000"),
            ("BULK_MAX_BYTES", "999999999999"),
            ("ALARM_THING_TEMPLATE", "things/{groupid}"),
            ("ALARM_SHADOW", "a b"),
            ("RULES", r#"{"no2": {"high": 88, "for": 0}}"#),
        ] {
            let e = config(&[(key, value)]).unwrap_err().to_string();
            assert!(e.contains(key), "{key}={value}: {e}");
        }
    }

    #[test]
    fn index_patterns() {
        let default = parse_indices(None).unwrap();
        assert_eq!(default[0], (Sensor::Gasdetector, "gasdetect*".to_string()));
        assert_eq!(default.len(), 3);
        let custom = parse_indices(Some("dust=dust-*, temp=t*")).unwrap();
        assert_eq!(
            custom,
            [(Sensor::Dust, "dust-*".into()), (Sensor::Temp, "t*".into())]
        );
        for bad in ["dust", "air=x*", "dust=A*", "dust=a/b"] {
            assert!(parse_indices(Some(bad)).is_err(), "{bad}");
        }
    }

    /// Each function kind reads only its own variables: the query function starts with
    /// no IoT endpoint and no sensor, the no-data function with no sensor.
    #[test]
    fn each_function_needs_only_its_own_variables() {
        let env: HashMap<&str, &str> = HashMap::from([
            ("OPENSEARCH_URL", "http://127.0.0.1:9200"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDLOCAL"),
            ("AWS_SECRET_ACCESS_KEY", "local"),
        ]);
        let lookup = |k: &str| env.get(k).map(|v| v.to_string());
        let query = QuerySettings::from_lookup(lookup).expect("no IoT endpoint needed");
        assert_eq!(query.function_name, "query");
        let e = NoDataSettings::from_lookup(lookup).unwrap_err().to_string();
        assert!(e.contains("AWS_ENDPOINT_URL_IOT_DATA_PLANE"), "{e}");
        let e = IngestSettings::from_lookup(Sensor::Dust, lookup)
            .unwrap_err()
            .to_string();
        assert!(e.contains("AWS_ENDPOINT_URL_IOT_DATA_PLANE"), "{e}");
        for (key, value) in [
            ("NO_DATA_AFTER", "30"),
            ("NO_DATA_WITHIN_DAYS", "91"),
            ("NO_DATA_INDICES", "air=x*"),
        ] {
            let mut env = env.clone();
            env.insert("AWS_ENDPOINT_URL_IOT_DATA_PLANE", "http://127.0.0.1:1");
            env.insert(key, value);
            let e = NoDataSettings::from_lookup(|k: &str| env.get(k).map(|v| v.to_string()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{key}={value}: {e}");
        }
        for (key, value) in [("QUERY_INDICES", "dust"), ("CORS_ORIGIN", "*")] {
            let mut env = env.clone();
            env.insert(key, value);
            let e = QuerySettings::from_lookup(|k: &str| env.get(k).map(|v| v.to_string()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{key}={value}: {e}");
        }
    }

    /// The region and credentials Lambda sets are required, so a function started without
    /// them fails at init naming the variable, not at its first AWS call.
    #[test]
    fn aws_access_comes_from_the_environment_or_fails_init() {
        let access = |pairs: &[(&str, &str)]| {
            let env: HashMap<&str, &str> = pairs.iter().copied().collect();
            QuerySettings::from_lookup(|k: &str| {
                (k == "OPENSEARCH_URL")
                    .then(|| "http://127.0.0.1:9200".to_string())
                    .or_else(|| env.get(k).map(|v| v.to_string()))
            })
            .map(|s| s.aws)
            .map_err(|e| e.to_string())
        };
        let keys = [
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ];
        let e = access(&keys).unwrap_err();
        assert!(e.contains("AWS_REGION"), "{e}");
        let a = access(&[keys[0], keys[1], ("AWS_DEFAULT_REGION", "ap-northeast-2")]).unwrap();
        assert_eq!(a.region, "ap-northeast-2");
        assert!(matches!(&a.credentials, CredentialSource::Static(k) if k.session_token.is_none()));
        let region = ("AWS_REGION", "eu-west-1");
        let e = access(&[region, keys[0]]).unwrap_err();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
        let e = access(&[region, keys[1]]).unwrap_err();
        assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
        let e = access(&[region]).unwrap_err();
        assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
        let container = (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://127.0.0.1:1338/credentials",
        );
        let a = access(&[region, container]).unwrap();
        assert!(matches!(a.credentials, CredentialSource::Container));
    }
}
