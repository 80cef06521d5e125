//! The incident review of a run: every change the learner made, graded against what the
//! scenario names as the cause, and the times a review asks for (detect, mitigate, repair).
//! Pure functions of the run's record, so the rules are tested without a stack.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use scenario::{Cause, ServicePatch};
use serde_json::Value;
use service_kit::Role;

use crate::model::{ChangeAction, ChangeSource, ConfigChange, FieldDelta, LearnerChange, Verdict};

/// A patch that changes a cause field and at least this many fields outside it is a broad
/// rollback, not a diagnosis.
pub const BROAD_PATCH_FIELDS: usize = 3;

/// What grading concludes about a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    pub changes: Vec<LearnerChange>,
    /// `None` when there is nothing to grade (the learner gave up).
    pub grade: Option<Verdict>,
    pub note: String,
    /// The learner's first change on a service the cause names, at or after the incident.
    pub detected_at: Option<DateTime<Utc>>,
}

/// The learner's changes (made with a learner token, not the scenario's) from `since` on, one
/// entry per service revision, oldest first, each with its verdict. An instructor's changes
/// (cutting the load, say) are on the timeline but are not the learner's to be graded on.
pub fn learner_changes(record: &[ConfigChange], cause: &[Cause], since: DateTime<Utc>) -> Vec<LearnerChange> {
    let mut by_revision: BTreeMap<(DateTime<Utc>, String, u64), LearnerChange> = BTreeMap::new();
    let learners = |c: &&ConfigChange| c.source == ChangeSource::Learner && c.role == Role::Learner;
    for change in record.iter().filter(learners).filter(|c| c.changed_at >= since) {
        let key = (change.changed_at, change.service.clone(), change.revision);
        let entry = by_revision.entry(key).or_insert_with(|| LearnerChange {
            service: change.service.clone(),
            revision: change.revision,
            at: change.changed_at,
            action: change.action,
            actor: change.actor.clone(),
            role: change.role,
            client: change.client.clone(),
            through: change.through.clone(),
            fields: Vec::new(),
            verdict: Verdict::Wrong,
        });
        entry.fields.push(FieldDelta { field: change.field.clone(), old: change.old.clone(), new: change.new.clone() });
    }
    let mut out: Vec<LearnerChange> = by_revision.into_values().collect();
    for change in &mut out {
        change.verdict = verdict(change, cause);
    }
    out
}

fn touches_cause(change: &LearnerChange, cause: &[Cause]) -> bool {
    change.fields.iter().any(|f| cause.iter().any(|c| c.covers(&change.service, &f.field)))
}

/// The verdict of one change: see [`Verdict`].
pub fn verdict(change: &LearnerChange, cause: &[Cause]) -> Verdict {
    let on_cause = change.fields.iter().filter(|f| cause.iter().any(|c| c.covers(&change.service, &f.field))).count();
    let elsewhere = change.fields.len() - on_cause;
    match change.action {
        ChangeAction::Reset | ChangeAction::Put => Verdict::Blanket,
        ChangeAction::Patch if on_cause > 0 && elsewhere >= BROAD_PATCH_FIELDS => Verdict::Blanket,
        ChangeAction::Patch if on_cause > 0 => Verdict::Targeted,
        ChangeAction::Patch => Verdict::Wrong,
    }
}

/// Reviews a resolved run (`resolved` true) or a given-up one.
pub fn review(
    record: &[ConfigChange],
    cause: &[Cause],
    fix: &[ServicePatch],
    started_at: DateTime<Utc>,
    incident_at: DateTime<Utc>,
    resolved: bool,
) -> Review {
    let changes = learner_changes(record, cause, started_at);
    let detected_at = changes
        .iter()
        .filter(|c| c.at >= incident_at && cause.iter().any(|k| k.service == c.service))
        .map(|c| c.at)
        .next();
    if !resolved {
        return Review {
            changes,
            grade: None,
            note: format!("Given up. The targeted fix: {}.", describe_fix(fix)),
            detected_at,
        };
    }
    let blanket: Vec<&LearnerChange> =
        changes.iter().filter(|c| c.verdict == Verdict::Blanket && touches_cause(c, cause)).collect();
    let targeted = changes.iter().any(|c| c.verdict == Verdict::Targeted);
    let (grade, note) = if let Some(first) = blanket.first() {
        (
            Verdict::Blanket,
            format!(
                "Healed by a blanket change ({} of `{}` at revision {}), not a diagnosis: it also changed what was \
                 not broken. The targeted fix: {}.",
                action_name(first.action, first.fields.len()),
                first.service,
                first.revision,
                describe_fix(fix)
            ),
        )
    } else if !targeted {
        (
            Verdict::Blanket,
            format!(
                "Healed without a change to what the scenario names as the cause ({}). The targeted fix: {}.",
                describe_cause(cause),
                describe_fix(fix)
            ),
        )
    } else {
        (Verdict::Targeted, format!("Targeted: the fix changed the cause ({}) and little else.", describe_cause(cause)))
    };
    Review { changes, grade: Some(grade), note, detected_at }
}

fn action_name(action: ChangeAction, fields: usize) -> String {
    match action {
        ChangeAction::Reset => "a reset to defaults".to_owned(),
        ChangeAction::Put => "a whole-document PUT".to_owned(),
        ChangeAction::Patch => format!("a patch of {fields} fields"),
    }
}

fn describe_cause(cause: &[Cause]) -> String {
    let parts: Vec<String> =
        cause.iter().flat_map(|c| c.fields.iter().map(move |f| format!("`{}` {f}", c.service))).collect();
    parts.join(", ")
}

/// `shop release.version = "2.4.0"`, one per leaf of each patch.
pub fn describe_fix(fix: &[ServicePatch]) -> String {
    let mut parts = Vec::new();
    for patch in fix {
        let mut leaves = Vec::new();
        leaf_settings(&patch.patch, "", &mut leaves);
        parts.extend(leaves.into_iter().map(|(field, value)| format!("`{}` {field} = {value}", patch.service)));
    }
    if parts.is_empty() { "none given".to_owned() } else { parts.join(", ") }
}

fn leaf_settings(value: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                leaf_settings(child, &path, out);
            }
        }
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap_or_default()
    }

    fn change(at: i64, service: &str, revision: u64, action: ChangeAction, field: &str) -> ConfigChange {
        ConfigChange {
            service: service.into(),
            revision,
            field: field.into(),
            old: json!(1),
            new: json!(2),
            actor: "learner".into(),
            role: Role::Learner,
            source: ChangeSource::Learner,
            action,
            client: Some("cli".into()),
            through: Some("control-gateway".into()),
            changed_at: t(at),
        }
    }

    fn cause() -> Vec<Cause> {
        vec![Cause { service: "shop".into(), fields: vec!["workers.max_concurrent".into()] }]
    }

    fn fix() -> Vec<ServicePatch> {
        vec![ServicePatch { service: "shop".into(), patch: json!({"workers": {"max_concurrent": 64}}) }]
    }

    #[test]
    fn a_patch_of_the_cause_is_graded_targeted_and_detection_is_its_time() {
        let record = vec![
            change(5, "gateway", 2, ChangeAction::Patch, "upstream.timeout_ms"),
            change(20, "shop", 3, ChangeAction::Patch, "workers.max_concurrent"),
        ];
        let review = review(&record, &cause(), &fix(), t(0), t(1), true);
        assert_eq!(review.grade, Some(Verdict::Targeted));
        let verdicts: Vec<Verdict> = review.changes.iter().map(|c| c.verdict).collect();
        assert_eq!(verdicts, [Verdict::Wrong, Verdict::Targeted]);
        assert_eq!(review.detected_at, Some(t(20)));
        assert_eq!(review.changes[1].through.as_deref(), Some("control-gateway"));
    }

    #[test]
    fn a_reset_that_heals_is_graded_blanket_and_names_the_targeted_fix() {
        let record = vec![
            change(20, "shop", 3, ChangeAction::Reset, "workers.max_concurrent"),
            change(20, "shop", 3, ChangeAction::Reset, "workers.queue_limit"),
        ];
        let review = review(&record, &cause(), &fix(), t(0), t(1), true);
        assert_eq!(review.grade, Some(Verdict::Blanket));
        assert_eq!(review.changes.len(), 1, "one revision is one change");
        assert_eq!(review.changes[0].fields.len(), 2);
        assert!(review.note.contains("a reset to defaults"), "{}", review.note);
        assert!(review.note.contains("`shop` workers.max_concurrent = 64"), "{}", review.note);
    }

    #[test]
    fn a_broad_patch_is_blanket_even_after_a_targeted_one() {
        let mut record = vec![change(10, "shop", 2, ChangeAction::Patch, "workers.max_concurrent")];
        for field in ["workers.max_concurrent", "db.pool_size", "search.strategy", "pricing.algorithm"] {
            record.push(change(30, "shop", 3, ChangeAction::Patch, field));
        }
        let review = review(&record, &cause(), &fix(), t(0), t(1), true);
        assert_eq!(review.changes[1].verdict, Verdict::Blanket);
        assert_eq!(review.grade, Some(Verdict::Blanket));
    }

    #[test]
    fn healing_without_touching_the_cause_is_not_targeted() {
        let record = vec![change(10, "gateway", 2, ChangeAction::Patch, "upstream.pool_size")];
        let review = review(&record, &cause(), &fix(), t(0), t(1), true);
        assert_eq!(review.grade, Some(Verdict::Blanket));
        assert!(review.note.contains("without a change"), "{}", review.note);
        assert_eq!(review.detected_at, None, "the gateway is not a service the cause names");
    }

    #[test]
    fn giving_up_has_no_grade_and_keeps_the_record() {
        let record = vec![change(10, "shop", 2, ChangeAction::Patch, "db.pool_size")];
        let review = review(&record, &cause(), &fix(), t(0), t(1), false);
        assert_eq!(review.grade, None);
        assert_eq!(review.changes[0].verdict, Verdict::Wrong);
        assert!(review.note.starts_with("Given up"), "{}", review.note);
    }

    #[test]
    fn scenario_and_instructor_changes_and_changes_before_the_run_are_not_the_learners() {
        let mut by_scenario = change(10, "shop", 2, ChangeAction::Patch, "workers.max_concurrent");
        by_scenario.source = ChangeSource::Scenario;
        let mut by_instructor = change(12, "runner", 4, ChangeAction::Patch, "enabled");
        by_instructor.role = Role::Instructor;
        let before = change(-5, "shop", 1, ChangeAction::Patch, "workers.max_concurrent");
        assert!(learner_changes(&[by_scenario, by_instructor, before], &cause(), t(0)).is_empty());
    }
}
