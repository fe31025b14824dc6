//! Bounded retries: exponential backoff with full jitter, never past a deadline taken
//! from the Lambda context, so the function answers 503 before its own timeout.

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
}
