//! The OpenSearch index: `INDEX`, which may hold chrono date parts (`gasdetect-%Y.%m`)
//! for time-based indices. Dates come from the reading's own time, so a retried reading
//! always lands in the same index and its deterministic id still deduplicates it.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, TimeZone, Utc};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexName {
    pattern: String,
    dated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexNameError(String);

impl fmt::Display for IndexNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INDEX: {}", self.0)
    }
}

impl std::error::Error for IndexNameError {}

impl IndexName {
    pub fn parse(pattern: &str) -> Result<IndexName, IndexNameError> {
        if pattern.is_empty() {
            return Err(IndexNameError("must not be empty".into()));
        }
        let items: Vec<Item> = StrftimeItems::new(pattern).collect();
        if items.iter().any(|i| matches!(i, Item::Error)) {
            return Err(IndexNameError(format!(
                "{pattern:?} has an invalid date specifier"
            )));
        }
        let dated = items
            .iter()
            .any(|i| matches!(i, Item::Numeric(..) | Item::Fixed(..)));
        let name = IndexName {
            pattern: pattern.to_string(),
            dated,
        };
        // Check what it produces, on a date with two-digit parts everywhere.
        let sample = Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 59, 59)
            .single()
            .ok_or_else(|| IndexNameError("cannot build a sample date".into()))?;
        check_name(&name.for_time(sample))?;
        Ok(name)
    }

    pub fn for_time(&self, time: DateTime<Utc>) -> String {
        if self.dated {
            time.format(&self.pattern).to_string()
        } else {
            self.pattern.clone()
        }
    }
}

/// OpenSearch's index name rules.
fn check_name(name: &str) -> Result<(), IndexNameError> {
    let err = |m: String| Err(IndexNameError(m));
    if name.len() > 255 {
        return err(format!("{name:?} is longer than 255 bytes"));
    }
    if name == "." || name == ".." {
        return err(format!("{name:?} is not a valid index name"));
    }
    if name.starts_with(['-', '_', '+']) {
        return err(format!("{name:?} must not start with '-', '_' or '+'"));
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return err(format!("{name:?} must be lowercase"));
    }
    if let Some(c) = name.chars().find(|c| {
        matches!(
            c,
            '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
        ) || c.is_control()
    }) {
        return err(format!("{name:?} must not contain {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2021, 9, 3, 18, 14, 49).unwrap()
    }

    #[test]
    fn plain_names_stay_as_they_are() {
        assert_eq!(
            IndexName::parse("gasdetect").unwrap().for_time(t()),
            "gasdetect"
        );
    }

    #[test]
    fn date_parts_use_the_given_time() {
        let i = IndexName::parse("gasdetect-%Y.%m").unwrap();
        assert_eq!(i.for_time(t()), "gasdetect-2021.09");
        let i = IndexName::parse("dust-%Y.%m.%d").unwrap();
        assert_eq!(i.for_time(t()), "dust-2021.09.03");
    }

    #[test]
    fn invalid_names_are_rejected() {
        for bad in [
            "",
            "Gas",
            "gas detect",
            "a/b",
            "_x",
            "-x",
            "x*",
            "%Q",
            "gas-%b",
            "..",
        ] {
            assert!(IndexName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IndexName::parse(&"a".repeat(255)).is_ok());
        assert!(IndexName::parse(&"a".repeat(256)).is_err());
    }
}
