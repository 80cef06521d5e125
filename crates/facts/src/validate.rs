//! Strict parsing of ingest bodies: one fact, a JSON array, or NDJSON. Every record is checked
//! in full and every broken rule is reported with the record's index, the field and the rule,
//! so a client fixes a batch in one round trip. A batch is accepted whole or not at all.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::model::RequestFact;

/// Most errors listed in one 400; the count of the rest is reported separately.
pub const MAX_LISTED_ERRORS: usize = 100;
/// Largest `latency_ms` accepted: one hour.
pub const MAX_LATENCY_MS: f64 = 3_600_000.0;
/// How far in the future an `event_time` may lie (clock skew between hosts).
pub const MAX_FUTURE_SKEW_SECS: i64 = 300;
pub const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
const FIELDS: &[&str] =
    &["event_id", "event_time", "service", "method", "path_template", "status_code", "latency_ms", "user_agent_family"];

/// One broken rule in one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordError {
    /// Position of the record in the batch (0-based; NDJSON: line order of non-empty lines).
    pub index: usize,
    pub field: String,
    pub rule: &'static str,
    pub message: String,
}

/// Why a body was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchRejection {
    pub errors: Vec<RecordError>,
    /// Errors beyond [`MAX_LISTED_ERRORS`], counted but not listed.
    pub more_errors: usize,
}

/// Parses and validates a whole body. `now` bounds `event_time` from above; `new_id` assigns
/// ids to facts that arrive without one (UUIDv7 in production).
pub fn parse_batch(
    body: &[u8],
    now: DateTime<Utc>,
    mut new_id: impl FnMut() -> Uuid,
) -> Result<Vec<RequestFact>, BatchRejection> {
    let mut errors = Vec::new();
    let records = match split_records(body) {
        Ok(records) => records,
        Err(err) => return Err(BatchRejection { errors: vec![err], more_errors: 0 }),
    };
    if records.is_empty() {
        let err = RecordError {
            index: 0,
            field: String::new(),
            rule: "non_empty",
            message: "the body holds no facts".into(),
        };
        return Err(BatchRejection { errors: vec![err], more_errors: 0 });
    }
    let mut facts = Vec::with_capacity(records.len());
    for (index, record) in records.into_iter().enumerate() {
        match validate_record(index, record, now, &mut new_id) {
            Ok(fact) => facts.push(fact),
            Err(mut errs) => errors.append(&mut errs),
        }
    }
    if errors.is_empty() {
        Ok(facts)
    } else {
        let more_errors = errors.len().saturating_sub(MAX_LISTED_ERRORS);
        errors.truncate(MAX_LISTED_ERRORS);
        Err(BatchRejection { errors, more_errors })
    }
}

/// A single object, an array of objects, or whitespace/newline-separated objects (NDJSON).
fn split_records(body: &[u8]) -> Result<Vec<Value>, RecordError> {
    let trimmed = body.trim_ascii_start();
    if trimmed.first() == Some(&b'[') {
        return match serde_json::from_slice::<Vec<Value>>(trimmed) {
            Ok(values) => Ok(values),
            Err(err) => Err(syntax_error(0, &err)),
        };
    }
    let mut records = Vec::new();
    for (index, value) in serde_json::Deserializer::from_slice(body).into_iter::<Value>().enumerate() {
        match value {
            Ok(value) => records.push(value),
            Err(err) => return Err(syntax_error(index, &err)),
        }
    }
    Ok(records)
}

fn syntax_error(index: usize, err: &serde_json::Error) -> RecordError {
    RecordError {
        index,
        field: String::new(),
        rule: "json_syntax",
        message: format!("not valid JSON at line {} column {}", err.line(), err.column()),
    }
}

fn validate_record(
    index: usize,
    record: Value,
    now: DateTime<Utc>,
    new_id: &mut impl FnMut() -> Uuid,
) -> Result<RequestFact, Vec<RecordError>> {
    let mut errors = Vec::new();
    let mut err = |field: &str, rule: &'static str, message: String| {
        errors.push(RecordError { index, field: field.to_owned(), rule, message });
    };
    let Value::Object(obj) = record else {
        err("", "object", "each fact must be a JSON object".into());
        return Err(errors);
    };
    for key in obj.keys() {
        if !FIELDS.contains(&key.as_str()) {
            err(key, "unknown_field", format!("`{key}` is not a RequestFact field"));
        }
    }
    let event_id = match obj.get("event_id") {
        None | Some(Value::Null) => Some(new_id()),
        Some(Value::String(s)) => match Uuid::try_parse(s) {
            Ok(id) if id.get_version_num() == 7 => Some(id),
            Ok(_) => {
                err("event_id", "uuid_v7", "must be a version 7 UUID".into());
                None
            }
            Err(_) => {
                err("event_id", "uuid_v7", "must be a UUID string".into());
                None
            }
        },
        Some(_) => {
            err("event_id", "type", "must be a string".into());
            None
        }
    };
    let event_time = match required_str(&obj, "event_time", &mut err) {
        Some(s) => parse_time(s, now, &mut err),
        None => None,
    };
    let service = required_str(&obj, "service", &mut err).and_then(|s| {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Some(s.to_owned())
        } else {
            err("service", "pattern", "must be 1–64 characters of a-z, 0-9, `-`, `_`".into());
            None
        }
    });
    let method = required_str(&obj, "method", &mut err).and_then(|s| {
        if METHODS.contains(&s) {
            Some(s.to_owned())
        } else {
            err("method", "enum", format!("must be one of {}", METHODS.join(", ")));
            None
        }
    });
    let path_template = required_str(&obj, "path_template", &mut err).and_then(|s| match check_path_template(s) {
        Ok(()) => Some(s.to_owned()),
        Err((rule, message)) => {
            err("path_template", rule, message);
            None
        }
    });
    let status_code = match obj.get("status_code") {
        None | Some(Value::Null) => {
            err("status_code", "required", "is required".into());
            None
        }
        Some(Value::Number(n)) => match n.as_u64() {
            Some(code @ 100..=599) => u16::try_from(code).ok(),
            _ => {
                err("status_code", "range", "must be an integer from 100 to 599".into());
                None
            }
        },
        Some(_) => {
            err("status_code", "type", "must be an integer".into());
            None
        }
    };
    let latency_ms = match obj.get("latency_ms") {
        None | Some(Value::Null) => {
            err("latency_ms", "required", "is required".into());
            None
        }
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() && (0.0..=MAX_LATENCY_MS).contains(&v) => Some(v),
            _ => {
                err("latency_ms", "range", format!("must be a number from 0 to {MAX_LATENCY_MS}"));
                None
            }
        },
        Some(_) => {
            err("latency_ms", "type", "must be a number".into());
            None
        }
    };
    let user_agent_family = match obj.get("user_agent_family") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 && !s.chars().any(char::is_control) => {
            Some(Some(s.clone()))
        }
        Some(Value::String(_)) => {
            err("user_agent_family", "length", "must be 1–64 printable characters or null".into());
            None
        }
        Some(_) => {
            err("user_agent_family", "type", "must be a string or null".into());
            None
        }
    };
    match (event_id, event_time, service, method, path_template, status_code, latency_ms, user_agent_family) {
        (
            Some(event_id),
            Some(event_time),
            Some(service),
            Some(method),
            Some(path_template),
            Some(status_code),
            Some(latency_ms),
            Some(user_agent_family),
        ) if errors.is_empty() => Ok(RequestFact {
            event_id,
            event_time,
            service,
            method,
            path_template,
            status_code,
            latency_ms,
            user_agent_family,
        }),
        _ => Err(errors),
    }
}

fn required_str<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
    err: &mut impl FnMut(&str, &'static str, String),
) -> Option<&'a str> {
    match obj.get(field) {
        None | Some(Value::Null) => {
            err(field, "required", "is required".into());
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            err(field, "type", "must be a string".into());
            None
        }
    }
}

fn parse_time(s: &str, now: DateTime<Utc>, err: &mut impl FnMut(&str, &'static str, String)) -> Option<DateTime<Utc>> {
    let Ok(t) = DateTime::parse_from_rfc3339(s) else {
        err("event_time", "rfc3339", "must be an RFC 3339 timestamp".into());
        return None;
    };
    if t.offset().local_minus_utc() != 0 {
        err("event_time", "utc", "must be in UTC (`Z` or `+00:00`)".into());
        return None;
    }
    let t = t.with_timezone(&Utc);
    if t > now + Duration::seconds(MAX_FUTURE_SKEW_SECS) {
        err("event_time", "not_future", format!("must not lie more than {MAX_FUTURE_SKEW_SECS} s in the future"));
        return None;
    }
    if t.timestamp() < 946_684_800 {
        err("event_time", "range", "must not be before 2000-01-01".into());
        return None;
    }
    Some(t)
}

/// A route template, never a raw path: no query or fragment, and no segment that looks like an
/// id (numbers, UUIDs, long hex strings) — those belong in `{param}` placeholders.
pub fn check_path_template(s: &str) -> Result<(), (&'static str, String)> {
    if !s.starts_with('/') {
        return Err(("leading_slash", "must start with `/`".into()));
    }
    if s.len() > 256 {
        return Err(("length", "must be at most 256 characters".into()));
    }
    if s.contains('?') || s.contains('#') {
        return Err(("no_query", "must not contain a query string or fragment".into()));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(("printable", "must not contain whitespace or control characters".into()));
    }
    for segment in s.split('/').filter(|seg| !seg.is_empty()) {
        if is_placeholder(segment) {
            continue;
        }
        if segment.bytes().any(|b| b.is_ascii_digit()) && segment.bytes().all(|b| b.is_ascii_digit()) {
            return Err(("no_ids", format!("segment `{segment}` is a number; use a `{{param}}` placeholder")));
        }
        if Uuid::try_parse(segment).is_ok() {
            return Err(("no_ids", format!("segment `{segment}` is a UUID; use a `{{param}}` placeholder")));
        }
        if segment.len() >= 8
            && segment.bytes().all(|b| b.is_ascii_hexdigit())
            && segment.bytes().any(|b| b.is_ascii_digit())
        {
            return Err(("no_ids", format!("segment `{segment}` is a hex id; use a `{{param}}` placeholder")));
        }
    }
    Ok(())
}

fn is_placeholder(segment: &str) -> bool {
    (segment.starts_with('{') && segment.ends_with('}')) || segment.starts_with(':') || segment == "*"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-29T10:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn good() -> Value {
        serde_json::json!({
            "event_time": "2026-11-29T09:59:00Z", "service": "shop", "method": "POST",
            "path_template": "/checkout", "status_code": 200, "latency_ms": 12.5, "user_agent_family": null
        })
    }

    fn reject(mut patch: impl FnMut(&mut Map<String, Value>)) -> Vec<RecordError> {
        let mut v = good();
        patch(v.as_object_mut().unwrap());
        let body = serde_json::to_vec(&vec![good(), v]).unwrap();
        parse_batch(&body, now(), Uuid::now_v7).unwrap_err().errors
    }

    fn rule_of(errors: &[RecordError]) -> (usize, &str, &str) {
        (errors[0].index, errors[0].field.as_str(), errors[0].rule)
    }

    #[test]
    fn accepts_single_array_and_ndjson() {
        let one = serde_json::to_vec(&good()).unwrap();
        assert_eq!(parse_batch(&one, now(), Uuid::now_v7).unwrap().len(), 1);
        let arr = serde_json::to_vec(&vec![good(), good()]).unwrap();
        assert_eq!(parse_batch(&arr, now(), Uuid::now_v7).unwrap().len(), 2);
        let nd = format!("{}\n{}\n\n{}\n", good(), good(), good());
        assert_eq!(parse_batch(nd.as_bytes(), now(), Uuid::now_v7).unwrap().len(), 3);
    }

    #[test]
    fn assigns_a_v7_event_id_when_absent() {
        let facts = parse_batch(&serde_json::to_vec(&good()).unwrap(), now(), Uuid::now_v7).unwrap();
        assert_eq!(facts[0].event_id.get_version_num(), 7);
    }

    #[test]
    fn rejects_unknown_fields_such_as_headers_or_bodies() {
        let errs = reject(|o| {
            o.insert("headers".into(), serde_json::json!({"cookie": "x"}));
        });
        assert_eq!(rule_of(&errs), (1, "headers", "unknown_field"));
    }

    #[test]
    fn rejects_non_v7_event_id() {
        let errs = reject(|o| {
            o.insert("event_id".into(), Value::String(Uuid::new_v4().to_string()));
        });
        assert_eq!(rule_of(&errs), (1, "event_id", "uuid_v7"));
    }

    #[test]
    fn rejects_non_utc_and_malformed_and_future_times() {
        let errs = reject(|o| {
            o.insert("event_time".into(), "2026-11-29T09:59:00+02:00".into());
        });
        assert_eq!(rule_of(&errs), (1, "event_time", "utc"));
        let errs = reject(|o| {
            o.insert("event_time".into(), "yesterday".into());
        });
        assert_eq!(rule_of(&errs), (1, "event_time", "rfc3339"));
        let errs = reject(|o| {
            o.insert("event_time".into(), "2026-11-29T11:00:00Z".into());
        });
        assert_eq!(rule_of(&errs), (1, "event_time", "not_future"));
    }

    #[test]
    fn accepts_late_facts() {
        let mut v = good();
        v["event_time"] = "2026-11-01T00:00:00Z".into();
        assert!(parse_batch(&serde_json::to_vec(&v).unwrap(), now(), Uuid::now_v7).is_ok());
    }

    #[test]
    fn rejects_raw_paths() {
        for (path, rule) in [
            ("/orders/12345", "no_ids"),
            ("/orders/0b9a4a8e-2f34-4f4e-9b51-8f0c2a1d9e77", "no_ids"),
            ("/blobs/deadbeef42", "no_ids"),
            ("/search?q=shoes", "no_query"),
            ("checkout", "leading_slash"),
        ] {
            let errs = reject(|o| {
                o.insert("path_template".into(), path.into());
            });
            assert_eq!(rule_of(&errs), (1, "path_template", rule), "{path}");
        }
        let ok = serde_json::json!({"event_time": "2026-11-29T09:59:00Z", "service": "shop", "method": "GET",
            "path_template": "/orders/{id}/items/:item", "status_code": 200, "latency_ms": 1});
        assert!(parse_batch(&serde_json::to_vec(&ok).unwrap(), now(), Uuid::now_v7).is_ok());
    }

    #[test]
    fn rejects_out_of_range_status_and_latency() {
        let errs = reject(|o| {
            o.insert("status_code".into(), 600.into());
        });
        assert_eq!(rule_of(&errs), (1, "status_code", "range"));
        let errs = reject(|o| {
            o.insert("latency_ms".into(), (-1).into());
        });
        assert_eq!(rule_of(&errs), (1, "latency_ms", "range"));
        let errs = reject(|o| {
            o.insert("latency_ms".into(), "fast".into());
        });
        assert_eq!(rule_of(&errs), (1, "latency_ms", "type"));
    }

    #[test]
    fn rejects_bad_service_method_and_user_agent() {
        let errs = reject(|o| {
            o.insert("service".into(), "Shop Service".into());
        });
        assert_eq!(rule_of(&errs), (1, "service", "pattern"));
        let errs = reject(|o| {
            o.insert("method".into(), "get".into());
        });
        assert_eq!(rule_of(&errs), (1, "method", "enum"));
        let errs = reject(|o| {
            o.insert("user_agent_family".into(), 3.into());
        });
        assert_eq!(rule_of(&errs), (1, "user_agent_family", "type"));
    }

    #[test]
    fn reports_every_broken_rule_of_every_record() {
        let mut a = good();
        a["status_code"] = 42.into();
        a.as_object_mut().unwrap().remove("service");
        let mut b = good();
        b["method"] = "BREW".into();
        let body = serde_json::to_vec(&vec![good(), a, b]).unwrap();
        let errs = parse_batch(&body, now(), Uuid::now_v7).unwrap_err().errors;
        let got: Vec<_> = errs.iter().map(|e| (e.index, e.field.as_str(), e.rule)).collect();
        assert_eq!(got, vec![(1, "service", "required"), (1, "status_code", "range"), (2, "method", "enum")]);
    }

    #[test]
    fn rejects_syntax_errors_and_empty_bodies() {
        let errs = parse_batch(b"{\"service\": ", now(), Uuid::now_v7).unwrap_err().errors;
        assert_eq!(errs[0].rule, "json_syntax");
        let errs = parse_batch(b"  ", now(), Uuid::now_v7).unwrap_err().errors;
        assert_eq!(errs[0].rule, "non_empty");
        let errs = parse_batch(b"[1]", now(), Uuid::now_v7).unwrap_err().errors;
        assert_eq!(rule_of(&errs), (0, "", "object"));
    }
}
