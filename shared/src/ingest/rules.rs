//! Threshold rules: `high` warns when value >= high, `low` when value <= low.
//! Defaults from DESIGN.md; `RULES` (JSON) replaces the rule of each measure it names.

use crate::domain::measure::Measure;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rule {
    high: Option<f64>,
    low: Option<f64>,
}

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
        Ok(Rule { high, low })
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
            low: None,
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
                },
            ),
            (
                Humidity,
                Rule {
                    high: Some(80.0),
                    low: Some(20.0),
                },
            ),
        ]))
    }
}

impl Rules {
    /// The defaults with `RULES` applied: `{"no2": {"high": 70}, "temperature": {"high": 30, "low": 5}}`.
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
                Value::Object(fields) => {
                    if let Some(bad) = fields.keys().find(|k| *k != "high" && *k != "low") {
                        return Err(RulesError(format!(
                            "{name}: unknown key {bad:?}; use \"high\" and/or \"low\""
                        )));
                    }
                    let bound = |key: &str| -> Result<Option<f64>, RulesError> {
                        match fields.get(key) {
                            None | Some(Value::Null) => Ok(None),
                            Some(Value::Number(n)) => n.as_f64().map(Some).ok_or_else(|| {
                                RulesError(format!("{name}.{key} must be a finite number"))
                            }),
                            Some(other) => Err(RulesError(format!(
                                "{name}.{key} must be a number, got {other}"
                            ))),
                        }
                    };
                    Rule::new(bound("high")?, bound("low")?)
                        .map_err(|e| RulesError(format!("{name}: {e}")))?
                }
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
        ] {
            let err = Rules::with_overrides(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
            assert!(err.starts_with("RULES: "), "{err}");
        }
    }
}
