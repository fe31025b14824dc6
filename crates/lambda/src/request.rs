//! The HTTP boundary: body limits, JSON, single reading or batch. Turns any request
//! into either readings for the pipeline or a 4xx, never a panic.

use sensor_model::domain::error::{json_type, ValidationError};
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
