//! Publishing to IoT: warnings (`ALARM_MODE=every`), alarm messages and acknowledgements,
//! at most [`PUBLISH_CONCURRENCY`] in flight, each through the one retry.

use super::check::Checked;
use super::outcome::Outcome;
use crate::downstream::Target;
use crate::ports::{DownstreamError, Message, Publisher};
use crate::retry::{self, RetryPolicy};
use futures_util::stream::{FuturesUnordered, StreamExt};
use sensor_model::topic::Topic;
use tokio::time::Instant;

/// How many MQTT publishes of one request are in flight at once.
const PUBLISH_CONCURRENCY: usize = 16;

/// The publisher of one pipeline, with its retry policy.
pub(super) struct Publishing<'a, P> {
    pub publisher: &'a P,
    pub retry: RetryPolicy,
}

impl<P: Publisher> Publishing<'_, P> {
    /// `ALARM_MODE=every`: publishes every warning of every reading; per reading, the
    /// first error if any.
    pub(super) async fn publish_warnings(
        &self,
        checked: &[(usize, Checked)],
        deadline: Instant,
    ) -> Vec<Result<(), String>> {
        let mut queue = Vec::new();
        for (n, (_, c)) in checked.iter().enumerate() {
            for warning in &c.warnings {
                let payload = serde_json::to_vec(warning).unwrap_or_default();
                queue.push((
                    n,
                    Message {
                        topic: c.topic.clone(),
                        payload,
                    },
                ));
            }
        }
        self.publish_queue(queue, checked.len(), deadline)
            .await
            .into_iter()
            .map(|r| r.map_err(|e| format!("publishing a warning failed: {}", e.reason())))
            .collect()
    }

    /// Publishes `queue` (messages tagged with a slot in `0..slots`), at most
    /// [`PUBLISH_CONCURRENCY`] at once; per slot, the first error if any.
    pub(super) async fn publish_queue(
        &self,
        queue: Vec<(usize, Message)>,
        slots: usize,
        deadline: Instant,
    ) -> Vec<Result<(), DownstreamError>> {
        // Owned messages and a named async fn (not stream closures): keeps the future
        // `Send` for the runtime without higher-ranked lifetime trouble.
        let mut queue = queue.into_iter();
        let mut in_flight = FuturesUnordered::new();
        let mut results = Vec::new();
        loop {
            while in_flight.len() < PUBLISH_CONCURRENCY {
                match queue.next() {
                    Some((n, message)) => in_flight.push(self.publish_tagged(n, message, deadline)),
                    None => break,
                }
            }
            match in_flight.next().await {
                Some(result) => results.push(result),
                None => break,
            }
        }
        let mut per_slot: Vec<Result<(), DownstreamError>> = vec![Ok(()); slots];
        for (n, result) in results {
            if let Err(e) = result {
                if per_slot.get(n).is_some_and(|r| r.is_ok()) {
                    per_slot[n] = Err(e);
                }
            }
        }
        per_slot
    }

    async fn publish_tagged(
        &self,
        n: usize,
        message: Message,
        deadline: Instant,
    ) -> (usize, Result<(), DownstreamError>) {
        (n, self.publish_with_retry(&message, deadline).await)
    }

    pub(super) async fn publish_with_retry(
        &self,
        message: &Message,
        deadline: Instant,
    ) -> Result<(), DownstreamError> {
        retry::call(self.retry, deadline, Target::Iot, "publish", || {
            self.publisher.publish(message)
        })
        .await
        .inspect_err(|e| tracing::warn!(topic = %message.topic, reason = %e, "not published"))
    }

    /// `ACK_MESSAGES=true`: one `{"msg": ...}` per request and group, as the original
    /// function did. Best effort: a lost acknowledgement does not fail the reading.
    pub(super) async fn acknowledge(
        &self,
        outcomes: &[Outcome],
        topics: &[Topic],
        deadline: Instant,
    ) {
        let failures: Vec<String> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Invalid(e) | Outcome::Forbidden(e) => Some(e.to_string()),
                Outcome::Unavailable { reason, .. } | Outcome::Rejected { reason, .. } => {
                    Some(reason.clone())
                }
                Outcome::Stored { .. } => None,
            })
            .collect();
        let msg = if failures.is_empty() {
            "success".to_string()
        } else {
            format!("failure: {}", failures.join("; "))
        };
        let payload = serde_json::to_vec(&serde_json::json!({ "msg": msg })).unwrap_or_default();
        for topic in topics {
            let message = Message {
                topic: topic.clone(),
                payload: payload.clone(),
            };
            if let Err(e) = self.publish_with_retry(&message, deadline).await {
                tracing::warn!(topic = %topic, reason = %e, "acknowledgement not published");
            }
        }
    }
}
