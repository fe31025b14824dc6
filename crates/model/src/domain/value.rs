//! A measured value: a JSON number, or a string holding a finite decimal (`"26.20"`),
//! as the boxes send today.

use crate::domain::error::{json_type, ValidationError};
use serde_json::Value;

/// Longest decimal string accepted; real readings are a handful of digits.
pub const MAX_TEXT_LEN: usize = 64;
/// Largest magnitude accepted: the index templates map `value` as a 32-bit `float`, and
/// OpenSearch refuses a document whose float is not finite, on every resend (found by
/// schemathesis, docs/reliability.md).
pub const MAX_MAGNITUDE: f64 = f32::MAX as f64;
/// Most digits before the decimal point (leading zeros aside) in a decimal string:
/// 38 digits stay below 10^38 < `MAX_MAGNITUDE`, a rule api/openapi.yaml can state as a
/// pattern.
pub const MAX_INTEGER_DIGITS: usize = 38;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeasureValue(f64);

impl MeasureValue {
    pub fn from_json(value: &Value) -> Result<MeasureValue, ValidationError> {
        match value {
            // serde_json only yields finite numbers (1e400 is a parse error).
            Value::Number(n) => match n.as_f64().filter(|v| v.is_finite()) {
                Some(v) if v.abs() <= MAX_MAGNITUDE => Ok(MeasureValue(v)),
                Some(_) => Err(ValidationError::new(
                    "",
                    format!("is out of range: at most {MAX_MAGNITUDE:e} in magnitude (stored as a 32-bit float)"),
                )),
                None => Err(ValidationError::new("", "must be a finite number")),
            },
            Value::String(s) => MeasureValue::parse_decimal(s),
            other => Err(ValidationError::new(
                "",
                format!(
                    "must be a number or a string holding a decimal, got {}",
                    json_type(other)
                ),
            )),
        }
    }

    /// `[+-]digits[.digits]`: no exponent, no spaces, no `NaN`/`inf`, so the string the
    /// website reads and the number the rules check cannot disagree.
    pub fn parse_decimal(text: &str) -> Result<MeasureValue, ValidationError> {
        if text.is_empty() {
            return Err(ValidationError::new("", "must not be empty"));
        }
        if text.len() > MAX_TEXT_LEN {
            return Err(ValidationError::new(
                "",
                format!("must be at most {MAX_TEXT_LEN} characters"),
            ));
        }
        let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
        let (int, frac) = match unsigned.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (unsigned, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let well_formed = match frac {
            None => digits(int),
            Some(f) => {
                (digits(int) && (f.is_empty() || digits(f))) || (int.is_empty() && digits(f))
            }
        };
        if !well_formed {
            return Err(ValidationError::new(
                "",
                format!("must be a decimal number such as \"26.20\", got {text:?}"),
            ));
        }
        if int.trim_start_matches('0').len() > MAX_INTEGER_DIGITS {
            return Err(ValidationError::new(
                "",
                format!(
                    "is out of range: at most {MAX_INTEGER_DIGITS} digits before the decimal point \
                     (stored as a 32-bit float)"
                ),
            ));
        }
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(MeasureValue(v)),
            _ => Err(ValidationError::new("", "is out of range")),
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_and_numbers_give_the_same_value() {
        assert_eq!(
            MeasureValue::from_json(&json!("26.20")).unwrap().get(),
            26.2
        );
        assert_eq!(MeasureValue::from_json(&json!(26.2)).unwrap().get(), 26.2);
        assert_eq!(MeasureValue::from_json(&json!("400")).unwrap().get(), 400.0);
        assert_eq!(MeasureValue::from_json(&json!(400)).unwrap().get(), 400.0);
        assert_eq!(MeasureValue::from_json(&json!("-3.5")).unwrap().get(), -3.5);
        assert_eq!(MeasureValue::from_json(&json!(".5")).unwrap().get(), 0.5);
        assert_eq!(MeasureValue::from_json(&json!("5.")).unwrap().get(), 5.0);
    }

    #[test]
    fn non_decimals_are_rejected() {
        for bad in [
            "", " 1", "1 ", "NaN", "nan", "inf", "Infinity", "-inf", "1e5", "0x10", "1,5", ".",
            "-", "1.2.3", "--1", "abc",
        ] {
            assert!(MeasureValue::parse_decimal(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn longest_accepted_one_longer_rejected() {
        let long = format!("1.{}", "1".repeat(MAX_TEXT_LEN - 2));
        assert!(MeasureValue::parse_decimal(&long).is_ok());
        assert!(MeasureValue::parse_decimal(&format!("{long}1")).is_err());
        let zeros = format!("{}1", "0".repeat(MAX_TEXT_LEN - 1));
        assert!(MeasureValue::parse_decimal(&zeros).is_ok(), "leading zeros");
    }

    #[test]
    fn values_a_32_bit_float_cannot_hold_are_out_of_range() {
        let widest = "9".repeat(MAX_INTEGER_DIGITS);
        assert!(MeasureValue::parse_decimal(&widest).is_ok());
        assert!(MeasureValue::parse_decimal(&format!("-{widest}.99")).is_ok());
        assert!(MeasureValue::parse_decimal(&format!("1{widest}")).is_err());
        let f32_max = f64::from(f32::MAX);
        assert!(MeasureValue::from_json(&json!(f32_max)).is_ok());
        assert!(MeasureValue::from_json(&json!(-f32_max)).is_ok());
        assert!(MeasureValue::from_json(&json!(f32_max * 1.000001)).is_err());
        assert!(MeasureValue::from_json(&json!(4.95e110)).is_err());
        // The next double above f32::MAX, as text: serde_json's float_roundtrip parses it
        // exactly, so it is refused as any JSON Schema validator refuses it.
        let above: Value = serde_json::from_str("3.402823466385289e+38").unwrap();
        assert!(MeasureValue::from_json(&above).is_err());
    }

    #[test]
    fn huge_decimal_strings_are_out_of_range() {
        let huge = format!("{}.0", "9".repeat(60));
        assert!(
            MeasureValue::parse_decimal(&huge).is_err(),
            "1e60 is no 32-bit float"
        );
        assert!(MeasureValue::from_json(&json!(true)).is_err());
        assert!(MeasureValue::from_json(&json!(null)).is_err());
        assert!(MeasureValue::from_json(&json!({"v": 1})).is_err());
    }
}
