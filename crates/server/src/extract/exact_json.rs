//! [`ExactJson`]: a JSON body whose numbers come back exactly as sent, and whose size is checked
//! before it is parsed.
//!
//! serde_json keeps a number as an `i64`, a `u64` or an `f64`, so `9007199254740993` or
//! `0.30000000000000000001` would be stored as a neighbour and handed back silently changed; many
//! readers (JavaScript above all) hold every number as a double anyway. Keeping the digits
//! (serde_json's `arbitrary_precision`) would change how every crate of the workspace sees
//! numbers, so such numbers are refused instead: an integer (no fraction, no exponent) must lie
//! within ±2^53, where every integer is exact in a double; any other number must be written with
//! no more digits than the double it becomes gives back (`0.1` and `1.50` pass, `0.1000000000000000001`
//! does not).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::app::BODY_LIMIT;
use crate::error::ApiError;

/// Largest integer magnitude kept exact: 2^53.
const EXACT_INTEGERS: u64 = 1 << 53;

/// A JSON body of at most `LIMIT` bytes (413 past it, before any parsing), with only numbers
/// that round-trip (400 otherwise); otherwise refused like [`super::ApiJson`].
#[derive(Debug)]
pub struct ExactJson<T, const LIMIT: usize = BODY_LIMIT>(pub T);

impl<T: DeserializeOwned, S: Send + Sync, const LIMIT: usize> FromRequest<S>
    for ExactJson<T, LIMIT>
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::invalid("expected Content-Type: application/json"));
        }
        let too_large =
            || ApiError::payload_too_large(format!("the body is limited to {LIMIT} bytes"));
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::invalid("the body could not be read")
            }
        })?;
        if bytes.len() > LIMIT {
            return Err(too_large());
        }
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
        inexact_number(&bytes).map_or(Ok(ExactJson(value)), |n| {
            Err(ApiError::invalid(format!(
                "the number {n} cannot be kept exactly: integers must lie within ±2^53, other numbers have at most the digits of a double"
            )))
        })
    }
}

/// `application/json`, or another `+json` type, as axum's `Json` accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|s| s.ends_with("+json"))
}

/// The first number in the JSON text `json` (valid JSON: it parsed) that would not come back as
/// written.
pub(crate) fn inexact_number(json: &[u8]) -> Option<&str> {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                // Skip the string, and any escaped quote in it.
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < json.len()
                    && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                // Only ASCII was taken.
                let number = std::str::from_utf8(&json[start..i]).unwrap_or_default();
                if !exact(number) {
                    return Some(number);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Whether a JSON number literal comes back as the same number.
fn exact(literal: &str) -> bool {
    if !literal.contains(['.', 'e', 'E']) {
        let digits = literal.trim_start_matches('-');
        return digits.parse::<u64>().is_ok_and(|n| n <= EXACT_INTEGERS);
    }
    // The very parser that made the stored value, so a rounding of its own shows too.
    match serde_json::from_str::<f64>(literal) {
        Ok(f) if f.is_finite() => decimal(literal) == decimal(&format!("{f:e}")),
        _ => false,
    }
}

/// A decimal number as (negative, significant digits without leading or trailing zeros, power of
/// ten of the last digit); zero is `(false, "", 0)` whatever its sign.
fn decimal(text: &str) -> (bool, String, i64) {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.trim_start_matches('+').parse::<i64>().unwrap_or(i64::MAX)),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let significant = digits.trim_start_matches('0');
    let kept = significant.trim_end_matches('0');
    if kept.is_empty() {
        return (false, String::new(), 0);
    }
    let dropped = i64::try_from(significant.len() - kept.len()).unwrap_or(i64::MAX);
    let frac_len = i64::try_from(frac.len()).unwrap_or(i64::MAX);
    let power = exponent.saturating_sub(frac_len).saturating_add(dropped);
    (negative, kept.to_owned(), power)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_beyond_2_pow_53_are_refused() {
        for ok in ["0", "-0", "1", "-42", "9007199254740992", "-9007199254740992"] {
            assert!(exact(ok), "{ok}");
        }
        for bad in [
            "9007199254740993",
            "-9007199254740993",
            "18446744073709551615",
            "123456789012345678901234567890",
        ] {
            assert!(!exact(bad), "{bad}");
        }
    }

    #[test]
    fn decimals_must_come_back_as_written() {
        for ok in [
            "0.1",
            "1.50",
            "2.0",
            "-0.0",
            "1e2",
            "1E+2",
            "2.5e-3",
            "1e300",
            "0.30000000000000004",
            "123.456",
        ] {
            assert!(exact(ok), "{ok}");
        }
        for bad in [
            "0.30000000000000000001",
            "9007199254740993.0",
            "1.00000000000000000001",
            "1e400",
            "3.141592653589793238",
        ] {
            assert!(!exact(bad), "{bad}");
        }
    }

    #[test]
    fn only_numbers_outside_strings_count() {
        let json = br#"{"a":"9007199254740993","b\"":"x\"9007199254740993","c":[1,2.5,{"d":-3}]}"#;
        assert_eq!(inexact_number(json), None);
        let json = br#"{"a":"\\","b":[1, 9007199254740993]}"#;
        assert_eq!(inexact_number(json), Some("9007199254740993"));
    }
}
