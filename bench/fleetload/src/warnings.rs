//! The warnings a run saw on `pi/#`, judged against the schedule (pure).
//!
//! Two views: *exact*, each message as (box, reading number, measure, state), which is its
//! (doc id, measure) with the doc id mapped back to the reading (createdtime moves with
//! each run's start, so doc ids differ between runs of the same seed); and *episodes*
//! ([`Episode`]), which do not depend on which reading of a group the alarm state
//! happened to apply first. A message whose (doc id, measure, state) came twice is
//! *doubled*; an expected episode without a message is *missing*.

use crate::readings::{group_index, Episode, Plan};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// (box, reading number, measure, state).
pub type Exact = (usize, usize, String, String);
/// Document id -> (box, reading number).
pub type Ids = HashMap<String, (usize, usize)>;
/// (topic, payload) as they arrived.
pub type Messages = Vec<(String, Value)>;

#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub messages: usize,
    pub alarms: usize,
    pub clears: usize,
    /// Messages of another shape (no `state`, or an id of no reading of this run).
    pub other: usize,
    /// Extra copies of a (doc id, measure, state) already seen.
    pub doubled: usize,
    pub exact: BTreeSet<Exact>,
    pub episodes: BTreeMap<Episode, usize>,
    pub expected: BTreeSet<Episode>,
}

impl Summary {
    /// Expected episodes with no message.
    pub fn missing(&self) -> Vec<Episode> {
        self.expected
            .iter()
            .filter(|e| !self.episodes.contains_key(e))
            .copied()
            .collect()
    }

    /// Episodes with a message that the schedule does not cause.
    pub fn unexpected(&self) -> Vec<Episode> {
        self.episodes
            .keys()
            .filter(|e| !self.expected.contains(e))
            .copied()
            .collect()
    }

    /// Episodes announced by more than one reading (a transition published twice).
    pub fn episodes_twice(&self) -> usize {
        self.episodes.values().filter(|n| **n > 1).count()
    }
}

/// Judges `messages` (topic, payload) of a run of `plan`; `ids` maps each document id to
/// its (box, reading number).
pub fn summarize(plan: &Plan, ids: &Ids, messages: &[(String, Value)]) -> Summary {
    let mut s = Summary {
        expected: plan.expected(),
        ..Summary::default()
    };
    let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
    for (_, message) in messages {
        if message.get("marker").is_some() {
            continue;
        }
        s.messages += 1;
        let id = message["id"].as_str().unwrap_or_default();
        let measure = message["measure"].as_str().unwrap_or_default();
        let state = message["state"].as_str().unwrap_or_default();
        let (Some(&(i, k)), "alarm" | "normal") = (ids.get(id), state) else {
            s.other += 1;
            continue;
        };
        if state == "alarm" {
            s.alarms += 1;
        } else {
            s.clears += 1;
        }
        let copies = seen
            .entry((id.to_owned(), measure.to_owned(), state.to_owned()))
            .or_default();
        *copies += 1;
        if *copies > 1 {
            s.doubled += 1;
            continue;
        }
        s.exact.insert((i, k, measure.to_owned(), state.to_owned()));
        let g = group_index(i);
        let episode = Episode {
            group: g,
            state: if state == "alarm" { "alarm" } else { "normal" },
            cycle: plan.cycle(g, k),
        };
        *s.episodes.entry(episode).or_default() += 1;
    }
    s
}

/// A fault run against the fault-free run of the same seed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Episodes the baseline announced and the fault run did not.
    pub lost_episodes: usize,
    pub extra_episodes: usize,
    /// (box, reading, measure, state) of the baseline not in the fault run, and the reverse.
    pub lost_exact: usize,
    pub extra_exact: usize,
}

pub fn compare(baseline: &Summary, run: &Summary) -> Comparison {
    Comparison {
        lost_episodes: baseline
            .episodes
            .keys()
            .filter(|e| !run.episodes.contains_key(e))
            .count(),
        extra_episodes: run
            .episodes
            .keys()
            .filter(|e| !baseline.episodes.contains_key(e))
            .count(),
        lost_exact: baseline.exact.difference(&run.exact).count(),
        extra_exact: run.exact.difference(&baseline.exact).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan() -> Plan {
        Plan::for_tests(7, 10, 20)
    }

    /// The messages a perfect run sends: one per expected transition, from box `b`.
    fn perfect(plan: &Plan, b: usize) -> (Ids, Messages) {
        let mut ids = HashMap::new();
        let mut messages = Vec::new();
        let mut alarm = false;
        for k in 0..plan.readings {
            let id = format!("id-{b}-{k}");
            ids.insert(id.clone(), (b, k));
            if plan.breaching(0, k) != alarm {
                alarm = !alarm;
                let state = if alarm { "alarm" } else { "normal" };
                messages.push((
                    "pi/g0".into(),
                    json!({"id": id, "measure": "no2", "state": state}),
                ));
            }
        }
        (ids, messages)
    }

    #[test]
    fn a_perfect_run_misses_nothing() {
        let plan = plan();
        let (ids, messages) = perfect(&plan, 3);
        let s = summarize(&plan, &ids, &messages);
        assert!(s.missing().is_empty(), "{:?}", s.missing());
        assert!(s.unexpected().is_empty());
        assert_eq!((s.doubled, s.other, s.episodes_twice()), (0, 0, 0));
        assert_eq!(s.alarms + s.clears, s.expected.len());
    }

    #[test]
    fn doubles_losses_and_other_boxes_are_told_apart() {
        let plan = plan();
        let (ids, messages) = perfect(&plan, 3);
        let baseline = summarize(&plan, &ids, &messages);
        // Another box of the group announcing the same transitions: same episodes.
        let (ids7, messages7) = perfect(&plan, 7);
        let other = summarize(&plan, &ids7, &messages7);
        assert_eq!(
            compare(&baseline, &other),
            Comparison {
                lost_exact: messages.len(),
                extra_exact: messages.len(),
                ..Comparison::default()
            }
        );
        // The first message twice, the last one lost, a marker ignored.
        let mut faulty = messages[..messages.len() - 1].to_vec();
        faulty.push(messages[0].clone());
        faulty.push(("pi/marker".into(), json!({"marker": "x"})));
        let run = summarize(&plan, &ids, &faulty);
        assert_eq!(run.doubled, 1);
        assert_eq!(run.missing().len(), 1);
        let c = compare(&baseline, &run);
        assert_eq!((c.lost_episodes, c.extra_episodes), (1, 0));
    }
}
