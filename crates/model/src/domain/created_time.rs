//! `createdtime`: when the box took the reading. Either `YYYY-MM-DD HH:MM:SS` in the
//! device's local zone (`DEVICE_TIMEZONE`) or RFC 3339 with an explicit offset.

use crate::domain::error::{json_type, ValidationError};
use chrono::{DateTime, Datelike, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

const LOCAL_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
/// Longest RFC 3339 form worth accepting (nanoseconds and an offset fit well within).
const MAX_LEN: usize = 40;
/// Widest UTC offset OpenSearch's date parser takes (java.time's ZoneOffset range).
const MAX_OFFSET_SECS: i32 = 18 * 3600;
/// Most fractional-second digits OpenSearch's `strict_date_optional_time` takes.
const MAX_FRACTION_DIGITS: usize = 9;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTime {
    /// As received: indexed and echoed in warnings unchanged.
    text: String,
    utc: DateTime<Utc>,
}

impl CreatedTime {
    pub fn from_json(value: &Value, zone: Tz) -> Result<CreatedTime, ValidationError> {
        match value {
            Value::String(s) => CreatedTime::parse(s, zone),
            other => Err(ValidationError::new(
                "",
                format!("must be a string, got {}", json_type(other)),
            )),
        }
    }

    pub fn parse(text: &str, zone: Tz) -> Result<CreatedTime, ValidationError> {
        if text.len() > MAX_LEN {
            return Err(ValidationError::new("", "is too long for a date"));
        }
        let utc = if let Ok(local) = NaiveDateTime::parse_from_str(text, LOCAL_FORMAT) {
            // The strict shape: chrono accepts "2021-9-3 1:2:3", the boxes never send it.
            if text.len() != 19 {
                return Err(bad_format(text));
            }
            // The index maps this form as `yyyy-MM-dd HH:mm:ss`, where `yyyy` is the year
            // of the era: there is no year 0000, so OpenSearch would refuse the document
            // on every resend (found by schemathesis, docs/reliability.md).
            if local.year() < 1 {
                return Err(ValidationError::new(
                    "",
                    format!("{text:?} has year 0000; years start at 0001"),
                ));
            }
            match zone.from_local_datetime(&local) {
                LocalResult::Single(t) => t.with_timezone(&Utc),
                // A repeated hour when clocks go back: take the first occurrence.
                LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
                LocalResult::None => {
                    return Err(ValidationError::new(
                        "",
                        format!("{text:?} does not exist in {zone} (clocks went forward)"),
                    ))
                }
            }
        } else if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            // OpenSearch (java.time) refuses offsets beyond ±18:00 and more than 9
            // fractional digits, which chrono accepts: such a document would fail on every
            // resend (found by schemathesis, docs/reliability.md).
            if t.offset().local_minus_utc().abs() > MAX_OFFSET_SECS {
                return Err(ValidationError::new(
                    "",
                    format!("{text:?} has an offset beyond ±18:00"),
                ));
            }
            let fraction = text
                .get(19..)
                .and_then(|rest| rest.strip_prefix('.'))
                .map_or(0, |rest| {
                    rest.bytes().take_while(u8::is_ascii_digit).count()
                });
            if fraction > MAX_FRACTION_DIGITS {
                return Err(ValidationError::new(
                    "",
                    format!("{text:?} has more than {MAX_FRACTION_DIGITS} fractional digits"),
                ));
            }
            t.with_timezone(&Utc)
        } else {
            return Err(bad_format(text));
        };
        Ok(CreatedTime {
            text: text.to_string(),
            utc,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn utc(&self) -> DateTime<Utc> {
        self.utc
    }
}

fn bad_format(text: &str) -> ValidationError {
    ValidationError::new(
        "",
        format!("must be \"YYYY-MM-DD HH:MM:SS\" or RFC 3339, got {text:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_local_time_defaults_to_utc() {
        let t = CreatedTime::parse("2021-09-03 18:14:49", Tz::UTC).unwrap();
        assert_eq!(t.utc().to_rfc3339(), "2021-09-03T18:14:49+00:00");
        assert_eq!(t.as_str(), "2021-09-03 18:14:49");
    }

    #[test]
    fn device_local_time_uses_the_configured_zone() {
        let t = CreatedTime::parse("2021-09-03 18:14:49", chrono_tz::Asia::Seoul).unwrap();
        assert_eq!(t.utc().to_rfc3339(), "2021-09-03T09:14:49+00:00");
    }

    #[test]
    fn rfc3339_keeps_its_own_offset() {
        let t = CreatedTime::parse("2021-09-03T18:14:49+09:00", Tz::UTC).unwrap();
        assert_eq!(t.utc().to_rfc3339(), "2021-09-03T09:14:49+00:00");
        assert!(CreatedTime::parse("2021-09-03T18:14:49.123Z", Tz::UTC).is_ok());
    }

    #[test]
    fn bad_dates_are_rejected() {
        for bad in [
            "",
            "2021-09-03",
            "2021-13-03 18:14:49",
            "2021-02-30 18:14:49",
            "2021-09-03 25:14:49",
            "2021-9-3 18:14:49",
            "2021-09-03 18:14:49 ",
            "2021-09-03T18:14:49",
            "yesterday",
            "0000-01-01 00:00:00",
        ] {
            assert!(CreatedTime::parse(bad, Tz::UTC).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_within_what_the_index_parses() {
        for good in [
            "2021-09-03T18:14:49+18:00",
            "2021-09-03T18:14:49-18:00",
            "2021-09-03T18:14:49.123456789Z",
        ] {
            assert!(CreatedTime::parse(good, Tz::UTC).is_ok(), "{good}");
        }
        for bad in [
            "2021-09-03T18:14:49+18:01",
            "0219-03-09T17:31:33.3+22:49",
            "2021-09-03T18:14:49.1234567890Z",
        ] {
            assert!(CreatedTime::parse(bad, Tz::UTC).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_year_is_0001() {
        assert!(CreatedTime::parse("0001-01-01 00:00:00", Tz::UTC).is_ok());
        let err = CreatedTime::parse("0000-12-31 23:59:59", Tz::UTC).unwrap_err();
        assert!(err.message().contains("year 0000"), "{}", err.message());
    }

    #[test]
    fn a_skipped_local_hour_is_rejected() {
        let err = CreatedTime::parse("2021-03-28 02:30:00", chrono_tz::Europe::Berlin);
        assert!(err.is_err());
    }
}
