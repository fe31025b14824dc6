//! `sensorid` and `sensortype`: opaque labels, a string or an integer, at most 64
//! characters. They feed the document id, so `5` and `"5"` are the same label.

use crate::domain::error::{json_type, ValidationError};
use serde_json::Value;

pub const MAX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorLabel(String);

impl SensorLabel {
    pub fn from_json(value: &Value) -> Result<SensorLabel, ValidationError> {
        match value {
            Value::String(s) => SensorLabel::parse(s),
            Value::Number(n) if n.is_u64() || n.is_i64() => SensorLabel::parse(&n.to_string()),
            Value::Number(_) => Err(ValidationError::new(
                "",
                "must be a string or an integer, got a fraction",
            )),
            other => Err(ValidationError::new(
                "",
                format!("must be a string or an integer, got {}", json_type(other)),
            )),
        }
    }

    pub fn parse(text: &str) -> Result<SensorLabel, ValidationError> {
        if text.is_empty() {
            return Err(ValidationError::new("", "must not be empty"));
        }
        let chars = text.chars().count();
        if chars > MAX_LEN {
            return Err(ValidationError::new(
                "",
                format!("must be at most {MAX_LEN} characters, got {chars}"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "",
                "must not contain control characters",
            ));
        }
        Ok(SensorLabel(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn longest_accepted_one_longer_rejected() {
        assert!(SensorLabel::parse(&"x".repeat(64)).is_ok());
        assert!(SensorLabel::parse(&"x".repeat(65)).is_err());
        // Characters, not bytes.
        assert!(SensorLabel::parse(&"é".repeat(64)).is_ok());
    }

    #[test]
    fn strings_and_integers() {
        assert_eq!(
            SensorLabel::from_json(&json!("0005")).unwrap().as_str(),
            "0005"
        );
        assert_eq!(SensorLabel::from_json(&json!(8)).unwrap().as_str(), "8");
        assert_eq!(SensorLabel::from_json(&json!(-8)).unwrap().as_str(), "-8");
        for bad in [
            json!(""),
            json!(1.5),
            json!(null),
            json!(true),
            json!(["1"]),
            json!("a\nb"),
        ] {
            assert!(SensorLabel::from_json(&bad).is_err(), "{bad}");
        }
    }
}
