//! Threshold rules: `high` warns when value >= high, `low` when value <= low.
//! Defaults from DESIGN.md; `RULES` (JSON) replaces the rule of each measure it names.
//! A rule may also say how its alarm behaves (`crate::alarms`): `clear` (hysteresis: a
//! `high` alarm clears at value < clear, a `low` one at value > clear; default the bound
//! itself), `for` (consecutive breaching readings before it fires; default 1) and
//! `renotify` (minutes between repeat warnings while in alarm; default off).

use crate::domain::measure::Measure;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rule {
    high: Option<f64>,
    low: Option<f64>,
    clear_high: Option<f64>,
    clear_low: Option<f64>,
    /// Consecutive breaching readings before the alarm fires; 0 means the default, 1.
    for_readings: u32,
    /// Seconds between repeat warnings while in alarm; `None`: never.
    renotify_s: Option<i64>,
}

/// The most consecutive readings `for` may ask for (a day of readings every 30 s).
pub const MAX_FOR: u64 = 2880;
/// The longest `renotify` period, in minutes (a week).
pub const MAX_RENOTIFY_MINUTES: f64 = 7.0 * 24.0 * 60.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    High,
    Low,
}

impl Bound {
    pub fn name(self) -> &'static str {
        match self {
            Bound::High => "high",
            Bound::Low => "low",
        }
    }
}

/// A rule that tripped: which bound, and the threshold it crossed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trip {
    pub bound: Bound,
    pub threshold: f64,
}

impl Rule {
    pub fn new(high: Option<f64>, low: Option<f64>) -> Result<Rule, String> {
        if let (Some(h), Some(l)) = (high, low) {
            if l >= h {
                return Err(format!(
                    "low ({l}) must be below high ({h}), or every value would warn"
                ));
            }
        }
        Ok(Rule {
            high,
            low,
            ..Rule::default()
        })
    }

    /// `clear` levels per bound; each must lie on the safe side of its bound (a `high`
    /// alarm clears at or below `high`, a `low` one at or above `low`).
    pub fn with_clear(
        mut self,
        clear_high: Option<f64>,
        clear_low: Option<f64>,
    ) -> Result<Rule, String> {
        match (clear_high, self.high) {
            (Some(c), Some(h)) if c > h => {
                return Err(format!("clear ({c}) must not be above high ({h})"))
            }
            (Some(_), None) => return Err("clear for high given, but there is no high".into()),
            _ => {}
        }
        match (clear_low, self.low) {
            (Some(c), Some(l)) if c < l => {
                return Err(format!("clear ({c}) must not be below low ({l})"))
            }
            (Some(_), None) => return Err("clear for low given, but there is no low".into()),
            _ => {}
        }
        if let (Some(ch), Some(l)) = (clear_high, self.low) {
            if ch <= l {
                return Err(format!(
                    "clear for high ({ch}) must be above low ({l}), or clearing one alarm raises the other"
                ));
            }
        }
        if let (Some(cl), Some(h)) = (clear_low, self.high) {
            if cl >= h {
                return Err(format!(
                    "clear for low ({cl}) must be below high ({h}), or clearing one alarm raises the other"
                ));
            }
        }
        self.clear_high = clear_high;
        self.clear_low = clear_low;
        Ok(self)
    }

    /// `for`: 1 ..= [`MAX_FOR`] consecutive breaching readings.
    pub fn with_for(mut self, readings: u64) -> Result<Rule, String> {
        if !(1..=MAX_FOR).contains(&readings) {
            return Err(format!(
                "for must be a whole number of readings from 1 to {MAX_FOR}, got {readings}"
            ));
        }
        self.for_readings = u32::try_from(readings).unwrap_or(1);
        Ok(self)
    }

    /// `renotify`: minutes, more than 0 and at most [`MAX_RENOTIFY_MINUTES`].
    pub fn with_renotify_minutes(mut self, minutes: f64) -> Result<Rule, String> {
        if !(minutes.is_finite() && minutes > 0.0 && minutes <= MAX_RENOTIFY_MINUTES) {
            return Err(format!(
                "renotify must be minutes above 0 and at most {MAX_RENOTIFY_MINUTES}, got {minutes}"
            ));
        }
        self.renotify_s = Some((minutes * 60.0).round().max(1.0) as i64);
        Ok(self)
    }

    /// The level at which an alarm on `bound` clears (the bound itself by default).
    pub fn clear_level(self, bound: Bound) -> Option<f64> {
        match bound {
            Bound::High => self.clear_high.or(self.high),
            Bound::Low => self.clear_low.or(self.low),
        }
    }

    pub fn threshold(self, bound: Bound) -> Option<f64> {
        match bound {
            Bound::High => self.high,
            Bound::Low => self.low,
        }
    }

    /// Whether `value` is at or past `bound`'s threshold.
    pub fn breaches(self, bound: Bound, value: f64) -> bool {
        match (bound, self.threshold(bound)) {
            (Bound::High, Some(h)) => value >= h,
            (Bound::Low, Some(l)) => value <= l,
            _ => false,
        }
    }

    /// Whether an alarm on `bound` clears at `value` (strictly past the clear level).
    pub fn clears(self, bound: Bound, value: f64) -> bool {
        match (bound, self.clear_level(bound)) {
            (Bound::High, Some(c)) => value < c,
            (Bound::Low, Some(c)) => value > c,
            _ => true,
        }
    }

    pub fn for_readings(self) -> u32 {
        self.for_readings.max(1)
    }

    pub fn renotify_s(self) -> Option<i64> {
        self.renotify_s
    }

    /// The bounds this rule has.
    pub fn bounds(self) -> impl Iterator<Item = Bound> {
        [self.high.map(|_| Bound::High), self.low.map(|_| Bound::Low)]
            .into_iter()
            .flatten()
    }

    pub fn high(self) -> Option<f64> {
        self.high
    }
    pub fn low(self) -> Option<f64> {
        self.low
    }

    pub fn check(self, value: f64) -> Option<Trip> {
        if let Some(threshold) = self.high.filter(|h| value >= *h) {
            return Some(Trip {
                bound: Bound::High,
                threshold,
            });
        }
        self.low.filter(|l| value <= *l).map(|threshold| Trip {
            bound: Bound::Low,
            threshold,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rules(BTreeMap<Measure, Rule>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesError(String);

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RULES: {}", self.0)
    }
}

impl std::error::Error for RulesError {}

impl Default for Rules {
    fn default() -> Self {
        use Measure::*;
        let high = |h: f64| Rule {
            high: Some(h),
            ..Rule::default()
        };
        Rules(BTreeMap::from([
            (No2, high(88.0)),
            (Co, high(50.0)),
            (C2h5oh, high(1000.0)),
            (H2, high(4000.0)),
            (Pm25, high(36.0)),
            (Pm10, high(81.0)),
            (
                Temperature,
                Rule {
                    high: Some(35.0),
                    low: Some(0.0),
                    ..Rule::default()
                },
            ),
            (
                Humidity,
                Rule {
                    high: Some(80.0),
                    low: Some(20.0),
                    ..Rule::default()
                },
            ),
        ]))
    }
}

impl Rules {
    /// The defaults with `RULES` applied: `{"no2": {"high": 70, "clear": 60, "for": 2}, "temperature": {"high": 30, "low": 5}}`.
    /// Each named measure's rule is replaced as a whole; `{}` or `null` turns it off.
    pub fn with_overrides(json: &str) -> Result<Rules, RulesError> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| RulesError(format!("not valid JSON: {e}")))?;
        let object = value.as_object().ok_or_else(|| {
            RulesError(
                "must be a JSON object of measure name to {\"high\": .., \"low\": ..}".into(),
            )
        })?;
        let mut rules = Rules::default();
        for (name, rule) in object {
            let measure = Measure::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Measure::ALL.iter().map(|m| m.name()).collect();
                RulesError(format!(
                    "unknown measure {name:?}; known measures: {}",
                    known.join(", ")
                ))
            })?;
            let rule = match rule {
                Value::Null => Rule::default(),
                Value::Object(fields) => rule_from_fields(name, fields)?,
                other => {
                    return Err(RulesError(format!(
                        "{name} must be an object like {{\"high\": 70}}, got {other}"
                    )))
                }
            };
            rules.0.insert(measure, rule);
        }
        Ok(rules)
    }

    pub fn rule(&self, measure: Measure) -> Rule {
        self.0.get(&measure).copied().unwrap_or_default()
    }

    pub fn check(&self, measure: Measure, value: f64) -> Option<Trip> {
        self.rule(measure).check(value)
    }
}

const RULE_KEYS: [&str; 5] = ["high", "low", "clear", "for", "renotify"];

/// One measure's rule object; errors name the measure and the key.
fn rule_from_fields(
    name: &str,
    fields: &serde_json::Map<String, Value>,
) -> Result<Rule, RulesError> {
    rule_fields(name, fields).map_err(RulesError)
}

fn rule_fields(name: &str, fields: &serde_json::Map<String, Value>) -> Result<Rule, String> {
    if let Some(bad) = fields.keys().find(|k| !RULE_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "{name}: unknown key {bad:?}; use {}",
            RULE_KEYS.map(|k| format!("\"{k}\"")).join(", ")
        ));
    }
    let number = |key: &str, value: Option<&Value>| -> Result<Option<f64>, String> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map(Some)
                .ok_or_else(|| format!("{name}.{key} must be a finite number")),
            Some(other) => Err(format!("{name}.{key} must be a number, got {other}")),
        }
    };
    let high = number("high", fields.get("high"))?;
    let low = number("low", fields.get("low"))?;
    let in_rule = |e: String| format!("{name}: {e}");
    let mut rule = Rule::new(high, low).map_err(in_rule)?;
    // `clear` is a number for a one-bound rule, or {"high": .., "low": ..} for either.
    let (clear_high, clear_low) = match fields.get("clear") {
        None | Some(Value::Null) => (None, None),
        Some(Value::Object(per_bound)) => {
            if let Some(bad) = per_bound.keys().find(|k| *k != "high" && *k != "low") {
                return Err(format!(
                    "{name}.clear: unknown key {bad:?}; use \"high\" and/or \"low\""
                ));
            }
            (
                number("clear.high", per_bound.get("high"))?,
                number("clear.low", per_bound.get("low"))?,
            )
        }
        Some(value) => {
            let level = number("clear", Some(value))?;
            match (high, low) {
                (Some(_), Some(_)) => {
                    return Err(in_rule(
                        "clear is ambiguous with both high and low: use {\"clear\": {\"high\": .., \"low\": ..}}"
                            .into(),
                    ))
                }
                (None, Some(_)) => (None, level),
                _ => (level, None),
            }
        }
    };
    rule = rule.with_clear(clear_high, clear_low).map_err(in_rule)?;
    match fields.get("for") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            let readings = n.as_u64().ok_or_else(|| {
                in_rule(format!("for must be a whole number of readings, got {n}"))
            })?;
            rule = rule.with_for(readings).map_err(in_rule)?;
        }
        Some(other) => {
            return Err(in_rule(format!(
                "for must be a number of readings, got {other}"
            )))
        }
    }
    if let Some(minutes) = number("renotify", fields.get("renotify"))? {
        rule = rule.with_renotify_minutes(minutes).map_err(in_rule)?;
    }
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Measure::*;

    #[test]
    fn every_default_high_rule_at_below_and_above() {
        for (measure, high) in [
            (No2, 88.0),
            (Co, 50.0),
            (C2h5oh, 1000.0),
            (H2, 4000.0),
            (Pm25, 36.0),
            (Pm10, 81.0),
            (Temperature, 35.0),
            (Humidity, 80.0),
        ] {
            let rules = Rules::default();
            let trip = rules.check(measure, high).expect("at the threshold warns");
            assert_eq!(
                (trip.bound, trip.threshold),
                (Bound::High, high),
                "{measure}"
            );
            assert!(
                rules.check(measure, high + 0.01).is_some(),
                "{measure} above"
            );
            assert_eq!(rules.check(measure, high - 0.01), None, "{measure} below");
        }
    }

    #[test]
    fn every_default_low_rule_at_above_and_below() {
        for (measure, low) in [(Temperature, 0.0), (Humidity, 20.0)] {
            let rules = Rules::default();
            let trip = rules.check(measure, low).expect("at the threshold warns");
            assert_eq!((trip.bound, trip.threshold), (Bound::Low, low));
            assert!(rules.check(measure, low - 0.01).is_some());
            assert_eq!(rules.check(measure, low + 0.01), None);
        }
    }

    #[test]
    fn pm1_has_no_default_rule() {
        assert_eq!(Rules::default().check(Pm1, 1e9), None);
    }

    #[test]
    fn overrides_replace_the_named_rules_only() {
        let rules = Rules::with_overrides(
            r#"{"no2": {"high": 70}, "temperature": {"high": 30, "low": 5}}"#,
        )
        .unwrap();
        assert!(rules.check(No2, 70.0).is_some());
        assert!(rules.check(No2, 69.9).is_none());
        assert!(rules.check(Temperature, 30.0).is_some());
        assert!(rules.check(Temperature, 5.0).is_some());
        assert!(rules.check(Temperature, 5.1).is_none());
        assert!(rules.check(Co, 50.0).is_some(), "untouched default");
    }

    #[test]
    fn overrides_can_add_and_remove_rules() {
        let rules =
            Rules::with_overrides(r#"{"pm1": {"high": 10}, "no2": null, "co": {}}"#).unwrap();
        assert!(rules.check(Pm1, 10.0).is_some());
        assert!(rules.check(No2, 1e9).is_none());
        assert!(rules.check(Co, 1e9).is_none());
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (bad, needle) in [
            ("not json", "not valid JSON"),
            ("[1]", "JSON object"),
            (r#"{"n02": {"high": 1}}"#, "unknown measure \"n02\""),
            (r#"{"no2": {"hihg": 1}}"#, "unknown key \"hihg\""),
            (r#"{"no2": {"high": "70"}}"#, "no2.high must be a number"),
            (r#"{"no2": 70}"#, "must be an object"),
            (
                r#"{"temperature": {"high": 5, "low": 30}}"#,
                "must be below high",
            ),
            (
                r#"{"no2": {"high": 88, "clear": 90}}"#,
                "must not be above high",
            ),
            (
                r#"{"no2": {"high": 88, "clear": "80"}}"#,
                "no2.clear must be a number",
            ),
            (
                r#"{"temperature": {"high": 35, "low": 0, "clear": 30}}"#,
                "clear is ambiguous",
            ),
            (
                r#"{"temperature": {"high": 35, "low": 0, "clear": {"low": -1}}}"#,
                "must not be below low",
            ),
            (
                r#"{"temperature": {"high": 35, "low": 0, "clear": {"high": -5}}}"#,
                "must be above low",
            ),
            (
                r#"{"temperature": {"high": 35, "clear": {"low": 3}}}"#,
                "there is no low",
            ),
            (
                r#"{"no2": {"high": 88, "clear": {"hi": 3}}}"#,
                "no2.clear: unknown key",
            ),
            (
                r#"{"no2": {"high": 88, "for": 0}}"#,
                "for must be a whole number",
            ),
            (
                r#"{"no2": {"high": 88, "for": 2.5}}"#,
                "for must be a whole number",
            ),
            (
                r#"{"no2": {"high": 88, "for": -1}}"#,
                "for must be a whole number",
            ),
            (r#"{"no2": {"high": 88, "for": 100000}}"#, "from 1 to 2880"),
            (
                r#"{"no2": {"high": 88, "for": "3"}}"#,
                "for must be a number",
            ),
            (
                r#"{"no2": {"high": 88, "renotify": 0}}"#,
                "renotify must be minutes",
            ),
            (
                r#"{"no2": {"high": 88, "renotify": -5}}"#,
                "renotify must be minutes",
            ),
            (
                r#"{"no2": {"high": 88, "renotify": 1e9}}"#,
                "renotify must be minutes",
            ),
        ] {
            let err = Rules::with_overrides(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
            assert!(err.starts_with("RULES: "), "{err}");
        }
    }

    #[test]
    fn alarm_fields_parse_and_default() {
        let rules = Rules::with_overrides(
            r#"{"no2": {"high": 88, "clear": 80, "for": 3, "renotify": 15},
                "temperature": {"high": 35, "low": 0, "clear": {"high": 33, "low": 2}},
                "humidity": {"low": 20, "clear": 25}}"#,
        )
        .unwrap();
        let no2 = rules.rule(No2);
        assert_eq!(no2.clear_level(Bound::High), Some(80.0));
        assert_eq!(no2.for_readings(), 3);
        assert_eq!(no2.renotify_s(), Some(900));
        assert!(no2.breaches(Bound::High, 88.0) && !no2.breaches(Bound::High, 87.9));
        assert!(!no2.clears(Bound::High, 80.0) && no2.clears(Bound::High, 79.9));
        let t = rules.rule(Temperature);
        assert_eq!(t.clear_level(Bound::High), Some(33.0));
        assert_eq!(t.clear_level(Bound::Low), Some(2.0));
        assert!(!t.clears(Bound::Low, 2.0) && t.clears(Bound::Low, 2.1));
        assert_eq!(rules.rule(Humidity).clear_level(Bound::Low), Some(25.0));
        assert_eq!(
            rules.rule(Humidity).bounds().collect::<Vec<_>>(),
            [Bound::Low]
        );
        let co = rules.rule(Co);
        assert_eq!(
            co.clear_level(Bound::High),
            Some(50.0),
            "no hysteresis by default"
        );
        assert_eq!((co.for_readings(), co.renotify_s()), (1, None));
        assert!(co.clears(Bound::High, 49.9) && !co.clears(Bound::High, 50.0));
    }
}
