//! The read API's query parameters, each validated into a type before any query is built
//! (as readings are validated into `domain` types): a bad, missing, repeated or unknown
//! parameter is a [`ParamError`] naming it, which the API answers with a 400.
//!
//! Only values that passed these types reach OpenSearch, and only as `term` / `range`
//! values or `search_after` numbers (see `search.rs`): a group id is `[A-Za-z0-9_-]`, a
//! time is a parsed instant re-formatted by us, a cursor is a number and an id of the same
//! characters as a group id.

use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use sensor_model::domain::group_id::GroupId;
use sensor_model::domain::measure::Measure;
use sensor_model::domain::sensor::Sensor;
use std::collections::BTreeMap;
use std::fmt;

/// Why a request's parameters were refused: the parameter and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub parameter: String,
    pub message: String,
}

impl ParamError {
    pub fn new(parameter: impl Into<String>, message: impl Into<String>) -> ParamError {
        ParamError {
            parameter: parameter.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.parameter, self.message)
    }
}

/// Longest text any parameter may hold: nothing legitimate comes close, and it bounds
/// what an error message may echo.
const MAX_PARAM_LEN: usize = 200;

/// The query string of one request, checked against the parameters its route takes.
#[derive(Debug, Clone, Default)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// Refuses a parameter the route does not take (a typo such as `grupid` must not
    /// silently widen a query), one given twice, and an overlong one. An empty value is
    /// the same as an absent one.
    pub fn parse<I, K, V>(pairs: I, allowed: &[&str]) -> Result<Params, ParamError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut values = BTreeMap::new();
        for (key, value) in pairs {
            let (key, value) = (key.as_ref(), value.as_ref());
            if !allowed.contains(&key) {
                let shown: String = key.chars().take(40).collect();
                let expected = if allowed.is_empty() {
                    "this route takes no parameters".to_string()
                } else {
                    format!("expected one of {}", allowed.join(", "))
                };
                return Err(ParamError::new(
                    shown,
                    format!("unknown parameter; {expected}"),
                ));
            }
            if value.len() > MAX_PARAM_LEN {
                return Err(ParamError::new(
                    key,
                    format!("must be at most {MAX_PARAM_LEN} characters"),
                ));
            }
            if values.insert(key.to_string(), value.to_string()).is_some() {
                return Err(ParamError::new(key, "is given more than once"));
            }
        }
        values.retain(|_, v| !v.trim().is_empty());
        Ok(Params { values })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|v| v.trim())
    }

    pub fn required(&self, name: &str) -> Result<&str, ParamError> {
        self.get(name)
            .ok_or_else(|| ParamError::new(name, "is required"))
    }
}

/// `sensor`: one of the three routes' names.
pub fn sensor(text: &str) -> Result<Sensor, ParamError> {
    Sensor::parse(text).ok_or_else(|| {
        ParamError::new(
            "sensor",
            format!("{text:?} is not one of gasdetector, dust, temp"),
        )
    })
}

/// `groupid`: the same rule as in a reading.
pub fn group(text: &str) -> Result<GroupId, ParamError> {
    GroupId::parse(text).map_err(|e| ParamError::new("groupid", e.message()))
}

/// `measure`: one the sensor carries (`no2` is not a dust measure).
pub fn measure(sensor: Sensor, text: &str) -> Result<Measure, ParamError> {
    sensor.measure_named(text).ok_or_else(|| {
        let names: Vec<&str> = sensor.measures().iter().map(|m| m.name()).collect();
        ParamError::new(
            "measure",
            format!(
                "{text:?} is not a {sensor} measure; expected one of {}",
                names.join(", ")
            ),
        )
    })
}

/// Earliest and latest instants a time parameter may name: a box without a synchronised
/// clock reports 1970, so that stays reachable; beyond 2200 is a typo.
fn time_bounds() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        DateTime::<Utc>::UNIX_EPOCH,
        Utc.with_ymd_and_hms(2200, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    )
}

/// An instant: RFC 3339 (`2026-12-01T00:00:00Z`, any offset) or epoch milliseconds.
pub fn time(name: &str, text: &str) -> Result<DateTime<Utc>, ParamError> {
    let parsed = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<i64>()
            .ok()
            .and_then(DateTime::<Utc>::from_timestamp_millis)
    } else {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let Some(t) = parsed else {
        return Err(ParamError::new(
            name,
            "must be an RFC 3339 time such as 2026-12-01T00:00:00Z, or epoch milliseconds",
        ));
    };
    let (earliest, latest) = time_bounds();
    if t < earliest || t >= latest {
        return Err(ParamError::new(
            name,
            "must lie between 1970-01-01 and 2200-01-01",
        ));
    }
    Ok(t)
}

/// `[from, to)`, with `to` after `from` and at most `max` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl TimeRange {
    /// `from`/`to` from the parameters; an absent `to` is `now`, an absent `from` is
    /// `default_span` before `to`.
    pub fn parse(
        params: &Params,
        now: DateTime<Utc>,
        default_span: Duration,
        max: Duration,
    ) -> Result<TimeRange, ParamError> {
        let to = match params.get("to") {
            Some(t) => time("to", t)?,
            None => now,
        };
        let from = match params.get("from") {
            Some(t) => time("from", t)?,
            None => to - default_span,
        };
        if from >= to {
            return Err(ParamError::new("to", "must be after from"));
        }
        if to - from > max {
            return Err(ParamError::new(
                "from",
                format!(
                    "the range from..to may span at most {} days",
                    max.num_days()
                ),
            ));
        }
        Ok(TimeRange { from, to })
    }

    pub fn span(&self) -> Duration {
        self.to - self.from
    }
}

/// An instant as the API writes it (and as OpenSearch's `strict_date_optional_time`
/// reads it).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `size`: how many items a page holds.
pub fn page_size(params: &Params, default: u32, max: u32) -> Result<u32, ParamError> {
    let Some(text) = params.get("size") else {
        return Ok(default);
    };
    match text.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ParamError::new(
            "size",
            format!("must be a whole number from 1 to {max}"),
        )),
    }
}

/// `after`: where the previous page ended, as the API gave it in `next`:
/// `<epoch ms>:<document id>` (the sort values of the last item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub millis: i64,
    pub id: String,
}

impl Cursor {
    pub fn parse(text: &str) -> Result<Cursor, ParamError> {
        let bad = || {
            ParamError::new(
                "after",
                "must be the `next` value of the previous page (<epoch ms>:<id>)",
            )
        };
        let (millis, id) = text.split_once(':').ok_or_else(bad)?;
        let millis: i64 = millis.parse().map_err(|_| bad())?;
        let id_ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !id_ok || DateTime::<Utc>::from_timestamp_millis(millis).is_none() {
            return Err(bad());
        }
        Ok(Cursor {
            millis,
            id: id.to_string(),
        })
    }

    pub fn render(&self) -> String {
        format!("{}:{}", self.millis, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)], allowed: &[&str]) -> Result<Params, ParamError> {
        Params::parse(pairs.iter().copied(), allowed)
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn unknown_repeated_and_overlong_parameters_are_named() {
        let e = params(&[("grupid", "2")], &["groupid"]).unwrap_err();
        assert_eq!(e.parameter, "grupid");
        assert!(e.message.contains("groupid"), "{e}");
        let e = params(&[("groupid", "2"), ("groupid", "3")], &["groupid"]).unwrap_err();
        assert_eq!(e.parameter, "groupid");
        let long = "x".repeat(201);
        let e = params(&[("groupid", &long)], &["groupid"]).unwrap_err();
        assert_eq!(e.parameter, "groupid");
        let e = params(&[("a", "1")], &[]).unwrap_err();
        assert!(e.message.contains("no parameters"), "{e}");
    }

    #[test]
    fn empty_is_absent_and_required_names_the_parameter() {
        let p = params(&[("groupid", " ")], &["groupid"]).unwrap();
        assert_eq!(p.get("groupid"), None);
        assert_eq!(p.required("groupid").unwrap_err().parameter, "groupid");
    }

    #[test]
    fn sensor_group_and_measure() {
        assert_eq!(sensor("dust").unwrap(), Sensor::Dust);
        assert_eq!(sensor("Dust").unwrap_err().parameter, "sensor");
        assert_eq!(group("a_b-1").unwrap().as_str(), "a_b-1");
        for bad in ["a b", "a/b", "x\"}", &"a".repeat(65)] {
            assert_eq!(group(bad).unwrap_err().parameter, "groupid", "{bad}");
        }
        assert_eq!(measure(Sensor::Gasdetector, "no2").unwrap(), Measure::No2);
        let e = measure(Sensor::Dust, "no2").unwrap_err();
        assert_eq!(e.parameter, "measure");
        assert!(e.message.contains("pm25"), "{e}");
    }

    #[test]
    fn times_are_rfc3339_or_epoch_millis_within_bounds() {
        let t = time("from", "2026-12-01T09:00:00+09:00").unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(time("from", "1796083200000").unwrap(), t);
        for bad in [
            "2026-12-01",
            "yesterday",
            "-5",
            "2200-01-01T00:00:00Z",
            "99999999999999999999",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(time("from", bad).unwrap_err().parameter, "from", "{bad}");
        }
    }

    #[test]
    fn ranges_default_and_are_bounded() {
        let day = Duration::days(1);
        let max = Duration::days(400);
        let r = TimeRange::parse(&Params::default(), now(), day, max).unwrap();
        assert_eq!((r.from, r.to), (now() - day, now()));
        let p = params(
            &[
                ("from", "2026-12-02T00:00:00Z"),
                ("to", "2026-12-01T00:00:00Z"),
            ],
            &["from", "to"],
        )
        .unwrap();
        assert_eq!(
            TimeRange::parse(&p, now(), day, max).unwrap_err().parameter,
            "to"
        );
        let p = params(
            &[
                ("from", "2020-01-01T00:00:00Z"),
                ("to", "2026-12-01T00:00:00Z"),
            ],
            &["from", "to"],
        )
        .unwrap();
        assert_eq!(
            TimeRange::parse(&p, now(), day, max).unwrap_err().parameter,
            "from"
        );
        let p = params(&[("to", "garbage")], &["from", "to"]).unwrap();
        assert_eq!(
            TimeRange::parse(&p, now(), day, max).unwrap_err().parameter,
            "to"
        );
    }

    #[test]
    fn page_size_and_cursor() {
        let p = |v: &str| params(&[("size", v)], &["size"]).unwrap();
        assert_eq!(page_size(&Params::default(), 50, 500).unwrap(), 50);
        assert_eq!(page_size(&p("500"), 50, 500).unwrap(), 500);
        for bad in ["0", "501", "-1", "1.5", "ten"] {
            assert_eq!(page_size(&p(bad), 50, 500).unwrap_err().parameter, "size");
        }
        let c = Cursor::parse("1796083200000:abc_1-2").unwrap();
        assert_eq!(c.millis, 1_796_083_200_000);
        assert_eq!(Cursor::parse(&c.render()).unwrap(), c);
        for bad in ["", "1", ":id", "x:id", "1:", "1:a b", "1:a\"b", "1:a:b"] {
            assert_eq!(Cursor::parse(bad).unwrap_err().parameter, "after", "{bad}");
        }
    }
}
