//! Alarm configuration, parsed once at init: `ALARM_MODE`, `CLOCK_SKEW_WARN`,
//! `ALARM_THING_TEMPLATE` and `ALARM_SHADOW` (the named shadow holding a group's state).

use crate::domain::group_id::GroupId;
use std::fmt;

/// Whether messages go out on transitions (the default) or per breaching reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlarmMode {
    /// State per (group, sensor, measure, bound); messages on transitions only.
    #[default]
    Transitions,
    /// The original behaviour: one warning per reading at or past a bound, no state.
    Every,
}

impl AlarmMode {
    pub fn parse(text: &str) -> Result<AlarmMode, String> {
        match text.trim() {
            "transitions" | "state" => Ok(AlarmMode::Transitions),
            "every" => Ok(AlarmMode::Every),
            other => Err(format!("{other:?} is not one of transitions, every")),
        }
    }
}

/// Default `CLOCK_SKEW_WARN`: 10 minutes.
pub const DEFAULT_CLOCK_SKEW_WARN_S: i64 = 600;

/// Seconds as an environment value: a whole number, at least `min`.
pub fn parse_seconds(text: &str, min: i64) -> Result<i64, String> {
    let seconds: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of seconds"))?;
    if seconds < min {
        return Err(format!("must be at least {min} seconds, got {seconds}"));
    }
    Ok(seconds)
}

/// The thing whose named shadow holds a group's alarm state: `{groupid}` by default
/// (the box's own thing, so it can read its state after a reboot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingTemplate(String);

pub const DEFAULT_THING_TEMPLATE: &str = "{groupid}";
pub const DEFAULT_SHADOW: &str = "alarms";
/// IoT limits: thing names `[a-zA-Z0-9:_-]{1,128}`, shadow names `[$a-zA-Z0-9:_-]{1,64}`.
const MAX_THING: usize = 128;
const MAX_SHADOW: usize = 64;

fn thing_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-')
}

impl Default for ThingTemplate {
    fn default() -> Self {
        ThingTemplate(DEFAULT_THING_TEMPLATE.into())
    }
}

impl ThingTemplate {
    /// `{groupid}` plus thing-name characters; the longest name must fit 128 characters.
    pub fn parse(template: &str) -> Result<ThingTemplate, String> {
        let literal = template.replace("{groupid}", "");
        if let Some(bad) = literal.chars().find(|c| !thing_char(*c)) {
            return Err(format!(
                "{template:?}: {bad:?} cannot be in a thing name; use {{groupid}} and letters, digits, ':', '_', '-'"
            ));
        }
        if !template.contains("{groupid}") {
            return Err(format!(
                "{template:?} has no {{groupid}}: every group needs its own shadow"
            ));
        }
        let longest = template.replace("{groupid}", &"x".repeat(crate::domain::group_id::MAX_LEN));
        if longest.len() > MAX_THING {
            return Err(format!(
                "{template:?} makes thing names longer than {MAX_THING} characters"
            ));
        }
        Ok(ThingTemplate(template.to_string()))
    }

    pub fn thing(&self, group: &GroupId) -> String {
        self.0.replace("{groupid}", group.as_str())
    }
}

impl fmt::Display for ThingTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `ALARM_SHADOW`: a named shadow's name.
pub fn parse_shadow_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_SHADOW {
        return Err(format!("{name:?} must be 1 to {MAX_SHADOW} characters"));
    }
    if let Some(bad) = name.chars().find(|c| !(thing_char(*c) || *c == '$')) {
        return Err(format!("{name:?}: {bad:?} cannot be in a shadow name"));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(AlarmMode::parse("every"), Ok(AlarmMode::Every));
        assert_eq!(
            AlarmMode::parse(" transitions "),
            Ok(AlarmMode::Transitions)
        );
        assert!(AlarmMode::parse("sometimes").is_err());
    }

    #[test]
    fn thing_templates() {
        let group = GroupId::parse("g-7").unwrap();
        assert_eq!(ThingTemplate::default().thing(&group), "g-7");
        assert_eq!(
            ThingTemplate::parse("box:{groupid}").unwrap().thing(&group),
            "box:g-7"
        );
        for bad in [
            "box/{groupid}",
            "fixed",
            "{groupid} x",
            &format!("{}{{groupid}}", "a".repeat(70)),
        ] {
            assert!(ThingTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shadow_names_and_seconds() {
        assert_eq!(parse_shadow_name("alarms").unwrap(), "alarms");
        assert!(parse_shadow_name("a/b").is_err());
        assert!(parse_shadow_name(&"a".repeat(65)).is_err());
        assert_eq!(parse_seconds("600", 0), Ok(600));
        assert!(parse_seconds("10m", 0).is_err());
        assert!(parse_seconds("-1", 0).is_err());
    }
}
