//! The names IoT Core accepts for things and named shadows (the certificates, the shadow
//! API and the rules all check them).

/// The longest thing name.
pub const MAX_THING: usize = 128;
/// The longest shadow name.
pub const MAX_SHADOW: usize = 64;

fn valid_name(name: &str, max: usize, dollar: bool) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-') || (dollar && c == '$')
        })
}

/// A thing name as IoT Core accepts it: 1 to 128 characters of `[a-zA-Z0-9:_-]`.
pub fn valid_thing_name(thing: &str) -> bool {
    valid_name(thing, MAX_THING, false)
}

/// A shadow name as IoT Core accepts it: 1 to 64 characters of `[$a-zA-Z0-9:_-]`.
pub fn valid_shadow_name(name: &str) -> bool {
    valid_name(name, MAX_SHADOW, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("box-1:a_b", MAX_THING, false));
        assert!(!valid_name("a/b", MAX_THING, false));
        assert!(valid_name("$alarms", MAX_SHADOW, true));
        assert!(!valid_name(&"a".repeat(65), MAX_SHADOW, true));
    }
}
