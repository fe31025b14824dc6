//! The Lambda handler: built once per cold start, then called per event. Accepts API
//! Gateway REST (v1), HTTP API (v2), Function URL events and direct invokes.

use crate::observability::emf::{MetricsSink, MetricsWriter, RequestCounts, StreamCounts};
use crate::observability::request;
use crate::request::{parse_body, rule_envelope, Payload, RequestError, Sender};
use crate::response::Reply;
use crate::settings::{IngestSettings, SettingsError};
use crate::stream;
use aws_lambda_events::event::kinesis::KinesisEvent;
use futures_util::StreamExt;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use sensor_aws::opensearch::OpenSearchInitError;
use sensor_aws::{sdk_config, IotPublisher, IotRegistry, OpenSearchIndexer, ShadowAlarmStore};
use sensor_core::binding::{Binding, BindingError};
use sensor_core::downstream::DownstreamStats;
use sensor_core::pipeline::Outcome;
use sensor_core::pipeline::{Pipeline, Sent};
use sensor_core::ports::{
    AlarmStore, Indexer, MemoryAlarmStore, MemoryRegistry, Publisher, Registry,
};
use sensor_model::document::DocId;
use sensor_model::domain::group_id::GroupId;
use sensor_model::domain::sensor::Sensor;
use sensor_model::domain::thing_name::ThingName;
use sensor_model::ValidationError;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use tracing::Instrument;

/// Time budget when the event carries no Lambda deadline (tests, local servers).
const DEFAULT_BUDGET: Duration = Duration::from_secs(10);
/// 2001-09-09 in epoch milliseconds: smaller deadlines are relative budgets.
const EPOCH_MS_2001: u64 = 1_000_000_000_000;
/// Lambda's longest timeout.
const MAX_BUDGET: Duration = Duration::from_secs(900);
/// Kept back from the Lambda deadline to write the 503 before the function times out.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);
/// Registry lookups in flight at once for a stream batch's boxes (a cold instance meeting
/// a batch from a thousand boxes asks a few at a time, not a thousand at once).
const REGISTRY_LOOKUPS_IN_FLIGHT: usize = 16;

pub struct App<P = IotPublisher, I = OpenSearchIndexer, A = ShadowAlarmStore, R = IotRegistry> {
    pipeline: Pipeline<P, I, A>,
    /// Which group each box may write (the registry, cached per warm instance).
    binding: Binding<R>,
    /// `LEGACY_KEY_ROUTES`: take readings that name no box.
    legacy_key_routes: bool,
    metrics: MetricsWriter,
}

/// Why a function could not start: its settings, or a client it builds from them.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    OpenSearch(#[from] OpenSearchInitError),
}

/// A downstream failure on a direct invoke: reported as a function error, so the
/// invoker's retry and error-action machinery takes over.
#[derive(Debug)]
pub struct DownstreamFailure(pub String);

impl std::fmt::Display for DownstreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DownstreamFailure {}

impl App {
    /// Settings from the environment and the real AWS clients.
    pub async fn from_env(sensor: Sensor) -> Result<App, InitError> {
        App::from_settings(IngestSettings::from_env(sensor)?).await
    }

    pub async fn from_settings(settings: IngestSettings) -> Result<App, InitError> {
        let sdk_config = sdk_config(&settings.aws);
        let publisher = IotPublisher::new(&sdk_config, settings.iot_endpoint.as_str());
        let indexer = OpenSearchIndexer::new(&settings.opensearch, &sdk_config)?;
        let alarms = ShadowAlarmStore::new(
            publisher.client().clone(),
            settings.alarm_state.thing.clone(),
            settings.alarm_state.shadow.clone(),
        );
        let registry = IotRegistry::new(
            &sdk_config,
            settings.registry.endpoint.as_ref().map(|url| url.as_str()),
        );
        Ok(App::from_parts(
            &settings,
            Pipeline::new(&settings.pipeline, publisher, indexer).with_alarm_store(alarms),
        )
        .with_registry(registry))
    }
}

impl<P: Publisher, I: Indexer> App<P, I, MemoryAlarmStore, MemoryRegistry> {
    /// With in-process alarm state (tests, benchmarks).
    pub fn new(settings: &IngestSettings, publisher: P, indexer: I) -> Self {
        App::from_parts(
            settings,
            Pipeline::new(&settings.pipeline, publisher, indexer),
        )
    }
}

impl<P: Publisher, I: Indexer, A: AlarmStore> App<P, I, A, MemoryRegistry> {
    /// Metrics in the default namespace, the sensor's name as the function; an empty
    /// registry (every box unknown) and the shared-key routes off until configured.
    pub fn from_pipeline(pipeline: Pipeline<P, I, A>) -> Self {
        let sensor = pipeline.sensor();
        App {
            pipeline,
            binding: Binding::new(MemoryRegistry::default(), sensor_core::binding::DEFAULT_TTL),
            legacy_key_routes: false,
            metrics: MetricsWriter::new(Default::default(), sensor.name(), sensor),
        }
    }

    /// The pipeline with the settings' metrics namespace, function name, registry cache
    /// and legacy routes; an empty registry until [`App::with_registry`].
    pub fn from_parts(settings: &IngestSettings, pipeline: Pipeline<P, I, A>) -> Self {
        App {
            pipeline,
            binding: Binding::new(MemoryRegistry::default(), settings.registry.cache_ttl),
            legacy_key_routes: settings.legacy_key_routes,
            metrics: MetricsWriter::new(
                settings.metrics_namespace.clone(),
                settings.function_name.as_str(),
                settings.sensor(),
            ),
        }
    }
}

impl<P: Publisher, I: Indexer, A: AlarmStore, R: Registry> App<P, I, A, R> {
    /// The same app asking `registry` which group a box belongs to (same cache TTL and
    /// retry policy).
    pub fn with_registry<S: Registry>(self, registry: S) -> App<P, I, A, S> {
        App {
            pipeline: self.pipeline,
            binding: self.binding.with_registry(registry),
            legacy_key_routes: self.legacy_key_routes,
            metrics: self.metrics,
        }
    }

    /// Takes (or refuses) readings from the shared-key routes.
    pub fn with_legacy_key_routes(mut self, on: bool) -> Self {
        self.legacy_key_routes = on;
        self
    }

    pub fn binding(&self) -> &Binding<R> {
        &self.binding
    }

    /// Sends the EMF lines elsewhere than stdout (tests).
    pub fn with_metrics_sink(mut self, sink: MetricsSink) -> Self {
        self.metrics = self.metrics.with_sink(sink);
        self
    }

    pub fn pipeline(&self) -> &Pipeline<P, I, A> {
        &self.pipeline
    }

    /// The HTTP answer for any request; never fails, never panics.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let reply = self.observed(&request, self.reply(&request)).await;
        reply.to_response()
    }

    /// What the runtime calls: like `handle`, but a direct invoke whose readings could
    /// not be stored becomes a function error (its reply has no status code).
    pub async fn invoke(&self, request: Request) -> Result<Response<Body>, lambda_http::Error> {
        let reply = self.observed(&request, self.reply(&request)).await;
        let direct = matches!(
            request.request_context_ref(),
            Some(RequestContext::PassThrough)
        );
        if direct && reply.retry_after.is_some() {
            return Err(Box::new(DownstreamFailure(format!(
                "readings not stored, retry: {}",
                reply.body
            ))));
        }
        Ok(reply.to_response())
    }

    /// A request rejected before the handler saw it (the runtime's base64 guard), logged
    /// and counted like any other.
    pub async fn reject(&self, request: &Request, reply: Reply, error: &'static str) -> Reply {
        let work = async {
            tracing::info!(error, "request rejected");
            (reply, Vec::new())
        };
        self.observed(request, work).await
    }

    /// Runs `work` inside the request span with the request's downstream counters, then
    /// writes the summary line and the EMF metrics.
    async fn observed(
        &self,
        request: &Request,
        work: impl std::future::Future<Output = (Reply, Vec<Outcome>)>,
    ) -> Reply {
        let started = Instant::now();
        let (request_id, api_request_id) = request_ids(request);
        let xray_trace_id = request
            .lambda_context_ref()
            .and_then(|c| c.xray_trace_id.as_deref());
        let span = request::request_span(
            &request_id,
            api_request_id.as_deref(),
            xray_trace_id,
            self.metrics.function(),
            self.pipeline.sensor(),
        );
        let stats = Arc::new(DownstreamStats::default());
        let (reply, outcomes) = DownstreamStats::scope(stats.clone(), work)
            .instrument(span.clone())
            .await;
        span.in_scope(|| {
            request::finish(
                &self.metrics,
                &request_id,
                reply.status,
                RequestCounts {
                    stream: reply.stream,
                    ..RequestCounts::of(&outcomes)
                },
                &stats,
                started,
            )
        });
        reply
    }

    async fn reply(&self, request: &Request) -> (Reply, Vec<Outcome>) {
        if request.method() != lambda_http::http::Method::POST {
            let e = RequestError::MethodNotAllowed(request.method().to_string());
            tracing::info!(error = e_kind(&e), "request rejected");
            return (Reply::from_request_error(&e), Vec::new());
        }
        let rejected = |e: RequestError| {
            tracing::info!(sensor = %self.pipeline.sensor(), error = e_kind(&e), "request rejected");
            (Reply::from_request_error(&e), Vec::new())
        };
        if is_direct(request) {
            match stream::kinesis_event(request.body().as_ref()) {
                // Boxed: the HTTP path's future does not carry the batch's state.
                Some(Ok(event)) => {
                    return Box::pin(self.consume(&event, deadline_of(request))).await
                }
                Some(Err(e)) => return rejected(e),
                None => {}
            }
        }
        let (sender, body) = match self.sender(request) {
            Ok(sent) => sent,
            Err(e) => return rejected(e),
        };
        let payload = match parse_body(&body) {
            Ok(p) => p,
            Err(e) => return rejected(e),
        };
        let deadline = deadline_of(request);
        let bound = match &sender {
            Sender::Box(thing) => match self.binding.group_of(thing, deadline).await {
                Ok(group) => Some((thing, group)),
                Err(BindingError::Refused(e)) => {
                    tracing::warn!(sensor = %self.pipeline.sensor(), %thing, reason = e.message(), "box refused");
                    return (Reply::forbidden(&e), Vec::new());
                }
                Err(BindingError::Unavailable(e)) => {
                    tracing::warn!(sensor = %self.pipeline.sensor(), %thing, reason = %e, "registry unavailable");
                    return (Reply::unavailable(e.reason()), Vec::new());
                }
            },
            Sender::SharedKey | Sender::Operator => None,
        };
        let sender = bound.as_ref().map(|(thing, group)| (*thing, group));
        match payload {
            Payload::Single(value) => {
                let reading = self.pipeline.validate(value);
                match &reading {
                    Ok(r) => request::record_reading(
                        Some(r.group().as_str()),
                        Some(DocId::of(r).as_str()),
                    ),
                    Err(e) => {
                        tracing::info!(sensor = %self.pipeline.sensor(), field = e.field(), "invalid reading")
                    }
                }
                let outcomes = self
                    .pipeline
                    .ingest_from(sender, vec![reading], deadline)
                    .await;
                let reply = match outcomes.first() {
                    Some(outcome) => Reply::single(outcome),
                    None => Reply::batch(&outcomes),
                };
                (reply, outcomes)
            }
            Payload::Batch(items) => {
                let readings: Vec<_> = items
                    .into_iter()
                    .map(|v| self.pipeline.validate(v))
                    .collect();
                request::record_reading(common_group(&readings), None);
                let outcomes = self.pipeline.ingest_from(sender, readings, deadline).await;
                (Reply::batch(&outcomes), outcomes)
            }
        }
    }

    /// A batch from the stream's event source mapping: every record's readings through one
    /// pipeline call (so a group's alarm state is read and written once per batch, and the
    /// documents go out as size-bounded bulks), answered with the records to retry.
    async fn consume(&self, event: &KinesisEvent, deadline: Instant) -> (Reply, Vec<Outcome>) {
        let sensor = self.pipeline.sensor();
        let records = stream::decode(event, sensor);
        // The distinct boxes of the batch, each looked up once (cached when warm).
        let mut things: Vec<ThingName> = Vec::new();
        for record in &records {
            if let Ok((thing, _)) = &record.content {
                if !things.contains(thing) {
                    things.push(thing.clone());
                }
            }
        }
        // Built first, then polled: a `map` closure inside the stream would make the
        // handler's future fail the runtime's `Send` bound (rust-lang/rust#64552).
        let lookups: Vec<_> = things
            .iter()
            .map(|thing| self.binding.group_of(thing, deadline))
            .collect();
        let bindings: Vec<Result<GroupId, BindingError>> = futures_util::stream::iter(lookups)
            .buffered(REGISTRY_LOOKUPS_IN_FLIGHT)
            .collect()
            .await;
        let mut readings = Vec::new();
        let mut sequences: Vec<String> = Vec::with_capacity(records.len());
        let mut failed: Vec<bool> = vec![false; records.len()];
        let mut dropped = 0u32;
        for (r, record) in records.into_iter().enumerate() {
            let sequence = record.sequence;
            match record.content {
                Err(reason) => {
                    dropped += 1;
                    tracing::warn!(%sensor, sequence = %sequence, kind = reason.kind, reason = %reason.message, "stream record dropped");
                }
                Ok((thing, payload)) => {
                    let t = things.iter().position(|known| *known == thing).unwrap_or(0);
                    match &bindings[t] {
                        Ok(group) => {
                            let values = match payload {
                                Payload::Single(value) => vec![value],
                                Payload::Batch(items) => items,
                            };
                            for value in values {
                                readings.push(Sent {
                                    message: r,
                                    sender: Some((&things[t], group)),
                                    reading: self.pipeline.validate(value),
                                });
                            }
                        }
                        Err(BindingError::Refused(e)) => {
                            dropped += 1;
                            tracing::warn!(%sensor, sequence = %sequence, %thing, reason = e.message(), "stream record dropped: box refused");
                        }
                        Err(BindingError::Unavailable(e)) => {
                            failed[r] = true;
                            tracing::warn!(%sensor, sequence = %sequence, %thing, reason = %e, "registry unavailable; record retried");
                        }
                    }
                }
            }
            sequences.push(sequence);
        }
        // The record each reading came in, for the readings the pipeline takes.
        let owners: Vec<usize> = readings.iter().map(|sent| sent.message).collect();
        let outcomes = self.pipeline.ingest_stream_batch(readings, deadline).await;
        for (outcome, &r) in outcomes.iter().zip(&owners) {
            if matches!(outcome, Outcome::Unavailable { .. }) {
                failed[r] = true;
            }
        }
        let failures: Vec<&str> = sequences
            .iter()
            .zip(&failed)
            .filter(|(_, failed)| **failed)
            .map(|(sequence, _)| sequence.as_str())
            .collect();
        tracing::info!(%sensor, records = sequences.len(), readings = outcomes.len(), dropped, retried = failures.len(), "stream batch");
        let reply = Reply {
            // Logged and counted as unavailable when anything is retried; the mapping
            // reads only the body.
            status: if failures.is_empty() { 200 } else { 503 },
            body: stream::response(&failures),
            retry_after: None,
            stream: Some(StreamCounts {
                records: u32::try_from(sequences.len()).unwrap_or(u32::MAX),
                dropped,
                retried: u32::try_from(failures.len()).unwrap_or(u32::MAX),
            }),
        };
        (reply, outcomes)
    }

    /// Who sent the request, and the body its readings are in: the data rules' envelope
    /// names the box (MQTT), so does an IAM-authorized path (`/things/{thing}/<sensor>`);
    /// a shared-key route names none and is refused unless `LEGACY_KEY_ROUTES` is on.
    fn sender<'r>(&self, request: &'r Request) -> Result<(Sender, Cow<'r, [u8]>), RequestError> {
        let body = request.body().as_ref();
        if is_direct(request) {
            return match rule_envelope(body) {
                Some(envelope) => {
                    let (thing, payload) = envelope?;
                    Ok((Sender::Box(thing), Cow::Owned(payload)))
                }
                None => Ok((Sender::Operator, Cow::Borrowed(body))),
            };
        }
        if let Some(thing) = request.path_parameters_ref().and_then(|p| p.first("thing")) {
            let thing = ThingName::parse(thing).map_err(RequestError::Forbidden)?;
            return Ok((Sender::Box(thing), Cow::Borrowed(body)));
        }
        if !self.legacy_key_routes {
            return Err(RequestError::Forbidden(ValidationError::new(
                "thing",
                format!(
                    "this API takes readings only from boxes that name themselves: POST /things/{{thing}}/{} signed with the box's credentials, or MQTT; the shared-key route is off (stack parameter LegacyKeyRoutes)",
                    self.pipeline.sensor()
                ),
            )));
        }
        Ok((Sender::SharedKey, Cow::Borrowed(body)))
    }
}

/// A direct invoke (the IoT rules, the stream's event source mapping, an operator), not
/// an API Gateway or Function URL request.
fn is_direct(request: &Request) -> bool {
    matches!(
        request.request_context_ref(),
        Some(RequestContext::PassThrough) | None
    )
}

/// The group of a batch whose valid readings all come from one box (the usual case).
fn common_group(
    readings: &[Result<sensor_model::Reading, sensor_model::ValidationError>],
) -> Option<&str> {
    let mut groups = readings.iter().flatten().map(|r| r.group().as_str());
    let first = groups.next()?;
    groups.all(|g| g == first).then_some(first)
}

/// Lambda's request id (from the invocation) and API Gateway's (from the event), when
/// there are any; `-` stands for a missing Lambda id (direct calls in tests).
fn request_ids(request: &Request) -> (String, Option<String>) {
    let lambda = request
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .filter(|id| !id.is_empty());
    let api = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(c)) => c.request_id.clone(),
        Some(RequestContext::ApiGatewayV2(c)) => c.request_id.clone(),
        _ => None,
    };
    (lambda.unwrap_or_else(|| "-".into()), api)
}

fn e_kind(e: &RequestError) -> &'static str {
    match e {
        RequestError::MethodNotAllowed(_) => "method_not_allowed",
        RequestError::TooLarge(_) => "payload_too_large",
        RequestError::Invalid(_) => "invalid_body",
        RequestError::Forbidden(_) => "forbidden",
    }
}

/// The Lambda deadline minus a margin, or a default budget outside Lambda.
fn deadline_of(request: &Request) -> Instant {
    let now = Instant::now();
    let Some(context) = request.lambda_context_ref() else {
        return now + DEFAULT_BUDGET;
    };
    if context.deadline == 0 {
        return now + DEFAULT_BUDGET;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    // AWS sends epoch milliseconds; `cargo lambda watch` sends its timeout as a relative
    // budget (e.g. 600000). Anything before 2001 cannot be an epoch deadline.
    let left = if context.deadline < EPOCH_MS_2001 {
        u128::from(context.deadline)
    } else {
        u128::from(context.deadline).saturating_sub(now_ms)
    };
    // Lambda runs at most 15 minutes; a bogus far-future deadline must not overflow.
    let left = Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX)).min(MAX_BUDGET);
    now + left.saturating_sub(DEADLINE_MARGIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::Context;

    fn request_with_deadline(deadline_ms: u64) -> Request {
        let mut context = Context::default();
        context.deadline = deadline_ms;
        lambda_http::http::Request::builder()
            .method("POST")
            .body(Body::Empty)
            .map(|r| r.with_lambda_context(context))
            .unwrap()
    }

    fn epoch_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    #[test]
    fn deadline_comes_from_the_lambda_context_minus_a_margin() {
        let before = Instant::now();
        let deadline = deadline_of(&request_with_deadline(epoch_ms() + 3_000));
        let budget = deadline - before;
        assert!(budget <= Duration::from_millis(2_510), "{budget:?}");
        assert!(budget >= Duration::from_millis(2_300), "{budget:?}");
    }

    #[test]
    fn a_small_deadline_is_a_relative_budget_as_cargo_lambda_watch_sends_it() {
        let before = Instant::now();
        let budget = deadline_of(&request_with_deadline(600_000)) - before;
        assert!(budget >= Duration::from_millis(599_000), "{budget:?}");
        assert!(budget <= Duration::from_millis(600_000), "{budget:?}");
    }

    #[test]
    fn missing_past_or_absurd_deadlines_are_safe() {
        let now = Instant::now();
        assert!(deadline_of(&request_with_deadline(0)) >= now + DEFAULT_BUDGET);
        let past = epoch_ms() - 1_000;
        assert!(deadline_of(&request_with_deadline(past)) <= Instant::now());
        assert!(deadline_of(&request_with_deadline(u64::MAX)) <= Instant::now() + MAX_BUDGET);
    }
}
