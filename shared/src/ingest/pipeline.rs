//! parse -> validate -> rules -> publish warnings and index, concurrently -> outcome.
//! Depends only on the two ports, so every path is testable without AWS.

use crate::domain::error::ValidationError;
use crate::domain::measure::Measure;
use crate::domain::reading::Reading;
use crate::domain::sensor::Sensor;
use crate::ingest::document::Document;
use crate::ingest::index_name::IndexName;
use crate::ingest::retry::{Backoff, RetryPolicy};
use crate::ingest::rules::Rules;
use crate::ingest::topic::{Topic, TopicTemplate};
use crate::ingest::warning::Warning;
use crate::lambda::config::Config;
use crate::observability::downstream::{self, Target};
use crate::ports::{DownstreamError, IndexOutcome, Indexer, Message, Publisher};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

/// How many MQTT publishes of one request are in flight at once.
const PUBLISH_CONCURRENCY: usize = 16;

pub struct Pipeline<P, I> {
    sensor: Sensor,
    rules: Rules,
    topic: TopicTemplate,
    index: IndexName,
    zone: Tz,
    ack_messages: bool,
    retry: RetryPolicy,
    publisher: P,
    indexer: I,
}

/// What became of one reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Indexed now (`duplicate: false`) or earlier (`true`), every warning published.
    Stored {
        id: String,
        warnings: Vec<Warning>,
        duplicate: bool,
    },
    /// Final: resending it will not help.
    Invalid(ValidationError),
    /// A downstream failure outlasted the retries: the box must resend (safe: same id).
    Unavailable {
        id: String,
        warnings: Vec<Warning>,
        reason: String,
    },
}

impl Outcome {
    pub fn needs_retry(&self) -> bool {
        matches!(self, Outcome::Unavailable { .. })
    }
}

/// A validated reading and what the rules made of it.
struct Checked {
    document: Document,
    warnings: Vec<Warning>,
    topic: Topic,
}

impl<P: Publisher, I: Indexer> Pipeline<P, I> {
    pub fn new(config: &Config, publisher: P, indexer: I) -> Self {
        Pipeline {
            sensor: config.sensor,
            rules: config.rules.clone(),
            topic: config.topic.clone(),
            index: config.index.clone(),
            zone: config.device_timezone,
            ack_messages: config.ack_messages,
            retry: RetryPolicy::default(),
            publisher,
            indexer,
        }
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn sensor(&self) -> Sensor {
        self.sensor
    }

    /// Validates one reading object.
    pub fn validate(&self, value: serde_json::Value) -> Result<Reading, ValidationError> {
        Reading::parse(self.sensor, value, self.zone)
    }

    /// Rules and document for one valid reading: pure, no I/O.
    pub fn check(&self, reading: &Reading, received: DateTime<Utc>) -> (Document, Vec<Warning>) {
        let trips: Vec<_> = reading
            .measures()
            .iter()
            .filter_map(|m| {
                self.rules
                    .check(m.measure(), m.value())
                    .map(|trip| (m, trip))
            })
            .collect();
        let tripped: Vec<Measure> = trips.iter().map(|(m, _)| m.measure()).collect();
        let document = Document::build(reading, &self.index, &tripped, received);
        let warnings = trips
            .into_iter()
            .map(|(m, trip)| Warning::new(reading, m, trip, document.id.as_str()))
            .collect();
        (document, warnings)
    }

    /// Runs a request's readings through the pipeline. Invalid ones are reported and
    /// touch nothing; valid ones are published and indexed; `deadline` bounds retries.
    pub async fn ingest(
        &self,
        readings: Vec<Result<Reading, ValidationError>>,
        deadline: Instant,
    ) -> Vec<Outcome> {
        let received = Utc::now();
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(readings.len());
        let mut checked: Vec<(usize, Checked)> = Vec::new();
        for (i, reading) in readings.into_iter().enumerate() {
            match reading {
                Err(e) => outcomes.push(Some(Outcome::Invalid(e))),
                Ok(reading) => {
                    let (document, warnings) = self.check(&reading, received);
                    let topic = self.topic.topic(self.sensor, reading.group());
                    outcomes.push(None);
                    checked.push((
                        i,
                        Checked {
                            document,
                            warnings,
                            topic,
                        },
                    ));
                }
            }
        }

        let (published, indexed) = tokio::join!(
            self.publish_warnings(&checked, deadline),
            self.index_documents(&checked, deadline)
        );

        let mut ack_topics: Vec<Topic> = Vec::new();
        for (_, c) in &checked {
            if !ack_topics.contains(&c.topic) {
                ack_topics.push(c.topic.clone());
            }
        }
        for (((i, c), publish), index) in checked.into_iter().zip(published).zip(indexed) {
            let id = c.document.id.as_str().to_string();
            let failure = match (&index, &publish) {
                (IndexOutcome::Failed(e), _) => Some(format!("indexing failed: {}", e.reason())),
                (_, Err(e)) => Some(format!("publishing a warning failed: {}", e.reason())),
                _ => None,
            };
            let outcome = match failure {
                Some(reason) => {
                    tracing::warn!(sensor = %self.sensor, id = %id, %reason, "reading not stored");
                    Outcome::Unavailable {
                        id,
                        warnings: c.warnings,
                        reason,
                    }
                }
                None => {
                    let duplicate = index == IndexOutcome::AlreadyStored;
                    let measures: Vec<&str> = c.warnings.iter().map(|w| w.measure).collect();
                    tracing::info!(sensor = %self.sensor, id = %id, duplicate, warnings = ?measures, "reading stored");
                    Outcome::Stored {
                        id,
                        warnings: c.warnings,
                        duplicate,
                    }
                }
            };
            outcomes[i] = Some(outcome);
        }
        let outcomes: Vec<Outcome> = outcomes.into_iter().flatten().collect();
        if self.ack_messages {
            self.acknowledge(&outcomes, &ack_topics, deadline).await;
        }
        outcomes
    }

    /// Publishes every warning of every reading; per reading, the first error if any.
    async fn publish_warnings(
        &self,
        checked: &[(usize, Checked)],
        deadline: Instant,
    ) -> Vec<Result<(), DownstreamError>> {
        // Owned messages and a named async fn (not stream closures): keeps the future
        // `Send` for the runtime without higher-ranked lifetime trouble.
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
        let mut per_reading: Vec<Result<(), DownstreamError>> = vec![Ok(()); checked.len()];
        for (n, result) in results {
            if let Err(e) = result {
                if per_reading[n].is_ok() {
                    per_reading[n] = Err(e);
                }
            }
        }
        per_reading
    }

    async fn publish_tagged(
        &self,
        n: usize,
        message: Message,
        deadline: Instant,
    ) -> (usize, Result<(), DownstreamError>) {
        (n, self.publish_with_retry(&message, deadline).await)
    }

    async fn publish_with_retry(
        &self,
        message: &Message,
        deadline: Instant,
    ) -> Result<(), DownstreamError> {
        let mut backoff = Backoff::new(self.retry, deadline);
        loop {
            let error = match backoff.attempt_timeout() {
                None => DownstreamError::Retryable("deadline reached".into()),
                Some(limit) => {
                    let call = tokio::time::timeout(limit, self.publisher.publish(message));
                    match downstream::timed(Target::Iot, call).await {
                        Ok(Ok(())) => return Ok(()),
                        Ok(Err(e)) => e,
                        Err(_) => {
                            DownstreamError::Retryable(format!("publish timed out after {limit:?}"))
                        }
                    }
                }
            };
            if !error.is_retryable() {
                tracing::error!(topic = %message.topic, reason = %error, "publish rejected, not retried");
                downstream::failed(Target::Iot, 1);
                return Err(error);
            }
            tracing::warn!(topic = %message.topic, attempt = backoff.attempts() + 1, reason = %error, "publish failed");
            if !backoff.wait_before_retry().await {
                downstream::failed(Target::Iot, 1);
                return Err(error);
            }
            downstream::retried(Target::Iot);
        }
    }

    /// One bulk `create` for all documents; retries only the items that can succeed later.
    async fn index_documents(
        &self,
        checked: &[(usize, Checked)],
        deadline: Instant,
    ) -> Vec<IndexOutcome> {
        let mut outcomes: Vec<Option<IndexOutcome>> = vec![None; checked.len()];
        if checked.is_empty() {
            return Vec::new();
        }
        let mut pending: Vec<usize> = (0..checked.len()).collect();
        let mut backoff = Backoff::new(self.retry, deadline);
        loop {
            let documents: Vec<&Document> =
                pending.iter().map(|&n| &checked[n].1.document).collect();
            let result = match backoff.attempt_timeout() {
                None => Err(DownstreamError::Retryable("deadline reached".into())),
                Some(limit) => downstream::timed(
                    Target::OpenSearch,
                    tokio::time::timeout(limit, self.indexer.create_all(&documents)),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(DownstreamError::Retryable(format!(
                        "bulk request timed out after {limit:?}"
                    )))
                }),
            };
            let mut still_pending = Vec::new();
            let mut last_error = None;
            match result {
                Ok(items) if items.len() == pending.len() => {
                    for (&n, item) in pending.iter().zip(items) {
                        match item {
                            IndexOutcome::Failed(e) if e.is_retryable() => {
                                last_error = Some(e.clone());
                                outcomes[n] = Some(IndexOutcome::Failed(e));
                                still_pending.push(n);
                            }
                            IndexOutcome::Failed(e) => {
                                tracing::error!(id = %checked[n].1.document.id.as_str(), reason = %e, "document rejected, not retried");
                                outcomes[n] = Some(IndexOutcome::Failed(e));
                            }
                            done => outcomes[n] = Some(done),
                        }
                    }
                }
                Ok(items) => {
                    let e = DownstreamError::Retryable(format!(
                        "bulk response has {} items for {} documents",
                        items.len(),
                        pending.len()
                    ));
                    last_error = Some(e);
                    still_pending = pending.clone();
                }
                Err(e) if e.is_retryable() => {
                    last_error = Some(e);
                    still_pending = pending.clone();
                }
                Err(e) => {
                    tracing::error!(reason = %e, "bulk request rejected, not retried");
                    for &n in &pending {
                        outcomes[n] = Some(IndexOutcome::Failed(e.clone()));
                    }
                }
            }
            if still_pending.is_empty() {
                break;
            }
            let error = last_error.unwrap_or_else(|| DownstreamError::Retryable("unknown".into()));
            tracing::warn!(pending = still_pending.len(), attempt = backoff.attempts() + 1, reason = %error, "indexing failed");
            if !backoff.wait_before_retry().await {
                for &n in &still_pending {
                    outcomes[n] = Some(IndexOutcome::Failed(error.clone()));
                }
                break;
            }
            downstream::retried(Target::OpenSearch);
            pending = still_pending;
        }
        let outcomes: Vec<IndexOutcome> = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(IndexOutcome::Failed(DownstreamError::Retryable(
                    "not attempted".into(),
                )))
            })
            .collect();
        let failed = outcomes
            .iter()
            .filter(|o| matches!(o, IndexOutcome::Failed(_)))
            .count();
        downstream::failed(Target::OpenSearch, failed);
        outcomes
    }

    /// `ACK_MESSAGES=true`: one `{"msg": ...}` per request and group, as the original
    /// function did. Best effort: a lost acknowledgement does not fail the reading.
    async fn acknowledge(&self, outcomes: &[Outcome], topics: &[Topic], deadline: Instant) {
        let failures: Vec<String> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Invalid(e) => Some(e.to_string()),
                Outcome::Unavailable { reason, .. } => Some(reason.clone()),
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
