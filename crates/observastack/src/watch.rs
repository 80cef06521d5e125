//! `observastack scenario watch`: the orchestrator's WebSocket feed through the control
//! gateway, one timestamped line per happening (or the raw messages as NDJSON with `--json`).
//! Reconnects with backoff when the connection drops; exits 0 once the watched run is
//! resolved, 1 when the token is refused.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use orchestrator::model::{
    ChangeAction, ChangeSource, Completed, ConfigChange, Entry, EventMessage, HintMessage, HintTrigger, LearnerChange,
    Milestone, MilestoneName, Outcome, RunState, StateMessage, Verdict, WsMessage,
};
use reqwest::StatusCode;
use scenario::sli::{Journey, SliSnapshot};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::control_client::{Control, Refusal};
use crate::text::{WIDTH, clock, describe_debrief, secs_text, wrap};
use crate::ui;

/// At most one SLI line per this period; the orchestrator pushes a snapshot every tick.
pub const SLI_EVERY: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Lines after the first of a message are indented under its text.
const INDENT: &str = "                    ";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

enum Connect {
    Open(Box<Socket>),
    Refused(Refusal),
    Unreachable(String),
}

/// `ws://host/api/ws` for `http://host`, `wss://` for `https://`.
pub fn ws_url(base: &str) -> String {
    let url = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    };
    format!("{}/api/ws", url.trim_end_matches('/'))
}

async fn connect(control: &Control) -> anyhow::Result<Connect> {
    let mut request = ws_url(control.base()).into_client_request()?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", control.token()?))?;
    request.headers_mut().insert("authorization", bearer);
    Ok(match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Connect::Open(Box::new(socket)),
        Err(tungstenite::Error::Http(resp)) => {
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let text = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Connect::Refused(Refusal::from_body(status, &body))
        }
        Err(err) => Connect::Unreachable(err.to_string()),
    })
}

enum Ended {
    /// The watched run was resolved.
    Done,
    /// The connection went away, for this reason.
    Dropped(String),
}

/// `scenario watch [--json]`.
pub async fn run(control: &Control, json: bool) -> anyhow::Result<ExitCode> {
    let mut view = View::new(json);
    let mut backoff = BACKOFF_MIN;
    let mut connected_once = false;
    loop {
        let retry_because = match connect(control).await? {
            Connect::Open(mut socket) => {
                if connected_once {
                    ui::progress("reconnected");
                }
                connected_once = true;
                backoff = BACKOFF_MIN;
                match read(&mut socket, &mut view).await {
                    Ended::Done => {
                        let _ = socket.close(None).await;
                        return Ok(ExitCode::SUCCESS);
                    }
                    Ended::Dropped(why) => format!("the connection dropped ({why})"),
                }
            }
            Connect::Refused(refusal) if refusal.status.is_server_error() => {
                format!("the control gateway answered {} ({})", refusal.status.as_u16(), refusal.message)
            }
            Connect::Refused(refusal) => {
                control.report(&refusal);
                return Ok(ExitCode::FAILURE);
            }
            Connect::Unreachable(why) if !connected_once => {
                ui::error(&format!("cannot reach the control gateway at {} (is the stack up?): {why}", control.base()));
                return Ok(ExitCode::FAILURE);
            }
            Connect::Unreachable(why) => format!("cannot reconnect ({why})"),
        };
        ui::progress(&format!("{retry_because}; reconnecting in {}", secs_text(backoff.as_secs_f64())));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn read(socket: &mut Socket, view: &mut View) -> Ended {
    while let Some(frame) = socket.next().await {
        match frame {
            Ok(Message::Text(text)) => {
                let step = view.handle(text.as_str(), Instant::now(), Utc::now());
                for line in &step.lines {
                    ui::stdout_line(line);
                }
                if step.done {
                    return Ended::Done;
                }
            }
            Ok(Message::Close(frame)) => {
                let why = frame
                    .map(|f| format!("closed by the server: {} {}", u16::from(f.code), f.reason))
                    .unwrap_or_else(|| "closed by the server".to_owned());
                return Ended::Dropped(why);
            }
            Ok(_) => {}
            Err(err) => return Ended::Dropped(err.to_string()),
        }
    }
    Ended::Dropped("end of stream".to_owned())
}

/// The latest SLI snapshot of `run_id`, read from the feed's replay; `None` when none arrives
/// within `within` (no load yet, or the feed is unreachable).
pub async fn latest_slis(control: &Control, run_id: Uuid, within: Duration) -> Option<SliSnapshot> {
    let wait = async {
        let Ok(Connect::Open(mut socket)) = connect(control).await else { return None };
        while let Some(Ok(frame)) = socket.next().await {
            if let Message::Text(text) = frame
                && let Ok(WsMessage::Slis(slis)) = serde_json::from_str::<WsMessage>(text.as_str())
                && slis.run_id == Some(run_id)
            {
                let _ = socket.close(None).await;
                return Some(slis.snapshot);
            }
        }
        None
    };
    tokio::time::timeout(within, wait).await.ok().flatten()
}

/// What one message made the watcher print, and whether it is done.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    pub lines: Vec<String>,
    pub done: bool,
}

/// Turns feed messages into lines. Remembers what it printed, so the replay a reconnect
/// brings (state, hints, result) is not printed twice.
#[derive(Debug)]
pub struct View {
    json: bool,
    last_state: Option<(Option<Uuid>, Option<RunState>)>,
    /// Runs seen in a non-final state: their result ends the watch.
    live: HashSet<Uuid>,
    introduced: HashSet<Uuid>,
    hints: HashSet<(Uuid, usize)>,
    results: HashSet<Uuid>,
    last_slis: Option<Instant>,
}

fn line(at: DateTime<Utc>, kind: &str, text: &str) -> String {
    format!("{}  {kind:<9} {text}", clock(at))
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl View {
    pub fn new(json: bool) -> Self {
        Self {
            json,
            last_state: None,
            live: HashSet::new(),
            introduced: HashSet::new(),
            hints: HashSet::new(),
            results: HashSet::new(),
            last_slis: None,
        }
    }

    /// Handles one text frame received at `now` (monotonic, for SLI pacing) / `wall`.
    pub fn handle(&mut self, text: &str, now: Instant, wall: DateTime<Utc>) -> Step {
        let message = serde_json::from_str::<WsMessage>(text);
        if self.json {
            let done = match &message {
                Ok(WsMessage::State(state)) => {
                    self.note_state(state);
                    false
                }
                Ok(WsMessage::Completed(result)) => self.live.contains(&result.run_id),
                _ => false,
            };
            return Step { lines: vec![text.trim().to_owned()], done };
        }
        match message {
            Ok(WsMessage::State(state)) => Step { lines: self.state(&state, wall), done: false },
            Ok(WsMessage::Hint(hint)) => Step { lines: self.hint(&hint), done: false },
            Ok(WsMessage::Event(event)) => Step { lines: event_lines(&event), done: false },
            Ok(WsMessage::Slis(slis)) => Step { lines: self.slis(&slis.snapshot, now), done: false },
            Ok(WsMessage::Completed(result)) => self.completed(&result, wall),
            Err(_) => Step { lines: vec![line(wall, "message", text.trim())], done: false },
        }
    }

    fn note_state(&mut self, message: &StateMessage) {
        if let (Some(state), Some(run)) = (message.state, &message.run)
            && !state.is_final()
        {
            self.live.insert(run.id);
        }
    }

    fn state(&mut self, message: &StateMessage, wall: DateTime<Utc>) -> Vec<String> {
        let key = (message.run.as_ref().map(|r| r.id), message.state);
        if self.last_state == Some(key) {
            return Vec::new();
        }
        self.last_state = Some(key);
        self.note_state(message);
        let (Some(state), Some(run)) = (message.state, &message.run) else {
            return vec![line(wall, "state", "no run yet; waiting for one (`observastack scenario start ID`)")];
        };
        let mut out = Vec::new();
        if self.introduced.insert(run.id) {
            out.push(line(
                wall,
                "run",
                &format!(
                    "{} of {} ({}), time scale {}, started by {}",
                    run.id, run.scenario_id, run.scenario_title, run.time_scale, run.started_by
                ),
            ));
        }
        let text = match state {
            RunState::Setup => "setup: services back to their defaults, the load is starting".to_owned(),
            RunState::Baseline => "baseline: healthy load, no fault yet; the incident follows".to_owned(),
            RunState::Incident => "incident: something broke; find what users suffer, then repair it".to_owned(),
            RunState::Recovering => "recovering: the success conditions hold; they must keep holding".to_owned(),
            RunState::Resolved => "resolved: the system is healthy again".to_owned(),
            RunState::GaveUp => "gave up: the debrief shows the solution".to_owned(),
            RunState::Abandoned => {
                format!("abandoned: {}", run.end_reason.as_deref().unwrap_or("the run ended without a repair"))
            }
        };
        out.push(line(wall, "state", &text));
        if state == RunState::Abandoned {
            out.push(format!("{INDENT}waiting for the next run (Ctrl-C to quit)"));
        }
        out
    }

    fn hint(&mut self, message: &HintMessage) -> Vec<String> {
        if !self.hints.insert((message.run_id, message.hint.index)) {
            return Vec::new();
        }
        let why = match message.hint.trigger {
            HintTrigger::Time => "time passed",
            HintTrigger::Condition => "a condition held",
        };
        let mut out = vec![line(message.at, &format!("hint {}", message.hint.index + 1), &format!("({why})"))];
        out.extend(wrap(&message.hint.text, WIDTH - INDENT.len()).into_iter().map(|l| indent(&l)));
        out
    }

    fn slis(&mut self, snapshot: &SliSnapshot, now: Instant) -> Vec<String> {
        if !snapshot.running && snapshot.all.completed == 0 {
            return Vec::new();
        }
        if self.last_slis.is_some_and(|last| now.duration_since(last) < SLI_EVERY) {
            return Vec::new();
        }
        self.last_slis = Some(now);
        vec![line(snapshot.at, "slis", &sli_text(snapshot))]
    }

    fn completed(&mut self, result: &Completed, wall: DateTime<Utc>) -> Step {
        let live = self.live.contains(&result.run_id);
        if !self.results.insert(result.run_id) {
            return Step { lines: Vec::new(), done: live };
        }
        let mut lines = vec![line(wall, "completed", &outcome_text(result))];
        lines.extend(review_lines(result, INDENT));
        if !live {
            lines.push(format!("{INDENT}(an earlier run; waiting for the next one, Ctrl-C to quit)"));
        }
        Step { lines, done: live }
    }
}

/// The incident review under its headline: times, the grade note, the learner's changes, the
/// debrief and the solution, each line starting with `indent`.
pub fn review_lines(result: &Completed, indent: &str) -> Vec<String> {
    let width = WIDTH - indent.len();
    let mut lines = vec![format!("{indent}{}", times_text(result))];
    lines.extend(wrap(&result.grade_note, width).into_iter().map(|l| format!("{indent}{l}")));
    if !result.changes.is_empty() {
        lines.push(format!("{indent}Your changes"));
        lines.extend(result.changes.iter().map(|c| format!("{indent}  {}", learner_change_text(c))));
    }
    lines.extend(describe_debrief(&result.debrief, indent));
    if let Some(summary) = result.solution["summary"].as_str() {
        lines.push(format!("{indent}Solution"));
        lines.extend(wrap(summary, width - 2).into_iter().map(|l| format!("{indent}  {l}")));
    }
    lines
}

/// `resolved · graded TARGETED` or `gave up`.
pub fn outcome_text(result: &Completed) -> String {
    match (result.outcome, result.grade) {
        (Outcome::GaveUp, _) => "gave up: not graded".to_owned(),
        (Outcome::Resolved, Some(grade)) => format!("resolved · graded {}", verdict_name(grade).to_uppercase()),
        (Outcome::Resolved, None) => "resolved".to_owned(),
    }
}

pub fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Targeted => "targeted",
        Verdict::Blanket => "blanket",
        Verdict::Wrong => "wrong",
    }
}

/// `detect 80 s (no hint needed) · mitigate 2m 40s · repair 3m 10s · hints 2 of 4`.
pub fn times_text(result: &Completed) -> String {
    let detect = match (result.time_to_detect_secs, result.hints_before_detect) {
        (Some(secs), Some(0)) => format!("{} (no hint needed)", secs_text(secs)),
        (Some(secs), Some(n)) => format!("{} (after {n} hint{})", secs_text(secs), if n == 1 { "" } else { "s" }),
        (Some(secs), None) => secs_text(secs),
        (None, _) => "— (no change on the cause's service)".to_owned(),
    };
    let mitigate = result.time_to_mitigate_secs.map_or_else(|| "—".to_owned(), secs_text);
    format!(
        "detect {detect} · mitigate {mitigate} · repair {} · hints {} of {}",
        secs_text(result.time_to_repair_secs),
        result.hints_used,
        result.hints_total
    )
}

/// `[targeted] shop patch release.version 2.4.1 → 2.4.0 by ada (cli, through control-gateway)`.
pub fn learner_change_text(change: &LearnerChange) -> String {
    let fields: Vec<String> =
        change.fields.iter().map(|f| format!("{} {} → {}", f.field, plain(&f.old), plain(&f.new))).collect();
    let action = match change.action {
        ChangeAction::Patch => "patch",
        ChangeAction::Put => "put",
        ChangeAction::Reset => "reset",
    };
    let via = match (&change.client, &change.through) {
        (Some(client), Some(through)) => format!("{client}, through {through}"),
        (Some(client), None) => format!("{client}, direct"),
        (None, Some(through)) => format!("through {through}"),
        (None, None) => "direct".to_owned(),
    };
    format!(
        "[{}] {} {action} {} by {} ({via})",
        verdict_name(change.verdict),
        change.service,
        fields.join(", "),
        change.actor
    )
}

fn indent(text: &str) -> String {
    if text.is_empty() { String::new() } else { format!("{INDENT}{text}") }
}

fn event_lines(event: &EventMessage) -> Vec<String> {
    let at = event.entry.at;
    match &event.entry.entry {
        Entry::ConfigChange(change) => vec![line(at, "config", &change_text(change))],
        Entry::Milestone(milestone) => {
            milestone_text(milestone).map(|t| vec![line(at, "milestone", &t)]).unwrap_or_default()
        }
        // State changes, hints and results come as their own messages.
        Entry::State { .. } | Entry::Hint(_) | Entry::Completed(_) => Vec::new(),
    }
}

/// `shop release.version: 2.4.0 → 2.4.1 by orchestrator (instructor, scenario)`.
pub fn change_text(change: &ConfigChange) -> String {
    let source = match change.source {
        ChangeSource::Scenario => ", scenario",
        ChangeSource::Learner => "",
    };
    format!(
        "{} {}: {} → {} by {} ({}{source})",
        change.service,
        change.field,
        plain(&change.old),
        plain(&change.new),
        change.actor,
        change.role
    )
}

/// Milestones worth a line of their own; phase starts and ends are already state lines.
fn milestone_text(milestone: &Milestone) -> Option<String> {
    let note = milestone.note.as_deref().map(|n| format!(": {n}")).unwrap_or_default();
    match milestone.milestone {
        MilestoneName::FaultApplied => {
            Some(format!("fault applied to {}{note}", milestone.service.as_deref().unwrap_or("a service")))
        }
        MilestoneName::IncidentObserved => Some(format!("incident observed{note}")),
        MilestoneName::Resumed => Some("the orchestrator restarted and resumed the run".to_owned()),
        MilestoneName::LoadBelowPlan => {
            Some(format!("the load is below the scenario's plan{note}: no completion until it is back"))
        }
        MilestoneName::LoadRestored => Some("the load is the scenario's plan again".to_owned()),
        MilestoneName::BaselineStarted
        | MilestoneName::IncidentStarted
        | MilestoneName::Resolved
        | MilestoneName::Abandoned
        | MilestoneName::GaveUp => None,
    }
}

/// `checkout 98.5% ok · p95 browse 45 ms, … · 11.4 orders/min`.
pub fn sli_text(snapshot: &SliSnapshot) -> String {
    let checkout = snapshot.journeys.get(&Journey::Checkout).filter(|j| j.completed > 0);
    let success =
        checkout.map_or_else(|| "checkout –".to_owned(), |c| format!("checkout {:.1}% ok", c.success_ratio * 100.0));
    let p95: Vec<String> = snapshot
        .journeys
        .iter()
        .filter(|(_, s)| s.completed > 0)
        .map(|(journey, s)| format!("{journey} {:.0} ms", s.p95_ms))
        .collect();
    let p95 = if p95.is_empty() { "p95 –".to_owned() } else { format!("p95 {}", p95.join(", ")) };
    let orders = checkout.map_or(snapshot.all.orders_per_minute, |c| c.orders_per_minute);
    format!("{success} · {p95} · {orders:.1} orders/min")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use orchestrator::model::{FieldDelta, Hint, RunSummary, SlisMessage, TimelineEntry};
    use scenario::sli::JourneySlis;
    use serde_json::json;
    use service_kit::Role;

    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    fn run(state: RunState) -> RunSummary {
        RunSummary {
            id: Uuid::nil(),
            scenario_id: "bad-release-checkout".into(),
            scenario_title: "Checkout broke".into(),
            state,
            time_scale: 1.0,
            started_by: "cli".into(),
            started_by_role: Role::Learner,
            started_at: at(),
            baseline_at: None,
            incident_at: None,
            recovering_at: None,
            ended_at: None,
            end_reason: None,
            result: None,
        }
    }

    fn text(message: &WsMessage) -> String {
        serde_json::to_string(message).unwrap_or_default()
    }

    fn state(s: RunState) -> String {
        text(&WsMessage::State(StateMessage { state: Some(s), run: Some(run(s)) }))
    }

    fn completed() -> String {
        text(&WsMessage::Completed(Completed {
            run_id: Uuid::nil(),
            scenario_id: "bad-release-checkout".into(),
            outcome: Outcome::Resolved,
            grade: Some(Verdict::Blanket),
            grade_note: "Healed by a blanket change (a reset to defaults of `shop` at revision 3).".into(),
            cause: vec![scenario::Cause { service: "shop".into(), fields: vec!["release.version".into()] }],
            changes: vec![LearnerChange {
                service: "shop".into(),
                revision: 3,
                at: at(),
                action: ChangeAction::Reset,
                actor: "ada".into(),
                role: Role::Learner,
                client: Some("cli".into()),
                through: Some("control-gateway".into()),
                fields: vec![FieldDelta { field: "release.version".into(), old: json!("2.4.1"), new: json!("2.4.0") }],
                verdict: Verdict::Blanket,
            }],
            time_to_detect_secs: Some(80.0),
            hints_before_detect: Some(1),
            time_to_mitigate_secs: Some(160.0),
            time_to_repair_secs: 190.0,
            hints_used: 2,
            hints_total: 4,
            debrief: json!({"what_broke": "Checkout failed.", "why": "A missing column.", "lessons": ["Roll back"]}),
            solution: json!({"summary": "Roll back to 2.4.0"}),
        }))
    }

    #[test]
    fn a_replayed_state_and_hint_are_printed_once() {
        let mut view = View::new(false);
        let now = Instant::now();
        let first = view.handle(&state(RunState::Incident), now, at());
        assert_eq!(first.lines.len(), 2, "{first:?}");
        assert!(first.lines[0].contains("bad-release-checkout (Checkout broke)"));
        assert!(first.lines[1].contains("incident"));
        let hint = text(&WsMessage::Hint(HintMessage {
            run_id: Uuid::nil(),
            at: at(),
            hint: Hint { index: 1, text: "word ".repeat(40), trigger: HintTrigger::Condition },
        }));
        let shown = view.handle(&hint, now, at());
        assert!(shown.lines[0].contains("hint 2") && shown.lines[0].contains("a condition held"));
        assert!(shown.lines.len() > 2, "the hint is wrapped: {shown:?}");
        assert!(shown.lines.iter().all(|l| l.chars().count() <= WIDTH), "{shown:?}");
        // A reconnect replays both.
        assert_eq!(view.handle(&state(RunState::Incident), now, at()), Step::default());
        assert_eq!(view.handle(&hint, now, at()), Step::default());
    }

    #[test]
    fn the_result_of_a_watched_run_ends_the_watch_with_the_debrief() {
        let mut view = View::new(false);
        let now = Instant::now();
        view.handle(&state(RunState::Recovering), now, at());
        view.handle(&state(RunState::Resolved), now, at());
        let step = view.handle(&completed(), now, at());
        assert!(step.done);
        let all = step.lines.join("\n");
        for expected in [
            "resolved · graded BLANKET",
            "detect 80 s (after 1 hint)",
            "mitigate 2m 40s",
            "repair 3m 10s",
            "hints 2 of 4",
            "a reset to defaults",
            "[blanket] shop reset release.version 2.4.1 → 2.4.0 by ada (cli, through control-gateway)",
            "A missing column.",
            "Roll back to 2.4.0",
        ] {
            assert!(all.contains(expected), "{expected}: {all}");
        }
    }

    #[test]
    fn the_result_of_an_earlier_run_does_not_end_the_watch() {
        for json in [false, true] {
            let mut view = View::new(json);
            let now = Instant::now();
            view.handle(&state(RunState::Resolved), now, at());
            let step = view.handle(&completed(), now, at());
            assert!(!step.done, "json={json}");
        }
        let mut view = View::new(true);
        view.handle(&state(RunState::Baseline), Instant::now(), at());
        let step = view.handle(&completed(), Instant::now(), at());
        assert!(step.done);
        assert_eq!(step.lines, [completed()], "--json prints the raw message");
    }

    #[test]
    fn config_changes_say_old_new_and_who() {
        let change = ConfigChange {
            service: "shop".into(),
            revision: 3,
            field: "release.version".into(),
            old: json!("2.4.1"),
            new: json!("2.4.0"),
            actor: "cli".into(),
            role: Role::Learner,
            source: ChangeSource::Learner,
            action: ChangeAction::Patch,
            client: Some("cli".into()),
            through: Some("control-gateway".into()),
            changed_at: at(),
        };
        let event = EventMessage {
            run_id: Uuid::nil(),
            entry: TimelineEntry { seq: 4, at: at(), entry: Entry::ConfigChange(change) },
        };
        let lines = event_lines(&event);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].ends_with("config    shop release.version: 2.4.1 → 2.4.0 by cli (learner)"), "{lines:?}");
    }

    #[test]
    fn sli_lines_come_at_most_every_five_seconds() {
        let mut journeys = BTreeMap::new();
        let checkout = JourneySlis {
            completed: 10,
            failed: 1,
            success_ratio: 0.9,
            p95_ms: 120.4,
            orders_per_minute: 12.0,
            ..Default::default()
        };
        journeys.insert(Journey::Checkout, checkout.clone());
        journeys.insert(
            Journey::Browse,
            JourneySlis { completed: 50, success_ratio: 1.0, p95_ms: 40.0, ..Default::default() },
        );
        let snapshot =
            SliSnapshot { at: at(), window_secs: 10.0, offered_rps: 20.0, running: true, all: checkout, journeys };
        assert_eq!(sli_text(&snapshot), "checkout 90.0% ok · p95 browse 40 ms, checkout 120 ms · 12.0 orders/min");
        let message = text(&WsMessage::Slis(SlisMessage { run_id: None, snapshot }));
        let mut view = View::new(false);
        let t0 = Instant::now();
        assert_eq!(view.handle(&message, t0, at()).lines.len(), 1);
        assert!(view.handle(&message, t0 + Duration::from_secs(4), at()).lines.is_empty());
        assert_eq!(view.handle(&message, t0 + SLI_EVERY, at()).lines.len(), 1);
    }

    #[test]
    fn websocket_urls_follow_the_control_url() {
        assert_eq!(ws_url("http://127.0.0.1:8081"), "ws://127.0.0.1:8081/api/ws");
        assert_eq!(ws_url("https://stack.example/"), "wss://stack.example/api/ws");
    }
}
