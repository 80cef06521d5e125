//! Strict parsing of ingest bodies: one fact, a JSON array, or NDJSON. Every record is checked
//! in full and every broken rule is reported with the record's index, the field and the rule,
//! so a client fixes a batch in one round trip. A batch is accepted whole or not at all.
//!
//! Two passes share one set of rules: a typed pass that borrows strings from the body (the
//! common case, a valid batch, without building a JSON tree per record), and, when that pass
//! finds anything wrong, the precise pass over JSON values that lists every broken rule.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::model::{Interner, RequestFact};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RecordError {
    /// Position of the record in the batch (0-based; NDJSON: line order of non-empty lines).
    pub index: usize,
    pub field: String,
    #[schema(value_type = String)]
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
    if let Some(facts) = parse_valid(body, now, &mut new_id) {
        return Ok(facts);
    }
    parse_precisely(body, now, new_id)
}

/// One record as the typed pass reads it; any surprise (an unknown or duplicate field, a
/// wrong type, an escaped string) sends the body to the precise pass.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(default, borrow)]
    event_id: Option<&'a str>,
    event_time: &'a str,
    service: &'a str,
    method: &'a str,
    path_template: &'a str,
    status_code: u64,
    latency_ms: f64,
    #[serde(default, borrow)]
    user_agent_family: Option<&'a str>,
}

/// The typed pass: `Some` only when every record is valid, else `None` (nothing is reported
/// here; the precise pass does that).
fn parse_valid(body: &[u8], now: DateTime<Utc>, new_id: &mut impl FnMut() -> Uuid) -> Option<Vec<RequestFact>> {
    let trimmed = body.trim_ascii_start();
    let wires: Vec<Wire<'_>> = if trimmed.first() == Some(&b'[') {
        serde_json::from_slice(trimmed).ok()?
    } else {
        serde_json::Deserializer::from_slice(body).into_iter::<Wire<'_>>().collect::<Result<_, _>>().ok()?
    };
    if wires.is_empty() {
        return None;
    }
    let mut facts = Vec::with_capacity(wires.len());
    let mut strings = Interner::default();
    for w in wires {
        let event_id = match w.event_id {
            None => new_id(),
            Some(s) => event_id(s).ok()?,
        };
        let event_time = event_time(w.event_time, now).ok()?;
        let ok = service_ok(w.service)
            && METHODS.contains(&w.method)
            && check_path_template(w.path_template).is_ok()
            && status_ok(w.status_code)
            && latency_ok(w.latency_ms)
            && w.user_agent_family.is_none_or(user_agent_ok);
        if !ok {
            return None;
        }
        facts.push(RequestFact {
            event_id,
            event_time,
            service: strings.get(w.service),
            method: strings.get(w.method),
            path_template: strings.get(w.path_template),
            status_code: u16::try_from(w.status_code).ok()?,
            latency_ms: w.latency_ms,
            user_agent_family: w.user_agent_family.map(|ua| strings.get(ua)),
        });
    }
    Some(facts)
}

// The rules, shared by both passes.

fn event_id(s: &str) -> Result<Uuid, &'static str> {
    match Uuid::try_parse(s) {
        Ok(id) if id.get_version_num() == 7 => Ok(id),
        Ok(_) => Err("must be a version 7 UUID"),
        Err(_) => Err("must be a UUID string"),
    }
}

/// `(rule, message)` of a bad `event_time`.
fn event_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, (&'static str, String)> {
    let Ok(t) = DateTime::parse_from_rfc3339(s) else {
        return Err(("rfc3339", "must be an RFC 3339 timestamp".into()));
    };
    if t.offset().local_minus_utc() != 0 {
        return Err(("utc", "must be in UTC (`Z` or `+00:00`)".into()));
    }
    let t = t.with_timezone(&Utc);
    if t > now + Duration::seconds(MAX_FUTURE_SKEW_SECS) {
        return Err(("not_future", format!("must not lie more than {MAX_FUTURE_SKEW_SECS} s in the future")));
    }
    if t.timestamp() < 946_684_800 {
        return Err(("range", "must not be before 2000-01-01".into()));
    }
    Ok(t)
}

fn service_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn status_ok(code: u64) -> bool {
    (100..=599).contains(&code)
}

fn latency_ok(ms: f64) -> bool {
    ms.is_finite() && (0.0..=MAX_LATENCY_MS).contains(&ms)
}

fn user_agent_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && !s.chars().any(char::is_control)
}

/// The precise pass: every record checked, every broken rule listed.
fn parse_precisely(
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
        Some(Value::String(s)) => match event_id(s) {
            Ok(id) => Some(id),
            Err(message) => {
                err("event_id", "uuid_v7", message.into());
                None
            }
        },
        Some(_) => {
            err("event_id", "type", "must be a string".into());
            None
        }
    };
    let event_time = required_str(&obj, "event_time", &mut err).and_then(|s| match event_time(s, now) {
        Ok(t) => Some(t),
        Err((rule, message)) => {
            err("event_time", rule, message);
            None
        }
    });
    let service = required_str(&obj, "service", &mut err).and_then(|s| {
        if service_ok(s) {
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
            Some(code) if status_ok(code) => u16::try_from(code).ok(),
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
            Some(v) if latency_ok(v) => Some(v),
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
        Some(Value::String(s)) if user_agent_ok(s) => Some(Some(s.clone())),
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
            service: service.into(),
            method: method.into(),
            path_template: path_template.into(),
            status_code,
            latency_ms,
            user_agent_family: user_agent_family.map(Into::into),
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

/// Property-based fuzzing of the validator: mutated and arbitrary bodies never panic, every
/// rejection names the record, the field and the rule, and a batch is accepted whole or not at
/// all. `PROPTEST_CASES=20000` digs deeper than the default run.
#[cfg(test)]
mod fuzz {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    use super::*;

    /// Rules about a whole record or body rather than one field.
    const WHOLE_RECORD_RULES: &[&str] = &["json_syntax", "non_empty", "object"];

    fn config() -> Config {
        let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512);
        Config { cases, failure_persistence: None, ..Config::default() }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-29T10:00:00Z").unwrap().with_timezone(&Utc)
    }

    /// Deterministic v7 ids, so two passes over one body can be compared.
    fn ids() -> impl FnMut() -> Uuid {
        let mut n = 0u64;
        move || {
            n += 1;
            uuid::Builder::from_unix_timestamp_millis(n, &[0; 10]).into_uuid()
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A valid fact with varied values.
    fn valid() -> impl Strategy<Value = Map<String, Value>> {
        (
            prop::option::of(Just(())),
            0i64..86_400 * 30,
            "[a-z][a-z0-9_-]{0,20}",
            prop::sample::select(METHODS),
            prop::collection::vec(prop_oneof!["[a-z]{1,10}", Just("{id}".to_owned()), Just(":slug".to_owned())], 0..4),
            100u16..=599,
            0.0..MAX_LATENCY_MS,
            prop::option::of("[A-Za-z][A-Za-z0-9 ./-]{0,30}"),
        )
            .prop_map(|(with_id, age, service, method, segments, status, latency, ua)| {
                let mut m = Map::new();
                if with_id.is_some() {
                    m.insert("event_id".into(), Uuid::now_v7().to_string().into());
                }
                m.insert("event_time".into(), (now() - Duration::seconds(age)).to_rfc3339().into());
                m.insert("service".into(), service.into());
                m.insert("method".into(), method.into());
                m.insert("path_template".into(), format!("/{}", segments.join("/")).into());
                m.insert("status_code".into(), status.into());
                m.insert("latency_ms".into(), latency.into());
                m.insert("user_agent_family".into(), ua.map_or(Value::Null, Value::from));
                m
            })
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Remove(usize),
        Replace(usize, Value),
        Unknown(String, Value),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (0..FIELDS.len()).prop_map(Mutation::Remove),
            (0..FIELDS.len(), arb_json()).prop_map(|(i, v)| Mutation::Replace(i, v)),
            (0..FIELDS.len(), ".{0,40}").prop_map(|(i, s)| Mutation::Replace(i, Value::String(s))),
            ("[a-z_]{1,12}", arb_json()).prop_map(|(k, v)| Mutation::Unknown(k, v)),
        ]
    }

    fn mutated() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => (valid(), prop::collection::vec(mutation(), 0..3)).prop_map(|(mut m, mutations)| {
                for mutation in mutations {
                    match mutation {
                        Mutation::Remove(i) => {
                            m.remove(FIELDS[i]);
                        }
                        Mutation::Replace(i, v) => {
                            m.insert(FIELDS[i].to_owned(), v);
                        }
                        Mutation::Unknown(k, v) => {
                            m.insert(k, v);
                        }
                    }
                }
                Value::Object(m)
            }),
            1 => arb_json(),
        ]
    }

    /// Checks the invariants of one outcome against the records it came from.
    fn check(records: &[Value], outcome: &Result<Vec<RequestFact>, BatchRejection>) -> Result<(), TestCaseError> {
        let alone: Vec<bool> = records
            .iter()
            .map(|r| parse_batch(&serde_json::to_vec(r).unwrap(), now(), Uuid::now_v7).is_ok() && r.is_object())
            .collect();
        match outcome {
            Ok(facts) => {
                prop_assert_eq!(facts.len(), records.len());
                prop_assert!(alone.iter().all(|ok| *ok), "a batch with a bad record was accepted");
                for fact in facts {
                    prop_assert!((100..=599).contains(&fact.status_code));
                    prop_assert!(fact.latency_ms.is_finite() && (0.0..=MAX_LATENCY_MS).contains(&fact.latency_ms));
                    prop_assert!(check_path_template(&fact.path_template).is_ok());
                    prop_assert!(METHODS.contains(&&*fact.method));
                    prop_assert_eq!(fact.event_id.get_version_num(), 7);
                    prop_assert!(fact.event_time <= now() + Duration::seconds(MAX_FUTURE_SKEW_SECS));
                }
            }
            Err(rejection) => {
                prop_assert!(!rejection.errors.is_empty());
                for e in &rejection.errors {
                    prop_assert!(e.index < records.len().max(1), "index {} of {} records", e.index, records.len());
                    prop_assert!(!e.rule.is_empty() && !e.message.is_empty());
                    if e.field.is_empty() {
                        prop_assert!(WHOLE_RECORD_RULES.contains(&e.rule), "rule {} names no field", e.rule);
                    } else {
                        let known = FIELDS.contains(&e.field.as_str());
                        let present = records[e.index].get(&e.field).is_some();
                        prop_assert!(known || present, "field `{}` is neither a field nor in the record", e.field);
                    }
                }
                // The failing records are exactly those that fail alone.
                let failing: std::collections::BTreeSet<usize> = rejection.errors.iter().map(|e| e.index).collect();
                let expected: std::collections::BTreeSet<usize> =
                    alone.iter().enumerate().filter(|(_, ok)| !**ok).map(|(i, _)| i).collect();
                if rejection.more_errors == 0 && !records.is_empty() {
                    prop_assert_eq!(failing, expected);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn mutated_batches_are_accepted_whole_or_rejected_with_index_field_and_rule(
            records in prop::collection::vec(mutated(), 1..6),
            ndjson in any::<bool>(),
        ) {
            let body = if ndjson && records.iter().all(Value::is_object) {
                records.iter().map(Value::to_string).collect::<Vec<_>>().join("\n").into_bytes()
            } else {
                serde_json::to_vec(&records).unwrap()
            };
            let outcome = parse_batch(&body, now(), Uuid::now_v7);
            check(&records, &outcome)?;
        }

        #[test]
        fn the_typed_pass_agrees_with_the_precise_pass(records in prop::collection::vec(mutated(), 1..6)) {
            let body = serde_json::to_vec(&records).unwrap();
            let fast = parse_valid(&body, now(), &mut ids());
            let precise = parse_precisely(&body, now(), ids());
            if let Some(fast) = fast {
                prop_assert_eq!(Ok(fast), precise);
            }
        }

        #[test]
        fn valid_facts_keep_their_values(records in prop::collection::vec(valid(), 1..20)) {
            let body = serde_json::to_vec(&records).unwrap();
            prop_assert!(parse_valid(&body, now(), &mut ids()).is_some(), "a valid batch missed the typed pass");
            let facts = parse_batch(&body, now(), Uuid::now_v7).unwrap();
            // As JSON reads them (the last digit of a double may differ from the generated one).
            let records: Vec<Value> = serde_json::from_slice(&body).unwrap();
            for (fact, record) in facts.iter().zip(&records) {
                prop_assert_eq!(&*fact.service, record["service"].as_str().unwrap());
                prop_assert_eq!(&*fact.path_template, record["path_template"].as_str().unwrap());
                prop_assert_eq!(u64::from(fact.status_code), record["status_code"].as_u64().unwrap());
                prop_assert_eq!(fact.latency_ms, record["latency_ms"].as_f64().unwrap());
                if let Some(id) = record.get("event_id") {
                    prop_assert_eq!(fact.event_id.to_string(), id.as_str().unwrap());
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_are_refused_with_a_rule(body in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Err(rejection) = parse_batch(&body, now(), Uuid::now_v7) {
                prop_assert!(rejection.errors.iter().all(|e| !e.rule.is_empty()));
            }
        }

        #[test]
        fn accepted_path_templates_hold_no_query_whitespace_or_id(path in "/[a-zA-Z0-9{}:?#/ ._-]{0,40}") {
            if check_path_template(&path).is_ok() {
                prop_assert!(!path.contains('?') && !path.contains('#') && !path.contains(' '));
                for segment in path.split('/').filter(|s| !s.is_empty() && !is_placeholder(s)) {
                    prop_assert!(!segment.bytes().all(|b| b.is_ascii_digit()), "numeric segment in {}", path);
                    prop_assert!(Uuid::try_parse(segment).is_err());
                }
            }
        }
    }

    #[test]
    fn deeply_nested_and_huge_numbers_are_rejected_not_panicked() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse_batch(deep.as_bytes(), now(), Uuid::now_v7).unwrap_err().errors[0].rule, "json_syntax");
        let huge = br#"{"event_time":"2026-11-29T09:00:00Z","service":"shop","method":"GET","path_template":"/","status_code":1e400,"latency_ms":1}"#;
        let errors = parse_batch(huge, now(), Uuid::now_v7).unwrap_err().errors;
        assert_eq!(errors[0].rule, "json_syntax");
        let year = br#"{"event_time":"+275760-09-13T00:00:00Z","service":"shop","method":"GET","path_template":"/","status_code":200,"latency_ms":1}"#;
        assert_eq!(parse_batch(year, now(), Uuid::now_v7).unwrap_err().errors[0].field, "event_time");
    }
}
