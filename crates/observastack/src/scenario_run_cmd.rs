//! `observastack scenario list|show|start|status|stop|reset`: the orchestrator's scenario API
//! through the control gateway, with a token minted with the stack's private key. Refusals are
//! printed as the API gave them (message, then field, rule and why) and exit 1.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use orchestrator::model::{Entry, RunDetail, RunState, RunSummary};
use reqwest::{Method, StatusCode};
use scenario::Condition;
use scenario::load::{LoadSpec, Pattern};
use scenario::sli::{Sli, SliSnapshot};
use serde_json::{Value, json};

use crate::control_client::{Control, Refusal};
use crate::text::{WIDTH, bullets, clock, describe_debrief, secs_text, str_of, strings, wrap};
use crate::{ui, watch};

fn parse<T: serde::de::DeserializeOwned>(body: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(body).with_context(|| format!("the orchestrator answered an unexpected {what}"))
}

fn json_out(body: &Value) -> anyhow::Result<ExitCode> {
    ui::stdout_line(&serde_json::to_string_pretty(body)?);
    Ok(ExitCode::SUCCESS)
}

/// `scenario list`: the catalog as a table.
pub async fn list(control: &Control, json: bool) -> anyhow::Result<ExitCode> {
    let body = match control.expect(Method::GET, "/api/scenarios", None).await? {
        Ok(body) => body,
        Err(code) => return Ok(code),
    };
    if json {
        return json_out(&body);
    }
    let rows: Vec<[String; 3]> = body
        .as_array()
        .map(|list| {
            list.iter()
                .map(|s| [&s["id"], &s["difficulty"], &s["title"]].map(|v| v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        ui::stdout_line("no scenarios in the catalog (see `observastack up --scenarios DIR`)");
        return Ok(ExitCode::SUCCESS);
    }
    for line in table(["ID", "DIFFICULTY", "TITLE"], &rows) {
        ui::stdout_line(&line);
    }
    Ok(ExitCode::SUCCESS)
}

/// Left-aligned columns two spaces apart; the last column is not padded.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> Vec<String> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.trim_end().to_owned()
    };
    let mut lines = vec![line(header)];
    lines.extend(rows.iter().map(|row| line(row.each_ref().map(String::as_str))));
    lines
}

/// `scenario show ID`: what the API shows the caller's role.
pub async fn show(control: &Control, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let body = match control.expect(Method::GET, &format!("/api/scenarios/{}", path_segment(id)), None).await? {
        Ok(body) => body,
        Err(code) => return Ok(code),
    };
    if json {
        return json_out(&body);
    }
    for line in describe_scenario(&body) {
        ui::stdout_line(&line);
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes what would change the path (ids are kebab-case, so this is only a guard).
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Renders a scenario as `GET /api/scenarios/{id}` returns it, learner or full view.
pub fn describe_scenario(s: &Value) -> Vec<String> {
    let mut out =
        vec![format!("{}  ({}, {})", str_of(s, "title"), str_of(s, "id"), str_of(s, "difficulty")), String::new()];
    out.extend(wrap(str_of(s, "summary"), WIDTH));
    out.push(String::new());
    out.push("Learning objectives".to_owned());
    bullets(&mut out, &strings(&s["learning_objectives"]));
    out.push(String::new());
    out.push("Load".to_owned());
    let baseline = s["baseline"]["duration_secs"].as_f64();
    match serde_json::from_value::<LoadSpec>(s["load"].clone()) {
        Ok(load) => {
            out.push(format!("  {}", describe_load(&load)));
            out.push(format!("  journey mix: {}", describe_mix(&load)));
        }
        Err(_) => out.push(format!("  {}", s["load"])),
    }
    if let Some(secs) = baseline {
        out.push(format!("  {} of healthy load before the incident (at time scale 1)", secs_text(secs)));
    }
    out.push(String::new());
    let window = s["success"]["window_secs"].as_f64().map(secs_text).unwrap_or_else(|| "?".to_owned());
    out.push(format!("Success: every condition holds for {window} without a break"));
    bullets(&mut out, &strings(&s["success"]["conditions"]));
    if let Some(predicates) = s["success"]["config"].as_array().filter(|p| !p.is_empty()) {
        let texts: Vec<String> = predicates.iter().map(describe_predicate).collect();
        bullets(&mut out, &texts);
    }
    if let Some(count) = s["hint_count"].as_u64() {
        out.push(String::new());
        out.push(format!("Hints: {count}, delivered during a run (`observastack scenario watch`)"));
    }
    full_view_sections(s, &mut out);
    if s["spoilers_hidden"].as_bool() == Some(true) {
        out.push(String::new());
        out.push("Faults, hints, solution and debrief are shown once you have run the scenario.".to_owned());
    }
    out
}

/// What instructors (and learners after a run) also see.
fn full_view_sections(s: &Value, out: &mut Vec<String>) {
    if let Some(faults) = s["faults"].as_array() {
        out.push(String::new());
        out.push("Faults (seconds after the incident starts)".to_owned());
        let texts: Vec<String> = faults
            .iter()
            .map(|f| {
                let note = f["note"].as_str().map(|n| format!(": {n}")).unwrap_or_default();
                format!(
                    "+{} {} {}{note}",
                    secs_text(f["at_secs"].as_f64().unwrap_or(0.0)),
                    str_of(f, "service"),
                    f["patch"]
                )
            })
            .collect();
        bullets(out, &texts);
    }
    if let Some(hints) = s["hints"].as_array() {
        out.push(String::new());
        out.push("Hints".to_owned());
        let texts: Vec<String> = hints
            .iter()
            .map(|h| {
                let when = match (h["after_secs"].as_f64(), h["when"].as_str()) {
                    (Some(after), _) => format!("after {}", secs_text(after)),
                    (None, Some(when)) => {
                        format!("when {when} for {}", secs_text(h["for_secs"].as_f64().unwrap_or(0.0)))
                    }
                    (None, None) => String::new(),
                };
                format!("[{when}] {}", str_of(h, "text"))
            })
            .collect();
        bullets(out, &texts);
    }
    if s["solution"].is_object() {
        out.push(String::new());
        out.push(format!("Solution: {}", str_of(&s["solution"], "summary")));
        bullets(out, &strings(&s["solution"]["steps"]));
    }
    if s["debrief"].is_object() {
        out.push(String::new());
        out.extend(describe_debrief(&s["debrief"], ""));
    }
}

fn describe_predicate(p: &Value) -> String {
    let expect = ["equal", "not_equal", "one_of", "at_least", "at_most"]
        .into_iter()
        .find_map(|key| p.get(key).map(|v| format!("{} {v}", key.replace('_', " "))))
        .unwrap_or_default();
    format!("{} {} {expect}", str_of(p, "service"), str_of(p, "field"))
}

/// `constant 20 journeys/s`, `ramp 10 → 50 journeys/s over 60 s`, …
pub fn describe_load(load: &LoadSpec) -> String {
    let rate = trim_number;
    let think = format!("think time {} ms", load.think_time_ms);
    let shape = match load.pattern {
        Pattern::Constant => format!("constant {} journeys/s", rate(load.rate)),
        Pattern::Ramp => format!(
            "ramp {} → {} journeys/s over {}",
            rate(load.rate),
            rate(load.target_rate.unwrap_or(load.rate)),
            secs_text(load.ramp_secs)
        ),
        Pattern::Spike => format!(
            "{} journeys/s, spiking to {} at {} for {}",
            rate(load.rate),
            rate(load.target_rate.unwrap_or(load.rate)),
            secs_text(load.spike_at_secs),
            secs_text(load.spike_secs)
        ),
        Pattern::Step => {
            let steps: Vec<String> =
                load.steps.iter().map(|s| format!("{} at {}", rate(s.rate), secs_text(s.at_secs))).collect();
            format!("{} journeys/s, then {}", rate(load.rate), steps.join(", "))
        }
    };
    format!("{shape}; {think}")
}

fn describe_mix(load: &LoadSpec) -> String {
    let weights = load.mix.weights();
    let total: u32 = weights.values().sum();
    weights
        .iter()
        .map(|(journey, w)| format!("{journey} {}%", (f64::from(*w) * 100.0 / f64::from(total.max(1))).round()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn trim_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{x:.0}") } else { format!("{x:.2}") }
}

/// `scenario start ID [--time-scale X]`.
pub async fn start(control: &Control, id: &str, time_scale: Option<f64>) -> anyhow::Result<ExitCode> {
    if let Some(x) = time_scale.filter(|x| !x.is_finite()) {
        ui::error(&format!("time_scale: {x} is not a finite number (rule: type)"));
        return Ok(ExitCode::FAILURE);
    }
    let mut body = json!({ "scenario": id });
    if let Some(x) = time_scale {
        body["time_scale"] = json!(x);
    }
    let run: RunSummary = match control.call(Method::POST, "/api/runs", Some(&body)).await? {
        Ok(body) => parse(body, "run")?,
        Err(refusal) if refusal.status == StatusCode::CONFLICT => return already_active(control, &refusal).await,
        Err(refusal) => {
            control.report(&refusal);
            return Ok(ExitCode::FAILURE);
        }
    };
    ui::stdout_line(&format!(
        "started run {} of {} ({}), time scale {}",
        run.id, run.scenario_id, run.scenario_title, run.time_scale
    ));
    let baseline = match control.get(&format!("/api/scenarios/{}", path_segment(&run.scenario_id))).await {
        Ok(Ok(scenario)) => scenario["baseline"]["duration_secs"].as_f64().map(|s| s * run.time_scale),
        _ => None,
    };
    let baseline = baseline.map(|s| format!("baseline {}, then the incident", secs_text(s)));
    ui::stdout_line(&format!(
        "{}; follow with `observastack scenario watch`",
        baseline.as_deref().unwrap_or("a healthy baseline, then the incident")
    ));
    Ok(ExitCode::SUCCESS)
}

/// A 409 on start: says which run is in the way, or prints the refusal when it is another
/// conflict (a scenario patching a service the orchestrator was not given).
async fn already_active(control: &Control, refusal: &Refusal) -> anyhow::Result<ExitCode> {
    match control.get("/api/runs/current").await {
        Ok(Ok(current)) => {
            let scenario = current["scenario_id"].as_str().unwrap_or("a scenario");
            ui::error(&format!("a run of {scenario} is already active; stop it with `observastack scenario stop`"));
        }
        _ => control.report(refusal),
    }
    Ok(ExitCode::FAILURE)
}

/// `scenario status`: the active run, or the last one.
pub async fn status(control: &Control, json: bool) -> anyhow::Result<ExitCode> {
    let run: RunDetail = match control.get("/api/runs/current").await? {
        Ok(body) if json => return json_out(&body),
        Ok(body) => parse(body, "run")?,
        Err(refusal) if refusal.status == StatusCode::NOT_FOUND => {
            if json {
                return json_out(&Value::Null);
            }
            ui::stdout_line(&no_active_run(control).await);
            return Ok(ExitCode::SUCCESS);
        }
        Err(refusal) => {
            control.report(&refusal);
            return Ok(ExitCode::FAILURE);
        }
    };
    let scenario = match control.get(&format!("/api/scenarios/{}", path_segment(&run.run.scenario_id))).await? {
        Ok(scenario) => scenario,
        Err(_) => Value::Null,
    };
    let slis = watch::latest_slis(control, run.run.id, Duration::from_millis(1500)).await;
    for line in describe_status(&run, &scenario, slis.as_ref(), Utc::now()) {
        ui::stdout_line(&line);
    }
    Ok(ExitCode::SUCCESS)
}

async fn no_active_run(control: &Control) -> String {
    let last = match control.get("/api/runs?limit=1").await {
        Ok(Ok(Value::Array(runs))) => runs.into_iter().next(),
        _ => None,
    };
    match last.and_then(|r| serde_json::from_value::<RunSummary>(r).ok()) {
        Some(run) => {
            let ended = run.ended_at.map(|t| format!(" at {}", clock(t))).unwrap_or_default();
            let why = run.end_reason.map(|r| format!(" ({r})")).unwrap_or_default();
            let how = match run.state {
                RunState::GaveUp => "given up".to_owned(),
                other => other.to_string(),
            };
            format!("no active run; the last one, {} of {}, was {how}{ended}{why}", run.id, run.scenario_id)
        }
        None => "no active run".to_owned(),
    }
}

/// The lines of `scenario status` for an active run.
pub fn describe_status(
    detail: &RunDetail,
    scenario: &Value,
    slis: Option<&SliSnapshot>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let run = &detail.run;
    let since = |t: Option<DateTime<Utc>>| t.map(|t| secs_text((now - t).as_seconds_f64())).unwrap_or_default();
    let entered = match run.state {
        RunState::Setup => Some(run.started_at),
        RunState::Baseline => run.baseline_at,
        RunState::Incident => run.incident_at,
        RunState::Recovering => run.recovering_at,
        RunState::Resolved | RunState::Abandoned | RunState::GaveUp => run.ended_at,
    };
    let mut out = vec![
        format!("run       {}", run.id),
        format!("scenario  {} — {}", run.scenario_id, run.scenario_title),
        format!("state     {} for {}", run.state, since(entered)),
        format!(
            "elapsed   {} (time scale {}), started {} by {} ({})",
            since(Some(run.started_at)),
            run.time_scale,
            clock(run.started_at),
            run.started_by,
            run.started_by_role
        ),
    ];
    let delivered = detail.events.iter().filter(|e| matches!(e.entry, Entry::Hint(_))).count();
    let total = scenario["hint_count"].as_u64().or_else(|| scenario["hints"].as_array().map(|h| h.len() as u64));
    out.push(match total {
        Some(total) => format!("hints     {delivered} of {total} delivered"),
        None => format!("hints     {delivered} delivered"),
    });
    let window = scenario["success"]["window_secs"].as_f64().map(|w| w * run.time_scale);
    let window_text = window.map(secs_text).unwrap_or_else(|| "the success window".to_owned());
    out.push(match run.state {
        RunState::Setup | RunState::Baseline => "success   not judged before the incident".to_owned(),
        RunState::Incident => format!("success   not yet: the conditions must all hold for {window_text}"),
        RunState::Recovering => {
            format!("success   every condition holds, for {} of {window_text} so far", since(run.recovering_at))
        }
        RunState::Resolved => "success   resolved".to_owned(),
        RunState::Abandoned => "success   abandoned".to_owned(),
        RunState::GaveUp => "success   given up".to_owned(),
    });
    for text in strings(&scenario["success"]["conditions"]) {
        let now = match (Condition::parse(&text), slis) {
            (Ok(condition), Some(slis)) => {
                match (condition.holds(slis), slis.value(condition.subject, condition.sli)) {
                    (Some(holds), Some(value)) => {
                        format!("{} now {}", if holds { "✓" } else { "✗" }, sli_value(condition.sli, value))
                    }
                    _ => "? no traffic in the window".to_owned(),
                }
            }
            _ => "? no SLIs yet".to_owned(),
        };
        out.push(format!("  {text:<34} {now}"));
    }
    out
}

/// Ratios to three decimals (0.990 against 0.99 matters), the rest to one.
fn sli_value(sli: Sli, x: f64) -> String {
    match sli {
        Sli::SuccessRatio | Sli::ErrorRatio => format!("{x:.3}"),
        _ => format!("{x:.1}"),
    }
}

/// `scenario stop`.
pub async fn stop(control: &Control) -> anyhow::Result<ExitCode> {
    match control.call(Method::POST, "/api/runs/current/stop", None).await? {
        Ok(body) => {
            let run: RunSummary = parse(body, "run")?;
            ui::stdout_line(&format!(
                "stopped run {} of {}: {}{}",
                run.id,
                run.scenario_id,
                run.state,
                run.end_reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ));
            ui::stdout_line("the load is off and the services are back at their defaults");
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) if refusal.status == StatusCode::NOT_FOUND => {
            ui::error("no active run to stop");
            Ok(ExitCode::FAILURE)
        }
        Err(refusal) => {
            control.report(&refusal);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `scenario give-up`: ends the run and prints its debrief with the solution.
pub async fn give_up(control: &Control) -> anyhow::Result<ExitCode> {
    match control.call(Method::POST, "/api/runs/current/give-up", None).await? {
        Ok(body) => {
            let run: RunSummary = parse(body, "run")?;
            ui::stdout_line(&format!("gave up run {} of {}", run.id, run.scenario_id));
            ui::stdout_line("the load is off and the services are back at their defaults");
            if let Some(result) = &run.result {
                ui::stdout_line(&crate::watch::outcome_text(result));
                for line in crate::watch::review_lines(result, "  ") {
                    ui::stdout_line(&line);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) if refusal.status == StatusCode::NOT_FOUND => {
            ui::error("no active run to give up");
            Ok(ExitCode::FAILURE)
        }
        Err(refusal) => {
            control.report(&refusal);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `scenario reset`.
pub async fn reset(control: &Control) -> anyhow::Result<ExitCode> {
    let body = match control.expect(Method::POST, "/api/reset", None).await? {
        Ok(body) => body,
        Err(code) => return Ok(code),
    };
    if let Some(run) = body["stopped_run"].as_str() {
        ui::stdout_line(&format!("stopped run {run}"));
    }
    let reset = strings(&body["reset"]);
    ui::stdout_line(&if reset.is_empty() {
        "no service was reset".to_owned()
    } else {
        format!("back at their defaults: {}", reset.join(", "))
    });
    let failed = body["failed"].as_array().cloned().unwrap_or_default();
    for failure in &failed {
        ui::error(&format!("could not reset {}: {}", str_of(failure, "service"), str_of(failure, "message")));
    }
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_field_and_rule() {
        let body = json!({"error": {"code": "validation_failed", "message": "time_scale: too big",
            "details": [{"field": "time_scale", "rule": "range", "message": "must be between 0.01 and 1"}]}});
        let refusal = Refusal::from_body(StatusCode::BAD_REQUEST, &body);
        assert_eq!(
            refusal.lines(),
            [
                "the request was refused (400 validation_failed)",
                "  time_scale: must be between 0.01 and 1 (rule: range)"
            ]
        );
        let missing = Refusal::from_body(
            StatusCode::NOT_FOUND,
            &json!({"error": {"code": "not_found", "message": "no scenario `nope`"}}),
        );
        assert_eq!(missing.lines(), ["no scenario `nope` (404 not_found)"]);
        let raw = Refusal::from_body(StatusCode::BAD_GATEWAY, &Value::String("upstream down".into()));
        assert_eq!(raw.lines(), ["upstream down (502)"]);
    }

    #[test]
    fn wrap_joins_hand_wrapped_lines_and_keeps_paragraphs() {
        let text = "Start with the users. On the\nUser tab, which journeys fail?\n\nThen look.";
        assert_eq!(
            wrap(text, 30),
            ["Start with the users. On the", "User tab, which journeys fail?", "", "Then look."]
        );
        assert_eq!(wrap("a-very-long-word", 4), ["a-very-long-word"]);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(secs_text(45.0), "45 s");
        assert_eq!(secs_text(7.5), "7.5 s");
        assert_eq!(secs_text(60.0), "60 s");
        assert_eq!(secs_text(240.0), "4 min");
        assert_eq!(secs_text(125.0), "2m 05s");
        assert_eq!(secs_text(3720.0), "1h 02m");
    }

    #[test]
    fn tables_align_columns() {
        let rows = [["a".to_owned(), "beginner".to_owned(), "T".to_owned()]];
        assert_eq!(table(["ID", "DIFFICULTY", "TITLE"], &rows), ["ID  DIFFICULTY  TITLE", "a   beginner    T"]);
    }

    #[test]
    fn load_plans_are_described_by_pattern() {
        let mut load = LoadSpec { rate: 20.0, ..LoadSpec::default() };
        assert_eq!(describe_load(&load), "constant 20 journeys/s; think time 100 ms");
        load.pattern = Pattern::Spike;
        load.target_rate = Some(80.0);
        load.spike_at_secs = 30.0;
        load.spike_secs = 20.0;
        assert_eq!(describe_load(&load), "20 journeys/s, spiking to 80 at 30 s for 20 s; think time 100 ms");
        assert_eq!(describe_mix(&load), "browse 30%, search 15%, product 30%, cart 10%, checkout 15%");
    }
}
