//! Strict JSON request bodies: a size limit answered with 413, a content type check, and
//! parse errors that name the field (via `serde_path_to_error`) instead of axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, FieldError};

/// Default ceiling for JSON bodies accepted by service APIs.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Like `axum::Json`, but every rejection is an [`ApiError`] naming the field and rule.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_bytes(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Reads a body that must be JSON, enforcing the route's `DefaultBodyLimit`.
pub async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType("expected `Content-Type: application/json`".to_owned()));
    }
    // Refuse a body declared too large before reading any of it: axum's limit only trips once
    // the limit's worth has arrived, and a client declaring 1 GiB might never send it.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > DEFAULT_BODY_LIMIT as u64) {
        return Err(ApiError::PayloadTooLarge { limit: DEFAULT_BODY_LIMIT });
    }
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit: DEFAULT_BODY_LIMIT }
        } else {
            ApiError::bad_request("unreadable_body", rejection.body_text())
        }
    })
}

/// Parses JSON with the path of the first offending field in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(&mut *de).map_err(field_error).and_then(|value| {
        // Without this, `{"a":1}garbage` would be accepted as `{"a":1}`.
        de.end()
            .map_err(|err| ApiError::Validation(vec![FieldError::new("(body)", "json_syntax", err.to_string())]))?;
        Ok(value)
    });
    match parsed {
        Err(ApiError::Validation(errors)) if errors.iter().any(is_float_for_integer) => {
            parse_whole_floats(bytes).unwrap_or(Err(ApiError::Validation(errors)))
        }
        other => other,
    }
}

/// JSON has one number type, and JSON Schema (so every OpenAPI document) counts `2.0` as the
/// integer 2; serde does not. A body refused only for that is read again with such numbers as
/// integers. `None` when the body holds no whole float to rewrite.
fn parse_whole_floats<T: DeserializeOwned>(bytes: &[u8]) -> Option<Result<T, ApiError>> {
    let mut value: Value = serde_json::from_slice(bytes).ok()?;
    if !whole_floats_to_integers(&mut value) {
        return None;
    }
    Some(serde_path_to_error::deserialize(value).map_err(field_error))
}

fn is_float_for_integer(error: &FieldError) -> bool {
    error.rule == "type" && error.message.starts_with("invalid type: floating point")
}

/// Rewrites every float with no fractional part (within ±2^53, where floats are exact) as an
/// integer; true when it changed something.
fn whole_floats_to_integers(value: &mut Value) -> bool {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            let Some(x) = n.as_f64().filter(|x| x.fract() == 0.0 && x.abs() <= EXACT) else { return false };
            // In range and whole, so the casts are exact.
            *value = if x >= 0.0 { Value::from(x as u64) } else { Value::from(x as i64) };
            true
        }
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| whole_floats_to_integers(item) | changed),
        Value::Object(map) => map.values_mut().fold(false, |changed, item| whole_floats_to_integers(item) | changed),
        _ => false,
    }
}

fn field_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::Validation(vec![FieldError::new("(body)", "json_syntax", inner.to_string())]);
    }
    let message = inner.to_string();
    let rule = if message.starts_with("unknown field") {
        "unknown_field"
    } else if message.starts_with("missing field") {
        "required"
    } else {
        "type"
    };
    let field = match (rule, quoted_name(&message)) {
        // serde reports a missing field at its parent object, and an unknown one at the
        // parent too when it is at the top level: name the field itself.
        ("unknown_field" | "required", Some(name)) if path == "." => name.to_owned(),
        ("required", Some(name)) => format!("{path}.{name}"),
        _ if path == "." => "(body)".to_owned(),
        _ => path,
    };
    ApiError::Validation(vec![FieldError::new(field, rule, message)])
}

/// The first name in backticks of a serde message (``missing field `items` ``).
fn quoted_name(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // Only deserialised to provoke errors.
    struct Order {
        items: Vec<Line>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        product_id: i64,
        quantity: u32,
    }

    fn field_and_rule(body: &str) -> (String, String) {
        match parse_json::<Order>(body.as_bytes()) {
            Err(ApiError::Validation(errors)) => (errors[0].field.clone(), errors[0].rule.clone()),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_offending_field_at_every_depth() {
        assert_eq!(field_and_rule("{}"), ("items".into(), "required".into()));
        assert_eq!(field_and_rule(r#"{"items":[],"coupon":1}"#), ("coupon".into(), "unknown_field".into()));
        assert_eq!(field_and_rule(r#"{"items":[{"product_id":1}]}"#), ("items[0].quantity".into(), "required".into()));
        assert_eq!(
            field_and_rule(r#"{"items":[{"product_id":1,"quantity":1,"x":0}]}"#),
            ("items[0].x".into(), "unknown_field".into())
        );
        assert_eq!(
            field_and_rule(r#"{"items":[{"product_id":"a","quantity":1}]}"#),
            ("items[0].product_id".into(), "type".into())
        );
        assert_eq!(field_and_rule("1"), ("(body)".into(), "type".into()));
        assert_eq!(field_and_rule("{\"items\": ["), ("(body)".into(), "json_syntax".into()));
        // Found by the fuzzer: a valid document followed by anything is not a valid body.
        assert_eq!(field_and_rule("{\"items\":[]}\u{ff}"), ("(body)".into(), "json_syntax".into()));
        assert_eq!(field_and_rule("{\"items\":[]} {}"), ("(body)".into(), "json_syntax".into()));
    }

    #[test]
    fn whole_floats_are_integers_as_json_schema_says() {
        let order: Order = parse_json(br#"{"items":[{"product_id":2.0,"quantity":1e1}]}"#).expect("whole floats");
        assert_eq!((order.items[0].product_id, order.items[0].quantity), (2, 10));
        // Found by Schemathesis: a whole float near 2^51 must parse exactly, not one ulp off.
        let order: Order =
            parse_json(br#"{"items":[{"product_id":2251799813685247.0,"quantity":8.0}]}"#).expect("exact whole floats");
        assert_eq!((order.items[0].product_id, order.items[0].quantity), (2_251_799_813_685_247, 8));
        assert_eq!(
            field_and_rule(r#"{"items":[{"product_id":1,"quantity":1.5}]}"#),
            ("items[0].quantity".into(), "type".into())
        );
        assert_eq!(
            field_and_rule(r#"{"items":[{"product_id":1,"quantity":-1.0}]}"#),
            ("items[0].quantity".into(), "type".into())
        );
        assert_eq!(
            field_and_rule(r#"{"items":[{"product_id":1e300,"quantity":1}]}"#),
            ("items[0].product_id".into(), "type".into())
        );
        // The second reading still names the next problem.
        assert_eq!(
            field_and_rule(r#"{"items":[{"product_id":1.0,"quantity":1,"x":0}]}"#),
            ("items[0].x".into(), "unknown_field".into())
        );
    }
}
