//! `groupid`: names the group of boxes and ends up in the MQTT topic, so it is
//! restricted to characters that cannot change the topic's shape.

use crate::domain::error::{json_type, ValidationError};
use serde_json::Value;
use std::fmt;

pub const MAX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupId(String);

impl GroupId {
    /// Accepts `[A-Za-z0-9_-]{1,64}`. Anything that could address another topic
    /// (`/`, `+`, `#`, `$`, spaces, control characters) is rejected.
    pub fn parse(text: &str) -> Result<GroupId, ValidationError> {
        if text.is_empty() {
            return Err(ValidationError::new("", "must not be empty"));
        }
        if text.len() > MAX_LEN {
            return Err(ValidationError::new(
                "",
                format!("must be at most {MAX_LEN} characters, got {}", text.len()),
            ));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(ValidationError::new(
                "",
                format!("may hold only letters, digits, '_' and '-', found {bad:?}"),
            ));
        }
        Ok(GroupId(text.to_string()))
    }

    /// From the payload: a string, or a non-negative integer (`2` and `"2"` are the same group).
    pub fn from_json(value: &Value) -> Result<GroupId, ValidationError> {
        match value {
            Value::String(s) => GroupId::parse(s),
            Value::Number(n) if n.is_u64() => GroupId::parse(&n.to_string()),
            Value::Number(_) => Err(ValidationError::new(
                "",
                "must be a string or a non-negative integer",
            )),
            other => Err(ValidationError::new(
                "",
                format!("must be a string or an integer, got {}", json_type(other)),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn longest_accepted_one_longer_rejected() {
        assert!(GroupId::parse(&"a".repeat(64)).is_ok());
        assert!(GroupId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn topic_characters_are_rejected() {
        for bad in [
            "", "1/2", "+", "#", "$aws", "a b", "1\n", "é", "a.b", "..", "a\0",
        ] {
            assert!(GroupId::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn seed_and_common_forms_are_accepted() {
        for good in ["1", "2", "group_A-7", "0"] {
            assert_eq!(GroupId::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn integers_are_the_same_group_as_their_string() {
        assert_eq!(
            GroupId::from_json(&json!(2)).unwrap(),
            GroupId::from_json(&json!("2")).unwrap()
        );
        assert!(GroupId::from_json(&json!(-1)).is_err());
        assert!(GroupId::from_json(&json!(1.5)).is_err());
        assert!(GroupId::from_json(&json!(null)).is_err());
        assert!(GroupId::from_json(&json!(["1"])).is_err());
    }
}
