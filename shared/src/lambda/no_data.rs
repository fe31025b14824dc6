//! The scheduled no-data function (`functions/nodata`, EventBridge every minute): built
//! once per cold start from the environment, then one check per invocation. The event
//! itself carries nothing we need.

use crate::adapters::opensearch::{OpenSearchActivity, OpenSearchInitError};
use crate::adapters::{IotPublisher, ShadowAlarmStore};
use crate::alarms::no_data::{Activity, NoDataCheck, NoDataSettings};
use crate::domain::sensor::Sensor;
use crate::ingest::retry::RetryPolicy;
use crate::lambda::app::load_sdk_config;
use crate::lambda::config::{Config, ConfigError};
use crate::ports::{AlarmStore, Publisher};
use lambda_http::lambda_runtime::{self, LambdaEvent};
use lambda_http::Error;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

pub type NoDataFunction = NoDataCheck<IotPublisher, ShadowAlarmStore, OpenSearchActivity>;

/// `NO_DATA_INDICES`: `sensor=pattern` pairs, comma-separated; by default each sensor's
/// default index with `*` (so dated indices such as `gasdetect-2026.11` match).
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

/// Configuration and clients from the environment. The ingest configuration supplies the
/// endpoints, credentials, topic template and alarm shadow (its sensor is unused here).
pub async fn from_env() -> Result<NoDataFunction, ConfigError> {
    from_lookup(|key: &str| std::env::var(key).ok()).await
}

/// Like [`from_env`], with `lookup` answering like `std::env::var` (tests, local stacks).
pub async fn from_lookup(
    lookup: impl Fn(&str) -> Option<String> + Copy,
) -> Result<NoDataFunction, ConfigError> {
    let config = Config::from_lookup(Sensor::Gasdetector, lookup)?;
    let settings = NoDataSettings::from_lookup(lookup).map_err(ConfigError)?;
    let indices = parse_indices(lookup("NO_DATA_INDICES").as_deref())
        .map_err(|e| ConfigError(format!("NO_DATA_INDICES: {e}")))?;
    let sdk_config = load_sdk_config(&config).await;
    let publisher = IotPublisher::new(&sdk_config, config.iot_endpoint.as_str());
    let store = ShadowAlarmStore::new(
        publisher.client().clone(),
        config.alarm_thing.clone(),
        config.alarm_shadow.clone(),
    );
    let activity = OpenSearchActivity::new(&config, &sdk_config, indices)
        .map_err(|e: OpenSearchInitError| ConfigError(e.to_string()))?;
    Ok(NoDataCheck {
        settings,
        topic: config.topic.clone(),
        retry: RetryPolicy::default(),
        publisher,
        store,
        activity,
    })
}

/// One invocation: the run's summary, or an error (so the scheduler's retry applies).
pub async fn invoke<P: Publisher, S: AlarmStore, A: Activity>(
    check: &NoDataCheck<P, S, A>,
    budget: Duration,
) -> Result<Value, Error> {
    let summary = check
        .run(chrono::Utc::now(), Instant::now() + budget)
        .await
        .map_err(|e| Error::from(format!("no-data check: {e}")))?;
    tracing::info!(
        groups = summary.groups_seen,
        raised = summary.raised,
        failed = summary.failed,
        "no-data check"
    );
    Ok(json!({"groups": summary.groups_seen, "raised": summary.raised, "failed": summary.failed}))
}

/// Serves invocations until the runtime stops: the function's whole `main` after init.
pub async fn run(check: NoDataFunction) -> Result<(), Error> {
    let check = &check;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<Value>| {
            let left = event
                .context
                .deadline()
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::from_secs(30));
            // Boxed: the check's nested retry futures are deep enough to overflow the
            // compiler's layout depth limit when inlined into the runtime's future.
            Box::pin(invoke(
                check,
                left.saturating_sub(Duration::from_millis(500)),
            ))
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
