//! The scheduled no-data function (`functions/nodata`, EventBridge every minute): built
//! once per cold start from the environment, then one check per invocation. The event
//! itself carries nothing we need.

use crate::app::InitError;
use crate::settings::NoDataSettings;
use lambda_http::lambda_runtime::{self, LambdaEvent};
use lambda_http::Error;
use sensor_aws::{sdk_config, IotPublisher, OpenSearchActivity, ShadowAlarmStore};
use sensor_core::no_data::{Activity, NoDataCheck};
use sensor_core::ports::{AlarmStore, Publisher};
use sensor_core::retry::RetryPolicy;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

pub type NoDataFunction = NoDataCheck<IotPublisher, ShadowAlarmStore, OpenSearchActivity>;

/// Settings and clients from the environment.
pub async fn from_env() -> Result<NoDataFunction, InitError> {
    from_lookup(|key: &str| std::env::var(key).ok()).await
}

/// Like [`from_env`], with `lookup` answering like `std::env::var` (tests, local stacks).
pub async fn from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<NoDataFunction, InitError> {
    let settings = NoDataSettings::from_lookup(lookup)?;
    let sdk_config = sdk_config(&settings.aws);
    let publisher = IotPublisher::new(&sdk_config, settings.iot_endpoint.as_str());
    let store = ShadowAlarmStore::new(
        publisher.client().clone(),
        settings.alarm_state.thing.clone(),
        settings.alarm_state.shadow.clone(),
    );
    let activity = OpenSearchActivity::new(&settings.opensearch, &sdk_config, settings.indices)?;
    Ok(NoDataCheck {
        limits: settings.limits,
        topic: settings.topic,
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
