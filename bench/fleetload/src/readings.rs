//! The fleet's readings, pure: deterministic from the seed, unique per box and second, and
//! the alarm transitions they must cause.
//!
//! Box `i` is thing `load-<i>` in group `g<i/10>`. Its reading `k` is taken at
//! `t0 + k * interval` (whole seconds, RFC 3339 UTC), with one sensorid per box and
//! measure, so no two readings share a document id ([`sensor_model::document::DocId`]).
//!
//! The no2 values follow a per-group schedule: in every cycle of [`PERIOD`] readings the
//! group breaches the default rule (no2 >= 88, `crates/model/src/rules.rs`) for
//! [`BREACH`] readings and is normal for the rest; every box of a group is on the same
//! side at the same reading number, with its own value. So each cycle raises one alarm
//! and clears it once, whichever of the group's readings the alarm state happens to apply
//! first (a stream batch applies only its newest readings per group; a direct request its
//! own): an *episode* (group, state, cycle) is the timing-independent name of a transition.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use sensor_model::document::DocId;
use sensor_model::{Reading, Sensor};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Readings per alarm cycle of a group.
pub const PERIOD: u64 = 10;
/// Breaching readings at the start of each cycle (after the group's phase).
pub const BREACH: u64 = 4;
/// Boxes per group.
pub const GROUP_SIZE: usize = 10;
/// The default no2 rule's bound (`Rules::default`).
pub const NO2_HIGH: f64 = 88.0;

pub fn thing(i: usize) -> String {
    format!("load-{i}")
}

pub fn group_index(i: usize) -> usize {
    i / GROUP_SIZE
}

pub fn group(i: usize) -> String {
    format!("g{}", group_index(i))
}

/// splitmix64 of the inputs: the one source of every seeded choice.
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed
        .wrapping_add(a.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(b.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The fleet of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub boxes: usize,
    /// Readings per box.
    pub readings: usize,
    /// Seconds between a box's readings (createdtime), at least 1.
    pub interval_s: f64,
    /// createdtime of every box's reading 0.
    pub t0: DateTime<Utc>,
    /// 1 in `sample` readings is timed from publish to searchable.
    pub sample: usize,
}

/// One reading as a box publishes it.
#[derive(Clone, Debug)]
pub struct Generated {
    pub body: Value,
    pub id: String,
    pub sampled: bool,
}

impl Plan {
    pub fn groups(&self) -> usize {
        self.boxes.div_ceil(GROUP_SIZE)
    }

    pub fn total(&self) -> usize {
        self.boxes * self.readings
    }

    fn phase(&self, group: usize) -> u64 {
        mix(self.seed, group as u64, 0xA1A2) % PERIOD
    }

    pub fn breaching(&self, group: usize, k: usize) -> bool {
        (k as u64 + self.phase(group)) % PERIOD < BREACH
    }

    /// The cycle a reading number belongs to, in its group's schedule.
    pub fn cycle(&self, group: usize, k: usize) -> u64 {
        (k as u64 + self.phase(group)) / PERIOD
    }

    pub fn created(&self, k: usize) -> String {
        let offset = (k as f64 * self.interval_s).floor() as i64;
        (self.t0 + ChronoDuration::seconds(offset))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    /// Whether reading `k` of box `i` is timed (spread evenly over boxes and time).
    pub fn sampled(&self, i: usize, k: usize) -> bool {
        (k * self.boxes + i).is_multiple_of(self.sample)
    }

    /// The body of box `i`'s reading `k` (a gasdetector reading as the boxes send it).
    pub fn body(&self, i: usize, k: usize) -> Value {
        let mut rng = fastrand::Rng::with_seed(mix(self.seed, i as u64, k as u64));
        let created = self.created(k);
        let no2 = if self.breaching(group_index(i), k) {
            NO2_HIGH + 2.0 + rng.f64() * 9.99
        } else {
            rng.f64() * 50.0 + 10.0
        };
        let measure = |name: &str, kind: &str, value: f64| {
            json!({
                "sensorid": format!("{name}-{i}"),
                "sensortype": kind,
                "value": format!("{value:.2}"),
                "createdtime": created,
            })
        };
        let lat = 37.4 + (i % 40) as f64 * 0.01;
        let lon = 126.8 + (i / 40 % 40) as f64 * 0.01;
        json!({
            "groupid": group(i),
            "gps": format!("{lat:.5}, {lon:.5}"),
            "co": measure("co", "8", rng.f64() * 20.0 + 10.0),
            "no2": measure("no2", "9", no2),
            "c2h5oh": measure("c2h5oh", "27", rng.f64() * 10.0 + 20.0),
            "h2": measure("h2", "30", rng.f64() * 200.0 + 300.0),
        })
    }

    /// Box `i`'s reading `k` with its document id, as the functions will compute it.
    pub fn generate(&self, i: usize, k: usize) -> Result<Generated, String> {
        let body = self.body(i, k);
        let reading = Reading::parse(Sensor::Gasdetector, body.clone(), chrono_tz::UTC)
            .map_err(|e| format!("generated reading {i}/{k} is invalid: {e}"))?;
        Ok(Generated {
            id: DocId::of(&reading).as_str().to_owned(),
            body,
            sampled: self.sampled(i, k),
        })
    }

    /// The transitions the schedule causes, as episodes (group, state, cycle): an alarm
    /// at the start of every breaching run and a clear at the start of every normal run
    /// after one (the default rule: `for` 1, clear at the bound, no renotify).
    pub fn expected(&self) -> BTreeSet<Episode> {
        let mut episodes = BTreeSet::new();
        for g in 0..self.groups() {
            let mut alarm = false;
            for k in 0..self.readings {
                let breaching = self.breaching(g, k);
                if breaching != alarm {
                    alarm = breaching;
                    episodes.insert(Episode {
                        group: g,
                        state: if alarm { "alarm" } else { "normal" },
                        cycle: self.cycle(g, k),
                    });
                }
            }
        }
        episodes
    }
}

/// A transition named independently of which reading triggered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Episode {
    pub group: usize,
    /// `alarm` or `normal` (a clear).
    pub state: &'static str,
    pub cycle: u64,
}

/// The tests' fleet: `boxes` boxes, `readings` each a second from 2026-12-04 12:00 UTC,
/// 1 in 10 timed.
#[cfg(test)]
impl Plan {
    pub fn for_tests(seed: u64, boxes: usize, readings: usize) -> Plan {
        use chrono::TimeZone;
        Plan {
            seed,
            boxes,
            readings,
            interval_s: 1.0,
            t0: Utc
                .with_ymd_and_hms(2026, 12, 4, 12, 0, 0)
                .single()
                .expect("a date"),
            sample: 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn plan(boxes: usize, readings: usize) -> Plan {
        Plan::for_tests(22, boxes, readings)
    }

    #[test]
    fn readings_are_valid_deterministic_and_unique() {
        let p = plan(25, 12);
        let mut ids = HashSet::new();
        for i in 0..p.boxes {
            for k in 0..p.readings {
                let r = p.generate(i, k).expect("valid");
                assert!(ids.insert(r.id.clone()), "id of {i}/{k} repeats");
                assert_eq!(p.generate(i, k).expect("valid").id, r.id, "deterministic");
            }
        }
        assert_eq!(ids.len(), p.total());
        let other_seed = Plan {
            seed: 23,
            ..p.clone()
        };
        assert_ne!(other_seed.body(3, 4), p.body(3, 4));
    }

    #[test]
    fn a_group_breaches_together_and_every_cycle_transitions() {
        let p = plan(20, 30);
        for g in 0..p.groups() {
            for k in 0..p.readings {
                for i in g * GROUP_SIZE..(g + 1) * GROUP_SIZE {
                    let no2: f64 = p.body(i, k)["no2"]["value"]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .expect("no2 value");
                    assert_eq!(no2 >= NO2_HIGH, p.breaching(g, k), "box {i} reading {k}");
                }
            }
        }
        let expected = p.expected();
        // 30 readings = 3 cycles: at least 2 alarms and 2 clears per group, whatever the phase.
        for g in 0..p.groups() {
            let of = |state| {
                expected
                    .iter()
                    .filter(|e| e.group == g && e.state == state)
                    .count()
            };
            assert!(of("alarm") >= 2 && of("normal") >= 2, "{expected:?}");
        }
    }

    #[test]
    fn sampling_takes_one_in_n() {
        let p = plan(50, 30);
        let sampled = (0..p.boxes)
            .flat_map(|i| (0..p.readings).map(move |k| (i, k)))
            .filter(|&(i, k)| p.sampled(i, k))
            .count();
        assert_eq!(sampled, p.total() / 10);
    }

    #[test]
    fn createdtime_moves_by_whole_seconds() {
        let p = Plan {
            interval_s: 1.5,
            ..plan(1, 4)
        };
        let times: Vec<String> = (0..4).map(|k| p.created(k)).collect();
        assert_eq!(
            times,
            [
                "2026-12-04T12:00:00Z",
                "2026-12-04T12:00:01Z",
                "2026-12-04T12:00:03Z",
                "2026-12-04T12:00:04Z"
            ]
        );
    }
}
