//! Fakes for the two ports and request helpers, shared by the reliability tests
//! (`handler`, `bad_events`, `runtime`, ...).
#![allow(dead_code)]

use lambda_http::{Body, Request, Response};
use sensor_core::pipeline::Pipeline;
use sensor_core::ports::{
    AlarmStore, DownstreamError, IndexOutcome, Indexer, MemoryAlarmStore, MemoryRegistry, Message,
    Publisher, StoreOutcome, Versioned,
};
use sensor_core::retry::RetryPolicy;
use sensor_lambda::app::App;
use sensor_lambda::IngestSettings;
use sensor_model::alarms::state::GroupAlarms;
use sensor_model::document::Document;
use sensor_model::domain::group_id::GroupId;
use sensor_model::Sensor;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Records messages; fails with the queued errors first.
#[derive(Default, Clone)]
pub struct FakePublisher {
    pub sent: Arc<Mutex<Vec<Message>>>,
    pub failures: Arc<Mutex<VecDeque<DownstreamError>>>,
    pub attempts: Arc<Mutex<usize>>,
}

impl Publisher for FakePublisher {
    async fn publish(&self, message: &Message) -> Result<(), DownstreamError> {
        *self.attempts.lock().unwrap() += 1;
        if let Some(e) = self.failures.lock().unwrap().pop_front() {
            return Err(e);
        }
        self.sent.lock().unwrap().push(message.clone());
        Ok(())
    }
}

/// Documents at these positions of one bulk call fail with this error.
pub type ItemFailure = (Vec<usize>, DownstreamError);

/// An index with `create` semantics; can fail whole requests or single items, and
/// records the size of every bulk call.
#[derive(Default, Clone)]
pub struct FakeIndexer {
    pub docs: Arc<Mutex<HashMap<(String, String), Value>>>,
    pub request_failures: Arc<Mutex<VecDeque<DownstreamError>>>,
    pub item_failures: Arc<Mutex<VecDeque<ItemFailure>>>,
    /// Documents of these groups are refused for good, every time (as OpenSearch refuses
    /// a document that conflicts with the index's mapping).
    pub rejected_groups: Arc<Mutex<Vec<String>>>,
    pub calls: Arc<Mutex<Vec<usize>>>,
}

impl Indexer for FakeIndexer {
    async fn create_all(
        &self,
        documents: &[&Document],
    ) -> Result<Vec<IndexOutcome>, DownstreamError> {
        self.calls.lock().unwrap().push(documents.len());
        if let Some(e) = self.request_failures.lock().unwrap().pop_front() {
            return Err(e);
        }
        let failing = self.item_failures.lock().unwrap().pop_front();
        let mut docs = self.docs.lock().unwrap();
        Ok(documents
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if let Some((positions, e)) = &failing {
                    if positions.contains(&i) {
                        return IndexOutcome::Failed(e.clone());
                    }
                }
                let group = d.body.get("groupid").and_then(Value::as_str).unwrap_or("");
                if self
                    .rejected_groups
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|g| g == group)
                {
                    return IndexOutcome::Rejected(
                        "OpenSearch bulk item: 400 mapper_parsing_exception".into(),
                    );
                }
                let key = (d.index.clone(), d.id.as_str().to_string());
                match docs.entry(key) {
                    std::collections::hash_map::Entry::Occupied(_) => IndexOutcome::AlreadyStored,
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(Value::Object(d.body.clone()));
                        IndexOutcome::Created
                    }
                }
            })
            .collect())
    }
}

/// Alarm state in memory (shadow version semantics); fails loads and stores with the
/// queued errors first, and counts the calls.
#[derive(Default, Clone)]
pub struct FakeAlarmStore {
    pub inner: MemoryAlarmStore,
    pub failures: Arc<Mutex<VecDeque<DownstreamError>>>,
    pub loads: Arc<Mutex<usize>>,
    pub stores: Arc<Mutex<usize>>,
}

impl FakeAlarmStore {
    fn fail(&self) -> Result<(), DownstreamError> {
        match self.failures.lock().unwrap().pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl AlarmStore for FakeAlarmStore {
    async fn load(&self, group: &GroupId) -> Result<Versioned, DownstreamError> {
        *self.loads.lock().unwrap() += 1;
        self.fail()?;
        self.inner.load(group).await
    }

    async fn store(
        &self,
        group: &GroupId,
        state: &GroupAlarms,
        expected: Option<u64>,
    ) -> Result<StoreOutcome, DownstreamError> {
        *self.stores.lock().unwrap() += 1;
        self.fail()?;
        self.inner.store(group, state, expected).await
    }
}

/// The handler with fake ports and a fast retry policy (4 attempts, millisecond waits).
pub struct Harness {
    pub app: App<FakePublisher, FakeIndexer, FakeAlarmStore, MemoryRegistry>,
    pub publisher: FakePublisher,
    pub indexer: FakeIndexer,
    pub alarms: FakeAlarmStore,
    /// The boxes the handler knows (none until a test registers one).
    pub registry: MemoryRegistry,
}

impl Harness {
    pub fn new(sensor: Sensor) -> Harness {
        Harness::with_env(sensor, &[])
    }

    /// Extra configuration on top of the required variables (`RULES`, `INDEX`, ...).
    /// The shared-key routes are on unless `extra` sets `LEGACY_KEY_ROUTES`: most tests
    /// post the seed's payload to `/gasdetector`, as the contract's samples do.
    pub fn with_env(sensor: Sensor, extra: &[(&str, &str)]) -> Harness {
        let settings = config_with(sensor, extra);
        let legacy =
            extra.iter().all(|(key, _)| *key != "LEGACY_KEY_ROUTES") || settings.legacy_key_routes;
        let registry = MemoryRegistry::default();
        let publisher = FakePublisher::default();
        let indexer = FakeIndexer::default();
        let alarms = FakeAlarmStore::default();
        let fast = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            attempt_timeout: Duration::from_millis(500),
        };
        let pipeline = Pipeline::new(&settings.pipeline, publisher.clone(), indexer.clone())
            .with_retry_policy(fast)
            .with_alarm_store(alarms.clone());
        Harness {
            app: App::from_pipeline(pipeline)
                .with_registry(registry.clone())
                .with_legacy_key_routes(legacy),
            publisher,
            indexer,
            alarms,
            registry,
        }
    }

    pub fn published(&self) -> usize {
        self.publisher.sent.lock().unwrap().len()
    }

    /// Every published message: topic and parsed payload.
    pub fn sent(&self) -> Vec<(String, Value)> {
        self.publisher
            .sent
            .lock()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m.topic.to_string(),
                    serde_json::from_slice(&m.payload).unwrap(),
                )
            })
            .collect()
    }

    pub fn indexed(&self) -> usize {
        self.indexer.docs.lock().unwrap().len()
    }

    pub fn index_calls(&self) -> usize {
        self.indexer.calls.lock().unwrap().len()
    }

    /// The next `n` alarm-state calls (loads or stores) fail with `error`.
    pub fn fail_alarm_calls(&self, n: usize, error: DownstreamError) {
        self.alarms
            .failures
            .lock()
            .unwrap()
            .extend((0..n).map(|_| error.clone()));
    }

    /// The next `n` publishes fail with `error`.
    pub fn fail_publishes(&self, n: usize, error: DownstreamError) {
        self.publisher
            .failures
            .lock()
            .unwrap()
            .extend((0..n).map(|_| error.clone()));
    }

    /// The next `n` bulk requests fail as a whole with a retryable 500.
    /// Every document of `group` is refused for good from now on.
    pub fn reject_group(&self, group: &str) {
        self.indexer
            .rejected_groups
            .lock()
            .unwrap()
            .push(group.to_string());
    }

    pub fn fail_index_requests(&self, n: usize) {
        self.indexer
            .request_failures
            .lock()
            .unwrap()
            .extend((0..n).map(|_| DownstreamError::Retryable("500".into())));
    }
}

pub fn config(sensor: Sensor) -> IngestSettings {
    config_with(sensor, &[])
}

pub fn config_with(sensor: Sensor, extra: &[(&str, &str)]) -> IngestSettings {
    let mut env: HashMap<&str, &str> = HashMap::from([
        ("AWS_ENDPOINT_URL_IOT_DATA_PLANE", "http://127.0.0.1:1"),
        ("OPENSEARCH_URL", "http://127.0.0.1:2"),
        ("OPENSEARCH_AUTH", "none"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ]);
    env.extend(extra.iter().copied());
    IngestSettings::from_lookup(sensor, |k| env.get(k).map(|v| v.to_string())).unwrap()
}

pub fn sensor_of_route(route: &str) -> Sensor {
    Sensor::ALL
        .into_iter()
        .find(|s| route.trim_start_matches('/') == s.name())
        .unwrap_or_else(|| panic!("no sensor for route {route}"))
}

pub fn events_dir() -> PathBuf {
    // Included by crates at different depths (`crates/lambda`, `tests`): the nearest
    // ancestor holding `events/` is the workspace root.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("events"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| manifest.join("../../events"))
}

pub fn request(method: &str, path: &str, body: impl Into<Body>) -> Request {
    lambda_http::http::Request::builder()
        .method(method)
        .uri(path)
        .body(body.into())
        .unwrap()
}

pub fn json_of(response: &Response<Body>) -> Value {
    serde_json::from_slice(response.body().as_ref()).unwrap_or_else(|e| {
        panic!(
            "response body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(response.body().as_ref())
        )
    })
}

/// The reading of DESIGN.md, for `/gasdetector`; trips no rule.
pub const SEED: &str = r#"{"groupid": "2", "gps": "37.61002501514269, 126.99636868892937",
 "co":     {"sensorid": "0005", "sensortype": "8",  "value": "26.20", "createdtime": "2021-09-03 18:14:49"},
 "no2":    {"sensorid": "0006", "sensortype": "9",  "value": "52.00", "createdtime": "2021-09-03 18:14:49"},
 "c2h5oh": {"sensorid": "0007", "sensortype": "27", "value": "26.11", "createdtime": "2021-09-03 18:14:49"},
 "h2":     {"sensorid": "0008", "sensortype": "30", "value": "400",   "createdtime": "2021-09-03 18:14:49"}}"#;

/// A good reading for any route (one measure).
pub fn good_reading(sensor: Sensor) -> Value {
    let measure = sensor.measures()[0].name();
    serde_json::json!({"groupid": "7", measure: {"sensorid": "1", "sensortype": "2", "value": "1.5", "createdtime": "2021-09-03 18:14:49"}})
}

/// An API Gateway REST (v1) proxy event around `body`.
pub fn apigw_rest_event(method: &str, path: &str, body: &str, base64: bool) -> String {
    serde_json::json!({
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {"content-type": "application/json", "Host": "abc.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {"content-type": ["application/json"], "Host": ["abc.execute-api.us-east-1.amazonaws.com"]},
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": null,
        "stageVariables": null,
        "requestContext": {
            "resourceId": "abc", "resourcePath": path, "httpMethod": method,
            "extendedRequestId": "x", "requestTime": "03/Sep/2021:18:14:49 +0000",
            "path": format!("/prod{path}"), "accountId": "123456789012", "protocol": "HTTP/1.1",
            "stage": "prod", "domainPrefix": "abc", "requestTimeEpoch": 1630692889000u64,
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "box"},
            "domainName": "abc.execute-api.us-east-1.amazonaws.com", "apiId": "abc"
        },
        "body": body,
        "isBase64Encoded": base64
    })
    .to_string()
}

/// An HTTP API (v2) event around `body`.
pub fn http_api_event(method: &str, path: &str, body: &str, base64: bool) -> String {
    serde_json::json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc", "domainName": "abc.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "box"},
            "requestId": "id", "routeKey": format!("{method} {path}"), "stage": "$default",
            "time": "03/Sep/2021:18:14:49 +0000", "timeEpoch": 1630692889000u64
        },
        "body": body,
        "isBase64Encoded": base64
    })
    .to_string()
}

/// A `MakeWriter` target collecting everything a test subscriber writes.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_string).collect()
    }
}

/// Installs the functions' own subscriber (`sensor_lambda::observability::logging`) for this
/// thread, writing into a [`Capture`]; logs stop being captured when the guard drops.
pub fn capture_logs(
    settings: &sensor_lambda::observability::logging::LogSettings,
) -> (Capture, lambda_http::tracing::dispatcher::DefaultGuard) {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber =
        sensor_lambda::observability::logging::subscriber(settings, move || writer.clone());
    // Through lambda_http's re-export: `tests/` includes this module and has no `tracing`.
    let dispatch = lambda_http::tracing::Dispatch::new(subscriber);
    (
        capture,
        lambda_http::tracing::dispatcher::set_default(&dispatch),
    )
}
