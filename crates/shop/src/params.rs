//! Request input parsed so that a bad value is a 400 naming the parameter and the rule: path
//! and query parameters by hand (axum's own rejections are plain text without either), JSON
//! bodies through `service_kit::body::JsonBody` with top-level field errors made precise.

use std::collections::BTreeMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request};
use serde::de::DeserializeOwned;
use service_kit::body::JsonBody;
use service_kit::{ApiError, FieldError};
use uuid::Uuid;

/// A JSON body. `JsonBody` reports a missing or unknown field of the top-level object as
/// `(body)`; this names the field itself (`quantity` / `required`, `gift` / `unknown_field`).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match JsonBody::<T>::from_request(req, state).await {
            Ok(JsonBody(value)) => Ok(Body(value)),
            Err(ApiError::Validation(fields)) => Err(ApiError::Validation(fields.into_iter().map(refine).collect())),
            Err(other) => Err(other),
        }
    }
}

fn refine(error: FieldError) -> FieldError {
    if error.field != "(body)" {
        return error;
    }
    let named =
        |prefix: &str| error.message.strip_prefix(prefix).and_then(|rest| rest.split('`').nth(1)).map(str::to_owned);
    if let Some(field) = named("missing field ") {
        return FieldError::new(field, "required", error.message.clone());
    }
    if let Some(field) = named("unknown field ") {
        return FieldError::new(field, "unknown_field", error.message.clone());
    }
    error
}

/// Query parameters by name; rejects names outside `allowed`.
pub fn query(
    raw: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    let Query(map) = raw.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let unknown: Vec<FieldError> = map
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| {
            FieldError::new(
                k.as_str(),
                "unknown_field",
                format!("unknown query parameter `{k}`; expected one of: {}", allowed.join(", ")),
            )
        })
        .collect();
    if unknown.is_empty() { Ok(map) } else { Err(ApiError::Validation(unknown)) }
}

/// An integer query parameter within `min..=max`, or `default` when absent.
pub fn bounded_u32(
    map: &BTreeMap<String, String>,
    name: &str,
    min: u32,
    max: u32,
    default: u32,
) -> Result<u32, ApiError> {
    let Some(raw) = map.get(name) else { return Ok(default) };
    let value: i64 = raw
        .trim()
        .parse()
        .map_err(|_| ApiError::field(name, "type", format!("must be an integer, got `{}`", truncate(raw))))?;
    if value < i64::from(min) {
        return Err(ApiError::field(name, "minimum", format!("must be at least {min}, got {value}")));
    }
    if value > i64::from(max) {
        return Err(ApiError::field(name, "maximum", format!("must be at most {max}, got {value}")));
    }
    u32::try_from(value).map_err(|_| ApiError::field(name, "maximum", format!("must be at most {max}")))
}

/// A positive integer id from the path.
pub fn path_id(raw: Result<Path<String>, PathRejection>, name: &str) -> Result<i64, ApiError> {
    let Path(raw) = raw.map_err(|e| ApiError::field(name, "type", e.body_text()))?;
    let id: i64 = raw
        .parse()
        .map_err(|_| ApiError::field(name, "type", format!("must be a positive integer, got `{}`", truncate(&raw))))?;
    if id < 1 {
        return Err(ApiError::field(name, "minimum", format!("must be at least 1, got {id}")));
    }
    Ok(id)
}

/// A UUID from the path.
pub fn path_uuid(raw: Result<Path<String>, PathRejection>, name: &str) -> Result<Uuid, ApiError> {
    let Path(raw) = raw.map_err(|e| ApiError::field(name, "type", e.body_text()))?;
    Uuid::parse_str(&raw)
        .map_err(|_| ApiError::field(name, "format", format!("must be a UUID, got `{}`", truncate(&raw))))
}

/// Echoed input is cut short so an error response cannot be made arbitrarily large.
fn truncate(raw: &str) -> String {
    const MAX: usize = 40;
    if raw.chars().count() <= MAX {
        raw.to_owned()
    } else {
        format!("{}…", raw.chars().take(MAX).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn bounded_u32_names_the_rule() {
        let m = map(&[("limit", "0"), ("big", "101"), ("word", "ten")]);
        let rule = |r: Result<u32, ApiError>| match r {
            Err(ApiError::Validation(f)) => f[0].rule.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(rule(bounded_u32(&m, "limit", 1, 100, 20)), "minimum");
        assert_eq!(rule(bounded_u32(&m, "big", 1, 100, 20)), "maximum");
        assert_eq!(rule(bounded_u32(&m, "word", 1, 100, 20)), "type");
        assert_eq!(bounded_u32(&m, "absent", 1, 100, 20).unwrap(), 20);
    }

    #[test]
    fn top_level_field_errors_name_the_field() {
        let missing = refine(FieldError::new("(body)", "type", "missing field `quantity` at line 1 column 16"));
        assert_eq!((missing.field.as_str(), missing.rule.as_str()), ("quantity", "required"));
        let unknown = refine(FieldError::new("(body)", "type", "unknown field `gift`, expected one of ..."));
        assert_eq!((unknown.field.as_str(), unknown.rule.as_str()), ("gift", "unknown_field"));
        let syntax = refine(FieldError::new("(body)", "json_syntax", "EOF while parsing"));
        assert_eq!(syntax.field, "(body)");
    }

    #[test]
    fn long_input_is_truncated_in_messages() {
        assert_eq!(truncate(&"x".repeat(100)).chars().count(), 41);
    }
}
