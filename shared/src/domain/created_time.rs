//! `createdtime`: when the box took the reading. Either `YYYY-MM-DD HH:MM:SS` in the
//! device's local zone (`DEVICE_TIMEZONE`) or RFC 3339 with an explicit offset.

use crate::domain::error::{json_type, ValidationError};
use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

const LOCAL_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
/// Longest RFC 3339 form worth accepting (nanoseconds and an offset fit well within).
const MAX_LEN: usize = 40;

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
        ] {
            assert!(CreatedTime::parse(bad, Tz::UTC).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_skipped_local_hour_is_rejected() {
        let err = CreatedTime::parse("2021-03-28 02:30:00", chrono_tz::Europe::Berlin);
        assert!(err.is_err());
    }
}
