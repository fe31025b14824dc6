//! parse -> validate -> rules -> (alarm state -> publish transitions) || index -> outcome.
//! Depends only on the ports, so every path is testable without AWS. One job a file:
//! - this file: the settings, the outcome of a reading, and the request's orchestration;
//! - [`check`]: rules, document and clock skew for one reading (pure);
//! - [`alarms`]: the group's alarm state committed, then its transitions published;
//! - [`publish`]: warnings and acknowledgements to IoT, bounded concurrency;
//! - [`index`]: one bulk `create` for the request, retried per item.
//!
//! Alarm state per group (ARCHITECTURE.md, "Alarms: exactly one transition"): read the
//! group's state (or the cached copy), apply the readings, write it back conditional on
//! the version read (a conflict means another instance won: read again and recompute),
//! and only then publish the transitions that write committed. The committed messages
//! stay in the state's outbox, so a resend after a failed publish re-publishes them
//! instead of losing them.

mod alarms;
mod check;
mod index;
mod outcome;
mod publish;
mod settings;

pub use outcome::Outcome;
pub use settings::{
    parse_bulk_max_bytes, PipelineSettings, BULK_MAX_BYTES_RANGE, DEFAULT_BULK_MAX_BYTES,
};

use crate::ports::{AlarmStore, IndexOutcome, Indexer, MemoryAlarmStore, Publisher};
use crate::retry::RetryPolicy;
use alarms::{Alarms, StateCache};
use check::Checked;
use chrono::{DateTime, Utc};
use index::Indexing;
use publish::Publishing;
use sensor_model::alarms::settings::AlarmMode;
use sensor_model::document::Document;
use sensor_model::domain::arrival::Arrival;
use sensor_model::domain::error::ValidationError;
use sensor_model::domain::group_id::GroupId;
use sensor_model::domain::reading::Reading;
use sensor_model::domain::sensor::Sensor;
use sensor_model::domain::thing_name::ThingName;
use sensor_model::topic::Topic;
use sensor_model::warning::Warning;
use tokio::time::Instant;

/// A reading (or why it is not one) as it arrived: the message it came in and the box
/// that sent it, with the group the registry binds that box to.
pub struct Sent<'a> {
    /// Which message of the call it came in (a stream batch's record index; 0 for a
    /// request). A group's alarm state applies one message after another, in this order,
    /// exactly as separate requests would: a batch of records changes nothing in which
    /// transitions are announced.
    pub message: usize,
    /// `None` when no box is named (a shared-key route, an operator).
    pub sender: Option<(&'a ThingName, &'a GroupId)>,
    pub reading: Result<Reading, ValidationError>,
}

pub struct Pipeline<P, I, A = MemoryAlarmStore> {
    settings: PipelineSettings,
    retry: RetryPolicy,
    publisher: P,
    indexer: I,
    alarms: A,
    /// The last committed state per group (see [`StateCache`]).
    cache: StateCache,
}

impl<P: Publisher, I: Indexer> Pipeline<P, I> {
    /// A pipeline with in-process alarm state (tests, `ALARM_MODE=every`); see
    /// [`Pipeline::with_alarm_store`] for a shared one.
    pub fn new(settings: &PipelineSettings, publisher: P, indexer: I) -> Self {
        Pipeline {
            settings: settings.clone(),
            retry: RetryPolicy::default(),
            publisher,
            indexer,
            alarms: MemoryAlarmStore::default(),
            cache: StateCache::default(),
        }
    }
}

impl<P: Publisher, I: Indexer, A: AlarmStore> Pipeline<P, I, A> {
    /// The same pipeline keeping alarm state in `store`.
    pub fn with_alarm_store<B: AlarmStore>(self, store: B) -> Pipeline<P, I, B> {
        Pipeline {
            settings: self.settings,
            retry: self.retry,
            publisher: self.publisher,
            indexer: self.indexer,
            alarms: store,
            cache: StateCache::default(),
        }
    }

    pub fn alarm_store(&self) -> &A {
        &self.alarms
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn sensor(&self) -> Sensor {
        self.settings.sensor
    }

    /// Validates one reading object.
    pub fn validate(&self, value: serde_json::Value) -> Result<Reading, ValidationError> {
        Reading::parse(self.settings.sensor, value, self.settings.device_timezone)
    }

    /// When a request received now arrived, with this function's tolerance for clocks
    /// ahead of ours.
    pub fn arrival(&self, received: DateTime<Utc>) -> Arrival {
        Arrival::new(received, self.settings.clock_ahead_tolerance)
    }

    /// Rules and document for one valid reading: pure, no I/O.
    pub fn check(&self, reading: &Reading, arrival: Arrival) -> (Document, Vec<Warning>) {
        let (document, warnings, _) = check::check_with_skew(&self.settings, reading, arrival);
        (document, warnings)
    }

    /// Runs a request's readings through the pipeline. Invalid ones are reported and
    /// touch nothing; valid ones are published and indexed; `deadline` bounds retries.
    /// For readings whose sender the registry vouches for, see [`Pipeline::ingest_from`].
    pub async fn ingest(
        &self,
        readings: Vec<Result<Reading, ValidationError>>,
        deadline: Instant,
    ) -> Vec<Outcome> {
        self.ingest_from(None, readings, deadline).await
    }

    /// Like [`Pipeline::ingest`], for readings sent by the box `sender` that the registry
    /// binds to a group: a reading of another group is [`Outcome::Forbidden`] and, like
    /// an invalid one, touches nothing.
    pub async fn ingest_from(
        &self,
        sender: Option<(&ThingName, &GroupId)>,
        readings: Vec<Result<Reading, ValidationError>>,
        deadline: Instant,
    ) -> Vec<Outcome> {
        let readings = readings
            .into_iter()
            .map(|reading| Sent {
                message: 0,
                sender,
                reading,
            })
            .collect();
        self.ingest_with(self.retry, readings, deadline).await
    }

    /// Like [`Pipeline::ingest_from`] for a stream batch: readings of many boxes and
    /// records at once, each with its own sender and record, in stream order. A group's
    /// alarm state is read and written once for the whole call (its records applied one
    /// after another), the documents go out as size-bounded bulks, and each downstream
    /// call is retried until `deadline` ([`RetryPolicy::until_deadline`]), since the event
    /// source mapping's own retries are few and nobody waits on the answer.
    pub async fn ingest_stream_batch(
        &self,
        readings: Vec<Sent<'_>>,
        deadline: Instant,
    ) -> Vec<Outcome> {
        self.ingest_with(self.retry.until_deadline(), readings, deadline)
            .await
    }

    async fn ingest_with(
        &self,
        retry: RetryPolicy,
        readings: Vec<Sent<'_>>,
        deadline: Instant,
    ) -> Vec<Outcome> {
        let arrival = self.arrival(Utc::now());
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(readings.len());
        let mut checked: Vec<(usize, Checked)> = Vec::new();
        for (
            i,
            Sent {
                message,
                sender,
                reading,
            },
        ) in readings.into_iter().enumerate()
        {
            match reading {
                Err(e) => outcomes.push(Some(Outcome::Invalid(e))),
                Ok(reading) => {
                    if let Some((thing, bound)) =
                        sender.filter(|(_, bound)| *bound != reading.group())
                    {
                        tracing::warn!(sensor = %self.settings.sensor, %thing, bound = %bound, claimed = %reading.group(), "reading for another group refused");
                        let refusal = crate::binding::other_group(thing, bound, reading.group());
                        outcomes.push(Some(Outcome::Forbidden(refusal)));
                        continue;
                    }
                    let (document, warnings, skew_warn_s) =
                        check::check_with_skew(&self.settings, &reading, arrival);
                    let topic = self
                        .settings
                        .topic
                        .topic(self.settings.sensor, reading.group());
                    outcomes.push(None);
                    checked.push((
                        i,
                        Checked {
                            message,
                            reading,
                            document,
                            warnings,
                            topic,
                            skew_warn_s,
                        },
                    ));
                }
            }
        }

        let publishing = Publishing {
            publisher: &self.publisher,
            retry,
        };
        let indexing = Indexing {
            indexer: &self.indexer,
            retry,
            bulk_max_bytes: self.settings.bulk_max_bytes,
        };
        let alarms = Alarms {
            store: &self.alarms,
            cache: &self.cache,
            settings: &self.settings,
            retry,
            publishing: &publishing,
        };
        let (published, indexed) = match self.settings.alarm_mode {
            AlarmMode::Every => tokio::join!(
                publishing.publish_warnings(&checked, deadline),
                indexing.index_documents(&checked, deadline)
            ),
            AlarmMode::Transitions => tokio::join!(
                alarms.apply_alarms(&checked, arrival, deadline),
                indexing.index_documents(&checked, deadline)
            ),
        };

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
                (_, Err(reason)) => Some(reason.clone()),
                _ => None,
            };
            let outcome = match (failure, index) {
                // A resend would only meet the same refusal (after any alarm state or
                // publish failure above was resent and fixed).
                (None, IndexOutcome::Rejected(reason)) => {
                    tracing::warn!(sensor = %self.settings.sensor, id = %id, %reason, "reading rejected for good");
                    Outcome::Rejected {
                        id,
                        warnings: c.warnings,
                        reason: format!("indexing refused: {reason}"),
                    }
                }
                (Some(reason), _) => {
                    tracing::warn!(sensor = %self.settings.sensor, id = %id, %reason, "reading not stored");
                    Outcome::Unavailable {
                        id,
                        warnings: c.warnings,
                        reason,
                    }
                }
                (None, index) => {
                    let duplicate = index == IndexOutcome::AlreadyStored;
                    let measures: Vec<&str> = c.warnings.iter().map(|w| w.measure).collect();
                    tracing::info!(sensor = %self.settings.sensor, id = %id, duplicate, warnings = ?measures, "reading stored");
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
        if self.settings.ack_messages {
            publishing
                .acknowledge(&outcomes, &ack_topics, deadline)
                .await;
        }
        outcomes
    }
}
