//! A box's name in the IoT registry: the thing its certificate is attached to. It comes
//! from the MQTT topic (the rule's `topic(2)`, which the IoT policy binds to the connected
//! thing) or from an IAM-checked path (`/things/{thing}/<sensor>`), never from the body.

use crate::domain::error::ValidationError;
use std::fmt;

/// The longest thing name IoT Core accepts.
pub const MAX_LEN: usize = 128;

/// The registry attribute that binds a box (thing) to its group: `fleet` writes it, the
/// functions read it.
pub const GROUP_ATTRIBUTE: &str = "groupid";
/// The registry attribute `fleet revoke` sets (when, RFC 3339): the functions refuse a
/// thing that has it, even with credentials issued before the revocation.
pub const REVOKED_ATTRIBUTE: &str = "revoked";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThingName(String);

impl ThingName {
    /// Accepts what IoT Core accepts: 1 to 128 characters of `[a-zA-Z0-9:_-]`.
    pub fn parse(text: &str) -> Result<ThingName, ValidationError> {
        let invalid = |message: String| ValidationError::new("thing", message);
        if text.is_empty() {
            return Err(invalid("must not be empty".into()));
        }
        if text.len() > MAX_LEN {
            return Err(invalid(format!(
                "must be at most {MAX_LEN} characters, got {}",
                text.len()
            )));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-')))
        {
            return Err(invalid(format!(
                "may hold only letters, digits, ':', '_' and '-', found {bad:?}"
            )));
        }
        Ok(ThingName(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ThingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_iot_core_accepts() {
        for good in ["box-1", "pi:19_a", "A", &"x".repeat(MAX_LEN)] {
            assert_eq!(
                ThingName::parse(good).map(|t| t.to_string()),
                Ok(good.to_string())
            );
        }
    }

    #[test]
    fn refuses_the_rest_naming_the_field() {
        for bad in [
            "",
            "a/b",
            "a+b",
            "#",
            "$aws",
            "a b",
            "é",
            &"x".repeat(MAX_LEN + 1),
        ] {
            let e = ThingName::parse(bad).expect_err(bad);
            assert_eq!(e.field(), "thing", "{bad:?}");
        }
    }
}
