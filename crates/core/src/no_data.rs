//! Silent boxes: the scheduled check (functions/nodata, every minute) finds groups whose
//! newest reading *arrived* (the document's `date`, receive time, so a wrong box clock
//! does not matter) longer ago than `NO_DATA_AFTER`, among the groups seen within
//! `NO_DATA_WITHIN_DAYS`, moves each such (group, sensor) to the `no_data` alarm and
//! publishes `{"warning": "no data", ...}`. The group's next reading clears it
//! (`sensor_model::alarms::machine`).
//!
//! Order as in the pipeline: commit the alarm to the group's state (versioned), then
//! publish. If the publish fails after the retries, the alarm is taken back out of the
//! state, so the next run raises it again rather than losing it.

use crate::downstream::Target;
use crate::ports::{AlarmStore, DownstreamError, Message, Publisher};
use crate::retry::{self, Change, RetryPolicy};
use chrono::{DateTime, Utc};
use sensor_model::alarms::message::NoDataWarning;
use sensor_model::alarms::state::{GroupAlarms, NoData, ALARM};
use sensor_model::document::RECEIVED_FORMAT;
use sensor_model::domain::group_id::GroupId;
use sensor_model::domain::sensor::Sensor;
use sensor_model::topic::TopicTemplate;
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

/// How long a group may stay silent (`NO_DATA_AFTER`, seconds, default 900) and how far
/// back silent groups are looked for (`NO_DATA_WITHIN_DAYS`, default 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoDataLimits {
    pub after_s: i64,
    pub within_days: i64,
}

impl Default for NoDataLimits {
    fn default() -> Self {
        NoDataLimits {
            after_s: 900,
            within_days: 7,
        }
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
    pub limits: NoDataLimits,
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
        let since = now - chrono::Duration::days(self.limits.within_days);
        let seen = retry::call(
            self.retry,
            deadline,
            Target::OpenSearch,
            "last seen",
            || self.activity.last_seen(since),
        )
        .await?;
        let mut summary = Summary {
            groups_seen: seen.len(),
            ..Summary::default()
        };
        for last in seen {
            let silent_s = (now - last.received).num_seconds();
            if silent_s <= self.limits.after_s {
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

    /// Read, change, write conditional on the version (the one conditional-update loop);
    /// `change` says whether it changed anything (nothing written otherwise).
    async fn update(
        &self,
        group: &GroupId,
        deadline: Instant,
        change: impl Fn(&mut GroupAlarms) -> bool,
    ) -> Result<bool, DownstreamError> {
        let updated =
            retry::update_alarm_state(&self.store, group, None, self.retry, deadline, |current| {
                let mut state = current.clone();
                if change(&mut state) {
                    Change::Write(state, true)
                } else {
                    Change::Unchanged(false)
                }
            })
            .await?;
        Ok(updated.value)
    }

    async fn publish(&self, message: &Message, deadline: Instant) -> Result<(), DownstreamError> {
        retry::call(self.retry, deadline, Target::Iot, "publish", || {
            self.publisher.publish(message)
        })
        .await
    }
}
