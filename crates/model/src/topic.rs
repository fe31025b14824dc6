//! MQTT topics for warnings: `TOPIC_TEMPLATE` (default `pi/{groupid}`) with the group
//! filled in. The template is checked once at init, and a `GroupId` cannot contain
//! topic syntax, so no payload can reach another group's or a reserved `$` topic.

use crate::domain::group_id::{self, GroupId};
use crate::domain::sensor::Sensor;
use std::fmt;

pub const DEFAULT_TEMPLATE: &str = "pi/{groupid}";
/// IoT Core limits: topic at most 256 bytes and at most 7 slashes.
const MAX_TOPIC_BYTES: usize = 256;
const MAX_SLASHES: usize = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate(String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic(String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplateError(String);

impl fmt::Display for TopicTemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TOPIC_TEMPLATE: {}", self.0)
    }
}

impl std::error::Error for TopicTemplateError {}

impl TopicTemplate {
    /// Placeholders: `{groupid}` and `{sensor}`. No wildcards, no leading `$`, and the
    /// longest possible topic must fit IoT Core's limits.
    pub fn parse(template: &str) -> Result<TopicTemplate, TopicTemplateError> {
        let err = |m: String| Err(TopicTemplateError(m));
        if template.is_empty() {
            return err("must not be empty".into());
        }
        if template.starts_with('$') {
            return err(format!(
                "{template:?} is a reserved topic (starts with '$')"
            ));
        }
        if template.contains(['+', '#']) {
            return err(format!("{template:?} contains an MQTT wildcard (+ or #)"));
        }
        if template.chars().any(char::is_control) {
            return err("must not contain control characters".into());
        }
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            let Some(len) = rest[start..].find('}') else {
                return err(format!("unclosed '{{' in {template:?}"));
            };
            let name = &rest[start + 1..start + len];
            if name != "groupid" && name != "sensor" {
                return err(format!(
                    "unknown placeholder {{{name}}}; use {{groupid}} and/or {{sensor}}"
                ));
            }
            rest = &rest[start + len + 1..];
        }
        if rest.contains('}') {
            return err(format!("unmatched '}}' in {template:?}"));
        }
        let longest = template
            .replace("{groupid}", &"x".repeat(group_id::MAX_LEN))
            .replace("{sensor}", "gasdetector");
        if longest.len() > MAX_TOPIC_BYTES {
            return err(format!(
                "topics could reach {} bytes; IoT Core allows {MAX_TOPIC_BYTES}",
                longest.len()
            ));
        }
        if longest.matches('/').count() > MAX_SLASHES {
            return err(format!(
                "IoT Core allows at most {MAX_SLASHES} '/' in a topic"
            ));
        }
        Ok(TopicTemplate(template.to_string()))
    }

    pub fn topic(&self, sensor: Sensor, group: &GroupId) -> Topic {
        Topic(
            self.0
                .replace("{groupid}", group.as_str())
                .replace("{sensor}", sensor.name()),
        )
    }
}

impl Default for TopicTemplate {
    fn default() -> Self {
        TopicTemplate(DEFAULT_TEMPLATE.to_string())
    }
}

impl Topic {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(s: &str) -> GroupId {
        GroupId::parse(s).unwrap()
    }

    #[test]
    fn default_topic_is_pi_slash_group() {
        let t = TopicTemplate::default().topic(Sensor::Gasdetector, &group("2"));
        assert_eq!(t.as_str(), "pi/2");
    }

    #[test]
    fn both_placeholders_are_filled() {
        let t = TopicTemplate::parse("fleet/{sensor}/{groupid}/warn").unwrap();
        assert_eq!(
            t.topic(Sensor::Dust, &group("g-1")).as_str(),
            "fleet/dust/g-1/warn"
        );
    }

    #[test]
    fn bad_templates_fail_with_a_reason() {
        for (bad, needle) in [
            ("", "empty"),
            ("$aws/things/{groupid}", "reserved"),
            ("pi/+", "wildcard"),
            ("pi/#", "wildcard"),
            ("pi/{group}", "unknown placeholder"),
            ("pi/{groupid", "unclosed"),
            ("pi/groupid}", "unmatched"),
            ("a/b/c/d/e/f/g/h/{groupid}", "at most 7"),
        ] {
            let e = TopicTemplate::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let long = format!("{}/{{groupid}}", "t".repeat(200));
        assert!(TopicTemplate::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("256"));
    }

    #[test]
    fn longest_group_fits_the_default_template() {
        let t = TopicTemplate::default().topic(Sensor::Temp, &group(&"z".repeat(64)));
        assert_eq!(t.as_str().len(), 3 + 64);
    }
}
