//! parse -> validate -> rules -> (alarm state -> publish transitions) || index -> outcome.
//! Depends only on the ports, so every path is testable without AWS.
//!
//! Alarm state per group (ARCHITECTURE.md, "Alarms: exactly one transition"): read the
//! group's state (or the cached copy), apply the readings, write it back conditional on
//! the version read (a conflict means another instance won: read again and recompute),
//! and only then publish the transitions that write committed. The committed messages
//! stay in the state's outbox, so a resend after a failed publish re-publishes them
//! instead of losing them.

use crate::alarms::machine::{self, Disposition, Input};
use crate::alarms::settings::AlarmMode;
use crate::alarms::state::Pending;
use crate::domain::arrival::{AheadTolerance, Arrival};
use crate::domain::error::ValidationError;
use crate::domain::group_id::GroupId;
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
use crate::ports::{
    AlarmStore, DownstreamError, IndexOutcome, Indexer, MemoryAlarmStore, Message, Publisher,
    StoreOutcome, Versioned,
};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::time::Instant;

/// How many MQTT publishes of one request are in flight at once.
const PUBLISH_CONCURRENCY: usize = 16;
/// Lost races for one group's state before the request gives up (503). Each lost race
/// means another instance committed, so this bounds contention, not failures.
const MAX_STATE_CONFLICTS: u32 = 32;
/// Groups whose state a warm instance keeps; beyond it the cache starts over.
const MAX_CACHED_GROUPS: usize = 1024;

pub struct Pipeline<P, I, A = MemoryAlarmStore> {
    sensor: Sensor,
    rules: Rules,
    topic: TopicTemplate,
    index: IndexName,
    zone: Tz,
    ack_messages: bool,
    retry: RetryPolicy,
    publisher: P,
    indexer: I,
    alarm_mode: AlarmMode,
    clock_skew_warn_s: i64,
    ahead_tolerance: AheadTolerance,
    alarms: A,
    /// The last committed state per group, with its version. Every write is still
    /// conditional on that version, so a stale copy costs one conflict, never a
    /// wrong transition.
    cache: Mutex<HashMap<GroupId, Versioned>>,
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
    reading: Reading,
    document: Document,
    warnings: Vec<Warning>,
    topic: Topic,
    /// Receive time minus `createdtime` when above `CLOCK_SKEW_WARN`.
    skew_warn_s: Option<i64>,
}

impl<P: Publisher, I: Indexer> Pipeline<P, I> {
    /// A pipeline with in-process alarm state (tests, `ALARM_MODE=every`); see
    /// [`Pipeline::with_alarm_store`] for a shared one.
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
            alarm_mode: config.alarm_mode,
            clock_skew_warn_s: config.clock_skew_warn_s,
            ahead_tolerance: config.clock_ahead_tolerance,
            alarms: MemoryAlarmStore::default(),
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl<P: Publisher, I: Indexer, A: AlarmStore> Pipeline<P, I, A> {
    /// The same pipeline keeping alarm state in `store`.
    pub fn with_alarm_store<B: AlarmStore>(self, store: B) -> Pipeline<P, I, B> {
        Pipeline {
            sensor: self.sensor,
            rules: self.rules,
            topic: self.topic,
            index: self.index,
            zone: self.zone,
            ack_messages: self.ack_messages,
            retry: self.retry,
            publisher: self.publisher,
            indexer: self.indexer,
            alarm_mode: self.alarm_mode,
            clock_skew_warn_s: self.clock_skew_warn_s,
            ahead_tolerance: self.ahead_tolerance,
            alarms: store,
            cache: Mutex::new(HashMap::new()),
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
        self.sensor
    }

    /// Validates one reading object.
    pub fn validate(&self, value: serde_json::Value) -> Result<Reading, ValidationError> {
        Reading::parse(self.sensor, value, self.zone)
    }

    /// When a request received now arrived, with this function's tolerance for clocks
    /// ahead of ours.
    pub fn arrival(&self, received: DateTime<Utc>) -> Arrival {
        Arrival::new(received, self.ahead_tolerance)
    }

    /// Rules and document for one valid reading: pure, no I/O.
    pub fn check(&self, reading: &Reading, arrival: Arrival) -> (Document, Vec<Warning>) {
        let (document, warnings, _) = self.check_with_skew(reading, arrival);
        (document, warnings)
    }

    /// [`Self::check`], plus the skew its alarm messages carry (see [`Self::skew`]).
    fn check_with_skew(
        &self,
        reading: &Reading,
        arrival: Arrival,
    ) -> (Document, Vec<Warning>, Option<i64>) {
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
        let mut document = Document::build(reading, &self.index, &tripped, arrival);
        let (skew_s, skew_warn) = self.skew(reading, arrival);
        document
            .body
            .insert("clock_skew_s".into(), serde_json::Value::from(skew_s));
        // The read API marks a box by this: its clock (or this reading's delivery) is
        // off by more than `CLOCK_SKEW_WARN`.
        document.body.insert(
            "clock_skewed".into(),
            serde_json::Value::from(skew_warn.is_some()),
        );
        let warnings = trips
            .into_iter()
            .map(|(m, trip)| {
                let mut warning = Warning::new(reading, m, trip, document.id.as_str());
                warning.clock_skew_s = skew_warn;
                warning
            })
            .collect();
        (document, warnings, skew_warn)
    }

    /// Receive time minus `createdtime` in seconds, and the same again when a warning
    /// must carry it: past `CLOCK_SKEW_WARN` either way, or for any reading dated after
    /// its arrival (beyond the tolerance), a time no clock can be right about however
    /// small the skew.
    fn skew(&self, reading: &Reading, arrival: Arrival) -> (i64, Option<i64>) {
        let taken = reading.taken_at().utc();
        let skew_s = (arrival.received() - taken).num_seconds();
        let notable = arrival.is_future(taken)
            || skew_s.unsigned_abs() > self.clock_skew_warn_s.unsigned_abs();
        (skew_s, notable.then_some(skew_s))
    }

    /// Runs a request's readings through the pipeline. Invalid ones are reported and
    /// touch nothing; valid ones are published and indexed; `deadline` bounds retries.
    pub async fn ingest(
        &self,
        readings: Vec<Result<Reading, ValidationError>>,
        deadline: Instant,
    ) -> Vec<Outcome> {
        let arrival = self.arrival(Utc::now());
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(readings.len());
        let mut checked: Vec<(usize, Checked)> = Vec::new();
        for (i, reading) in readings.into_iter().enumerate() {
            match reading {
                Err(e) => outcomes.push(Some(Outcome::Invalid(e))),
                Ok(reading) => {
                    let (document, warnings, skew_warn_s) = self.check_with_skew(&reading, arrival);
                    let topic = self.topic.topic(self.sensor, reading.group());
                    outcomes.push(None);
                    checked.push((
                        i,
                        Checked {
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

        let (published, indexed) = match self.alarm_mode {
            AlarmMode::Every => tokio::join!(
                self.publish_warnings(&checked, deadline),
                self.index_documents(&checked, deadline)
            ),
            AlarmMode::Transitions => tokio::join!(
                self.apply_alarms(&checked, arrival, deadline),
                self.index_documents(&checked, deadline)
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

    /// `ALARM_MODE=every`: publishes every warning of every reading; per reading, the
    /// first error if any.
    async fn publish_warnings(
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
    async fn publish_queue(
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

    /// Alarm transitions for every group of the request, the groups concurrently; per
    /// reading, why it must be resent if it must.
    async fn apply_alarms(
        &self,
        checked: &[(usize, Checked)],
        arrival: Arrival,
        deadline: Instant,
    ) -> Vec<Result<(), String>> {
        let mut groups: Vec<(&GroupId, Vec<usize>)> = Vec::new();
        for (n, (_, c)) in checked.iter().enumerate() {
            let group = c.reading.group();
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, members)) => members.push(n),
                None => groups.push((group, vec![n])),
            }
        }
        let per_group =
            futures_util::future::join_all(groups.iter().map(|(group, members)| {
                self.apply_group(group, members, checked, arrival, deadline)
            }))
            .await;
        let mut results: Vec<Result<(), String>> = vec![Ok(()); checked.len()];
        for (members, result) in groups.iter().map(|(_, m)| m).zip(per_group) {
            for (&n, r) in members.iter().zip(result) {
                results[n] = r;
            }
        }
        results
    }

    /// One group: commit the state, then publish what the commit decided; one result per
    /// member reading.
    async fn apply_group(
        &self,
        group: &GroupId,
        members: &[usize],
        checked: &[(usize, Checked)],
        arrival: Arrival,
        deadline: Instant,
    ) -> Vec<Result<(), String>> {
        let inputs: Vec<Input<'_>> = members
            .iter()
            .map(|&n| {
                let c = &checked[n].1;
                Input {
                    reading: &c.reading,
                    id: c.document.id.as_str(),
                    clock_skew_s: c.skew_warn_s,
                }
            })
            .collect();
        let to_publish = match self.commit(group, &inputs, arrival, deadline).await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(sensor = %self.sensor, group = %group.as_str(), reason = %e, "alarm state not committed");
                let reason = format!("alarm state: {}", e.reason());
                return members.iter().map(|_| Err(reason.clone())).collect();
            }
        };
        let queue: Vec<(usize, Message)> = to_publish
            .iter()
            .enumerate()
            .map(|(slot, pending)| {
                let sensor = Sensor::parse(&pending.sensor).unwrap_or(self.sensor);
                let message = Message {
                    topic: self.topic.topic(sensor, group),
                    payload: serde_json::to_vec(&pending.message).unwrap_or_default(),
                };
                (slot, message)
            })
            .collect();
        let published = self.publish_queue(queue, to_publish.len(), deadline).await;
        let delivered: Vec<Pending> = to_publish
            .iter()
            .zip(&published)
            .filter(|(_, r)| r.is_ok())
            .map(|(p, _)| p.clone())
            .collect();
        self.forget_delivered(group, &delivered);
        inputs
            .iter()
            .map(|input| {
                to_publish
                    .iter()
                    .zip(&published)
                    .find_map(|(p, r)| match r {
                        Err(e) if p.id == input.id => Some(Err(format!(
                            "publishing an alarm message failed: {}",
                            e.reason()
                        ))),
                        _ => None,
                    })
                    .unwrap_or(Ok(()))
            })
            .collect()
    }

    /// Applies `inputs` to the group's state and commits it (conditional on the version
    /// read, recomputed after every lost race); the messages to publish: the new
    /// transitions and the committed ones of resent readings.
    async fn commit(
        &self,
        group: &GroupId,
        inputs: &[Input<'_>],
        arrival: Arrival,
        deadline: Instant,
    ) -> Result<Vec<Pending>, DownstreamError> {
        let mut backoff = Backoff::new(self.retry, deadline);
        let mut conflicts = 0u32;
        let mut current = self.cached(group);
        loop {
            let result = match current.take() {
                Some(read) => {
                    self.try_commit(group, read, inputs, arrival, &backoff)
                        .await
                }
                None => match self
                    .timed(&backoff, "shadow read", self.alarms.load(group))
                    .await
                {
                    Ok(read) => {
                        self.try_commit(group, read, inputs, arrival, &backoff)
                            .await
                    }
                    Err(e) => Err(e),
                },
            };
            let error = match result {
                Ok(Some(messages)) => return Ok(messages),
                Ok(None) => {
                    conflicts += 1;
                    if conflicts >= MAX_STATE_CONFLICTS {
                        return Err(DownstreamError::Retryable(format!(
                            "alarm state of group {} changed under {conflicts} attempts",
                            group.as_str()
                        )));
                    }
                    // Another instance committed first: read its state and recompute,
                    // after a short jittered pause so the losers do not collide again.
                    tokio::time::sleep(std::time::Duration::from_micros(fastrand::u64(0..2_000)))
                        .await;
                    continue;
                }
                Err(e) => e,
            };
            if !error.is_retryable() {
                tracing::error!(group = %group.as_str(), reason = %error, "alarm state rejected, not retried");
                return Err(error);
            }
            tracing::warn!(group = %group.as_str(), attempt = backoff.attempts() + 1, reason = %error, "alarm state failed");
            if !backoff.wait_before_retry().await {
                return Err(error);
            }
        }
    }

    /// One attempt: `Ok(None)` when another writer won the race.
    async fn try_commit(
        &self,
        group: &GroupId,
        read: Versioned,
        inputs: &[Input<'_>],
        arrival: Arrival,
        backoff: &Backoff,
    ) -> Result<Option<Vec<Pending>>, DownstreamError> {
        let mut state = read.state.clone();
        let step = machine::apply(&mut state, inputs, &self.rules, arrival);
        let mut messages = step.messages;
        for (input, disposition) in inputs.iter().zip(&step.dispositions) {
            if *disposition == Disposition::Resent {
                messages.extend(state.pending_for(input.id).cloned());
            }
        }
        if state == read.state {
            // Only stale or resent readings: nothing to write.
            self.remember(group, read);
            return Ok(Some(messages));
        }
        let stored = self
            .timed(
                backoff,
                "shadow update",
                self.alarms.store(group, &state, read.version),
            )
            .await?;
        match stored {
            StoreOutcome::Stored(version) => {
                self.remember(
                    group,
                    Versioned {
                        state,
                        version: Some(version),
                    },
                );
                Ok(Some(messages))
            }
            StoreOutcome::Conflict => {
                self.forget(group);
                Ok(None)
            }
        }
    }

    /// Runs one store call under the attempt timeout of `backoff`.
    async fn timed<T>(
        &self,
        backoff: &Backoff,
        what: &str,
        call: impl std::future::Future<Output = Result<T, DownstreamError>>,
    ) -> Result<T, DownstreamError> {
        match backoff.attempt_timeout() {
            None => Err(DownstreamError::Retryable("deadline reached".into())),
            Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                Err(DownstreamError::Retryable(format!(
                    "{what} timed out after {limit:?}"
                )))
            }),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<GroupId, Versioned>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, group: &GroupId) -> Option<Versioned> {
        self.cache().get(group).cloned()
    }

    fn remember(&self, group: &GroupId, state: Versioned) {
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED_GROUPS && !cache.contains_key(group) {
            cache.clear();
        }
        cache.insert(group.clone(), state);
    }

    fn forget(&self, group: &GroupId) {
        self.cache().remove(group);
    }

    /// Delivered messages leave the cached outbox, so the next write drops them.
    fn forget_delivered(&self, group: &GroupId, delivered: &[Pending]) {
        if let Some(entry) = self.cache().get_mut(group) {
            entry.state.delivered(delivered);
        }
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
