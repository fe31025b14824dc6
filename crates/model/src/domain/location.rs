//! `gps`: `"lat, lon"` as the boxes send it, indexed as a geo_point.

use crate::domain::error::{json_type, ValidationError};
use serde_json::Value;

const MAX_LEN: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    lat: f64,
    lon: f64,
}

impl Location {
    pub fn from_json(value: &Value) -> Result<Location, ValidationError> {
        match value {
            Value::String(s) => Location::parse(s),
            other => Err(ValidationError::new(
                "",
                format!("must be a string \"lat, lon\", got {}", json_type(other)),
            )),
        }
    }

    pub fn parse(text: &str) -> Result<Location, ValidationError> {
        if text.len() > MAX_LEN {
            return Err(ValidationError::new("", "is too long"));
        }
        let bad = || ValidationError::new("", format!("must be \"lat, lon\", got {text:?}"));
        let (lat, lon) = text.split_once(',').ok_or_else(bad)?;
        let number = |s: &str| {
            crate::domain::value::MeasureValue::parse_decimal(s.trim())
                .map(|v| v.get())
                .map_err(|_| bad())
        };
        let (lat, lon) = (number(lat)?, number(lon)?);
        if !(-90.0..=90.0).contains(&lat) {
            return Err(ValidationError::new(
                "",
                format!("latitude {lat} is outside [-90, 90]"),
            ));
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(ValidationError::new(
                "",
                format!("longitude {lon} is outside [-180, 180]"),
            ));
        }
        Ok(Location { lat, lon })
    }

    pub fn lat(self) -> f64 {
        self.lat
    }

    pub fn lon(self) -> f64 {
        self.lon
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_coordinates_parse() {
        let l = Location::parse("37.61002501514269, 126.99636868892937").unwrap();
        assert_eq!(l.lat(), 37.61002501514269);
        assert_eq!(l.lon(), 126.99636868892937);
    }

    #[test]
    fn bounds_are_inclusive() {
        assert!(Location::parse("90, 180").is_ok());
        assert!(Location::parse("-90, -180").is_ok());
        assert!(Location::parse("90.000001, 0").is_err());
        assert!(Location::parse("0, 180.000001").is_err());
        assert!(Location::parse("-90.1, 0").is_err());
    }

    #[test]
    fn malformed_pairs_are_rejected() {
        for bad in [
            "", "37.6", "37.6,", ",126.9", "a, b", "1, 2, 3", "NaN, 0", "1e1, 2",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Location::from_json(&serde_json::json!([37.6, 126.9])).is_err());
    }
}
