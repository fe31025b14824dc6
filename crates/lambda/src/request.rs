//! The HTTP boundary: body limits, JSON, single reading or batch. Turns any request
//! into either readings for the pipeline or a 4xx, never a panic.

use base64::Engine;
use sensor_model::domain::error::{json_type, ValidationError};
use sensor_model::domain::thing_name::ThingName;
use serde_json::Value;

/// Largest accepted body; a full 500-reading batch is about 250 KB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
pub const MAX_BATCH: usize = 500;

/// A request that cannot be processed at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    MethodNotAllowed(String),
    TooLarge(usize),
    Invalid(ValidationError),
    /// Not from a box this function may take readings from (403 `forbidden`).
    Forbidden(ValidationError),
}

/// Who sent a request's readings, as far as AWS vouched for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A box: the thing in the MQTT topic (the IoT policy binds it to the connected
    /// certificate's thing) or in an IAM-authorized path (`/things/{thing}/<sensor>`,
    /// which only that thing's credentials may invoke). Its readings must carry its group.
    Box(ThingName),
    /// A shared-API-key route (`POST /gasdetector`): no box named. Taken only when
    /// `LEGACY_KEY_ROUTES` is on.
    SharedKey,
    /// A direct invoke without the rules' envelope: a caller with `lambda:InvokeFunction`
    /// on this function (an operator, `cargo lambda invoke`), trusted as such.
    Operator,
}

/// The data rules' event: `SELECT topic(2) AS thing, encode(*, 'base64') AS payload`.
/// The payload travels as base64 so the box's bytes (an object, a batch, or not JSON at
/// all) reach the function unchanged and cannot add or override the `thing` field.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEvent {
    thing: String,
    payload: String,
}

/// The box and its payload when `event` is the data rules' envelope; `None` when it is
/// anything else (then it is a reading or a batch itself).
pub fn rule_envelope(event: &[u8]) -> Option<Result<(ThingName, Vec<u8>), RequestError>> {
    let RuleEvent { thing, payload } = serde_json::from_slice(event).ok()?;
    Some(
        ThingName::parse(&thing)
            .map_err(RequestError::Forbidden)
            .and_then(|thing| {
                base64::engine::general_purpose::STANDARD
                    .decode(payload.as_bytes())
                    .map(|payload| (thing, payload))
                    .map_err(|e| {
                        RequestError::Invalid(ValidationError::new(
                            "body",
                            format!("the rule's payload is not base64: {e}"),
                        ))
                    })
            }),
    )
}

/// The body: one reading, or a batch of them.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Single(Value),
    Batch(Vec<Value>),
}

/// Parses a body into one reading object or a batch of at most 500 items.
/// Items are not validated here: a batch answers per item.
pub fn parse_body(body: &[u8]) -> Result<Payload, RequestError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(RequestError::TooLarge(body.len()));
    }
    let invalid = |message: String| RequestError::Invalid(ValidationError::new("body", message));
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(
            "is empty; expected a JSON reading or an array of readings".into(),
        ));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("is not valid JSON: {e}")))?;
    match value {
        Value::Array(items) if items.is_empty() => Err(invalid("is an empty batch".into())),
        Value::Array(items) if items.len() > MAX_BATCH => Err(invalid(format!(
            "batch has {} readings; at most {MAX_BATCH} per request",
            items.len()
        ))),
        Value::Array(items) => Ok(Payload::Batch(items)),
        Value::Object(_) => Ok(Payload::Single(value)),
        other => Err(invalid(format!(
            "must be a JSON object (one reading) or an array (a batch), got {}",
            json_type(&other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_envelope_carries_the_thing_and_the_payload_unchanged() {
        let event = br#"{"thing":"pi-19","payload":"W3siZ3JvdXBpZCI6MX1d"}"#;
        let (thing, payload) = rule_envelope(event)
            .expect("an envelope")
            .expect("a valid one");
        assert_eq!(thing.as_str(), "pi-19");
        assert_eq!(payload, br#"[{"groupid":1}]"#);
    }

    #[test]
    fn a_reading_is_not_an_envelope_even_with_a_thing_field() {
        for event in [
            &br#"{"groupid":1,"thing":"x"}"#[..],
            br#"{"thing":"x","payload":"e30=","groupid":1}"#,
            br#"{"thing":"x"}"#,
            br#"[{"thing":"x","payload":"e30="}]"#,
            b"not json",
        ] {
            assert!(
                rule_envelope(event).is_none(),
                "{}",
                String::from_utf8_lossy(event)
            );
        }
    }

    #[test]
    fn a_bad_envelope_is_refused_not_taken_as_a_reading() {
        assert!(matches!(
            rule_envelope(br#"{"thing":"a/b","payload":"e30="}"#),
            Some(Err(RequestError::Forbidden(e))) if e.field() == "thing"
        ));
        assert!(matches!(
            rule_envelope(br#"{"thing":"pi","payload":"%%%"}"#),
            Some(Err(RequestError::Invalid(e))) if e.field() == "body"
        ));
    }

    fn field(body: &[u8]) -> String {
        match parse_body(body) {
            Err(RequestError::Invalid(e)) => e.field().to_string(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn single_and_batch() {
        assert!(matches!(
            parse_body(b"{\"groupid\":1}"),
            Ok(Payload::Single(_))
        ));
        assert!(matches!(parse_body(b"[{}, {}]"), Ok(Payload::Batch(v)) if v.len() == 2));
    }

    #[test]
    fn body_level_errors() {
        for bad in [
            &b""[..],
            b"  ",
            b"not json",
            b"{\"a\":",
            b"[]",
            b"1",
            b"\"x\"",
            b"null",
            b"\xff\xfe",
            b"1e400",
        ] {
            assert_eq!(field(bad), "body", "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        assert_eq!(field(deep.as_bytes()), "body");
    }

    #[test]
    fn batch_limits() {
        let batch = |n: usize| format!("[{}]", vec!["{}"; n].join(","));
        assert!(
            matches!(parse_body(batch(500).as_bytes()), Ok(Payload::Batch(v)) if v.len() == 500)
        );
        assert_eq!(field(batch(501).as_bytes()), "body");
    }

    #[test]
    fn size_limit() {
        let mut body = vec![b' '; MAX_BODY_BYTES - 2];
        body.splice(0..0, *b"{}");
        assert_eq!(body.len(), MAX_BODY_BYTES);
        assert!(parse_body(&body).is_ok());
        body.push(b' ');
        assert_eq!(
            parse_body(&body),
            Err(RequestError::TooLarge(MAX_BODY_BYTES + 1))
        );
    }
}
