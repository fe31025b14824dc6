//! The request span (every line of a request carries its ids) and the per-request summary
//! line and metrics.

use super::emf::{MetricsWriter, RequestCounts, RequestMetrics};
use sensor_core::downstream::{DownstreamStats, Target};
use sensor_model::domain::sensor::Sensor;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::Span;

/// The first request of the process is its cold start.
static WARM: AtomicBool = AtomicBool::new(false);

fn take_cold_start() -> bool {
    !WARM.swap(true, Ordering::Relaxed)
}

/// The span of one request: `requestId` (Lambda's), `apiRequestId` (API Gateway's, as in
/// the access log) and `xrayTraceId` when there are, `function`, `sensor`; `groupid` and `documentId` are
/// recorded once known ([`record_reading`]).
pub fn request_span(
    request_id: &str,
    api_request_id: Option<&str>,
    xray_trace_id: Option<&str>,
    function: &str,
    sensor: Sensor,
) -> Span {
    tracing::info_span!(
        "request",
        requestId = request_id,
        apiRequestId = api_request_id,
        xrayTraceId = xray_trace_id,
        function = function,
        sensor = sensor.name(),
        groupid = Empty,
        documentId = Empty,
    )
}

/// Records the reading's group and document id on the current request span.
pub fn record_reading(groupid: Option<&str>, document_id: Option<&str>) {
    let span = Span::current();
    if let Some(groupid) = groupid {
        span.record("groupid", groupid);
    }
    if let Some(id) = document_id {
        span.record("documentId", id);
    }
}

/// How a request ended, for the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// 200: every valid reading stored (some may have been invalid in a batch).
    Ok,
    /// 4xx for the whole request (bad body, method, size, an invalid single reading).
    Rejected,
    /// 503: some reading must be resent.
    Unavailable,
}

impl RequestOutcome {
    pub fn of_status(status: u16) -> RequestOutcome {
        match status {
            200..=299 => RequestOutcome::Ok,
            503 => RequestOutcome::Unavailable,
            _ => RequestOutcome::Rejected,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::Rejected => "rejected",
            RequestOutcome::Unavailable => "unavailable",
        }
    }
}

/// The summary of a finished request: one log line (inside the request span) and its
/// EMF line(s).
pub fn finish(
    metrics: &MetricsWriter,
    request_id: &str,
    status: u16,
    counts: RequestCounts,
    downstream: &DownstreamStats,
    started: Instant,
) {
    let outcome = RequestOutcome::of_status(status);
    let cold_start = take_cold_start();
    let iot = downstream.summary(Target::Iot);
    let opensearch = downstream.summary(Target::OpenSearch);
    tracing::info!(
        outcome = outcome.name(),
        status,
        stored = counts.stored,
        duplicate = counts.duplicate,
        invalid = counts.invalid,
        retry = counts.retry,
        rejected = counts.rejected,
        forbidden = counts.forbidden,
        warnings = counts.warnings,
        retries = iot.retries + opensearch.retries,
        failures = iot.failures + opensearch.failures,
        downstream_ms = round_ms(downstream.busy_ms()),
        publish_ms = round_ms(iot.busy_ms),
        index_ms = round_ms(opensearch.busy_ms),
        duration_ms = round_ms(started.elapsed().as_secs_f64() * 1000.0),
        cold_start,
        "request done"
    );
    metrics.write(
        request_id,
        &RequestMetrics {
            counts,
            unavailable: outcome == RequestOutcome::Unavailable,
            cold_start,
            downstream,
        },
    );
}

fn round_ms(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_follows_the_status() {
        assert_eq!(RequestOutcome::of_status(200), RequestOutcome::Ok);
        assert_eq!(RequestOutcome::of_status(503), RequestOutcome::Unavailable);
        for status in [400, 405, 413, 500] {
            assert_eq!(RequestOutcome::of_status(status), RequestOutcome::Rejected);
        }
    }
}
