//! Alarm transitions: per group, the state committed through the one conditional-update
//! loop ([`crate::retry::update_alarm_state`]), then the messages that commit decided
//! published; the warm instance's cache of committed states.

use super::check::Checked;
use super::publish::Publishing;
use super::settings::PipelineSettings;
use crate::ports::{AlarmStore, DownstreamError, Message, Publisher, Versioned};
use crate::retry::{self, Change, RetryPolicy};
use sensor_model::alarms::machine::{self, Disposition, Input};
use sensor_model::alarms::state::Pending;
use sensor_model::domain::arrival::Arrival;
use sensor_model::domain::group_id::GroupId;
use sensor_model::domain::sensor::Sensor;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

/// Groups whose state a warm instance keeps; beyond it the cache starts over.
const MAX_CACHED_GROUPS: usize = 1024;

/// The last committed state per group, with its version. Every write is still conditional
/// on that version, so a stale copy costs one conflict, never a wrong transition.
#[derive(Default)]
pub(super) struct StateCache {
    groups: Mutex<HashMap<GroupId, Versioned>>,
}

impl StateCache {
    fn groups(&self) -> MutexGuard<'_, HashMap<GroupId, Versioned>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn cached(&self, group: &GroupId) -> Option<Versioned> {
        self.groups().get(group).cloned()
    }

    pub(super) fn remember(&self, group: &GroupId, state: Versioned) {
        let mut cache = self.groups();
        if cache.len() >= MAX_CACHED_GROUPS && !cache.contains_key(group) {
            cache.clear();
        }
        cache.insert(group.clone(), state);
    }

    pub(super) fn forget(&self, group: &GroupId) {
        self.groups().remove(group);
    }

    /// Delivered messages leave the cached outbox, so the next write drops them.
    pub(super) fn forget_delivered(&self, group: &GroupId, delivered: &[Pending]) {
        if let Some(entry) = self.groups().get_mut(group) {
            entry.state.delivered(delivered);
        }
    }
}

/// What the alarm stage of one request works with.
pub(super) struct Alarms<'a, A, P> {
    pub store: &'a A,
    pub cache: &'a StateCache,
    pub settings: &'a PipelineSettings,
    pub retry: RetryPolicy,
    pub publishing: &'a Publishing<'a, P>,
}

impl<A: AlarmStore, P: Publisher> Alarms<'_, A, P> {
    /// Alarm transitions for every group of the request, the groups concurrently; per
    /// reading, why it must be resent if it must.
    pub(super) async fn apply_alarms(
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
        let messages: Vec<usize> = members.iter().map(|&n| checked[n].1.message).collect();
        let runs = message_runs(&messages);
        let to_publish = match self.commit(group, &inputs, &runs, arrival, deadline).await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(sensor = %self.settings.sensor, group = %group.as_str(), reason = %e, "alarm state not committed");
                let reason = format!("alarm state: {}", e.reason());
                return members.iter().map(|_| Err(reason.clone())).collect();
            }
        };
        let queue: Vec<(usize, Message)> = to_publish
            .iter()
            .enumerate()
            .map(|(slot, pending)| {
                let sensor = Sensor::parse(&pending.sensor).unwrap_or(self.settings.sensor);
                let message = Message {
                    topic: self.settings.topic.topic(sensor, group),
                    payload: serde_json::to_vec(&pending.message).unwrap_or_default(),
                };
                (slot, message)
            })
            .collect();
        let published = self
            .publishing
            .publish_queue(queue, to_publish.len(), deadline)
            .await;
        let delivered: Vec<Pending> = to_publish
            .iter()
            .zip(&published)
            .filter(|(_, r)| r.is_ok())
            .map(|(p, _)| p.clone())
            .collect();
        self.cache.forget_delivered(group, &delivered);
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

    /// Applies `inputs` to the group's state, one message's run of them after another
    /// (`runs`, from [`message_runs`]), and commits the result once (conditional on the
    /// version read, recomputed after every lost race); the messages to publish: the new
    /// transitions and the committed ones of resent readings.
    async fn commit(
        &self,
        group: &GroupId,
        inputs: &[Input<'_>],
        runs: &[std::ops::Range<usize>],
        arrival: Arrival,
        deadline: Instant,
    ) -> Result<Vec<Pending>, DownstreamError> {
        let rules = &self.settings.rules;
        let result = retry::update_alarm_state(
            self.store,
            group,
            self.cache.cached(group),
            self.retry,
            deadline,
            |current| {
                let mut state = current.clone();
                let mut messages = Vec::new();
                for run in runs {
                    let inputs = &inputs[run.clone()];
                    let step = machine::apply(&mut state, inputs, rules, arrival);
                    messages.extend(step.messages);
                    for (input, disposition) in inputs.iter().zip(&step.dispositions) {
                        // A reading resent within the call (two records of one batch)
                        // already has its messages here; only resends are looked up.
                        if *disposition == Disposition::Resent
                            && !messages.iter().any(|m| m.id == input.id)
                        {
                            messages.extend(state.pending_for(input.id).cloned());
                        }
                    }
                }
                if state == *current {
                    // Only stale or resent readings: nothing to write.
                    Change::Unchanged(messages)
                } else {
                    Change::Write(state, messages)
                }
            },
        )
        .await;
        match result {
            Ok(updated) => {
                self.cache.remember(group, updated.current);
                Ok(updated.value)
            }
            Err(e) => {
                self.cache.forget(group);
                Err(e)
            }
        }
    }
}

/// The runs of equal message numbers in `messages` (one group's readings in call order),
/// as index ranges: each run is what one request would have carried, so the state machine
/// applies it in one step, as it would that request.
fn message_runs(messages: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if messages[run.start] == *message => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::message_runs;

    #[test]
    fn a_run_is_one_message() {
        assert_eq!(message_runs(&[]), vec![]);
        assert_eq!(message_runs(&[0, 0, 0]), vec![0..3]);
        assert_eq!(message_runs(&[0, 1, 1, 4, 0]), vec![0..1, 1..3, 3..4, 4..5]);
    }
}
