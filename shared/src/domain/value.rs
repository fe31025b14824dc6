//! A measured value: a JSON number, or a string holding a finite decimal (`"26.20"`),
//! as the boxes send today.

use crate::domain::error::{json_type, ValidationError};
use serde_json::Value;

/// Longest decimal string accepted; real readings are a handful of digits.
pub const MAX_TEXT_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeasureValue(f64);

impl MeasureValue {
    pub fn from_json(value: &Value) -> Result<MeasureValue, ValidationError> {
        match value {
            // serde_json only yields finite numbers (1e400 is a parse error).
            Value::Number(n) => n
                .as_f64()
                .filter(|v| v.is_finite())
                .map(MeasureValue)
                .ok_or_else(|| ValidationError::new("", "must be a finite number")),
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
        assert!(MeasureValue::parse_decimal(&"1".repeat(MAX_TEXT_LEN)).is_ok());
        assert!(MeasureValue::parse_decimal(&"1".repeat(MAX_TEXT_LEN + 1)).is_err());
    }

    #[test]
    fn huge_decimal_strings_are_out_of_range() {
        let huge = format!("{}.0", "9".repeat(60));
        assert!(MeasureValue::parse_decimal(&huge).is_ok(), "1e60 is finite");
        assert!(MeasureValue::from_json(&json!(true)).is_err());
        assert!(MeasureValue::from_json(&json!(null)).is_err());
        assert!(MeasureValue::from_json(&json!({"v": 1})).is_err());
    }
}
