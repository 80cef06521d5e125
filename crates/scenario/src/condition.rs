//! Conditions on observed SLIs, written as `checkout.error_ratio > 0.05`: the trigger of
//! condition hints and the success criteria of a scenario.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sli::{Journey, Sli, SliSnapshot, Subject};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    /// Longest first, so `<=` is not read as `<`.
    const ALL: [Op; 6] = [Op::Le, Op::Ge, Op::Eq, Op::Ne, Op::Lt, Op::Gt];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    pub fn compare(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `<subject>.<sli> <op> <number>`, e.g. `all.p95_ms < 300`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    pub subject: Subject,
    pub sli: Sli,
    pub op: Op,
    pub threshold: f64,
}

/// Why a condition string does not parse: the rule, a message, and the byte offset in the
/// string where the problem starts (for a precise column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    pub offset: usize,
    pub rule: &'static str,
    pub message: String,
}

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConditionError {}

const SHAPE: &str = "`<subject>.<sli> <op> <number>`, e.g. `checkout.error_ratio > 0.05`";

fn subjects() -> String {
    std::iter::once("all").chain(Journey::ALL.iter().map(|j| j.as_str())).collect::<Vec<_>>().join(", ")
}

fn slis() -> String {
    Sli::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Condition {
    /// Parses the condition grammar; the error says what was expected where.
    pub fn parse(text: &str) -> Result<Condition, ConditionError> {
        let err = |offset: usize, rule: &'static str, message: String| ConditionError { offset, rule, message };
        let skip_ws = |from: usize| from + text[from..].len() - text[from..].trim_start().len();
        let ident_end = |from: usize| text[from..].find(|c: char| !is_ident(c)).map_or(text.len(), |i| from + i);

        let start = skip_ws(0);
        if start == text.len() {
            return Err(err(0, "syntax", format!("empty condition; expected {SHAPE}")));
        }
        let subject_end = ident_end(start);
        let subject_text = &text[start..subject_end];
        if subject_text.is_empty() {
            return Err(err(start, "syntax", format!("expected a subject at the start; expected {SHAPE}")));
        }
        if !text[subject_end..].starts_with('.') {
            return Err(err(
                subject_end,
                "syntax",
                format!(
                    "`{subject_text}` needs an SLI after a dot, e.g. `{subject_text}.error_ratio`; expected {SHAPE}"
                ),
            ));
        }
        let subject = Subject::parse(subject_text).ok_or_else(|| {
            err(start, "known_subject", format!("unknown subject `{subject_text}`; expected one of {}", subjects()))
        })?;
        let sli_start = subject_end + 1;
        let sli_end = ident_end(sli_start);
        let sli_text = &text[sli_start..sli_end];
        let sli = Sli::parse(sli_text).ok_or_else(|| {
            if sli_text.is_empty() {
                err(sli_start, "syntax", format!("expected an SLI after `{subject_text}.`; one of {}", slis()))
            } else {
                err(sli_start, "known_sli", format!("unknown SLI `{sli_text}`; expected one of {}", slis()))
            }
        })?;

        let op_start = skip_ws(sli_end);
        let rest = &text[op_start..];
        let Some(op) = Op::ALL.into_iter().find(|op| rest.starts_with(op.as_str())) else {
            let found = rest.split_whitespace().next().unwrap_or("");
            let hint = if found.starts_with('=') { "; use `==` to compare for equality" } else { "" };
            let found = if found.is_empty() { "the end".to_owned() } else { format!("`{found}`") };
            return Err(err(
                op_start,
                "operator",
                format!(
                    "expected a comparison operator (<, <=, >, >=, ==, !=) after `{subject_text}.{sli_text}`, found {found}{hint}"
                ),
            ));
        };

        let number_start = skip_ws(op_start + op.as_str().len());
        let number_end = text[number_start..].find(char::is_whitespace).map_or(text.len(), |i| number_start + i);
        let number_text = &text[number_start..number_end];
        let looks_numeric = number_text.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.');
        let threshold = match number_text.parse::<f64>() {
            Ok(n) if looks_numeric && n.is_finite() => n,
            _ if number_text.is_empty() => {
                return Err(err(number_start, "number", format!("expected a number after `{}`", op.as_str())));
            }
            _ => return Err(err(number_start, "number", format!("`{number_text}` is not a number"))),
        };
        let trailing = skip_ws(number_end);
        if trailing < text.len() {
            return Err(err(
                trailing,
                "syntax",
                format!(
                    "unexpected `{}` after the number; a condition compares one SLI with one number (write several conditions instead)",
                    text[trailing..].trim_end()
                ),
            ));
        }

        let ratio = matches!(sli, Sli::SuccessRatio | Sli::ErrorRatio);
        if ratio && !(0.0..=1.0).contains(&threshold) {
            return Err(err(
                number_start,
                "range",
                format!("{sli} is a ratio between 0 and 1; {threshold} is outside it"),
            ));
        }
        if threshold < 0.0 {
            return Err(err(
                number_start,
                "range",
                format!("{sli} is never negative; {threshold} cannot be a threshold"),
            ));
        }
        if sli == Sli::OrdersPerMinute && !matches!(subject, Subject::All | Subject::Journey(Journey::Checkout)) {
            return Err(err(
                start,
                "meaningful_sli",
                format!("orders_per_minute is only measured for `checkout` and `all`, not `{subject}`"),
            ));
        }
        Ok(Condition { subject, sli, op, threshold })
    }

    /// Whether the condition holds on `snapshot`; `None` when the subject completed no journey
    /// in the window, which never counts as holding.
    pub fn holds(&self, snapshot: &SliSnapshot) -> Option<bool> {
        snapshot.value(self.subject, self.sli).map(|value| self.op.compare(value, self.threshold))
    }
}

impl FromStr for Condition {
    type Err = ConditionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Condition::parse(s)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{} {} {}", self.subject, self.sli, self.op, self.threshold)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Condition::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sli::JourneySlis;

    fn snapshot() -> SliSnapshot {
        let checkout = JourneySlis {
            completed: 100,
            failed: 10,
            success_ratio: 0.9,
            p95_ms: 40.0,
            orders_per_minute: 540.0,
            ..Default::default()
        };
        SliSnapshot {
            at: chrono::DateTime::UNIX_EPOCH,
            window_secs: 10.0,
            offered_rps: 10.0,
            running: true,
            all: checkout.clone(),
            journeys: BTreeMap::from([(Journey::Checkout, checkout)]),
        }
    }

    #[test]
    fn parses_every_operator_and_prints_back_the_same_text() {
        for text in [
            "checkout.error_ratio > 0.05",
            "all.p95_ms < 300",
            "browse.rps >= 1.5",
            "checkout.orders_per_minute <= 10",
            "search.success_ratio == 1",
            "cart.p99_ms != 0",
        ] {
            let condition = Condition::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(condition.to_string(), text);
        }
        let tight = Condition::parse("  all.p50_ms<=20 ").map(|c| c.to_string());
        assert_eq!(tight.as_deref(), Ok("all.p50_ms <= 20"));
    }

    #[test]
    fn holds_compares_the_observed_value_and_knows_nothing_without_traffic() {
        let snap = snapshot();
        let holds = |text: &str| Condition::parse(text).ok().and_then(|c| c.holds(&snap));
        assert_eq!(holds("checkout.error_ratio > 0.05"), Some(true));
        assert_eq!(holds("checkout.success_ratio >= 0.99"), Some(false));
        assert_eq!(holds("all.p95_ms < 300"), Some(true));
        assert_eq!(holds("browse.p95_ms < 300"), None);
    }

    #[test]
    fn errors_name_the_rule_and_where_it_went_wrong() {
        let cases = [
            ("", "syntax", 0, "empty condition"),
            ("checkout.p90_ms > 5", "known_sli", 9, "unknown SLI `p90_ms`; expected one of success_ratio, error_ratio"),
            ("basket.p95_ms > 5", "known_subject", 0, "unknown subject `basket`; expected one of all, browse"),
            ("checkout > 5", "syntax", 8, "`checkout` needs an SLI after a dot"),
            ("checkout.p95_ms = 5", "operator", 16, "use `==`"),
            ("checkout.p95_ms", "operator", 15, "found the end"),
            ("checkout.p95_ms > fast", "number", 18, "`fast` is not a number"),
            ("checkout.p95_ms > inf", "number", 18, "`inf` is not a number"),
            ("checkout.p95_ms >", "number", 17, "expected a number after `>`"),
            ("checkout.p95_ms > 5 and all.rps > 1", "syntax", 20, "unexpected `and all.rps > 1`"),
            ("checkout.error_ratio > 5", "range", 23, "ratio between 0 and 1"),
            ("all.p95_ms > -1", "range", 13, "never negative"),
            ("browse.orders_per_minute > 1", "meaningful_sli", 0, "only measured for `checkout` and `all`"),
        ];
        for (text, rule, offset, message) in cases {
            let error = Condition::parse(text).expect_err(text);
            assert_eq!((error.rule, error.offset), (rule, offset), "{text}: {error}");
            assert!(error.message.contains(message), "{text}: {error}");
        }
    }

    #[test]
    fn serializes_as_its_text() {
        let condition = Condition::parse("all.p95_ms < 300").ok();
        let json = serde_json::to_string(&condition).unwrap_or_default();
        assert_eq!(json, "\"all.p95_ms < 300\"");
        let back: Option<Condition> = serde_json::from_str(&json).ok();
        assert_eq!(back, condition);
    }
}
