//! The agent's configuration: one TOML file (`--config`, default
//! `/etc/sensorbox/config.toml`) with `SENSORBOX_*` environment overrides
//! (`SENSORBOX_API_URL`, `SENSORBOX_QUEUE__PATH`: `__` separates a section from its key).
//!
//! Parse, don't validate: [`Config::load`] turns the file into types that cannot hold a bad
//! value (a checked group id, known sensors and measures, a URL, positive intervals), and
//! every refusal names the key, so `sensorbox check-config` can tell a person which line to
//! fix.
//!
//! How the box authenticates its HTTPS posts:
//! - `[iam]` (per-box identity, the stacks' default): short-lived AWS credentials from the
//!   IoT credentials provider for the box's own certificate (`[mqtt]`'s unless `[iam]`
//!   names others), each post SigV4-signed to `POST {api_url}/things/{thing}/{route}`; the
//!   role lets a box invoke only the routes carrying its own thing name.
//! - `api_key` / `api_key_file` (legacy, weaker): one shared key in `x-api-key` on
//!   `POST {api_url}/{route}`; anyone who copies it off one box can post for any group.
//!   Only one of the two may be set.

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use sensor_model::domain::group_id::GroupId;
use sensor_model::domain::location::Location;
use sensor_model::domain::measure::Measure;
use sensor_model::domain::thing_name::ThingName;
use sensor_model::topic::TopicTemplate;
use sensor_model::Sensor;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_PATH: &str = "/etc/sensorbox/config.toml";

/// A configuration problem, naming the key (`sensor[0].interval_s`) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

// ---- the file as written (serde), before validation ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    api_url: Option<String>,
    api_key: Option<String>,
    api_key_file: Option<PathBuf>,
    groupid: Option<serde_json::Value>,
    gps: Option<String>,
    thing_name: Option<String>,
    #[serde(default)]
    clock: ClockPolicy,
    #[serde(default)]
    request_timeout_s: Option<u64>,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    transport: Transport,
    mqtt: Option<RawMqtt>,
    iam: Option<RawIam>,
    #[serde(default, rename = "sensor")]
    sensors: Vec<RawSensor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    endpoint: Option<String>,
    port: Option<u16>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    keep_alive_s: Option<u64>,
    topic_template: Option<String>,
    device_root: Option<String>,
    stream_rule: Option<String>,
    stream_linger_s: Option<u64>,
    hook: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIam {
    credentials_endpoint: Option<String>,
    role_alias: Option<String>,
    region: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    path: Option<PathBuf>,
    max_readings: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensor {
    route: String,
    interval_s: Option<u64>,
    source: SourceSpec,
    #[serde(default)]
    measures: BTreeMap<String, RawMeasure>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeasure {
    sensorid: Option<String>,
    sensortype: Option<String>,
}

// ---- the validated configuration ----

/// When the system clock may be trusted for `createdtime`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockPolicy {
    /// Wait until the kernel says NTP synchronised the clock (a Pi has no RTC).
    #[default]
    Ntp,
    /// Trust the system clock (a host with a real-time clock, a laptop, a container whose
    /// host keeps time); times before the build floor are still refused.
    System,
}

/// How readings leave the box.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// POST to the API (single readings live, batches after an outage).
    #[default]
    Https,
    /// Publish each reading to `<device_root>/<thing>/data/<route>` at QoS 1 (the stacks'
    /// topic rule invokes the function); a reading leaves the queue on PUBACK.
    Mqtt,
    /// The stream path for large fleets: batches of queued readings (under IoT's 5 KB
    /// metering unit) published at QoS 1 to the Basic Ingest topic
    /// `$aws/rules/<stream_rule>/<device_root>/<thing>/data/<route>/<groupid>`; the rule
    /// puts them into Kinesis, so the readings leave the queue on PUBACK.
    Stream,
}

/// The MQTT connection to IoT Core (warnings in, connection state, optionally readings).
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// The account's `iot:Data-ATS` endpoint host.
    pub endpoint: String,
    /// 8883, or 443 (ALPN `x-amzn-mqtt-ca`, for networks that allow only HTTPS ports).
    pub port: u16,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub keep_alive: Duration,
    /// The warning topics this box subscribes to (the stacks' `TopicTemplate` rendered
    /// for this group and each configured sensor; one topic with the default `pi/{groupid}`).
    pub warning_topics: Vec<String>,
    /// `DeviceTopicRoot` of the stacks: Last Will on `<root>/<thing>/lwt`, connect report
    /// on `<root>/<thing>/connected`, readings on `<root>/<thing>/data/<route>`.
    pub device_root: String,
    /// The stacks' `StreamRuleName` (default `sensorbox_readings`): with `transport =
    /// "stream"`, readings go to `$aws/rules/<stream_rule>/...`.
    pub stream_rule: String,
    /// `transport = "stream"`: how long a route's newest readings may wait to share a
    /// message with later ones (0, the default: published at once, one reading a message
    /// when live). 60 s at one reading every 10 s puts six in a message, for a sixth of
    /// the stream path's per-message cost (docs/scale.md), and delays warnings as long.
    pub stream_linger: Duration,
    /// A command handed each warning as JSON on stdin (buzzer, LED, GPIO).
    pub hook: Option<Vec<String>>,
}

/// Per-box identity on HTTPS (`[iam]`): where the box gets short-lived AWS credentials for
/// its certificate, and how it signs its posts with them.
#[derive(Debug, Clone)]
pub struct IamConfig {
    /// `https://<credentials endpoint>/role-aliases/<role alias>/credentials`.
    pub credentials_url: reqwest::Url,
    /// The role alias (the stacks' output `SensorBoxRoleAlias`), for messages.
    pub role_alias: String,
    /// The API's region: the SigV4 credential scope.
    pub region: String,
    /// The mutual-TLS files for the credentials provider (default: `[mqtt]`'s).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where a sensor's lines come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceSpec {
    /// An executable printing one JSON object per line (the boxes' existing scripts).
    Command { command: Vec<String> },
    /// The same line protocol from a serial device (set its speed with `stty` first).
    Serial { path: PathBuf },
    /// A deterministic random walk that crosses each threshold now and then.
    Simulate {
        #[serde(default)]
        seed: u64,
    },
    /// Lines on the agent's standard input.
    Stdin,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub api_url: reqwest::Url,
    pub api_key: Option<String>,
    pub group: GroupId,
    pub gps: Option<String>,
    pub thing_name: String,
    pub clock: ClockPolicy,
    pub request_timeout: Duration,
    pub queue: QueueConfig,
    pub transport: Transport,
    pub mqtt: Option<MqttConfig>,
    /// Some: HTTPS posts are SigV4-signed with the box's own credentials (no `api_key`).
    pub iam: Option<IamConfig>,
    pub sensors: Vec<SensorConfig>,
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub path: PathBuf,
    pub max_readings: u64,
}

#[derive(Debug, Clone)]
pub struct SensorConfig {
    pub route: Sensor,
    pub interval: Duration,
    pub source: SourceSpec,
    /// sensorid / sensortype per measure, written into every reading.
    pub labels: BTreeMap<Measure, MeasureLabels>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeasureLabels {
    pub sensorid: Option<String>,
    pub sensortype: Option<String>,
}

const DEFAULT_QUEUE_PATH: &str = "/var/lib/sensorbox/queue.db";
const DEFAULT_MAX_READINGS: u64 = 500_000;
const DEFAULT_INTERVAL_S: u64 = 30;
const DEFAULT_TIMEOUT_S: u64 = 10;
const DEFAULT_MQTT_PORT: u16 = 8883;
/// IoT Core's default keep-alive suggestion; it accepts 30 to 1200 s.
const DEFAULT_KEEP_ALIVE_S: u64 = 30;

/// `path` and the `SENSORBOX_*` environment, merged.
fn figment(path: &Path) -> Result<Figment, ConfigError> {
    if !path.exists() {
        return Err(ConfigError::new(
            "",
            format!("config file {} does not exist", path.display()),
        ));
    }
    Ok(Figment::new()
        .merge(Toml::file(path))
        .merge(Env::prefixed("SENSORBOX_").split("__")))
}

fn extract(figment: Figment) -> Result<RawConfig, ConfigError> {
    figment.extract().map_err(|e| {
        let key = e.path.join(".");
        let message = e.kind.to_string();
        ConfigError::new(key, message)
    })
}

impl Config {
    /// Reads `path` and the `SENSORBOX_*` environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::from_figment(figment(path)?)
    }

    /// Parses TOML text (tests).
    #[cfg(test)]
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        extract(figment)?.validate()
    }
}

/// What `sensorbox enroll` needs, read before the box has its key and certificate: the
/// group and thing name are checked as [`Config::load`] checks them, `[mqtt] key` and
/// `cert` are taken as paths that need not exist yet, and the rest of the file only has to
/// parse (`check-config` validates it once the certificate is in place).
#[derive(Debug, Clone)]
pub struct Identity {
    pub group: GroupId,
    pub thing_name: String,
    pub key: Option<PathBuf>,
    pub cert: Option<PathBuf>,
}

impl Identity {
    /// Reads `path` and the `SENSORBOX_*` environment.
    pub fn load(path: &Path) -> Result<Identity, ConfigError> {
        Self::from_figment(figment(path)?)
    }

    /// Parses TOML text (tests).
    #[cfg(test)]
    pub fn from_toml(text: &str) -> Result<Identity, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Identity, ConfigError> {
        let raw = extract(figment)?;
        let (group, thing_name) = group_and_thing(raw.groupid, raw.thing_name)?;
        let (key, cert) = raw.mqtt.map(|m| (m.key, m.cert)).unwrap_or_default();
        Ok(Identity {
            group,
            thing_name,
            key,
            cert,
        })
    }
}

/// `groupid` checked, and `thing_name` (default `sensorbox-<groupid>`) an IoT thing name.
fn group_and_thing(
    groupid: Option<serde_json::Value>,
    thing_name: Option<String>,
) -> Result<(GroupId, String), ConfigError> {
    let groupid = groupid.ok_or_else(|| ConfigError::new("groupid", "missing"))?;
    let group = GroupId::from_json(&groupid)
        .map_err(|e| ConfigError::new("groupid", e.message().to_string()))?;
    let thing_name = thing_name.unwrap_or_else(|| format!("sensorbox-{}", group.as_str()));
    // The rule the functions and the registry use, so the box cannot accept a name the
    // API would refuse in its path (`/things/{thing}/...`).
    let thing = ThingName::parse(&thing_name).map_err(|e| {
        ConfigError::new(
            "thing_name",
            format!(
                "{} (an IoT thing name: 1 to 128 of [a-zA-Z0-9:_-])",
                e.message()
            ),
        )
    })?;
    Ok((group, thing.as_str().to_owned()))
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let api_url = self
            .api_url
            .ok_or_else(|| ConfigError::new("api_url", "missing: the API's base URL"))?;
        let api_url = reqwest::Url::parse(api_url.trim_end_matches('/'))
            .map_err(|e| ConfigError::new("api_url", format!("not a URL: {e}")))?;
        if !matches!(api_url.scheme(), "http" | "https") {
            return Err(ConfigError::new("api_url", "must be http:// or https://"));
        }
        let api_key = match (self.api_key, self.api_key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "api_key_file",
                    "set api_key or api_key_file, not both",
                ))
            }
            (Some(key), None) => Some(key),
            (None, Some(file)) => Some(
                std::fs::read_to_string(&file)
                    .map_err(|e| {
                        ConfigError::new(
                            "api_key_file",
                            format!("cannot read {}: {e}", file.display()),
                        )
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        if api_key.as_deref() == Some("") {
            return Err(ConfigError::new("api_key", "empty"));
        }
        let (group, thing_name) = group_and_thing(self.groupid, self.thing_name)?;
        if let Some(gps) = &self.gps {
            Location::parse(gps).map_err(|e| ConfigError::new("gps", e.message().to_string()))?;
        }
        let request_timeout = positive_secs(
            "request_timeout_s",
            self.request_timeout_s.unwrap_or(DEFAULT_TIMEOUT_S),
        )?;
        let queue = QueueConfig {
            path: self
                .queue
                .path
                .unwrap_or_else(|| PathBuf::from(DEFAULT_QUEUE_PATH)),
            max_readings: match self.queue.max_readings.unwrap_or(DEFAULT_MAX_READINGS) {
                0 => return Err(ConfigError::new("queue.max_readings", "must be at least 1")),
                n => n,
            },
        };
        if self.sensors.is_empty() {
            return Err(ConfigError::new(
                "sensor",
                "no [[sensor]] configured: nothing to read",
            ));
        }
        let sensors = self
            .sensors
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.validate(i))
            .collect::<Result<Vec<_>, _>>()?;
        // [iam] defaults its certificate files to [mqtt]'s: taken before [mqtt] is consumed.
        let mqtt_files = self
            .mqtt
            .as_ref()
            .map(|m| (m.ca.clone(), m.cert.clone(), m.key.clone()));
        let mqtt = match self.mqtt {
            Some(raw) => Some(raw.validate(&group, &sensors)?),
            None if self.transport != Transport::Https => {
                return Err(ConfigError::new(
                    "mqtt",
                    "transport = \"mqtt\" or \"stream\" needs an [mqtt] section (endpoint and certificates)",
                ))
            }
            None => None,
        };
        let iam = match self.iam {
            Some(_) if api_key.is_some() => return Err(ConfigError::new(
                "iam",
                "set api_key (the legacy shared-key routes) or [iam] (per-box identity), not both",
            )),
            Some(raw) => Some(raw.validate(&api_url, mqtt_files.unwrap_or_default())?),
            None => None,
        };
        Ok(Config {
            api_url,
            api_key,
            group,
            gps: self.gps,
            thing_name,
            clock: self.clock,
            request_timeout,
            queue,
            transport: self.transport,
            mqtt,
            iam,
            sensors,
        })
    }
}

/// The stacks' default `StreamRuleName`.
pub const DEFAULT_STREAM_RULE: &str = "sensorbox_readings";
/// The longest `mqtt.stream_linger_s`: five minutes.
pub const MAX_STREAM_LINGER_S: u64 = 300;

/// AWS's rule for role alias names: 1 to 128 of `[\w=,@-]`.
fn valid_role_alias(alias: &str) -> bool {
    (1..=128).contains(&alias.len())
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '=' | ',' | '@' | '-'))
}

/// The region of an API Gateway URL, `https://<id>.execute-api.<region>.amazonaws.com[.cn]/...`;
/// None for any other host (a custom domain, the local gateway).
pub fn region_from_api_url(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [_id, "execute-api", region, "amazonaws", "com", rest @ ..]
            if rest.is_empty() || rest == ["cn"] =>
        {
            Some((*region).to_owned())
        }
        _ => None,
    }
}

impl RawIam {
    /// `mqtt_files`: `[mqtt]`'s ca, cert and key as written, the defaults for `[iam]`'s.
    fn validate(
        self,
        api_url: &reqwest::Url,
        mqtt_files: (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>),
    ) -> Result<IamConfig, ConfigError> {
        let endpoint = self
            .credentials_endpoint
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    "iam.credentials_endpoint",
                    "missing: the credentials provider's host (aws iot describe-endpoint --endpoint-type iot:CredentialProvider)",
                )
            })?;
        let endpoint_error = || {
            ConfigError::new(
                "iam.credentials_endpoint",
                format!("`{endpoint}`: a host name, optionally with :port (no scheme, no path)"),
            )
        };
        if endpoint.contains("://")
            || endpoint.contains(['/', '?', '#', '@'])
            || endpoint.chars().any(char::is_whitespace)
        {
            return Err(endpoint_error());
        }
        let role_alias = self.role_alias.ok_or_else(|| {
            ConfigError::new(
                "iam.role_alias",
                "missing: the role alias (the stacks' output SensorBoxRoleAlias)",
            )
        })?;
        if !valid_role_alias(&role_alias) {
            return Err(ConfigError::new(
                "iam.role_alias",
                format!(
                    "`{role_alias}`: 1 to 128 characters of [a-zA-Z0-9_=,@-] (an IoT role alias)"
                ),
            ));
        }
        let credentials_url = reqwest::Url::parse(&format!(
            "https://{endpoint}/role-aliases/{role_alias}/credentials"
        ))
        .map_err(|_| endpoint_error())?;
        if credentials_url.host_str().is_none_or(str::is_empty) {
            return Err(endpoint_error());
        }
        let derived = region_from_api_url(api_url);
        let region = match (self.region, derived) {
            (Some(region), derived) => {
                if region.is_empty()
                    || !region
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                {
                    return Err(ConfigError::new(
                        "iam.region",
                        format!("`{region}`: an AWS region such as eu-west-1 ([a-z0-9-])"),
                    ));
                }
                // A signature scoped to another region than the API's is always refused.
                if let Some(derived) = derived.filter(|d| *d != region) {
                    return Err(ConfigError::new(
                        "iam.region",
                        format!("`{region}`, but api_url is in {derived}: leave iam.region out or make them agree"),
                    ));
                }
                region
            }
            (None, Some(derived)) => derived,
            (None, None) => {
                return Err(ConfigError::new(
                    "iam.region",
                    "missing: the API's region (eu-west-1); needed when api_url is not https://<id>.execute-api.<region>.amazonaws.com/...",
                ))
            }
        };
        let (mqtt_ca, mqtt_cert, mqtt_key) = mqtt_files;
        let file = |name: &str, own: Option<PathBuf>, from_mqtt: Option<PathBuf>| {
            let key = format!("iam.{name}");
            let (path, whence) = match (own, from_mqtt) {
                (Some(path), _) => (path, String::new()),
                (None, Some(path)) => (path, format!(" (from [mqtt] {name})")),
                (None, None) => {
                    return Err(ConfigError::new(
                        key,
                        format!("missing: set iam.{name} or [mqtt] {name}"),
                    ))
                }
            };
            std::fs::metadata(&path).map_err(|e| {
                ConfigError::new(
                    key.clone(),
                    format!("cannot read {}{whence}: {e}", path.display()),
                )
            })?;
            Ok::<PathBuf, ConfigError>(path)
        };
        Ok(IamConfig {
            credentials_url,
            role_alias,
            region,
            ca: file("ca", self.ca, mqtt_ca)?,
            cert: file("cert", self.cert, mqtt_cert)?,
            key: file("key", self.key, mqtt_key)?,
        })
    }
}

impl RawMqtt {
    fn validate(
        self,
        group: &GroupId,
        sensors: &[SensorConfig],
    ) -> Result<MqttConfig, ConfigError> {
        let endpoint = self
            .endpoint
            .filter(|e| !e.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    "mqtt.endpoint",
                    "missing: the IoT data endpoint (aws iot describe-endpoint --endpoint-type iot:Data-ATS)",
                )
            })?;
        if endpoint.contains("://") || endpoint.contains('/') || endpoint.contains(':') {
            return Err(ConfigError::new(
                "mqtt.endpoint",
                "a host name only (no scheme, port or path)",
            ));
        }
        let port = match self.port.unwrap_or(DEFAULT_MQTT_PORT) {
            0 => return Err(ConfigError::new("mqtt.port", "must not be 0")),
            port => port,
        };
        let file = |key: &str, path: Option<PathBuf>, what: &str| {
            let path = path.ok_or_else(|| {
                ConfigError::new(format!("mqtt.{key}"), format!("missing: {what}"))
            })?;
            std::fs::metadata(&path).map_err(|e| {
                ConfigError::new(
                    format!("mqtt.{key}"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            Ok::<PathBuf, ConfigError>(path)
        };
        let ca = file("ca", self.ca, "the CA to trust (AmazonRootCA1.pem)")?;
        let cert = file("cert", self.cert, "the device certificate (PEM)")?;
        let key = file("key", self.key, "the device private key (PEM)")?;
        let keep_alive_s = self.keep_alive_s.unwrap_or(DEFAULT_KEEP_ALIVE_S);
        if !(1..=1200).contains(&keep_alive_s) {
            return Err(ConfigError::new(
                "mqtt.keep_alive_s",
                "between 1 and 1200 seconds (IoT Core accepts 30 to 1200)",
            ));
        }
        let template = TopicTemplate::parse(
            self.topic_template
                .as_deref()
                .unwrap_or(sensor_model::topic::DEFAULT_TEMPLATE),
        )
        .map_err(|e| ConfigError::new("mqtt.topic_template", e.to_string()))?;
        let mut warning_topics: Vec<String> = sensors
            .iter()
            .map(|s| template.topic(s.route, group).as_str().to_owned())
            .collect();
        warning_topics.sort();
        warning_topics.dedup();
        let device_root = self.device_root.unwrap_or_else(|| "devices".into());
        if device_root.is_empty()
            || !device_root
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        {
            return Err(ConfigError::new(
                "mqtt.device_root",
                "one topic level of [a-zA-Z0-9_-] (the stacks' DeviceTopicRoot)",
            ));
        }
        let stream_rule = self
            .stream_rule
            .unwrap_or_else(|| DEFAULT_STREAM_RULE.into());
        if !(1..=128).contains(&stream_rule.len())
            || !stream_rule
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ConfigError::new(
                "mqtt.stream_rule",
                "an IoT rule name: 1 to 128 of [a-zA-Z0-9_] (the stacks' StreamRuleName)",
            ));
        }
        let stream_linger_s = self.stream_linger_s.unwrap_or(0);
        if stream_linger_s > MAX_STREAM_LINGER_S {
            return Err(ConfigError::new(
                "mqtt.stream_linger_s",
                format!("at most {MAX_STREAM_LINGER_S} seconds (a warning waits as long)"),
            ));
        }
        if let Some(hook) = &self.hook {
            if hook.first().is_none_or(|p| p.is_empty()) {
                return Err(ConfigError::new(
                    "mqtt.hook",
                    "a command as a list, e.g. [\"/usr/local/bin/buzz\"]",
                ));
            }
        }
        Ok(MqttConfig {
            endpoint,
            port,
            ca,
            cert,
            key,
            keep_alive: Duration::from_secs(keep_alive_s),
            warning_topics,
            device_root,
            stream_rule,
            stream_linger: Duration::from_secs(stream_linger_s),
            hook: self.hook,
        })
    }
}

impl RawSensor {
    fn validate(self, index: usize) -> Result<SensorConfig, ConfigError> {
        let key = |k: &str| format!("sensor[{index}].{k}");
        let route = Sensor::parse(&self.route).ok_or_else(|| {
            ConfigError::new(
                key("route"),
                format!(
                    "unknown route `{}`; expected gasdetector, dust or temp",
                    self.route
                ),
            )
        })?;
        let interval = positive_secs(
            &key("interval_s"),
            self.interval_s.unwrap_or(DEFAULT_INTERVAL_S),
        )?;
        match &self.source {
            SourceSpec::Command { command } if command.first().is_none_or(|p| p.is_empty()) => {
                return Err(ConfigError::new(
                    key("source.command"),
                    "a command as a list, e.g. [\"python3\", \"/opt/read_gas.py\"]",
                ))
            }
            _ => {}
        }
        let mut labels = BTreeMap::new();
        for (name, raw) in self.measures {
            let measure = route.measure_named(&name).ok_or_else(|| {
                let expected: Vec<&str> = route.measures().iter().map(|m| m.name()).collect();
                ConfigError::new(
                    key(&format!("measures.{name}")),
                    format!(
                        "`{name}` is not a measure of {route}; expected one of {}",
                        expected.join(", ")
                    ),
                )
            })?;
            labels.insert(
                measure,
                MeasureLabels {
                    sensorid: raw.sensorid,
                    sensortype: raw.sensortype,
                },
            );
        }
        Ok(SensorConfig {
            route,
            interval,
            source: self.source,
            labels,
        })
    }
}

fn positive_secs(key: &str, secs: u64) -> Result<Duration, ConfigError> {
    if secs == 0 || secs > 86_400 {
        return Err(ConfigError::new(key, "between 1 and 86400 seconds"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
api_url = "http://127.0.0.1:3000/"
api_key = "k"
groupid = "2"
gps = "37.61, 126.99"
[queue]
path = "/tmp/q.db"
max_readings = 100
[[sensor]]
route = "gasdetector"
interval_s = 5
source = { kind = "simulate", seed = 7 }
[sensor.measures.no2]
sensorid = "0006"
sensortype = "9"
"#;

    fn error_key(text: &str) -> String {
        match Config::from_toml(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.key,
        }
    }

    #[test]
    fn a_good_file_parses_into_types() {
        let config = Config::from_toml(GOOD).expect("valid");
        assert_eq!(config.api_url.as_str(), "http://127.0.0.1:3000/");
        assert_eq!(config.group.as_str(), "2");
        assert_eq!(config.thing_name, "sensorbox-2");
        assert_eq!(config.queue.max_readings, 100);
        assert_eq!(config.sensors[0].route, Sensor::Gasdetector);
        assert_eq!(config.sensors[0].interval, Duration::from_secs(5));
        assert_eq!(config.clock, ClockPolicy::Ntp);
    }

    #[test]
    fn every_bad_value_names_its_key() {
        let cases = [
            (
                "api_url = \"http://127.0.0.1:3000/\"",
                "api_url = \"nope\"",
                "api_url",
            ),
            ("groupid = \"2\"", "groupid = \"a/b\"", "groupid"),
            ("gps = \"37.61, 126.99\"", "gps = \"91, 0\"", "gps"),
            (
                "max_readings = 100",
                "max_readings = 0",
                "queue.max_readings",
            ),
            (
                "max_readings = 100",
                "max_readings = \"many\"",
                "queue.max_readings",
            ),
            (
                "route = \"gasdetector\"",
                "route = \"gas\"",
                "sensor[0].route",
            ),
            ("interval_s = 5", "interval_s = 0", "sensor[0].interval_s"),
            (
                "[sensor.measures.no2]",
                "[sensor.measures.n02]",
                "sensor[0].measures.n02",
            ),
            ("api_key = \"k\"", "api_key = \"k\"\napi_kee = \"x\"", ""),
        ];
        for (from, to, key) in cases {
            let text = GOOD.replace(from, to);
            let got = error_key(&text);
            if key.is_empty() {
                // an unknown top-level key: figment reports it at the root
                let err = Config::from_toml(&text).expect_err("unknown key");
                assert!(err.message.contains("api_kee"), "{err}");
            } else {
                assert_eq!(got, key, "for {to}");
            }
        }
    }

    #[test]
    fn missing_essentials_are_named() {
        assert_eq!(error_key(&GOOD.replace("groupid = \"2\"", "")), "groupid");
        assert_eq!(
            error_key(&GOOD.replace("api_url = \"http://127.0.0.1:3000/\"", "")),
            "api_url"
        );
        let no_sensor = GOOD.split("[[sensor]]").next().unwrap_or_default();
        assert_eq!(error_key(no_sensor), "sensor");
    }

    #[test]
    fn the_example_config_is_valid() {
        // The certificate paths must exist: any readable file stands in for them.
        let present = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let mut text = include_str!("../config.example.toml").to_string();
        for file in ["AmazonRootCA1.pem", "device.pem.crt", "private.pem.key"] {
            text = text.replace(&format!("/etc/sensorbox/{file}"), present);
        }
        let config = Config::from_toml(&text).expect("the example parses");
        let iam = config.iam.as_ref().expect("the example has [iam]");
        assert_eq!(iam.region, "eu-west-1");
        assert!(config.api_key.is_none());
        // The legacy key line, uncommented beside [iam], is refused.
        let both = text.replace(
            "# api_key_file = \"/etc/sensorbox/api-key\"",
            &format!("api_key_file = \"{present}\""),
        );
        assert_eq!(error_key(&both), "iam");
        assert_eq!(config.sensors.len(), 3);
        assert_eq!(config.queue.path, PathBuf::from(DEFAULT_QUEUE_PATH));
        let mqtt = config.mqtt.expect("the example has [mqtt]");
        assert_eq!(mqtt.port, 8883);
        assert_eq!(mqtt.warning_topics, ["pi/2"]);
        assert_eq!(mqtt.keep_alive, Duration::from_secs(30));
        assert_eq!(config.transport, Transport::Https);
    }

    fn with_mqtt(section: &str) -> String {
        let present = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let mqtt = format!(
            "[mqtt]\nendpoint = \"iot.example\"\nca = \"{present}\"\ncert = \"{present}\"\nkey = \"{present}\"\n{section}\n"
        );
        GOOD.replace("[queue]", &format!("{mqtt}[queue]"))
    }

    #[test]
    fn the_mqtt_section_names_its_bad_keys() {
        let config = Config::from_toml(&with_mqtt("")).expect("valid");
        let mqtt = config.mqtt.expect("mqtt");
        assert_eq!((mqtt.port, mqtt.device_root.as_str()), (8883, "devices"));
        assert_eq!(mqtt.warning_topics, ["pi/2"]);
        let cases = [
            ("port = 0", "mqtt.port"),
            ("keep_alive_s = 0", "mqtt.keep_alive_s"),
            ("keep_alive_s = 5000", "mqtt.keep_alive_s"),
            ("topic_template = \"pi/#\"", "mqtt.topic_template"),
            ("device_root = \"a/b\"", "mqtt.device_root"),
            ("stream_rule = \"a-b\"", "mqtt.stream_rule"),
            ("stream_rule = \"\"", "mqtt.stream_rule"),
            ("stream_linger_s = 301", "mqtt.stream_linger_s"),
            ("hook = []", "mqtt.hook"),
            ("cafile = \"x\"", ""),
        ];
        for (line, key) in cases {
            let err = Config::from_toml(&with_mqtt(line)).expect_err(line);
            if key.is_empty() {
                assert!(err.message.contains("cafile"), "{err}");
            } else {
                assert_eq!(err.key, key, "{line}: {err}");
            }
        }
        let missing = with_mqtt("").replace("cert = ", "# cert = ");
        assert_eq!(error_key(&missing), "mqtt.cert");
        let absent = with_mqtt("").replace(
            &format!("key = \"{}/Cargo.toml\"", env!("CARGO_MANIFEST_DIR")),
            "key = \"/nonexistent/private.pem.key\"",
        );
        let err = Config::from_toml(&absent).expect_err("absent key file");
        assert_eq!(err.key, "mqtt.key");
        assert!(
            err.message.contains("/nonexistent/private.pem.key"),
            "{err}"
        );
        let scheme = with_mqtt("").replace("\"iot.example\"", "\"mqtts://iot.example\"");
        assert_eq!(error_key(&scheme), "mqtt.endpoint");
        let no_section = GOOD.replace("[queue]", "transport = \"mqtt\"\n[queue]");
        assert_eq!(error_key(&no_section), "mqtt");
        let over_mqtt = with_mqtt("").replace("[mqtt]", "transport = \"mqtt\"\n[mqtt]");
        let config = Config::from_toml(&over_mqtt).expect("transport mqtt");
        assert_eq!(config.transport, Transport::Mqtt);
        let no_section = GOOD.replace("[queue]", "transport = \"stream\"\n[queue]");
        assert_eq!(error_key(&no_section), "mqtt");
        let over_stream = with_mqtt("stream_rule = \"fleet_readings\"")
            .replace("[mqtt]", "transport = \"stream\"\n[mqtt]");
        let config = Config::from_toml(&over_stream).expect("transport stream");
        assert_eq!(config.transport, Transport::Stream);
        assert_eq!(config.mqtt.expect("mqtt").stream_rule, "fleet_readings");
    }

    #[test]
    fn enroll_reads_the_identity_before_the_key_and_certificate_exist() {
        let text = with_mqtt("")
            .replace(
                &format!("cert = \"{}/Cargo.toml\"", env!("CARGO_MANIFEST_DIR")),
                "cert = \"/nonexistent/device.pem.crt\"",
            )
            .replace(
                &format!("key = \"{}/Cargo.toml\"", env!("CARGO_MANIFEST_DIR")),
                "key = \"/nonexistent/private.pem.key\"",
            );
        assert_eq!(error_key(&text), "mqtt.cert");
        let identity = Identity::from_toml(&text).expect("identity");
        assert_eq!(identity.group.as_str(), "2");
        assert_eq!(identity.thing_name, "sensorbox-2");
        assert_eq!(
            identity.key,
            Some(PathBuf::from("/nonexistent/private.pem.key"))
        );
        assert_eq!(
            identity.cert,
            Some(PathBuf::from("/nonexistent/device.pem.crt"))
        );
        let without_mqtt = Identity::from_toml(GOOD).expect("no [mqtt]");
        assert_eq!((without_mqtt.key, without_mqtt.cert), (None, None));
        let bad_thing = GOOD.replace("groupid = \"2\"", "groupid = \"2\"\nthing_name = \"a b\"");
        assert_eq!(
            Identity::from_toml(&bad_thing).expect_err("bad thing").key,
            "thing_name"
        );
    }

    /// GOOD without its key, with an [iam] section (and [mqtt] when `mqtt`), `api_url` as given.
    fn with_iam(api_url: &str, iam: &str, mqtt: bool) -> String {
        let base = if mqtt {
            with_mqtt("")
        } else {
            GOOD.to_string()
        };
        base.replace("api_key = \"k\"\n", "")
            .replace("http://127.0.0.1:3000/", api_url)
            .replace("[queue]", &format!("[iam]\n{iam}\n[queue]"))
    }

    const AWS_API: &str = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod";

    #[test]
    fn iam_takes_the_region_from_api_url_and_the_files_from_mqtt() {
        let text = with_iam(
            AWS_API,
            "credentials_endpoint = \"c2abc.credentials.iot.eu-west-1.amazonaws.com\"\nrole_alias = \"sensor-ingest-sensor-box\"",
            true,
        );
        let config = Config::from_toml(&text).expect("valid");
        assert!(config.api_key.is_none());
        let iam = config.iam.expect("[iam]");
        assert_eq!(
            iam.credentials_url.as_str(),
            "https://c2abc.credentials.iot.eu-west-1.amazonaws.com/role-aliases/sensor-ingest-sensor-box/credentials"
        );
        assert_eq!(iam.region, "eu-west-1");
        let mqtt = config.mqtt.expect("[mqtt]");
        assert_eq!((iam.ca, iam.cert, iam.key), (mqtt.ca, mqtt.cert, mqtt.key));

        // A local endpoint with a port and an explicit region, files of its own.
        let present = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let local = with_iam(
            "http://127.0.0.1:3000/",
            &format!("credentials_endpoint = \"localhost:8443\"\nrole_alias = \"a=b,c@d_e-f\"\nregion = \"us-east-1\"\nca = \"{present}\"\ncert = \"{present}\"\nkey = \"{present}\""),
            false,
        );
        let iam = Config::from_toml(&local)
            .expect("valid")
            .iam
            .expect("[iam]");
        assert_eq!(
            iam.credentials_url.as_str(),
            "https://localhost:8443/role-aliases/a=b,c@d_e-f/credentials"
        );
        assert_eq!(iam.region, "us-east-1");
    }

    #[test]
    fn region_from_api_url_knows_only_api_gateway_hosts() {
        let region = |u: &str| region_from_api_url(&reqwest::Url::parse(u).expect("url"));
        assert_eq!(region(AWS_API).as_deref(), Some("eu-west-1"));
        assert_eq!(
            region("https://x.execute-api.cn-north-1.amazonaws.com.cn/").as_deref(),
            Some("cn-north-1")
        );
        assert_eq!(region("https://api.example.com/prod"), None);
        assert_eq!(region("http://127.0.0.1:3000"), None);
        assert_eq!(region("https://x.execute-api.eu-west-1.example.com/"), None);
    }

    #[test]
    fn iam_refusals_name_their_key() {
        let endpoint = "credentials_endpoint = \"c2abc.credentials.iot.eu-west-1.amazonaws.com\"";
        let alias = "role_alias = \"box-https\"";
        let present = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let files = format!("ca = \"{present}\"\ncert = \"{present}\"\nkey = \"{present}\"");
        let cases: Vec<(String, &str, &str)> = vec![
            (
                format!("{alias}\n{files}"),
                "iam.credentials_endpoint",
                "describe-endpoint",
            ),
            (
                format!("credentials_endpoint = \"https://c2abc.example\"\n{alias}\n{files}"),
                "iam.credentials_endpoint",
                "no scheme",
            ),
            (
                format!("credentials_endpoint = \"c2abc.example/role-aliases\"\n{alias}\n{files}"),
                "iam.credentials_endpoint",
                "no path",
            ),
            (
                format!("credentials_endpoint = \"c2abc.example:99999\"\n{alias}\n{files}"),
                "iam.credentials_endpoint",
                "port",
            ),
            (
                format!("{endpoint}\n{files}"),
                "iam.role_alias",
                "SensorBoxRoleAlias",
            ),
            (
                format!("{endpoint}\nrole_alias = \"a/b\"\n{files}"),
                "iam.role_alias",
                "role alias",
            ),
            (
                format!("{endpoint}\nrole_alias = \"{}\"\n{files}", "x".repeat(129)),
                "iam.role_alias",
                "128",
            ),
            (
                format!("{endpoint}\n{alias}\nregion = \"EU-West-1\"\n{files}"),
                "iam.region",
                "[a-z0-9-]",
            ),
            (
                format!("{endpoint}\n{alias}\nregion = \"\"\n{files}"),
                "iam.region",
                "AWS region",
            ),
            (
                format!("{endpoint}\n{alias}\nregion = \"us-east-1\"\n{files}"),
                "iam.region",
                "eu-west-1",
            ),
            (
                format!("{endpoint}\n{alias}\nca = \"{present}\"\nkey = \"{present}\""),
                "iam.cert",
                "set iam.cert or [mqtt] cert",
            ),
            (
                format!("{endpoint}\n{alias}\n{files}").replace(
                    &format!("cert = \"{present}\""),
                    "cert = \"/nonexistent/device.pem.crt\"",
                ),
                "iam.cert",
                "/nonexistent/device.pem.crt",
            ),
            (
                format!("{endpoint}\n{alias}\n{files}\ncafile = \"x\""),
                "iam.cafile",
                "unknown field",
            ),
        ];
        for (section, key, says) in cases {
            let text = with_iam(AWS_API, &section, false);
            let err = Config::from_toml(&text).expect_err(&section);
            assert_eq!(err.key, key, "{section}: {err}");
            assert!(err.message.contains(says), "{section}: {err}");
        }
        // No region in a non-API-Gateway api_url and none given.
        let text = with_iam(
            "http://127.0.0.1:3000/",
            &format!("{endpoint}\n{alias}\n{files}"),
            false,
        );
        let err = Config::from_toml(&text).expect_err("no region");
        assert_eq!(err.key, "iam.region", "{err}");
        // A box with both a shared key and its own identity: one or the other.
        let both = with_iam(AWS_API, &format!("{endpoint}\n{alias}\n{files}"), false)
            .replace("groupid = ", "api_key = \"k\"\ngroupid = ");
        let err = Config::from_toml(&both).expect_err("both");
        assert_eq!(err.key, "iam", "{err}");
        assert!(err.message.contains("not both"), "{err}");
        // [mqtt]'s file is missing: the message says where the default came from.
        let text = with_iam(AWS_API, &format!("{endpoint}\n{alias}"), true);
        let text = text.replace(
            &format!("[mqtt]\nendpoint = \"iot.example\"\nca = \"{present}\""),
            "[mqtt]\nendpoint = \"iot.example\"\nca = \"/nonexistent/ca.pem\"",
        );
        let err = Config::from_toml(&text).expect_err("missing ca");
        assert_eq!(err.key, "mqtt.ca", "[mqtt] is checked first: {err}");
    }

    #[test]
    fn thing_name_follows_the_registry_rule() {
        for bad in ["a b", "a/b", "", &"x".repeat(129)] {
            let text = GOOD.replace(
                "groupid = \"2\"",
                &format!("groupid = \"2\"\nthing_name = \"{bad}\""),
            );
            let err = Config::from_toml(&text).expect_err(bad);
            assert_eq!(err.key, "thing_name", "{bad:?}: {err}");
        }
        let text = GOOD.replace(
            "groupid = \"2\"",
            "groupid = \"2\"\nthing_name = \"pi:19_a-b\"",
        );
        assert_eq!(
            Config::from_toml(&text).expect("valid").thing_name,
            "pi:19_a-b"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let figment = Figment::new().merge(Toml::string(GOOD)).merge(
            figment::providers::Serialized::default("queue.max_readings", 7),
        );
        let config = Config::from_figment(figment).expect("valid");
        assert_eq!(config.queue.max_readings, 7);
    }
}
