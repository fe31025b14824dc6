//! Per-request downstream counters: calls, retries, failures and the time spent waiting on
//! IoT Core, OpenSearch and the alarm state. The retry loops ([`crate::retry`]) report into them with one-line hooks
//! ([`timed`], [`retried`], [`failed`]); [`DownstreamStats::scope`] makes a request's
//! counters current for the request's future. Outside a scope (benchmarks, unit tests of
//! the pipeline) the hooks do nothing.
//!
//! Why a task-local and not a parameter: the counters are an observation of the retry
//! loops, not an input of the pipeline; threading them through every signature would
//! change the pipeline's API for every caller. Concurrent requests in one process (Lambda
//! Managed Instances) each have their own scope, so counts never mix.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// A downstream service the pipeline calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// IoT Core data plane (warnings and acknowledgements).
    Iot,
    /// OpenSearch `_bulk` and `_search`.
    OpenSearch,
    /// The groups' alarm state (a named IoT shadow per group).
    AlarmState,
    /// The IoT registry (thing -> group), on a cache miss.
    Registry,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::Iot,
        Target::OpenSearch,
        Target::AlarmState,
        Target::Registry,
    ];

    /// The value of the `target` metric dimension and log field.
    pub fn name(self) -> &'static str {
        match self {
            Target::Iot => "iot",
            Target::OpenSearch => "opensearch",
            Target::AlarmState => "alarm_state",
            Target::Registry => "registry",
        }
    }

    fn index(self) -> usize {
        match self {
            Target::Iot => 0,
            Target::OpenSearch => 1,
            Target::AlarmState => 2,
            Target::Registry => 3,
        }
    }
}

tokio::task_local! {
    static CURRENT: Arc<DownstreamStats>;
}

/// Counters of one request, per target.
#[derive(Debug)]
pub struct DownstreamStats {
    started: Instant,
    targets: [TargetCounters; 4],
}

#[derive(Debug, Default)]
struct TargetCounters {
    calls: AtomicU32,
    retries: AtomicU32,
    failures: AtomicU32,
    /// Microseconds since `started` of the first call's start, +1 (0 = no call yet).
    first_start: AtomicU64,
    /// Microseconds since `started` of the last call's end.
    last_end: AtomicU64,
}

/// What a request made of one target, read after the request.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TargetSummary {
    pub calls: u32,
    pub retries: u32,
    pub failures: u32,
    /// From the first call's start to the last call's end, backoff waits included: how
    /// long this target held the request up. Zero when it was not called.
    pub busy_ms: f64,
}

impl Default for DownstreamStats {
    fn default() -> Self {
        DownstreamStats {
            started: Instant::now(),
            targets: Default::default(),
        }
    }
}

impl DownstreamStats {
    /// Runs `work` with `stats` as the current request's counters.
    pub async fn scope<F: Future>(stats: Arc<DownstreamStats>, work: F) -> F::Output {
        CURRENT.scope(stats, work).await
    }

    pub fn summary(&self, target: Target) -> TargetSummary {
        let c = &self.targets[target.index()];
        let first = c.first_start.load(Ordering::Relaxed);
        let busy_us = if first == 0 {
            0
        } else {
            c.last_end.load(Ordering::Relaxed).saturating_sub(first - 1)
        };
        TargetSummary {
            calls: c.calls.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            busy_ms: busy_us as f64 / 1000.0,
        }
    }

    /// From the first call to any target to the last call's end.
    pub fn busy_ms(&self) -> f64 {
        let firsts = self
            .targets
            .iter()
            .map(|c| c.first_start.load(Ordering::Relaxed))
            .filter(|&f| f != 0);
        let Some(first) = firsts.min() else {
            return 0.0;
        };
        let last = self
            .targets
            .iter()
            .map(|c| c.last_end.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        last.saturating_sub(first - 1) as f64 / 1000.0
    }

    fn micros_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_micros()).unwrap_or(u64::MAX)
    }
}

fn with_current(f: impl FnOnce(&DownstreamStats)) {
    let _ = CURRENT.try_with(|stats| f(stats));
}

/// Awaits one call to `target`, counting it and its time.
pub async fn timed<F: Future>(target: Target, call: F) -> F::Output {
    let start = Instant::now();
    let output = call.await;
    let end = Instant::now();
    with_current(|stats| {
        let c = &stats.targets[target.index()];
        c.calls.fetch_add(1, Ordering::Relaxed);
        let start = stats.micros_since_start(start).saturating_add(1);
        // fetch_update keeps the smallest start; first_start 0 means "none yet".
        let _ = c
            .first_start
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                (old == 0 || start < old).then_some(start)
            });
        c.last_end
            .fetch_max(stats.micros_since_start(end), Ordering::Relaxed);
    });
    output
}

/// A failed call to `target` is about to be tried again.
pub fn retried(target: Target) {
    with_current(|stats| {
        stats.targets[target.index()]
            .retries
            .fetch_add(1, Ordering::Relaxed);
    });
}

/// `count` operations on `target` gave up (retries spent, deadline, or a permanent error).
pub fn failed(target: Target, count: usize) {
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    with_current(|stats| {
        stats.targets[target.index()]
            .failures
            .fetch_add(count, Ordering::Relaxed);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn hooks_count_into_the_current_scope_only() {
        let stats = Arc::new(DownstreamStats::default());
        // Outside a scope: nothing recorded, nothing fails.
        timed(Target::Iot, async {}).await;
        retried(Target::Iot);
        failed(Target::Iot, 1);
        DownstreamStats::scope(stats.clone(), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            timed(Target::Iot, tokio::time::sleep(Duration::from_millis(20))).await;
            retried(Target::Iot);
            timed(Target::Iot, tokio::time::sleep(Duration::from_millis(5))).await;
            failed(Target::OpenSearch, 3);
        })
        .await;
        let iot = stats.summary(Target::Iot);
        assert_eq!((iot.calls, iot.retries, iot.failures), (2, 1, 0));
        assert!((iot.busy_ms - 25.0).abs() < 0.01, "{iot:?}");
        let os = stats.summary(Target::OpenSearch);
        assert_eq!((os.calls, os.failures, os.busy_ms), (0, 3, 0.0));
        assert!((stats.busy_ms() - 25.0).abs() < 0.01);
    }

    #[tokio::test(start_paused = true)]
    async fn busy_time_spans_concurrent_calls_once() {
        let stats = Arc::new(DownstreamStats::default());
        DownstreamStats::scope(stats.clone(), async {
            tokio::join!(
                timed(Target::Iot, tokio::time::sleep(Duration::from_millis(30))),
                timed(
                    Target::OpenSearch,
                    tokio::time::sleep(Duration::from_millis(40))
                ),
                timed(Target::Iot, tokio::time::sleep(Duration::from_millis(10))),
            );
        })
        .await;
        assert!((stats.summary(Target::Iot).busy_ms - 30.0).abs() < 0.01);
        assert!((stats.busy_ms() - 40.0).abs() < 0.01);
        assert_eq!(DownstreamStats::default().busy_ms(), 0.0);
    }
}
