//! Plain-text helpers the scenario commands, `scenario watch` and `scenario verify` share:
//! wrapping, durations, clock times and the debrief's sections.

use chrono::{DateTime, Local, Utc};
use serde_json::Value;

/// Width hints and summaries are wrapped to.
pub const WIDTH: usize = 88;

/// `What broke`, `Why` and `Lessons` of a debrief, each line prefixed with `indent`.
pub fn describe_debrief(debrief: &Value, indent: &str) -> Vec<String> {
    let mut out = Vec::new();
    let width = WIDTH.saturating_sub(indent.len());
    for (title, key) in [("What broke", "what_broke"), ("Why", "why")] {
        let text = str_of(debrief, key);
        if !text.is_empty() {
            out.push(format!("{indent}{title}"));
            out.extend(wrap(text, width - 2).into_iter().map(|l| format!("{indent}  {l}")));
        }
    }
    let lessons = strings(&debrief["lessons"]);
    if !lessons.is_empty() {
        out.push(format!("{indent}Lessons"));
        let mut lines = Vec::new();
        bullets(&mut lines, &lessons);
        out.extend(lines.into_iter().map(|l| format!("{indent}{l}")));
    }
    out
}

pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

pub fn bullets(out: &mut Vec<String>, items: &[String]) {
    for item in items {
        let wrapped = wrap(item, WIDTH - 4);
        for (i, line) in wrapped.iter().enumerate() {
            out.push(format!("{}{line}", if i == 0 { "  • " } else { "    " }));
        }
    }
}

/// `45 s`, `7.5 s`, `90 s`, `2 min`, `2m 05s`, `1h 02m`.
pub fn secs_text(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".to_owned();
    }
    if secs < 10.0 && secs.fract() != 0.0 {
        return format!("{secs:.1} s");
    }
    let whole = secs.round() as u64;
    match whole {
        0..=119 => format!("{whole} s"),
        120..=3599 if whole.is_multiple_of(60) => format!("{} min", whole / 60),
        120..=3599 => format!("{}m {:02}s", whole / 60, whole % 60),
        _ => format!("{}h {:02}m", whole / 3600, (whole % 3600) / 60),
    }
}

/// Greedy word wrap. Single line breaks inside a paragraph are joined (scenario files wrap
/// their text by hand); blank lines separate paragraphs and are kept.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (i, paragraph) in text.trim().split("\n\n").enumerate() {
        if i > 0 {
            out.push(String::new());
        }
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                out.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            out.push(line);
        }
    }
    out
}

/// Local wall-clock time, `HH:MM:SS`.
pub fn clock(at: DateTime<Utc>) -> String {
    at.with_timezone(&Local).format("%H:%M:%S").to_string()
}
