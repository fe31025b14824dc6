//! The one retry mechanism every downstream call goes through (ingest, alarms, no-data,
//! query): exponential backoff with full jitter, a per-attempt timeout, never past a
//! deadline taken from the Lambda context (so the function answers before its own
//! timeout), retryable vs permanent errors, and the per-request counters of
//! [`crate::downstream`]. Also the one conditional-update loop for a group's alarm state
//! ([`update_alarm_state`]), with its cap on lost races.
//!
//! Architecture Invariant: no other module sleeps, times out or loops on a downstream
//! error; they call [`call`], or [`Backoff::attempt`] and [`Backoff::retry_after`] when
//! the retry is per item (the bulk index).

use crate::downstream::{self, Target};
use crate::ports::{AlarmStore, DownstreamError, StoreOutcome, Versioned};
use sensor_model::alarms::state::GroupAlarms;
use sensor_model::domain::group_id::GroupId;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Upper bound for one attempt (also bounded by the time left).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The same backoff, retried until the deadline rather than for a few attempts: for a
    /// stream batch, where nobody waits on the answer and every retry the event source
    /// mapping makes instead is one of a bounded few (`MaximumRetryAttempts`), so an
    /// outage of a minute is ridden out inside the invocation, not spent in seconds.
    pub fn until_deadline(self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: u32::MAX,
            ..self
        }
    }
}

/// Lost races for one group's state before the update gives up (retryable). Each lost
/// race means another writer committed, so this bounds contention, not failures.
pub const MAX_STATE_CONFLICTS: u32 = 32;

/// The retry state of one operation.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    deadline: Instant,
    attempts: u32,
}

impl Backoff {
    pub fn new(policy: RetryPolicy, deadline: Instant) -> Backoff {
        Backoff {
            policy,
            deadline,
            attempts: 0,
        }
    }

    /// Time allowed for the next attempt, or `None` when the deadline has passed.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now())?;
        (!left.is_zero()).then(|| left.min(self.policy.attempt_timeout))
    }

    /// Runs one attempt under the attempt timeout, timed against `target`'s counters;
    /// `what` names the call in the timeout's error.
    pub async fn attempt<T>(
        &self,
        target: Target,
        what: &str,
        call: impl Future<Output = Result<T, DownstreamError>>,
    ) -> Result<T, DownstreamError> {
        match self.attempt_timeout() {
            None => Err(DownstreamError::Retryable("deadline reached".into())),
            // Boxed: an SDK call's future is deep, and every caller's future holds this
            // one; a box keeps the whole request's future within the compiler's layout
            // depth limit (one allocation per attempt, next to a network round trip).
            Some(limit) => downstream::timed(target, tokio::time::timeout(limit, Box::pin(call)))
                .await
                .unwrap_or_else(|_| {
                    Err(DownstreamError::Retryable(format!(
                        "{what} timed out after {limit:?}"
                    )))
                }),
        }
    }

    /// After a failed attempt: `true` when another attempt follows (after the jittered
    /// sleep, counted as a retry of `target`); `false` when `error` is permanent or the
    /// budget or deadline is spent. Logs either way; counting the give-up is the
    /// caller's (it knows how many items failed).
    pub async fn retry_after(
        &mut self,
        target: Target,
        what: &str,
        error: &DownstreamError,
    ) -> bool {
        if !error.is_retryable() {
            tracing::error!(target = target.name(), what, reason = %error, "rejected, not retried");
            return false;
        }
        tracing::warn!(target = target.name(), what, attempt = self.attempts + 1, reason = %error, "failed");
        if !self.wait_before_retry().await {
            return false;
        }
        downstream::retried(target);
        true
    }

    /// Records a failed attempt and sleeps before the next one. `false` when no attempt
    /// is left: the budget is spent or the sleep would end past the deadline.
    pub async fn wait_before_retry(&mut self) -> bool {
        self.attempts += 1;
        if self.attempts >= self.policy.max_attempts {
            return false;
        }
        let delay = self.next_delay();
        let wake = Instant::now() + delay;
        // Leave room for one useful attempt after the sleep.
        if wake + Duration::from_millis(50) >= self.deadline {
            return false;
        }
        tokio::time::sleep_until(wake).await;
        true
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Full jitter: uniform in [0, min(max_delay, base * 2^attempt)].
    fn next_delay(&self) -> Duration {
        let exp = self
            .policy
            .base_delay
            .saturating_mul(1u32 << self.attempts.min(20))
            .min(self.policy.max_delay);
        let millis = u64::try_from(exp.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=millis))
    }
}

/// One downstream operation, retried under `policy` until `deadline`: the value, or the
/// error it gave up on (counted as one failure of `target`).
pub async fn call<T, F, Fut>(
    policy: RetryPolicy,
    deadline: Instant,
    target: Target,
    what: &str,
    mut operation: F,
) -> Result<T, DownstreamError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DownstreamError>>,
{
    let mut backoff = Backoff::new(policy, deadline);
    loop {
        let error = match backoff.attempt(target, what, operation()).await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if !backoff.retry_after(target, what, &error).await {
            downstream::failed(target, 1);
            return Err(error);
        }
    }
}

/// What a change makes of the state it was given.
pub enum Change<R> {
    /// Nothing to write; the update ends with `R`.
    Unchanged(R),
    /// Write this state (conditional on the version read); the update ends with `R` once
    /// it is committed.
    Write(GroupAlarms, R),
}

/// The result of [`update_alarm_state`]: the change's value and the state now committed.
pub struct Updated<R> {
    pub value: R,
    pub current: Versioned,
}

/// Read, change, write conditional on the version read; a lost race (another writer
/// committed first) reads again and recomputes, up to [`MAX_STATE_CONFLICTS`] times.
/// `known` is a state already read (a warm instance's cache): the first attempt starts
/// from it, and a stale copy costs one conflict, never a wrong write. Store errors retry
/// under `policy`; a permanent one ends the update.
pub async fn update_alarm_state<S: AlarmStore, R>(
    store: &S,
    group: &GroupId,
    known: Option<Versioned>,
    policy: RetryPolicy,
    deadline: Instant,
    mut change: impl FnMut(&GroupAlarms) -> Change<R>,
) -> Result<Updated<R>, DownstreamError> {
    let target = Target::AlarmState;
    let mut backoff = Backoff::new(policy, deadline);
    let mut conflicts = 0u32;
    let mut known = known;
    loop {
        let read = match known.take() {
            Some(read) => Ok(read),
            None => {
                backoff
                    .attempt(target, "alarm state read", store.load(group))
                    .await
            }
        };
        let error = match read.map(|read| (change(&read.state), read)) {
            Ok((Change::Unchanged(value), read)) => {
                return Ok(Updated {
                    value,
                    current: read,
                })
            }
            Ok((Change::Write(state, value), read)) => {
                let stored = backoff
                    .attempt(
                        target,
                        "alarm state write",
                        store.store(group, &state, read.version),
                    )
                    .await;
                match stored {
                    Ok(StoreOutcome::Stored(version)) => {
                        return Ok(Updated {
                            value,
                            current: Versioned {
                                state,
                                version: Some(version),
                            },
                        })
                    }
                    Ok(StoreOutcome::Conflict) => {
                        conflicts += 1;
                        if conflicts >= MAX_STATE_CONFLICTS {
                            downstream::failed(target, 1);
                            return Err(DownstreamError::Retryable(format!(
                                "alarm state of group {} changed under {conflicts} attempts",
                                group.as_str()
                            )));
                        }
                        if backoff.attempt_timeout().is_none() {
                            downstream::failed(target, 1);
                            return Err(DownstreamError::Retryable("deadline reached".into()));
                        }
                        // Another writer committed first: read its state and recompute,
                        // after a short jittered pause so the losers do not collide again.
                        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..2_000))).await;
                        continue;
                    }
                    Err(error) => error,
                }
            }
            Err(error) => error,
        };
        if !backoff.retry_after(target, "alarm state", &error).await {
            downstream::failed(target, 1);
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            attempt_timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stops_after_max_attempts() {
        let mut b = Backoff::new(policy(3), Instant::now() + Duration::from_secs(60));
        assert!(b.wait_before_retry().await);
        assert!(b.wait_before_retry().await);
        assert!(!b.wait_before_retry().await);
        assert_eq!(b.attempts(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn delays_are_capped_and_jittered() {
        let b = Backoff {
            policy: policy(100),
            deadline: Instant::now() + Duration::from_secs(60),
            attempts: 10,
        };
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_millis(400));
        }
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| b.next_delay()).collect();
        assert!(distinct.len() > 1, "full jitter varies the delay");
    }

    #[tokio::test(start_paused = true)]
    async fn never_sleeps_past_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(300);
        let mut b = Backoff::new(policy(1000), deadline);
        while b.wait_before_retry().await {}
        assert!(Instant::now() < deadline);
        assert!(b.attempts() < 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_timeout_is_bounded_by_time_left() {
        let b = Backoff::new(policy(3), Instant::now() + Duration::from_millis(250));
        assert_eq!(b.attempt_timeout(), Some(Duration::from_millis(250)));
        let b = Backoff::new(policy(3), Instant::now() + Duration::from_secs(10));
        assert_eq!(b.attempt_timeout(), Some(Duration::from_secs(1)));
        let b = Backoff::new(policy(3), Instant::now());
        assert_eq!(b.attempt_timeout(), None);
    }

    use crate::downstream::DownstreamStats;
    use crate::ports::MemoryAlarmStore;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn call_retries_the_retryable_stops_on_the_permanent_and_counts() {
        let stats = Arc::new(DownstreamStats::default());
        let deadline = Instant::now() + Duration::from_secs(60);
        let (retried, refused) = DownstreamStats::scope(stats.clone(), async {
            let mut left = 2;
            let retried = call(policy(5), deadline, Target::Iot, "publish", || {
                left -= 1;
                let result = if left >= 0 {
                    Err(DownstreamError::Retryable("503".into()))
                } else {
                    Ok(7)
                };
                async move { result }
            })
            .await;
            let mut attempts = 0;
            let refused: Result<(), _> = call(policy(5), deadline, Target::Iot, "publish", || {
                attempts += 1;
                async { Err(DownstreamError::Permanent("403".into())) }
            })
            .await;
            assert_eq!(attempts, 1, "a permanent error is not retried");
            (retried, refused)
        })
        .await;
        assert_eq!(retried, Ok(7));
        assert_eq!(refused, Err(DownstreamError::Permanent("403".into())));
        let iot = stats.summary(Target::Iot);
        assert_eq!((iot.calls, iot.retries, iot.failures), (4, 2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_past_its_timeout_is_retryable() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let result: Result<(), _> = call(policy(2), deadline, Target::OpenSearch, "search", || {
            std::future::pending()
        })
        .await;
        let error = result.expect_err("never answers");
        assert!(
            error.is_retryable() && error.reason().contains("search timed out"),
            "{error}"
        );
    }

    /// A store where another writer always commits first.
    struct AlwaysRaced(MemoryAlarmStore);

    impl AlarmStore for AlwaysRaced {
        async fn load(&self, group: &GroupId) -> Result<Versioned, DownstreamError> {
            self.0.load(group).await
        }

        async fn store(
            &self,
            _group: &GroupId,
            _state: &GroupAlarms,
            _expected: Option<u64>,
        ) -> Result<StoreOutcome, DownstreamError> {
            Ok(StoreOutcome::Conflict)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_conditional_update_writes_once_and_caps_lost_races() {
        let group = GroupId::parse("7").expect("group");
        let store = MemoryAlarmStore::default();
        let deadline = Instant::now() + Duration::from_secs(60);
        let write = |state: &GroupAlarms| {
            let mut next = state.clone();
            next.no_data.push(sensor_model::alarms::state::NoData {
                sensor: "temp".into(),
                since: "2026-12-03 10:00:00".into(),
                since_ms: 0,
            });
            Change::Write(next, "written")
        };
        let updated = update_alarm_state(&store, &group, None, policy(3), deadline, write)
            .await
            .expect("committed");
        assert_eq!(updated.value, "written");
        assert_eq!(updated.current.version, Some(1));
        assert_eq!(store.get(&group), updated.current);

        // A stale known state costs a conflict, then the loop reads and recomputes.
        let stale = Versioned::default();
        let mut seen = Vec::new();
        let again = update_alarm_state(&store, &group, Some(stale), policy(3), deadline, |s| {
            seen.push(s.no_data.len());
            Change::Write(s.clone(), ())
        })
        .await
        .expect("committed after one conflict");
        assert_eq!(seen, [0, 1]);
        assert_eq!(again.current.version, Some(2));

        let mut tries = 0;
        let raced = AlwaysRaced(MemoryAlarmStore::default());
        let error = update_alarm_state(&raced, &group, None, policy(3), deadline, |s| {
            tries += 1;
            Change::Write(s.clone(), ())
        })
        .await
        .err()
        .expect("gives up");
        assert!(error.is_retryable(), "{error}");
        assert_eq!(tries, MAX_STATE_CONFLICTS);
    }
}
