//! Silent boxes: the scheduled check (functions/nodata, every minute) finds groups whose
//! newest reading *arrived* (the document's `date`, receive time, so a wrong box clock
//! does not matter) longer ago than `NO_DATA_AFTER`, among the groups seen within
//! `NO_DATA_WITHIN_DAYS`, moves each such (group, sensor) to the `no_data` alarm and
//! publishes `{"warning": "no data", ...}`. The group's next reading clears it
//! (`crate::alarms::machine`).
//!
//! Order as in the pipeline: commit the alarm to the group's state (versioned), then
//! publish. If the publish fails after the retries, the alarm is taken back out of the
//! state, so the next run raises it again rather than losing it.

use crate::alarms::message::NoDataWarning;
use crate::alarms::settings;
use crate::alarms::state::{GroupAlarms, NoData, ALARM};
use crate::domain::group_id::GroupId;
use crate::domain::sensor::Sensor;
use crate::ingest::document::RECEIVED_FORMAT;
use crate::ingest::retry::{Backoff, RetryPolicy};
use crate::ingest::topic::TopicTemplate;
use crate::ports::{AlarmStore, DownstreamError, Message, Publisher, StoreOutcome};
use chrono::{DateTime, Utc};
use std::future::Future;
use tokio::time::Instant;

/// The newest receive time of one group's readings of one sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct LastSeen {
    pub sensor: Sensor,
    pub group: GroupId,
    pub received: DateTime<Utc>,
}

/// Where readings are recorded (the OpenSearch indices on AWS).
pub trait Activity: Send + Sync {
    /// Every (sensor, group) with a reading received since `since`, and its newest.
    fn last_seen(
        &self,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<LastSeen>, DownstreamError>> + Send;
}

/// `NO_DATA_AFTER` (seconds, default 900) and `NO_DATA_WITHIN_DAYS` (default 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoDataSettings {
    pub after_s: i64,
    pub within_days: i64,
}

impl Default for NoDataSettings {
    fn default() -> Self {
        NoDataSettings {
            after_s: 900,
            within_days: 7,
        }
    }
}

impl NoDataSettings {
    /// From the environment (`lookup` answers like `std::env::var`); errors name the variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<NoDataSettings, String> {
        let mut s = NoDataSettings::default();
        if let Some(v) = lookup("NO_DATA_AFTER").filter(|v| !v.trim().is_empty()) {
            s.after_s =
                settings::parse_seconds(&v, 60).map_err(|e| format!("NO_DATA_AFTER: {e}"))?;
        }
        if let Some(v) = lookup("NO_DATA_WITHIN_DAYS").filter(|v| !v.trim().is_empty()) {
            s.within_days = v
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|d| (1..=90).contains(d))
                .ok_or_else(|| {
                    format!("NO_DATA_WITHIN_DAYS: {v:?} is not a whole number of days from 1 to 90")
                })?;
        }
        if s.after_s >= s.within_days * 86_400 {
            return Err("NO_DATA_AFTER must be shorter than NO_DATA_WITHIN_DAYS".into());
        }
        Ok(s)
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub groups_seen: usize,
    pub raised: usize,
    /// Could not be raised now (state or publish failed); the next run tries again.
    pub failed: usize,
}

pub struct NoDataCheck<P, S, A> {
    pub settings: NoDataSettings,
    pub topic: TopicTemplate,
    pub retry: RetryPolicy,
    pub publisher: P,
    pub store: S,
    pub activity: A,
}

impl<P: Publisher, S: AlarmStore, A: Activity> NoDataCheck<P, S, A> {
    /// One run at `now`.
    pub async fn run(
        &self,
        now: DateTime<Utc>,
        deadline: Instant,
    ) -> Result<Summary, DownstreamError> {
        let since = now - chrono::Duration::days(self.settings.within_days);
        let seen = self.activity.last_seen(since).await?;
        let mut summary = Summary {
            groups_seen: seen.len(),
            ..Summary::default()
        };
        for last in seen {
            let silent_s = (now - last.received).num_seconds();
            if silent_s <= self.settings.after_s {
                continue;
            }
            match self.raise(&last, silent_s, deadline).await {
                Ok(true) => summary.raised += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(group = %last.group.as_str(), sensor = %last.sensor, reason = %e, "no-data alarm not raised");
                    summary.failed += 1;
                }
            }
        }
        Ok(summary)
    }

    /// Raises the alarm for one silent (group, sensor); `false` if it already is raised.
    async fn raise(
        &self,
        last: &LastSeen,
        silent_s: i64,
        deadline: Instant,
    ) -> Result<bool, DownstreamError> {
        let sensor = last.sensor.name();
        let entry = NoData {
            sensor: sensor.to_string(),
            since: last.received.format(RECEIVED_FORMAT).to_string(),
            since_ms: last.received.timestamp_millis(),
        };
        let raised = self
            .update(&last.group, deadline, |state| {
                if state.no_data.iter().any(|n| n.sensor == sensor) {
                    return false;
                }
                // A reading that arrived after the search: the box is not silent.
                if state
                    .received_ms(sensor)
                    .is_some_and(|ms| ms > entry.since_ms + 1_000)
                {
                    return false;
                }
                state.no_data.push(entry.clone());
                true
            })
            .await?;
        if !raised {
            return Ok(false);
        }
        let warning = NoDataWarning {
            warning: "no data",
            state: ALARM,
            sensor: last.sensor.name(),
            groupid: last.group.as_str().to_string(),
            since: entry.since.clone(),
            silent_s,
        };
        let message = Message {
            topic: self.topic.topic(last.sensor, &last.group),
            payload: serde_json::to_vec(&warning).unwrap_or_default(),
        };
        if let Err(e) = self.publish(&message, deadline).await {
            // Take the alarm back so the next run raises (and publishes) it again.
            let _ = self
                .update(&last.group, deadline, |state| {
                    let before = state.no_data.len();
                    state.no_data.retain(|n| n != &entry);
                    state.no_data.len() != before
                })
                .await;
            return Err(e);
        }
        Ok(true)
    }

    /// Read, change, write conditional on the version; `change` says whether it changed
    /// anything (nothing written otherwise).
    async fn update(
        &self,
        group: &GroupId,
        deadline: Instant,
        change: impl Fn(&mut GroupAlarms) -> bool,
    ) -> Result<bool, DownstreamError> {
        let mut backoff = Backoff::new(self.retry, deadline);
        loop {
            let result: Result<Option<bool>, DownstreamError> = async {
                let read = self.store.load(group).await?;
                let mut state = read.state;
                if !change(&mut state) {
                    return Ok(Some(false));
                }
                match self.store.store(group, &state, read.version).await? {
                    StoreOutcome::Stored(_) => Ok(Some(true)),
                    StoreOutcome::Conflict => Ok(None),
                }
            }
            .await;
            match result {
                Ok(Some(changed)) => return Ok(changed),
                Ok(None) => {
                    if backoff.attempt_timeout().is_none() {
                        return Err(DownstreamError::Retryable("deadline reached".into()));
                    }
                }
                Err(e) if e.is_retryable() => {
                    if !backoff.wait_before_retry().await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn publish(&self, message: &Message, deadline: Instant) -> Result<(), DownstreamError> {
        let mut backoff = Backoff::new(self.retry, deadline);
        loop {
            match self.publisher.publish(message).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() => {
                    if !backoff.wait_before_retry().await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}
