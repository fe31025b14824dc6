//! The alarm state machine: pure code, no I/O. One call applies one request's readings
//! of one group to the group's state and returns the transition messages.
//!
//! Per (sensor, measure, bound) of a rule:
//! - `normal`: a breaching reading (at or past the bound) counts; the `for`-th in a row
//!   raises the alarm (message: the warning with `"state": "alarm"`); any other reading
//!   resets the count.
//! - `alarm`: a reading past `clear` returns to `normal` (message: clear, with duration
//!   and peak); a breaching reading repeats the warning only when `renotify` is due;
//!   a value between `clear` and the bound changes nothing (hysteresis).
//!
//! Staleness: per group and sensor, only the newest reading of a request applies, and
//! only if it is not older than the newest one applied before. Time is the reading's
//! *effective* time ([`Arrival::effective`]): its own `createdtime`, but never later than
//! its arrival plus a small tolerance. Compared only with the same group's readings, so a
//! box whose clock is years behind still alarms on live readings; capped at arrival, so a
//! clock that ran ahead (or one reading dated in year 9999) cannot make a later live
//! reading stale. Within a request, readings of equal effective time keep the order of
//! their `createdtime`. A reading whose id was applied before (a resend) applies no
//! second time.

use crate::alarms::message::{Clear, NoDataClear};
use crate::alarms::state::{GroupAlarms, KeyState, Pending, ALARM, NORMAL};
use crate::domain::arrival::Arrival;
use crate::domain::reading::{MeasureReading, Reading};
use crate::rules::{Bound, Rule, Rules, Trip};
use crate::warning::Warning;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// One valid reading of the group, with its document id.
pub struct Input<'a> {
    pub reading: &'a Reading,
    pub id: &'a str,
    /// Receive time minus `createdtime`, set only when it exceeds `CLOCK_SKEW_WARN`.
    pub clock_skew_s: Option<i64>,
}

/// What became of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Applied to the state.
    Applied,
    /// Older than a reading already applied or in the same request: changes nothing.
    Stale,
    /// Applied before (same id): changes nothing; its committed messages are re-sent.
    Resent,
}

pub struct Step {
    /// One per input, in input order.
    pub dispositions: Vec<Disposition>,
    /// New transition messages, in reading-time order (also added to the outbox).
    pub messages: Vec<Pending>,
}

/// Applies `inputs` (one group's readings of one request) to `state`.
pub fn apply(
    state: &mut GroupAlarms,
    inputs: &[Input<'_>],
    rules: &Rules,
    arrival: Arrival,
) -> Step {
    let received = arrival.received();
    // Per input, once: (effective, createdtime) in epoch ms. The effective time orders;
    // the box's own time only breaks ties between readings its arrival capped alike.
    let keys: Vec<(i64, i64)> = inputs
        .iter()
        .map(|input| {
            let created = input.reading.taken_at().utc();
            (
                arrival.effective(created).timestamp_millis(),
                created.timestamp_millis(),
            )
        })
        .collect();
    let mut newest_in_request: HashMap<&'static str, (i64, i64)> = HashMap::new();
    for (input, &key) in inputs.iter().zip(&keys) {
        let newest = newest_in_request
            .entry(input.reading.sensor().name())
            .or_insert((i64::MIN, i64::MIN));
        *newest = (*newest).max(key);
    }
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by_key(|&i| keys[i]);

    let mut dispositions = vec![Disposition::Stale; inputs.len()];
    let mut messages = Vec::new();
    for i in order {
        let input = &inputs[i];
        let sensor = input.reading.sensor().name();
        let (effective_ms, _) = keys[i];
        if state.was_applied(input.id) {
            dispositions[i] = Disposition::Resent;
            continue;
        }
        let older_in_request = newest_in_request.get(sensor).is_some_and(|&n| keys[i] < n);
        let older_than_applied = state.newest_ms(sensor).is_some_and(|n| effective_ms < n);
        if older_in_request || older_than_applied {
            continue;
        }
        dispositions[i] = Disposition::Applied;
        state.set_newest_ms(sensor, effective_ms);
        state.set_received_ms(sensor, received.timestamp_millis());
        state.mark_applied(input.id);
        let mut out = |message: serde_json::Value| {
            messages.push(Pending {
                id: input.id.to_string(),
                sensor: sensor.to_string(),
                message,
            })
        };
        if let Some(clear) = clear_no_data(state, input, received) {
            out(serde_json::to_value(clear).unwrap_or_default());
        }
        for measure in input.reading.measures() {
            let rule = rules.rule(measure.measure());
            for bound in rule.bounds() {
                if let Some(message) = step_key(state, input, measure, rule, bound, arrival) {
                    out(message);
                }
            }
        }
    }
    for message in &messages {
        state.push_outbox(message.clone());
    }
    Step {
        dispositions,
        messages,
    }
}

fn clear_no_data(
    state: &mut GroupAlarms,
    input: &Input<'_>,
    received: DateTime<Utc>,
) -> Option<NoDataClear> {
    let sensor = input.reading.sensor().name();
    let at = state.no_data.iter().position(|n| n.sensor == sensor)?;
    let silent = state.no_data.remove(at);
    Some(NoDataClear {
        clear: "no data clear",
        state: NORMAL,
        sensor,
        groupid: input.reading.group().as_str().to_string(),
        since: silent.since,
        duration_s: (received.timestamp_millis() - silent.since_ms).max(0) / 1000,
        id: input.id.to_string(),
    })
}

/// One reading's effect on one (measure, bound): the message of a transition, if any.
fn step_key(
    state: &mut GroupAlarms,
    input: &Input<'_>,
    measure: &MeasureReading,
    rule: Rule,
    bound: Bound,
    arrival: Arrival,
) -> Option<serde_json::Value> {
    let sensor = input.reading.sensor().name();
    let name = measure.measure().name();
    let value = measure.value();
    // Durations and renotify count in effective time too: a future-dated reading must
    // not set `notified_ms` or `since_ms` beyond what later live readings can reach.
    let at_ms = arrival
        .effective(measure.created().utc())
        .timestamp_millis();
    let position = state
        .alarms
        .iter()
        .position(|k| k.sensor == sensor && k.measure == name && k.bound == bound.name());
    let mut key = match position {
        Some(p) => state.alarms.remove(p),
        None => KeyState {
            sensor: sensor.to_string(),
            measure: name.to_string(),
            bound: bound.name().to_string(),
            state: NORMAL.to_string(),
            breaches: 0,
            since: None,
            since_ms: 0,
            peak: value,
            notified_ms: 0,
        },
    };
    let threshold = rule.threshold(bound)?;
    let breaching = rule.breaches(bound, value);
    let alarm_message = || {
        let trip = Trip { bound, threshold };
        let mut warning = Warning::new(input.reading, measure, trip, input.id);
        warning.state = Some(ALARM);
        warning.clock_skew_s = input.clock_skew_s;
        serde_json::to_value(warning).unwrap_or_default()
    };
    let mut message = None;
    if key.is_alarm() {
        key.peak = match bound {
            Bound::High => key.peak.max(value),
            Bound::Low => key.peak.min(value),
        };
        if rule.clears(bound, value) {
            let clear = Clear {
                clear: format!("{name} clear"),
                state: NORMAL,
                sensor,
                groupid: input.reading.group().as_str().to_string(),
                measure: name,
                bound: bound.name(),
                value,
                threshold: rule.clear_level(bound).unwrap_or(threshold),
                since: key.since.take().unwrap_or_default(),
                createdtime: measure.created().as_str().to_string(),
                duration_s: (at_ms - key.since_ms).max(0) / 1000,
                peak: key.peak,
                id: input.id.to_string(),
            };
            message = serde_json::to_value(clear).ok();
            key.state = NORMAL.to_string();
            key.breaches = 0;
        } else if breaching {
            key.breaches = key.breaches.saturating_add(1);
            if let Some(every) = rule.renotify_s() {
                if at_ms - key.notified_ms >= every * 1000 {
                    key.notified_ms = at_ms;
                    message = Some(alarm_message());
                }
            }
        }
    } else if breaching {
        key.breaches = key.breaches.saturating_add(1);
        if key.breaches >= rule.for_readings() {
            key.state = ALARM.to_string();
            key.since = Some(measure.created().as_str().to_string());
            key.since_ms = at_ms;
            key.peak = value;
            key.notified_ms = at_ms;
            message = Some(alarm_message());
        }
    } else {
        key.breaches = 0;
    }
    if key.is_alarm() || key.breaches > 0 {
        state.alarms.push(key);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::DocId;
    use crate::domain::arrival::AheadTolerance;
    use crate::domain::sensor::Sensor;
    use chrono::TimeZone;
    use chrono_tz::Tz;
    use serde_json::{json, Value};

    fn rules(json: &str) -> Rules {
        Rules::with_overrides(json).unwrap()
    }

    /// A gasdetector reading of group 2 with `no2` at `value`, taken `t` seconds after
    /// 2021-09-03 18:00:00.
    fn gas(value: f64, t: i64) -> Reading {
        let at = Utc.with_ymd_and_hms(2021, 9, 3, 18, 0, 0).unwrap() + chrono::Duration::seconds(t);
        let created = at.format("%Y-%m-%d %H:%M:%S").to_string();
        Reading::parse(
            Sensor::Gasdetector,
            json!({"groupid": "2", "no2": {"sensorid": "6", "sensortype": "9", "value": value, "createdtime": created}}),
            Tz::UTC,
        )
        .unwrap()
    }

    fn temp(value: f64, t: i64) -> Reading {
        let at = Utc.with_ymd_and_hms(2021, 9, 3, 18, 0, 0).unwrap() + chrono::Duration::seconds(t);
        let created = at.format("%Y-%m-%d %H:%M:%S").to_string();
        Reading::parse(
            Sensor::Temp,
            json!({"groupid": "2", "temperature": {"sensorid": "1", "sensortype": "2", "value": value, "createdtime": created}}),
            Tz::UTC,
        )
        .unwrap()
    }

    fn received() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
    }

    fn arrived(received: DateTime<Utc>) -> Arrival {
        Arrival::new(received, AheadTolerance::default())
    }

    /// Applies each reading in its own request; the message kinds in order
    /// (`"alarm"`, `"clear"`), one string per reading ("" when none).
    fn run(rules: &Rules, state: &mut GroupAlarms, readings: &[Reading]) -> Vec<String> {
        readings
            .iter()
            .map(|r| {
                let id = DocId::of(r);
                let step = apply(
                    state,
                    &[Input {
                        reading: r,
                        id: id.as_str(),
                        clock_skew_s: None,
                    }],
                    rules,
                    arrived(received()),
                );
                step.messages
                    .iter()
                    .map(|m| m.message["state"].as_str().unwrap_or("?").to_string())
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect()
    }

    fn series(make: fn(f64, i64) -> Reading, values: &[f64]) -> Vec<Reading> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| make(*v, 30 * i as i64))
            .collect()
    }

    #[test]
    fn sequences_per_rule_shape() {
        // (rule, values, expected message per reading)
        let cases: &[(&str, &[f64], &[&str])] = &[
            // Default no2 rule (high 88): fires once, silent while in alarm, clears below.
            (
                "{}",
                &[50.0, 95.0, 96.0, 99.0, 87.9, 50.0],
                &["", "alarm", "", "", "normal", ""],
            ),
            // At the bound is breaching; just below it clears (no hysteresis by default).
            ("{}", &[88.0, 87.99, 88.0], &["alarm", "normal", "alarm"]),
            // for: 3 fires on the third consecutive breach, a dip resets the count.
            (
                r#"{"no2": {"high": 88, "for": 3}}"#,
                &[90.0, 90.0, 50.0, 90.0, 90.0, 90.0, 90.0],
                &["", "", "", "", "", "alarm", ""],
            ),
            // clear: 80 -> hovering between 87 and 89 gives one alarm and no clear.
            (
                r#"{"no2": {"high": 88, "clear": 80}}"#,
                &[87.0, 89.0, 87.0, 89.0, 87.0, 89.0, 80.0, 79.9],
                &["", "alarm", "", "", "", "", "", "normal"],
            ),
            // Without clear the same hovering flaps.
            (
                "{}",
                &[87.0, 89.0, 87.0, 89.0],
                &["", "alarm", "normal", "alarm"],
            ),
            // renotify: 1 minute with readings every 30 s -> every second breaching reading.
            (
                r#"{"no2": {"high": 88, "renotify": 1}}"#,
                &[90.0, 90.0, 90.0, 90.0, 90.0, 50.0],
                &["alarm", "", "alarm", "", "alarm", "normal"],
            ),
        ];
        for (rule, values, expected) in cases {
            let mut state = GroupAlarms::default();
            let got = run(&rules(rule), &mut state, &series(gas, values));
            assert_eq!(got, *expected, "rule {rule} values {values:?}");
        }
    }

    #[test]
    fn low_bounds_mirror_high_ones() {
        let cases: &[(&str, &[f64], &[&str])] = &[
            ("{}", &[10.0, 0.0, -3.0, 0.5], &["", "alarm", "", "normal"]),
            (
                r#"{"temperature": {"low": 0, "clear": 5, "for": 2}}"#,
                &[0.0, 0.0, 3.0, -1.0, 5.0, 5.1],
                &["", "alarm", "", "", "", "normal"],
            ),
            // Both bounds: a jump from cold to hot clears one alarm and raises the other.
            ("{}", &[-1.0, 40.0], &["alarm", "alarm+normal"]),
        ];
        for (rule, values, expected) in cases {
            let mut state = GroupAlarms::default();
            let got = run(&rules(rule), &mut state, &series(temp, values));
            assert_eq!(got, *expected, "rule {rule} values {values:?}");
        }
    }

    #[test]
    fn clear_message_carries_duration_peak_and_since() {
        let mut state = GroupAlarms::default();
        let r = rules(r#"{"no2": {"high": 88, "clear": 80}}"#);
        let readings = series(gas, &[95.0, 120.0, 85.0, 70.0]);
        let mut messages = Vec::new();
        for reading in &readings {
            let id = DocId::of(reading);
            let input = Input {
                reading,
                id: id.as_str(),
                clock_skew_s: None,
            };
            messages.extend(apply(&mut state, &[input], &r, arrived(received())).messages);
        }
        assert_eq!(messages.len(), 2);
        let clear = &messages[1].message;
        assert_eq!(
            *clear,
            json!({"clear": "no2 clear", "state": "normal", "sensor": "gasdetector", "groupid": "2",
                   "measure": "no2", "bound": "high", "value": 70.0, "threshold": 80.0,
                   "since": "2021-09-03 18:00:00", "createdtime": "2021-09-03 18:01:30",
                   "duration_s": 90, "peak": 120.0, "id": DocId::of(&readings[3]).as_str()})
        );
        let alarm = &messages[0].message;
        assert_eq!(alarm["warning"], "no2 warning");
        assert_eq!(alarm["state"], "alarm");
        assert_eq!(alarm["threshold"], 88.0);
        assert!(alarm.get("clock_skew_s").is_none());
        assert!(state.alarms.is_empty(), "a cleared key leaves the document");
        assert_eq!(state.outbox.len(), 2);
    }

    #[test]
    fn stale_and_resent_readings_change_nothing() {
        let r = Rules::default();
        let mut state = GroupAlarms::default();
        let live = gas(95.0, 600);
        let old_normal = gas(10.0, 0);
        let id = DocId::of(&live);
        let one = |state: &mut GroupAlarms, reading: &Reading| {
            let id = DocId::of(reading);
            let input = Input {
                reading,
                id: id.as_str(),
                clock_skew_s: None,
            };
            apply(state, &[input], &r, arrived(received()))
        };
        let step = one(&mut state, &live);
        assert_eq!(step.dispositions, [Disposition::Applied]);
        assert_eq!(step.messages.len(), 1);
        let before = state.clone();
        // An older reading arriving late: stale, even though it would clear.
        let step = one(&mut state, &old_normal);
        assert_eq!(
            (step.dispositions[0], step.messages.len()),
            (Disposition::Stale, 0)
        );
        // The same reading again: resent, applied once.
        let step = one(&mut state, &live);
        assert_eq!(
            (step.dispositions[0], step.messages.len()),
            (Disposition::Resent, 0)
        );
        assert_eq!(state, before);
        assert_eq!(
            state.pending_for(id.as_str()).count(),
            1,
            "kept for re-publishing"
        );
    }

    #[test]
    fn within_a_request_only_the_newest_reading_per_sensor_applies() {
        let r = Rules::default();
        let mut state = GroupAlarms::default();
        // Out of order: the newest (normal) comes first, an old leak after it.
        let readings = [gas(20.0, 300), gas(95.0, 0), gas(96.0, 30), temp(40.0, 10)];
        let step = request(&mut state, &r, &readings, received());
        use Disposition::*;
        assert_eq!(step.dispositions, [Applied, Stale, Stale, Applied]);
        let kinds: Vec<&Value> = step
            .messages
            .iter()
            .map(|m| &m.message["measure"])
            .collect();
        assert_eq!(
            kinds,
            [&json!("temperature")],
            "the gas leak is history, temp is live"
        );
    }

    #[test]
    fn a_catch_up_batch_with_a_whole_past_leak_publishes_at_most_its_newest_transition() {
        let r = Rules::default();
        // 200 readings every 30 s: normal, a leak in the middle, normal again at the end.
        let values: Vec<f64> = (0..200)
            .map(|i| if (50..150).contains(&i) { 120.0 } else { 20.0 })
            .collect();
        let readings = series(gas, &values);
        let ids: Vec<DocId> = readings.iter().map(DocId::of).collect();
        let inputs: Vec<Input> = readings
            .iter()
            .zip(&ids)
            .rev()
            .map(|(reading, id)| Input {
                reading,
                id: id.as_str(),
                clock_skew_s: None,
            })
            .collect();
        let mut state = GroupAlarms::default();
        let step = apply(&mut state, &inputs, &r, arrived(received()));
        assert!(step.messages.is_empty(), "{:?}", step.messages);
        assert_eq!(
            step.dispositions
                .iter()
                .filter(|d| **d == Disposition::Applied)
                .count(),
            1
        );
        // Same backlog ending inside the leak: exactly the one alarm its newest implies.
        let mut state = GroupAlarms::default();
        let step = apply(&mut state, &inputs[50..], &r, arrived(received()));
        assert_eq!(step.messages.len(), 1);
        assert_eq!(step.messages[0].message["state"], "alarm");
        assert_eq!(step.messages[0].id, ids[149].as_str());
    }

    #[test]
    fn a_clock_years_behind_still_alarms_once_with_its_skew() {
        let r = Rules::default();
        let mut state = GroupAlarms::default();
        let mut alarms = 0;
        for (i, value) in [20.0, 95.0, 96.0, 97.0].into_iter().enumerate() {
            let reading = gas(value, 30 * i as i64);
            let id = DocId::of(&reading);
            let skew = (received() - reading.taken_at().utc()).num_seconds();
            let input = Input {
                reading: &reading,
                id: id.as_str(),
                clock_skew_s: Some(skew),
            };
            for m in apply(&mut state, &[input], &r, arrived(received())).messages {
                alarms += 1;
                assert!(m.message["clock_skew_s"].as_i64().unwrap() > 5 * 365 * 86_400);
            }
        }
        assert_eq!(alarms, 1);
    }

    // --- A reading's own time never silences an alarm (issue 19) ---------------------

    /// The instant real time starts in the clock tests: readings are received from here.
    fn real(t: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(t)
    }

    /// A gasdetector reading of group 2 with `no2` at `value`, dated `created`.
    fn gas_dated(value: f64, created: DateTime<Utc>) -> Reading {
        Reading::parse(
            Sensor::Gasdetector,
            json!({"groupid": "2", "no2": {"sensorid": "6", "sensortype": "9", "value": value,
                   "createdtime": created.format("%Y-%m-%d %H:%M:%S").to_string()}}),
            Tz::UTC,
        )
        .unwrap()
    }

    /// One request of `readings`, all received at `received`.
    fn request(
        state: &mut GroupAlarms,
        rules: &Rules,
        readings: &[Reading],
        received: DateTime<Utc>,
    ) -> Step {
        let ids: Vec<DocId> = readings.iter().map(DocId::of).collect();
        let inputs: Vec<Input> = readings
            .iter()
            .zip(&ids)
            .map(|(reading, id)| Input {
                reading,
                id: id.as_str(),
                clock_skew_s: None,
            })
            .collect();
        apply(state, &inputs, rules, arrived(received))
    }

    /// The states of a step's messages joined with `+` ("" when none).
    fn kinds(step: &Step) -> String {
        step.messages
            .iter()
            .map(|m| m.message["state"].as_str().unwrap_or("?").to_string())
            .collect::<Vec<_>>()
            .join("+")
    }

    /// Live readings, one per request every 10 s from real time `t0`, each dated
    /// `offset` from its receive time; the message kinds per request.
    fn live(
        state: &mut GroupAlarms,
        rules: &Rules,
        t0: i64,
        values: &[f64],
        offset: chrono::Duration,
    ) -> Vec<String> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let received = real(t0 + 10 * i as i64);
                kinds(&request(
                    state,
                    rules,
                    &[gas_dated(*v, received + offset)],
                    received,
                ))
            })
            .collect()
    }

    #[test]
    fn a_clock_that_ran_ahead_and_was_corrected_never_silences_the_next_leak() {
        let r = Rules::default();
        let ahead = [
            ("minutes", chrono::Duration::minutes(5)),
            ("hours", chrono::Duration::hours(3)),
            ("years", chrono::Duration::days(5 * 365)),
        ];
        for (what, offset) in ahead {
            let mut state = GroupAlarms::default();
            // Six normal readings while the box's clock runs ahead.
            let got = live(&mut state, &r, 0, &[20.0; 6], offset);
            assert_eq!(got, vec![""; 6], "ahead by {what}");
            // NTP corrects it: normal readings, a leak of five readings, normal again.
            let values = [20.0, 20.0, 95.0, 96.0, 97.0, 98.0, 99.0, 20.0, 20.0];
            let got = live(&mut state, &r, 60, &values, chrono::Duration::zero());
            assert_eq!(
                got,
                ["", "", "alarm", "", "", "", "", "normal", ""],
                "ahead by {what}, then corrected"
            );
        }
    }

    #[test]
    fn a_clock_ahead_all_along_alarms_once_and_clears_once() {
        let r = Rules::default();
        let mut state = GroupAlarms::default();
        let values = [20.0, 95.0, 96.0, 97.0, 20.0, 20.0];
        let got = live(&mut state, &r, 0, &values, chrono::Duration::hours(3));
        assert_eq!(got, ["", "alarm", "", "", "normal", ""]);
    }

    #[test]
    fn one_reading_dated_in_year_9999_does_not_silence_the_live_ones() {
        let r = Rules::default();
        let far = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
        for first in [20.0, 95.0] {
            let mut state = GroupAlarms::default();
            let step = request(&mut state, &r, &[gas_dated(first, far)], real(0));
            assert_eq!(step.dispositions, [Disposition::Applied]);
            let values = [20.0, 95.0, 96.0, 20.0, 95.0, 20.0];
            let mut got = vec![kinds(&step)];
            got.extend(live(&mut state, &r, 10, &values, chrono::Duration::zero()));
            let expected = if first > 88.0 {
                ["alarm", "normal", "alarm", "", "normal", "alarm", "normal"]
            } else {
                ["", "", "alarm", "", "normal", "alarm", "normal"]
            };
            assert_eq!(got, expected, "9999 reading of {first}");
        }
    }

    #[test]
    fn an_alarm_raised_by_a_future_reading_clears_with_its_real_duration() {
        let r = Rules::default();
        let mut state = GroupAlarms::default();
        let far = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
        request(&mut state, &r, &[gas_dated(95.0, far)], real(0));
        let step = request(&mut state, &r, &[gas_dated(20.0, real(90))], real(90));
        assert_eq!(kinds(&step), "normal");
        let duration = step.messages[0].message["duration_s"].as_i64().unwrap();
        assert!((85..=90).contains(&duration), "duration_s {duration}");
    }

    #[test]
    fn a_future_reading_during_an_alarm_does_not_silence_renotify() {
        let r = rules(r#"{"no2": {"high": 88, "renotify": 1}}"#);
        let mut state = GroupAlarms::default();
        let far = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
        let mut got = vec![kinds(&request(
            &mut state,
            &r,
            &[gas_dated(95.0, real(0))],
            real(0),
        ))];
        got.push(kinds(&request(
            &mut state,
            &r,
            &[gas_dated(95.0, far)],
            real(30),
        )));
        for t in [60, 90, 120] {
            got.push(kinds(&request(
                &mut state,
                &r,
                &[gas_dated(95.0, real(t))],
                real(t),
            )));
        }
        assert_eq!(got, ["alarm", "", "alarm", "", "alarm"]);
    }

    #[test]
    fn a_batch_mixing_future_current_and_old_readings() {
        let r = Rules::default();
        let mut state = GroupAlarms::default();
        let now = real(3600);
        let batch = [
            gas_dated(20.0, now + chrono::Duration::hours(3)),
            gas_dated(95.0, now - chrono::Duration::hours(1)),
            gas_dated(
                20.0,
                now + chrono::Duration::hours(3) + chrono::Duration::seconds(10),
            ),
            gas_dated(95.0, now - chrono::Duration::seconds(1)),
            gas_dated(95.0, now - chrono::Duration::minutes(30)),
        ];
        let step = request(&mut state, &r, &batch, now);
        use Disposition::*;
        assert_eq!(
            step.dispositions,
            [Stale, Stale, Applied, Stale, Stale],
            "one reading per request applies: the newest it can vouch for"
        );
        assert!(step.messages.is_empty());
        // The batch moved the mark no further than its arrival (plus the tolerance)...
        let mark = state.newest_ms("gasdetector").unwrap();
        assert!(mark <= arrived(now).latest_believable().timestamp_millis());
        // ...so the live leak 10 s later alarms, once, and clears once.
        let got = live(
            &mut state,
            &r,
            3610,
            &[95.0, 96.0, 20.0],
            chrono::Duration::zero(),
        );
        assert_eq!(got, ["alarm", "", "normal"]);
        // And an old reading arriving afterwards is still stale.
        let step = request(&mut state, &r, &[gas_dated(95.0, now)], real(3650));
        assert_eq!((step.dispositions[0], step.messages.len()), (Stale, 0));
    }

    #[test]
    fn the_state_stays_within_its_size_bound_whatever_the_times() {
        let r = rules(
            r#"{"co": {"high": 1, "low": -1}, "no2": {"high": 1, "low": -1},
                "c2h5oh": {"high": 1, "low": -1}, "h2": {"high": 1, "low": -1},
                "pm1": {"high": 1, "low": -1}, "pm25": {"high": 1, "low": -1},
                "pm10": {"high": 1, "low": -1}, "temperature": {"high": 1, "low": -1},
                "humidity": {"high": 1, "low": -1}}"#,
        );
        let group = "g".repeat(64);
        let id64 = "9".repeat(64);
        let times = [
            "0001-01-01T00:00:00.000000001+18:00",
            "9999-12-31T23:59:59.999999999-18:00",
            "2026-12-01T00:00:00Z",
        ];
        let mut state = GroupAlarms::default();
        let mut biggest = 0;
        for (n, created) in times.iter().cycle().take(60).enumerate() {
            let m = |v: f64| json!({"sensorid": id64, "sensortype": id64, "value": v, "createdtime": created});
            let v = if n % 2 == 0 { 3.0e38 } else { -3.0e38 };
            let readings = [
                (
                    Sensor::Gasdetector,
                    json!({"groupid": group, "co": m(v), "no2": m(v), "c2h5oh": m(v), "h2": m(v)}),
                ),
                (
                    Sensor::Dust,
                    json!({"groupid": group, "pm1": m(v), "pm25": m(v), "pm10": m(v)}),
                ),
                (
                    Sensor::Temp,
                    json!({"groupid": group, "temperature": m(v), "humidity": m(v)}),
                ),
            ];
            for (sensor, body) in readings {
                let reading = Reading::parse(sensor, body, Tz::UTC).unwrap();
                let skew = Some(i64::MIN);
                let id = DocId::of(&reading);
                let input = Input {
                    reading: &reading,
                    id: id.as_str(),
                    clock_skew_s: skew,
                };
                apply(&mut state, &[input], &r, arrived(real(10 * n as i64)));
                let size = serde_json::to_vec(&state.to_reported()).unwrap().len();
                biggest = biggest.max(size);
            }
        }
        // A shadow document is at most 8 KB, and `state.reported` shares it with the
        // metadata IoT adds around it.
        assert!(
            biggest <= 7 * 1024,
            "state.reported reached {biggest} bytes"
        );
    }

    #[test]
    fn the_next_reading_clears_a_no_data_alarm() {
        let mut state = GroupAlarms::default();
        state.no_data.push(crate::alarms::state::NoData {
            sensor: "gasdetector".into(),
            since: "2026-11-30 23:00:00".into(),
            since_ms: (received() - chrono::Duration::hours(1)).timestamp_millis(),
        });
        let reading = gas(20.0, 0);
        let id = DocId::of(&reading);
        let input = Input {
            reading: &reading,
            id: id.as_str(),
            clock_skew_s: None,
        };
        let step = apply(&mut state, &[input], &Rules::default(), arrived(received()));
        assert_eq!(step.messages.len(), 1);
        let clear = &step.messages[0].message;
        assert_eq!(clear["clear"], "no data clear");
        assert_eq!(clear["duration_s"], 3600);
        assert!(state.no_data.is_empty());
    }
}
